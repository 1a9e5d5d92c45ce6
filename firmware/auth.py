# Who may command the pump: per role (clinician, patient) the key's last counter, the
# last command executed (so that a retry gets the same answer and never a second bolus)
# and the role's challenge (freshness). The checks run in commands.py, in this order:
# key, MAC, retry, counter, role, freshness.
#
# A frame whose MAC fails changes nothing a signed frame meets: there is no back-off and
# no alarm (the role byte is not authenticated, so anything keyed on it is a lever for a
# sender without a key). Bad MACs are only counted, and recorded as one auth_failure
# per AUTH_FAILURE_WINDOW_S at most.
import hashlib

import msgdefs as md
from codec import MacKey

_NONE_ID = 0xFFFFFFFF  # in the snapshot: no command executed yet


class Auth:
    """Authentication state of the link, one slot per role id (slot 0 unused)."""

    def __init__(self, keys, salt=b""):
        self.keys = keys
        # the HMAC pads made once per key: each frame's check and each reply's MAC
        # would otherwise make them again
        self.mk = {r: MacKey(k) for r, k in keys.items()}
        self.last_ctr = [0, 0, 0]
        self.last_id = [None, None, None]
        self.cached = [None, None, None]  # the last reply, as sent
        self.last_result = [None, None, None]  # (type, result, detail): survives a reboot
        # bad MACs not yet recorded, and when the last auth_failure was recorded
        self.bad_macs = 0
        self.bad_role = 0
        self.bad_t = -md.AUTH_FAILURE_WINDOW_S
        # freshness: each role's challenge and when it was issued (monotonic time). RAM
        # only: a reboot forgets them, so no command signed before it is ever fresh.
        self.challenge = [0, 0, 0]
        self.challenge_t = [0, 0, 0]
        self.issued = 0
        self.salt = salt  # differs from boot to boot (the board's entropy or boot time)

    def key(self, role):
        """The role's key, or None (no such role, or the device has no key for it)."""
        return self.mk.get(role) if role in (md.ROLE_CLINICIAN, md.ROLE_PATIENT) else None

    def bad_mac(self, p, role, now):
        """A frame failed its MAC. Counted; recorded once per window with the count."""
        self.bad_macs += 1
        self.bad_role = role
        if now - self.bad_t >= md.AUTH_FAILURE_WINDOW_S:
            self.flush_bad(p, now)

    def flush_bad(self, p, now):
        """Record the bad MACs counted so far (if any) as one auth_failure."""
        n = self.bad_macs
        if n:
            p.log(now, md.EV_AUTH_FAILURE, 0, n, self.bad_role, md.AUTH_FAILURE_WINDOW_S)
            self.bad_macs = 0
            self.bad_t = now

    def is_retry(self, role, cmd_id, ctr):
        return cmd_id == self.last_id[role] and ctr == self.last_ctr[role]

    def executed(self, role, cmd_id, typ, result, detail, reply):
        """Remember the command just executed and its reply (kept for a retry)."""
        self.last_id[role] = cmd_id
        self.last_result[role] = (typ, result, detail)
        self.cached[role] = reply

    def issue(self, role, now):
        """A new challenge for `role`, valid FRESH_S from now; it replaces the role's
        last one. Unpredictable without the key: a hash of the key, the boot's salt and
        a count (no two alike within a boot)."""
        self.issued += 1
        h = hashlib.sha256(self.keys[role])
        h.update(self.salt)
        h.update(self.issued.to_bytes(4, "little"))
        h.update((now & 0xFFFFFFFF).to_bytes(4, "little"))
        c = int.from_bytes(h.digest()[:4], "little") or 1
        self.challenge[role] = c
        self.challenge_t[role] = now
        return c

    def stale(self, role, challenge, now):
        """-1 if `challenge` is the role's and at most FRESH_S old; else the NACK
        `stale` detail: its age in s, or 0 for one the device did not issue (or has
        replaced, or issued before a reboot)."""
        if challenge == 0 or challenge != self.challenge[role]:
            return 0
        age = now - self.challenge_t[role]
        return -1 if 0 <= age <= md.FRESH_S else age

    def snap_into(self, v):
        """Put what a reboot must keep (counters, the last command and its answer, per
        role) into the snapshot's values `v`."""
        ids = [_NONE_ID if i is None else i for i in self.last_id]
        lr = [x if x is not None else (0, 0, 0) for x in self.last_result]
        v["ctr_clinician"], v["ctr_patient"] = self.last_ctr[1], self.last_ctr[2]
        v["id_clinician"], v["id_patient"] = ids[1], ids[2]
        (v["last_type_clinician"], v["last_result_clinician"],
         v["last_detail_clinician"]) = lr[1]
        v["last_type_patient"], v["last_result_patient"], v["last_detail_patient"] = lr[2]

    def take_up(self, v):
        """After a restart: what snap_into() saved."""
        self.last_ctr = [0, v["ctr_clinician"], v["ctr_patient"]]
        i1, i2 = v["id_clinician"], v["id_patient"]
        self.last_id = [None, None if i1 == _NONE_ID else i1, None if i2 == _NONE_ID else i2]
        t1, t2 = v["last_type_clinician"], v["last_type_patient"]
        self.last_result = [
            None,
            (t1, v["last_result_clinician"], v["last_detail_clinician"]) if t1 else None,
            (t2, v["last_result_patient"], v["last_detail_patient"]) if t2 else None,
        ]

    def accept(self, role, ctr):
        """The role's counter moves on to `ctr` (a fresh, authentic command)."""
        self.last_ctr[role] = ctr

    def remember(self, role, reply):
        """The reply a retry of the role's last command gets, as sent."""
        self.cached[role] = reply
