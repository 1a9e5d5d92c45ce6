"""The serial link to a pump and the authenticated command client.

`Link` moves frames over a serial port or pseudo-terminal (pyserial): COBS-encoded,
each followed by 0x00 and preceded by one 0x00 too, which flushes whatever half-frame
the device may hold (mpremote's goodbye, line noise). It counts every byte both ways.

`Client` speaks the protocol: it identifies the device first (GET_INFO: serial and
schema), signs each command with the role's key and the next counter from
$THECA_HOME, and waits for the REPLY with the command's id. A state-changing command
is signed with a CHALLENGE fetched from the device just before it is sent (after any
confirmation prompt): the device executes it only within FRESH_S of that challenge.
On a timeout it sends the *identical* frame again (same cmd_id, same counter): the
device answers a retry from its cache and never executes a command twice, so a lost
reply cannot become a second bolus. Retries are bounded; then `LinkFailure`.

Nothing in a reply is believed before its MAC is checked: a reply is signed with the
command's key and bound to the command's role and counter. A reply that fails is
ignored (a relay's forgery) and, if no authentic one comes, the command ends in
`LinkFailure`. The NACKs the device cannot sign (bad_frame, bad_mac, schema) are shown
as unauthenticated diagnoses (exit 3) and change nothing here: only an authenticated
`replay` moves the stored counter.

Errors a user sees: `Refused` (the device said NACK, or the host refuses to send on a
schema mismatch; exit 3) with the reason in words, `LinkFailure` (no device, no
answer, garbage; exit 4); key problems are `BadInput` (exit 2).
"""

from __future__ import annotations

import os
import secrets
import select
import sys
import time
from dataclasses import dataclass

import serial
import theca_protocol as tp
from theca_protocol import messages as M
from theca_protocol import names as N

from theca.errors import BadInput
from theca.link import keys as K
from theca.log.devtime import iso

BAUD = 115200
#: Seconds to wait for a reply before sending the same frame again.
TIMEOUT_S = 1.0
#: How many times a frame is sent again after a timeout.
RETRIES = 2
# a frame on the wire is at most COBS(MAX_FRAME) + delimiter; more without a 0x00 is noise
_MAX_WIRE = tp.MAX_FRAME + tp.MAX_FRAME // 254 + 2
_HDR = tp.compiled(tp.Header)
_REPLY_HEAD = tp.compiled(tp.ReplyHead)
_CMD_HEAD = tp.compiled(tp.CommandHead)

# Command types by name, from the one protocol definition.
T = {m.name: m.type for m in tp.COMMANDS.values()}
#: Commands that change nothing on the device: allowed on a schema mismatch (diagnosis).
READ_ONLY = {T["GET_STATUS"], T["GET_INFO"]}
#: Commands that change the device's state: each is signed with a fresh CHALLENGE.
_CHANGES = {m.type for m in tp.COMMANDS.values() if not m.reads}
_CHALLENGE = tp.compiled(M.ChallengeReply)

#: NACK `invalid` details of kind `field` (messages.Message.details): the field (index +
#: 1), from the protocol definition.
FIELDS = N.INVALID_FIELDS
#: NACKs the device sends before it could read the command's id (cmd_id 0).
_HEADLESS = frozenset({"bad_frame", "schema"})


_FIELD_WORDS = {
    "length": "the prescription's length does not match its step and bolus counts",
    "version": "the prescription format version is not one the device reads",
    "n_steps": f"the number of basal steps (1 to {M.RX_MAX_STEPS})",
    "n_timed": f"the number of timed boluses (at most {M.RX_MAX_TIMED})",
    "steps.start": "the basal step start times (first at 00:00, rising, before 24:00)",
    "timed.start": "the timed bolus start times",
    "timed.dose": "a timed bolus dose or duration",
    "patient_bolus.dose": "the patient bolus dose or duration",
    "patient_bolus.lockout": "the patient bolus lockout (duration to 24 h)",
    "patient_bolus.max_per_day": f"the patient boluses per day (1 to {M.RX_MAX_PB_PER_DAY})",
    "drug": "the drug is not in the device's drug library",
    "concentration": "the concentration",
    "max_ng_day": "the worst-case drug in 24 h is over the drug's hard daily limit",
    "steps.rate": "a basal rate is over what the pump can deliver",
    "volume": "the volume",
    "dose": "the dose or its duration",
    "offset": f"the local time offset (at most {N.MAX_LOCAL_OFFSET_S // 3600} h either way)",
    "utc": f"the time ({iso(N.UTC_MIN)} to {iso(N.UTC_MAX)})",
    "low_reservoir": (f"the low-reservoir threshold ({M.RX_LOW_RESERVOIR_UL[0] // 1000} to "
                      f"{M.RX_LOW_RESERVOIR_UL[1] // 1000} mL)"),
    "primed": "the catheter is primed already (prime follows `theca catheter --volume`)",
    "zone": (f"the time zone's offset changes (at most {M.RX_MAX_ZONE}, in time order, each "
             f"within {N.MAX_LOCAL_OFFSET_S // 3600} h of UTC)"),
    "drugs": f"the admixture's other drugs (up to {M.RX_MAX_MIX}, known, each once; the "
             "prescription must name the reservoir's whole fill: refill first)",
}

#: What a command found running when the pump said busy (in_progress), by command.
_BUSY_WITH = {"PRIME": "the catheter is being primed already (prime_completed says when)",
              "CATHETER": "the catheter is being primed: a new one once prime_completed",
              "CLINICIAN_BOLUS": "a clinician bolus is still running: wait for its bolus_completed"}

#: Why a bolus was denied (NACK `limit` detail of PATIENT_BOLUS / CLINICIAN_BOLUS).
DENY_WORDS = {
    "lockout": "the lockout since the last patient bolus has not passed yet",
    "max_per_day": "the prescription's maximum number of patient boluses in 24 h is reached",
    "daily_limit": "it could take the drug in a rolling 24 h over the drug's hard limit",
    "not_running": "the pump is not delivering (stopped, suspended or halted)",
    "not_configured": "the prescription has no patient bolus",
    "in_progress": "a bolus of this kind is still running",
    "reservoir": "there is not enough drug left in the reservoir",
    "max_per_hour": "it could take the drug in a rolling 1 h over the drug's hard limit",
    "max_bolus": "a single bolus is over the drug's hard maximum bolus",
    "max_concentration": "the concentration is over the drug's hard maximum",
    "max_rate": "it is faster than the pump's mechanism delivers (max_rate)",
    "min_rate": "a basal step is slower than the pump's mechanism keeps up (min_rate)",
    "capacity": "the volume is more than the reservoir holds",
}

_VERBS = {
    "GET_STATUS": "read the status", "PROGRAM": "program a prescription",
    "READ_RX": "read the prescription", "REFILL": "record a refill",
    "PATIENT_BOLUS": "ask for a patient bolus", "CLINICIAN_BOLUS": "give a clinician bolus",
    "SUSPEND": "suspend delivery", "RESUME": "resume delivery",
    "ACK_ALARM": "acknowledge alarms", "SET_TIME": "set the clock",
    "LOG_READ": "read the event log", "GET_INFO": "identify the device",
    "MAINTENANCE": "stop the pump for maintenance",
    "CATHETER": "record the catheter", "PRIME": "prime the catheter",
    "CHALLENGE": "get a challenge",
}


class LinkFailure(Exception):
    """The link failed: no device, no answer in time, or only garbage (exit 4)."""


class Refused(Exception):
    """The device refused a command (or the host refused to send it); exit 3.

    `reason` is the NACK reason's name (`bad_mac`, `limit`, ...) or `schema` for a
    host-side schema mismatch; the message is the whole explanation in words."""

    def __init__(self, message: str, reason: str = "", detail: int = 0):
        super().__init__(message)
        self.reason = reason
        self.detail = detail


@dataclass
class Reply:
    """A REPLY frame from the device."""

    cmd_id: int
    cmd_type: int
    result: int
    detail: int
    body: bytes
    seq: int
    time: int  # device time in the reply header
    frame: bytes
    attempts: int = 1
    authentic: bool = False  # its MAC was checked and is right for the command

    @property
    def mac(self) -> bytes:
        """The reply's MAC as sent."""
        return self.frame[-tp.CRC_SIZE - tp.MAC_SIZE : -tp.CRC_SIZE]

    @property
    def reason(self) -> str:
        """`ack` or the NACK reason's name."""
        return N.name_of(N.RESULTS, self.result, "result")


def host_time() -> int:
    """Now, in device time (seconds since 2020-01-01T00:00:00Z)."""
    return int(time.time()) - tp.EPOCH_UNIX


def parse_reply(frame: bytes) -> Reply | None:
    """The Reply in a CRC-checked frame, or None if it is not a REPLY."""
    if len(frame) < tp.HDR_SIZE + _REPLY_HEAD.size + tp.MAC_SIZE + tp.CRC_SIZE:
        return None
    ver, typ, seq, t = _HDR.unpack_from(frame)
    if ver != tp.FRAME_VERSION or typ != tp.T_REPLY:
        return None
    cmd_id, ctype, result, detail = _REPLY_HEAD.unpack_from(frame, tp.HDR_SIZE)
    body = bytes(frame[tp.HDR_SIZE + _REPLY_HEAD.size : -tp.CRC_SIZE - tp.MAC_SIZE])
    return Reply(cmd_id, ctype, result, detail, body, seq, t, bytes(frame))


class Link:
    """Frames over a serial device or pseudo-terminal."""

    def __init__(self, device: str, baudrate: int = BAUD):
        self.device = device
        try:
            # exclusive: two hosts on one port would read each other's replies (issue 23)
            self.ser = serial.Serial(device, baudrate=baudrate, timeout=0, write_timeout=5,
                                     exclusive=True)
        except (serial.SerialException, OSError, ValueError) as e:
            why = getattr(e, "strerror", None) or str(e)
            if "exclusively lock" in why:
                raise LinkFailure(f"port busy: another program has {device} open (another "
                                  "theca, a terminal, mpremote); close it first") from None
            raise LinkFailure(f"cannot open {device}: {why}") from None
        # replies a previous host never read must not be taken for ours
        self.ser.reset_input_buffer()
        self.buf = bytearray()
        self.tx_bytes = 0
        self.rx_bytes = 0
        self.good = 0
        self.bad = 0  # delimited chunks that were no frame (bad COBS, short, bad CRC)
        self.noise = bytearray()  # the last bytes that were no frame, for a diagnosis

    def close(self) -> None:
        """Close the port."""
        self.ser.close()

    def send(self, frame: bytes) -> None:
        """Send one frame: 0x00, COBS(frame), 0x00."""
        self.write(b"\x00" + tp.cobs_encode(frame) + b"\x00")

    def write(self, data: bytes) -> None:
        """Send raw bytes (tests send garbage this way)."""
        try:
            self.ser.write(data)
            self.ser.flush()
        except (serial.SerialException, OSError) as e:
            raise LinkFailure(f"writing to {self.device} failed: {e}") from None
        self.tx_bytes += len(data)

    def _noise(self, chunk: bytes) -> None:
        self.bad += 1
        self.noise += chunk[-200:]
        del self.noise[:-400]

    def recv(self, timeout: float) -> bytes | None:
        """The next good (CRC-checked) frame within `timeout` seconds, or None."""
        deadline = time.monotonic() + timeout
        while True:
            while True:
                i = self.buf.find(0)
                if i < 0:
                    break
                chunk = bytes(self.buf[:i])
                del self.buf[: i + 1]
                if not chunk:
                    continue  # idle fill
                try:
                    frame = tp.cobs_decode(chunk)
                    tp.parse_frame(frame)
                except (tp.CobsError, tp.FrameError):
                    self._noise(chunk)
                    continue
                self.good += 1
                return frame
            if len(self.buf) > _MAX_WIRE:
                self._noise(bytes(self.buf))
                self.buf.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                r, _, _ = select.select([self.ser.fileno()], [], [], left)
                if not r:
                    continue
                data = self.ser.read(self.ser.in_waiting or 1)
            except (serial.SerialException, OSError) as e:
                raise LinkFailure(f"reading from {self.device} failed: {e}") from None
            self.rx_bytes += len(data)
            self.buf += data

    def diagnosis(self) -> str:
        """What the bytes that were no frames suggest, or ''."""
        tail = bytes(self.noise + self.buf)
        if not tail:
            return ""
        text = tail.decode("ascii", "replace")
        if ">>>" in text or "raw REPL" in text or "MicroPython" in text:
            return (f"{self.device} is at the MicroPython REPL, not running the Theca "
                    "firmware: flash it (`theca flash`) or reset the board")
        shown = tail[-48:].hex(" ")
        return f"it sent {len(tail)} bytes that are no Theca frames (last: {shown})"


class Client:
    """An authenticated session with one pump.

    `serial_no`: which device's keys to use (default: $THECA_SERIAL, else the one last
    seen on `device`, else the only one with keys; see keys.resolve_serial). `timeout`/`retries` default to $THECA_TIMEOUT/$THECA_RETRIES
    or TIMEOUT_S/RETRIES.
    """

    def __init__(self, device: str | None, serial_no: str | None = None,
                 timeout: float | None = None, retries: int | None = None, quiet: bool = False):
        if not device:
            raise BadInput("no device: give --device DEV or set THECA_DEVICE")
        self.device = device
        if not os.path.exists(device):
            # a wrong path first: which keys to use is the next question, not this one
            raise LinkFailure(f"cannot open {device}: no such device or pseudo-terminal "
                              "(is the pump connected, the twin started, the path right?)")
        self.serial = K.resolve_serial(device, serial_no or os.environ.get("THECA_SERIAL"))
        self.timeout = timeout if timeout is not None else _env_float("THECA_TIMEOUT", TIMEOUT_S)
        self.retries = retries if retries is not None else int(_env_float("THECA_RETRIES", RETRIES))
        self.quiet = quiet
        self.info: dict | None = None
        self.info_reply: Reply | None = None
        self.seq = secrets.randbelow(0x10000)
        self._keys: dict[str, bytes] = {}
        self.link = Link(device)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Close the link."""
        self.link.close()

    # -- frames -------------------------------------------------------------------------

    def key(self, role: str) -> bytes:
        """The role's key for this device (checked once per session)."""
        k = self._keys.get(role)
        if k is None:
            k = self._keys[role] = K.load_key(self.serial, role)
        return k

    def sign(self, cmd_type: int, body: bytes, role: str,
             counter: int | None = None, challenge: int = 0) -> tuple[bytes, int, int]:
        """A signed command frame with a fresh cmd_id and the key's next counter
        (taken and stored before it is sent). Returns (frame, cmd_id, counter)."""
        key = self.key(role)
        if counter is None:
            counter = K.next_counter(self.serial, role)
        cmd_id = secrets.randbits(32) or 1
        self.seq = (self.seq + 1) & 0xFFFF
        frame = tp.build_command(cmd_type, body, role, key, cmd_id, counter, self.seq,
                                 host_time(), challenge)
        return frame, cmd_id, counter

    def transact(self, frame: bytes) -> Reply:
        """Send `frame` and wait for its authentic REPLY; on a timeout, or an unsigned
        `bad_frame` (the frame was damaged on the way), send the identical frame again (at
        most `retries` times). A reply whose MAC fails is ignored; an unsigned NACK
        (UNSIGNED_RESULTS) that every try got is returned with authentic False.
        LinkFailure when no reply comes."""
        cmd_id, role, ctr, _chal = _CMD_HEAD.unpack_from(frame, tp.HDR_SIZE)
        role_name = N.ROLES.get(role, "")
        key = self.key(role_name) if role_name else b""
        ctype = frame[1]
        forged = 0
        damaged = None  # an unsigned bad_frame: line noise or a collision, sent again
        for attempt in range(1 + self.retries):
            self.link.send(frame)
            deadline = time.monotonic() + self.timeout
            while True:
                left = deadline - time.monotonic()
                fr = self.link.recv(max(left, 0))
                if fr is None:
                    break
                rep = parse_reply(fr)
                if rep is None or rep.cmd_type != ctype:
                    continue  # telemetry, or an old reply nobody read
                if not (rep.cmd_id == cmd_id or (rep.cmd_id == 0 and rep.reason in _HEADLESS)):
                    continue
                rep.attempts = attempt + 1
                rep.authentic = tp.verify_reply(fr, key, role, ctr)
                if rep.authentic:
                    return rep
                if rep.reason == "bad_frame" and attempt < self.retries:
                    damaged = rep  # the frame was damaged on the way: try it again
                    break
                if rep.reason in N.UNSIGNED_RESULTS:
                    return rep  # a diagnosis only: nothing is believed or stored from it
                forged += 1  # not from the device (or not for this command): ignored
        if damaged is not None:
            return damaged  # (the last try got no answer: the damage is the diagnosis)
        name = tp.MESSAGES[ctype].name
        if forged:
            raise LinkFailure(
                f"{forged} reply(s) to {name} from {self.device} failed authentication (the "
                "reply MAC is not the device's: a relay or another device on the link); "
                "nothing in them was believed, and the command may or may not have been "
                "carried out: check `theca status` and the log")
        msg = (f"no reply from {self.device} to {name} after {1 + self.retries} attempts "
               f"of {self.timeout:g} s")
        diag = self.link.diagnosis()
        raise LinkFailure(msg + (f": {diag}" if diag else " (is the pump running and on this port?)"))

    # -- commands -----------------------------------------------------------------------

    def identify(self, role: str) -> dict:
        """GET_INFO: who the device is. Checks the serial against the keys used."""
        rep = self._send(T["GET_INFO"], b"", role)
        if rep.result:
            raise Refused(self.explain(rep, role), rep.reason, rep.detail)
        try:
            info = tp.decode_payload(tp.T_DEVICE_INFO, rep.body)
        except Exception:  # noqa: BLE001 (construct raises many kinds; all mean the same)
            raise Refused(f"{self.device} answered GET_INFO with {len(rep.body)} bytes that are "
                          "no DEVICE_INFO (firmware of another protocol version?)",
                          "schema") from None
        info["device_time"] = rep.time
        self.info_reply = rep  # kept whole: `log pull` writes it as a DEVICE_INFO frame
        if info["serial"] != self.serial:
            raise Refused(f"{self.device} says it is {info['serial']!r}, but the keys used are "
                          f"{self.serial}'s", "serial")
        self.info = info
        return info

    def schema_ok(self) -> bool:
        """True if the device's schema fingerprint is this host's."""
        return self.info is not None and self.info["schema"] == tp.SCHEMA

    def request(self, name: str, body: bytes = b"", role: str = "clinician",
                check: bool = True) -> Reply:
        """Send command `name` (GET_STATUS, PROGRAM...) signed with `role`'s key.

        The device is identified first (once per session). On a schema mismatch only
        GET_STATUS/GET_INFO are sent. With `check`, a NACK raises Refused in words.
        """
        ctype = T[name]
        if self.info is None and ctype != T["GET_INFO"]:
            self.identify(role)
        if self.info is not None and not self.schema_ok():
            msg = (f"schema mismatch: {self.serial} speaks schema 0x{self.info['schema']:08x}, "
                   f"these host tools 0x{tp.SCHEMA:08x}; update the host tools or the firmware")
            if ctype not in READ_ONLY:
                raise Refused(msg + f"; {name} was not sent", "schema", self.info["schema"])
            self.warn(msg + " (shown for diagnosis only)")
        rep = self._send(ctype, body, role)
        if check and rep.result:
            raise Refused(self.explain(rep, role), rep.reason, rep.detail)
        return rep

    def challenge(self, role: str) -> int:
        """A fresh CHALLENGE from the device for `role` (valid FRESH_S from now)."""
        rep = self._send(T["CHALLENGE"], b"", role)
        if rep.result:
            raise Refused(self.explain(rep, role), rep.reason, rep.detail)
        return _CHALLENGE.unpack_from(rep.body)[0]

    def _send(self, ctype: int, body: bytes, role: str) -> Reply:
        fresh = ctype in _CHANGES
        chal = self.challenge(role) if fresh else 0
        frame, _cmd_id, counter = self.sign(ctype, body, role, challenge=chal)
        rep = self.transact(frame)
        if rep.authentic and rep.reason == "replay" and rep.attempts == 1 \
                and rep.detail >= counter:
            # The device has seen a higher counter for this key than this host had
            # stored (another host, a restored $THECA_HOME). A replay NACK to a first
            # attempt means it did nothing, so move past it and send once more. Only
            # an authenticated NACK says so: a forged hint would burn every counter.
            K.raise_counter(self.serial, role, rep.detail)
            self.warn(f"note: the {role} counter here ({counter}) was behind the device's "
                      f"({rep.detail}); moved past it")
            chal = self.challenge(role) if fresh else 0
            frame, _cmd_id, counter = self.sign(ctype, body, role, challenge=chal)
            rep = self.transact(frame)
        if fresh and rep.authentic and rep.reason == "stale":
            # not executed: the challenge expired before the command arrived (a slow
            # link, retries, a twin at --speed). A new challenge and a new command, once.
            self.warn(f"note: {self.device} found the {tp.MESSAGES[ctype].name} stale "
                      f"({rep.detail} s after its challenge); sending it again with a new one")
            chal = self.challenge(role)
            frame, _cmd_id, counter = self.sign(ctype, body, role, challenge=chal)
            rep = self.transact(frame)
        if rep.attempts > 1 and rep.result == 3:
            # A retry answered `replay`: the first attempt may have run after all.
            raise Refused(f"replay: {self.device} did not answer in time and then refused "
                          f"the retry as a replay; the {tp.MESSAGES[ctype].name} may or may "
                          "not have been carried out: check `theca status` and the log",
                          "replay", rep.detail)
        return rep

    def warn(self, msg: str) -> None:
        """A note on stderr (not in --quiet)."""
        if not self.quiet:
            print(msg, file=sys.stderr)

    def explain(self, rep: Reply, role: str) -> str:
        """A NACK in words: reason, then what it means for this command. A NACK the
        device could not sign says so: it may come from anything on the link."""
        text = explain(rep.cmd_type, rep.result, rep.detail, role,
                       K.key_path(self.serial, role), self.device)
        if not rep.authentic:
            text = ("unauthenticated NACK (the device cannot sign this kind; shown as a "
                    "diagnosis, nothing on this host was changed by it): " + text)
        return text


def explain(cmd_type: int, result: int, detail: int, role: str = "", key_file=None,
            device: str = "the device") -> str:
    """The words for NACK `result` with `detail` in reply to `cmd_type`; what the detail
    means is the protocol definition's (Message.detail_kind)."""
    m = tp.MESSAGES.get(cmd_type)
    name = m.name if m else f"command 0x{cmd_type:02x}"
    verb = _VERBS.get(name, name)
    reason = N.name_of(N.RESULTS, result, "result")
    kind = m.detail_kind(reason) if m else N.RESULT_DETAILS.get(reason, "none")
    if reason == "bad_frame":
        return (f"bad frame: {device} could not read the {name} command ({detail} bytes "
                "received; a body of the wrong length)")
    if reason == "bad_mac":
        kf = f" in {key_file}" if key_file else ""
        return (f"bad MAC: {device} did not accept the {role} key{kf}: it is not this "
                "device's key (another device, or the device was flashed with new keys)")
    if reason == "replay":
        return (f"replay: {device} has already executed a command with {role} counter "
                f"{detail}; a command must carry a higher counter")
    if reason == "forbidden":
        who = N.name_of(N.ROLES, detail, "role") if detail else role
        return f"forbidden for this role: the {who} key may not {verb}"
    if reason == "invalid":
        return "invalid value: " + _invalid_words(name, kind, detail)
    if reason == "limit":
        return "limit: " + _limit_words(name, kind, detail)
    if reason == "busy":
        r = N.name_of(N.DENY_REASONS, detail, "reason") if kind == "deny" else ""
        if r == "in_progress" and name in _BUSY_WITH:
            return f"busy: {_BUSY_WITH[name]}"
        return f"busy: {DENY_WORDS[r]}" if r in DENY_WORDS else f"busy: {device} cannot {verb} now"
    if reason == "schema":
        what = "prescription format" if kind == "rx_version" else "frame"
        mine = M.RX_VERSION if kind == "rx_version" else tp.FRAME_VERSION
        return f"schema mismatch: {device} speaks {what} version {detail}, this host {mine}"
    if reason == "fault":
        return (f"fault: {device} could not save the {name} (its flash failed, or its memory "
                "ran out), so it did nothing: it stopped in its safe state (internal_fault) "
                "and takes no change until it is restarted (`theca maintenance`, or a reset)")
    if reason == "unknown_command":
        return f"unknown command: the firmware of {device} does not know {name} (0x{cmd_type:02x})"
    if reason == "backoff":
        return (f"back-off: {device} refused the {role} key for {detail} more seconds "
                "(firmware older than the reply MAC: update it)")
    if reason == "stale":
        age = f"{detail} s after its challenge" if detail else "with a challenge it did not issue"
        return (f"stale: {device} received the {name} {age}; a command that changes the "
                f"pump is valid only within {N.FRESH_S} s of a challenge the device issued "
                "(it was held back on the way, or the device restarted)")
    return f"refused: NACK {reason} (detail {detail})"


def _field(detail: int) -> str:
    if 1 <= detail <= len(FIELDS):
        f = FIELDS[detail - 1]
        return f"{f} ({_FIELD_WORDS[f]})"
    return f"field #{detail}"


# words for an `invalid` field that say more for a given command
_FIELD_WORDS_BY_COMMAND = {
    ("PROGRAM", "drug"): ("drug: the prescription is for another drug than the one in the "
                          "reservoir (refill with that drug first: theca refill ... --drug NAME)"),
    ("PROGRAM", "concentration"): ("concentration: the prescription's concentration differs "
                                   "from the drug in the reservoir (record a refill with the "
                                   "new concentration first)"),
}


def _invalid_words(name: str, kind: str, detail: int) -> str:
    if kind == "mode":
        mode = N.name_of(N.MODES, detail, "mode")
        need = {"SUSPEND": "running or halted", "RESUME": "suspended"}.get(name, "running")
        done = {"SUSPEND": "suspended", "RESUME": "resumed"}.get(name, "changed so")
        return f"the pump is {mode}; only a {need} pump can be {done}"
    if kind == "none":
        return ("no prescription is stored on the device" if name == "READ_RX"
                else f"the {name} command (no detail)")
    f = FIELDS[detail - 1] if 1 <= detail <= len(FIELDS) else ""
    return _FIELD_WORDS_BY_COMMAND.get((name, f)) or _field(detail)


def _limit_words(name: str, kind: str, detail: int) -> str:
    if kind != "deny":
        return f"refused (detail {detail})"
    r = N.name_of(N.DENY_REASONS, detail, "reason")
    words = DENY_WORDS.get(r, "see the event log")
    if name in ("PATIENT_BOLUS", "CLINICIAN_BOLUS"):
        return f"bolus denied: {r} ({words})"
    what = {"PROGRAM": "prescription refused", "SET_TIME": "clock change refused",
            "RESUME": "resume refused", "REFILL": "refill refused",
            "PRIME": "priming refused"}.get(name, "refused")
    return f"{r}: {what} ({words})"


def _env_float(name: str, default: float) -> float:
    v = os.environ.get(name)
    try:
        return float(v) if v else default
    except ValueError:
        return default
