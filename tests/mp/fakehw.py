# A fake board for firmware unit tests: records what the firmware asks of the hardware.
import hashlib
import struct

import msgdefs as md
from codec import FrameWriter

CLIN_KEY = b"\x11" * 32
PAT_KEY = b"\x22" * 32


class Clock:
    def __init__(self, t):
        self.t = t

    def now(self):
        return self.t

    def set(self, t):
        self.t = t


class Motor:
    def __init__(self):
        self.strokes = 0
        self.fail = 0  # 0 ok, 1 stall, 2 occlusion
        self.offs = 0

    def stroke(self):
        if self.fail:
            return self.fail
        self.strokes += 1
        return 0

    def off(self):
        self.offs += 1


class Sensor:
    def __init__(self):
        self.blocked_ = False

    def blocked(self):
        return self.blocked_


class Battery:
    def __init__(self):
        self.days = 2000

    def days_left(self, now):
        return self.days


class Telemetry:
    """Keeps (type, payload bytes) of every frame emitted."""

    def __init__(self):
        self.frames = []
        self.count = 0
        self.keep = True

    def emit(self, mv):
        self.count += 1
        if self.keep:
            self.frames.append((mv[1], bytes(mv[md.HDR_SIZE : len(mv) - md.CRC_SIZE])))

    def events(self, code=None):
        out = []
        for typ, p in self.frames:
            if typ == md.T_EVENT:
                ev = struct.unpack(md.EVENT_FMT, p)
                if code is None or ev[2] == code:
                    out.append(ev)
        return out


class HW:
    def __init__(self, t0=0, reservoir_nl=20_000_000, stroke_nl=250):
        self.info = {
            "serial": b"TEST00000001",
            "board": "fake",
            "stroke_nl": stroke_nl,
            "capacity_nl": 20_000_000,
            "catheter_nl": 150_000,
            "max_rate_nl_h": 1_000_000,
            "min_rate_nl_day": md.DEFAULT_MIN_RATE_NL_DAY,
            "low_reservoir_nl": 2_000_000,
            "reservoir_nl": reservoir_nl,
        }
        self.clock = Clock(t0)
        self.motor = Motor()
        self.occlusion = Sensor()
        self.battery = Battery()
        self.telemetry = Telemetry()
        self.console = None  # (no traceback goes anywhere: the tests read the fault)
        self.keys = {md.ROLE_CLINICIAN: CLIN_KEY, md.ROLE_PATIENT: PAT_KEY}
        self.store = None
        self.wdt = None


def _hmac(key, msg):
    ipad = bytes(b ^ 0x36 for b in key) + b"\x36" * (64 - len(key))
    opad = bytes(b ^ 0x5C for b in key) + b"\x5c" * (64 - len(key))
    return hashlib.sha256(opad + hashlib.sha256(ipad + msg).digest()).digest()


#: Host.cmd's default challenge: the pump's own, issued when the frame is delivered
#: (install_fresh), as a host fetches one just before it sends a state-changing command.
AUTO = 0xFFFFFFFF


def install_fresh():
    """Make Pump.command deliver a frame carrying the AUTO challenge as a host session
    would: the pump issues the role's challenge at `now` (Auth.issue, what the CHALLENGE
    command runs) and the frame is signed with it. A frame whose MAC is not the role's
    key goes through untouched (its MAC still fails)."""
    import pump as P
    from codec import verify_mac

    real = P.Pump.command
    if getattr(P, "_fresh_installed", False):
        return
    P._fresh_installed = True

    def command(self, frame, now):
        n = len(frame)
        if n >= md.HDR_SIZE + md.CMD_HEAD_SIZE + md.MAC_SIZE + md.CRC_SIZE and \
                md.CMD_FIRST <= frame[1] <= md.CMD_LAST and \
                not md.CMD_READS[frame[1] - md.CMD_FIRST]:
            cmd_id, role, ctr, chal = struct.unpack_from(md.CMD_HEAD_FMT, frame, md.HDR_SIZE)
            key = self.hw.keys.get(role)
            if chal == AUTO and key is not None and verify_mac(key, frame, n):
                c = self.auth.issue(role, now)
                b = bytearray(frame)
                struct.pack_into(md.CMD_HEAD_FMT, b, md.HDR_SIZE, cmd_id, role, ctr, c)
                end = n - md.CRC_SIZE - md.MAC_SIZE
                b[end : end + md.MAC_SIZE] = _hmac(key, bytes(b[:end]))[:16]
                fw = FrameWriter(n)
                fw.buf[:] = b
                frame = bytes(fw.finish(frame[1], struct.unpack_from(md.HDR_FMT, b, 0)[2],
                                        struct.unpack_from(md.HDR_FMT, b, 0)[3], n - md.HDR_SIZE
                                        - md.CRC_SIZE))
        return real(self, frame, now)

    P.Pump.command = command


class Host:
    """Builds authenticated commands the way the host tools do (independent HMAC)."""

    def __init__(self):
        install_fresh()
        self.ctr = {md.ROLE_CLINICIAN: 0, md.ROLE_PATIENT: 0}
        self.cmd_id = 100
        self.fw = FrameWriter(md.MAX_FRAME)

    def cmd(self, typ, body=b"", role=md.ROLE_CLINICIAN, key=None, t=0, cmd_id=None, ctr=None,
            challenge=AUTO):
        install_fresh()
        if ctr is None:
            self.ctr[role] += 1
            ctr = self.ctr[role]
        if cmd_id is None:
            self.cmd_id += 1
            cmd_id = self.cmd_id
        if key is None:
            key = CLIN_KEY if role == md.ROLE_CLINICIAN else PAT_KEY
        head = struct.pack(md.CMD_HEAD_FMT, cmd_id, role, ctr, challenge) + bytes(body)
        hdr = struct.pack(md.HDR_FMT, md.VERSION, typ, 0, t)
        mac = _hmac(key, hdr + head)[:16]
        payload = head + mac
        buf = self.fw.buf
        buf[md.HDR_SIZE : md.HDR_SIZE + len(payload)] = payload
        return bytes(self.fw.finish(typ, 0, t, len(payload)))


def reply(frame):
    """(cmd_id, cmd_type, result, detail, body) of a REPLY frame."""
    cmd_id, typ, res, detail = struct.unpack_from(md.REPLY_HEAD_FMT, frame, md.HDR_SIZE)
    body = bytes(frame[md.HDR_SIZE + md.REPLY_HEAD_SIZE :
                       len(frame) - md.CRC_SIZE - md.MAC_SIZE])
    return cmd_id, typ, res, detail, body


def reply_mac_ok(frame, role, ctr, key=None):
    """True if a REPLY's MAC is right for the command of `role` with counter `ctr`."""
    if key is None:
        key = CLIN_KEY if role == md.ROLE_CLINICIAN else PAT_KEY
    end = len(frame) - md.CRC_SIZE - md.MAC_SIZE
    mac = _hmac(key, bytes(frame[:end]) + struct.pack(md.REPLY_BINDING_FMT, role, ctr))[:16]
    return mac == bytes(frame[end : end + md.MAC_SIZE])


def rx_blob(steps=((0, 1_500_000),), conc=10_000_000, drug=1, timed=(), pb=None, flags=0,
            version=md.RX_VERSION, low_ul=0, zone=(), mix=()):
    """An Rx blob: steps (start_min, ng/day), timed (start_min, dur_s, dose_ng),
    pb (dose_ng, dur_s, lockout_s, max_per_day), low_ul (the low-reservoir threshold),
    zone (utc, offset_s) offset changes (version 3 on), mix the admixture's other drugs
    ((drug, conc), ...; version 4 on)."""
    pbd, pbdur, pblock, pbmax = pb if pb else (0, 0, 0, 0)
    b = struct.pack(md.RX_HEAD_FMT, version, drug, len(steps), len(timed), flags, pbmax, pbdur,
                    conc, pbd, pblock, low_ul)
    for s in steps:
        b += struct.pack(md.RX_STEP_FMT, s[0], s[1])
    for s in timed:
        b += struct.pack(md.RX_TIMED_FMT, s[0], s[1], s[2])
    if version >= 3:
        b += bytes((len(zone),))
        for z in zone:
            b += struct.pack(md.RX_ZONE_FMT, z[0], z[1])
    if version >= 4:
        b += mix_bytes(mix)
    return b


def mix_bytes(mix):
    """An admixture's other drugs ((drug, conc ng/mL), ...) as MIX_BYTES."""
    out = b"".join(struct.pack(md.MIX_FMT, d, c) for d, c in mix)
    return out + bytes(md.MIX_BYTES - len(out))


# installed at import: `p.command(Host().cmd(...))` looks up p.command before Host() runs
install_fresh()


def heap_blocks_taken(fn, n):
    """Whether n calls of fn() took any heap block, even one given back before the call
    returned. heap_lock() cannot see those: a function whose frame (locals and stack) is
    over 11 words gets it from the heap on every call, and falls back to the C stack,
    silently, when the heap is locked. gc.threshold counts every block taken, so a
    collection (which frees the garbage left here) means fn took some."""
    import gc

    gc.collect()
    gc.threshold(1024)
    junk = bytearray(2048)
    junk = None  # noqa: F841  (garbage only a collection frees)
    before = gc.mem_alloc()
    try:
        for _ in range(n):
            fn()
        return gc.mem_alloc() < before
    finally:
        gc.threshold(-1)
