# Who may command the pump: per role (clinician, patient) the key's last counter, the
# last command executed (so that a retry gets the same answer and never a second bolus),
# and the back-off after bad MACs. The checks run in commands.py, in this order: key,
# back-off, MAC, retry, counter, role.
import msgdefs as md
from alarms import AUTH_BACKOFF
from micropython import const

BACKOFF_AFTER = const(5)  # consecutive bad MACs before the device slows down
BACKOFF_MAX_S = const(300)


class Auth:
    """Authentication state of the link, one slot per role id (slot 0 unused)."""

    def __init__(self, keys):
        self.keys = keys
        self.last_ctr = [0, 0, 0]
        self.last_id = [None, None, None]
        self.cached = [None, None, None]  # the last reply, as sent
        self.bad_macs = [0, 0, 0]
        self.locked_until = [0, 0, 0]
        self.last_result = [None, None, None]  # (type, result, detail): survives a reboot

    def key(self, role):
        """The role's key, or None (no such role, or the device has no key for it)."""
        return self.keys.get(role) if role in (md.ROLE_CLINICIAN, md.ROLE_PATIENT) else None

    def locked(self, role, now):
        """Seconds the role must still wait after bad MACs (0: none)."""
        t = self.locked_until[role]
        return t - now if now < t else 0

    def bad_mac(self, p, role, now):
        """A frame of `role` failed its MAC: count it, back off after BACKOFF_AFTER."""
        k = self.bad_macs[role] + 1
        self.bad_macs[role] = k
        p.log(now, md.EV_AUTH_FAILURE, role, k, role, 0)
        if k >= BACKOFF_AFTER:
            wait = 1 << (k - BACKOFF_AFTER) if k - BACKOFF_AFTER < 9 else BACKOFF_MAX_S
            self.locked_until[role] = now + (wait if wait < BACKOFF_MAX_S else BACKOFF_MAX_S)
            p.alarms.raise_(AUTH_BACKOFF, now, p.reservoir_nl, role)

    def good_mac(self, p, role, now):
        """A frame of `role` passed its MAC: the failures are forgotten."""
        if self.bad_macs[role]:
            self.bad_macs[role] = 0
            if p.alarms.active(AUTH_BACKOFF):
                p.alarms.clear(AUTH_BACKOFF, now, p.reservoir_nl, role)

    def is_retry(self, role, cmd_id, ctr):
        return cmd_id == self.last_id[role] and ctr == self.last_ctr[role]

    def executed(self, role, cmd_id, typ, result, detail, reply):
        """Remember the command just executed and its reply (kept for a retry)."""
        self.last_id[role] = cmd_id
        self.last_result[role] = (typ, result, detail)
        self.cached[role] = reply
