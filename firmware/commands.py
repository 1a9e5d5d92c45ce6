# Commands from the link. `command()` authenticates a frame (auth.py) and then looks its
# type up in HANDLERS: type -> (body layout, handler). The body's length is checked
# against the layout before anything runs (a SUSPEND with junk after it is not a
# SUSPEND); the handler gets the body's values and returns (result, detail, reply body
# length), the reply body already packed after the reply head.
import hashlib
import struct

import msgdefs as md
from codec import verify_mac
from micropython import const
from eventlog import REC_SIZE
from gate import OK

LOG_PAGE_MAX = md.LOG_PAGE_MAX  # records per LOG_READ reply
_CMD_AT = md.HDR_SIZE  # the command head in the frame
_BODY_AT = md.HDR_SIZE + md.CMD_HEAD_SIZE  # the command body in the frame
_REPLY_AT = md.HDR_SIZE + md.REPLY_HEAD_SIZE  # the reply body in the reply frame
_MIN_CMD = md.HDR_SIZE + md.CMD_HEAD_SIZE + md.MAC_SIZE + md.CRC_SIZE


def _get_status(p, now, role, buf, off, v):
    p.sample_heap(now)  # asked for: the heap as it is now
    return 0, 0, p.status_into(buf, off, now)


def _get_info(p, now, role, buf, off, v):
    return 0, 0, p.info_into(buf, off)


def _read_rx(p, now, role, buf, off, v):
    if p.rx is None:
        return md.NACK_INVALID, 0, 0
    blob = p.rx.blob
    n = md.RX_SHA256_SIZE
    buf[off : off + n] = hashlib.sha256(blob).digest()
    buf[off + n : off + n + len(blob)] = blob
    return 0, 0, n + len(blob)


def _patient_bolus(p, now, role, buf, off, v):
    reason = p.patient_bolus(now, role)
    return (0 if reason == OK else md.NACK_LIMIT), reason, 0


def _ack_alarm(p, now, role, buf, off, v):
    return 0, p.ack_alarm(now, v[0], role), 0


def _log_read(p, now, role, buf, off, v):
    frm, mx = v
    if mx > LOG_PAGE_MAX or mx == 0:
        mx = LOG_PAGE_MAX
    ev = p.events
    first, cnt = ev.read_into(frm, mx, buf, off + md.LOG_READ_REPLY_HEAD_SIZE)
    struct.pack_into(md.LOG_READ_REPLY_HEAD_FMT, buf, off, ev.next_seq, first, cnt)
    return 0, 0, md.LOG_READ_REPLY_HEAD_SIZE + cnt * REC_SIZE


def _challenge(p, now, role, buf, off, v):
    struct.pack_into(md.CHALLENGE_REPLY_FMT, buf, off, p.auth.issue(role, now), md.FRESH_S)
    return 0, 0, md.CHALLENGE_REPLY_SIZE


def _maintenance(p, now, role, buf, off, v):
    p.maintenance(now, role)
    return 0, 0, 0


_CHANGE = const(0)  # the handler names a Pump method (now, who, *body) -> (result, detail)
_ANSWER = const(1)  # the handler packs a reply body: (pump, now, role, buf, off, body) ->
#                     (result, detail, body length)
_ROOM = const(2)  # like _CHANGE, by a function of a module of its own (module, function):
#                   (pump, now, who, *body) -> (result, detail); powerup.py imports the
#                   rooms after the pump's buffers are made

# type -> (body layout: None for a variable body handed over as bytes, "" for none, else
# the struct format; its size; the kind of handler; the handler)
HANDLERS = {
    md.T_GET_STATUS: ("", 0, _ANSWER, _get_status),
    md.T_PROGRAM: (None, -1, _ROOM, ("clinic", "program")),
    md.T_READ_RX: ("", 0, _ANSWER, _read_rx),
    md.T_REFILL: (md.REFILL_FMT, md.REFILL_SIZE, _ROOM, ("clinic", "refill")),
    md.T_PATIENT_BOLUS: ("", 0, _ANSWER, _patient_bolus),
    md.T_CLINICIAN_BOLUS: (md.CLINICIAN_BOLUS_FMT, md.CLINICIAN_BOLUS_SIZE, _CHANGE,
                           "clinician_bolus"),
    md.T_SUSPEND: (md.SUSPEND_FMT, md.SUSPEND_SIZE, _CHANGE, "suspend"),
    md.T_RESUME: ("", 0, _CHANGE, "resume"),
    md.T_ACK_ALARM: (md.ACK_ALARM_FMT, md.ACK_ALARM_SIZE, _ANSWER, _ack_alarm),
    md.T_SET_TIME: (md.SET_TIME_FMT, md.SET_TIME_SIZE, _ROOM, ("clinic", "set_time")),
    md.T_LOG_READ: (md.LOG_READ_FMT, md.LOG_READ_SIZE, _ANSWER, _log_read),
    md.T_GET_INFO: ("", 0, _ANSWER, _get_info),
    md.T_MAINTENANCE: ("", 0, _ANSWER, _maintenance),
    md.T_CATHETER: (md.CATHETER_FMT, md.CATHETER_SIZE, _ROOM, ("clinic", "catheter")),
    md.T_PRIME: ("", 0, _ROOM, ("clinic", "prime")),
    md.T_CHALLENGE: ("", 0, _ANSWER, _challenge),
}


def _reads(typ):
    return md.CMD_FIRST <= typ <= md.CMD_LAST and md.CMD_READS[typ - md.CMD_FIRST]


def command(p, frame, now):
    """Handle one CRC-checked frame from the link; returns a REPLY frame or None.

    MAC first: a frame whose MAC fails gets an unsigned `bad_mac` and changes nothing a
    signed frame meets. A read (CMD_READS) writes nothing to flash. A state-changing
    command must carry its role's challenge (FRESH_S) and is made durable once: its
    events are held back, the snapshot that carries them is saved, then they go to the
    log, so a power cut leaves the command done and logged, or neither."""
    n = len(frame)
    ver, typ, _seq, _t = struct.unpack_from(md.HDR_FMT, frame, 0)
    if typ < md.CMD_FIRST or typ >= md.T_REPLY:
        return None  # not a command (another device's telemetry echoed back)
    p.reply_key = None  # NACKs before the MAC is checked cannot be signed
    if ver != md.VERSION:
        return p.reply(now, 0, typ, md.NACK_SCHEMA, md.VERSION, 0)
    if n < _MIN_CMD:
        return p.reply(now, 0, typ, md.NACK_BAD_FRAME, n, 0)
    cmd_id, role, ctr, chal = struct.unpack_from(md.CMD_HEAD_FMT, frame, _CMD_AT)
    a = p.auth
    key = a.key(role)
    if key is None or not verify_mac(key, frame, n):
        a.bad_mac(p, role, now)
        return p.reply(now, cmd_id, typ, md.NACK_BAD_MAC, 0, 0)
    # from here every reply is signed, bound to this command's role and counter
    p.reply_key = key
    struct.pack_into(md.REPLY_BINDING_FMT, p.reply_bind, 0, role, ctr)
    mac_at = n - md.CRC_SIZE - md.MAC_SIZE
    reads = _reads(typ)
    if a.is_retry(role, cmd_id, ctr):
        rep = _retry(p, typ, frame, role, cmd_id, now, reads)
        if rep is not None:
            return rep
    if ctr <= a.last_ctr[role]:
        return p.reply(now, cmd_id, typ, md.NACK_REPLAY, a.last_ctr[role], 0)
    a.last_ctr[role] = ctr
    if typ <= md.CMD_LAST and not md.CMD_ROLES[typ - md.CMD_FIRST] & (1 << role):
        rep = p.reply(now, cmd_id, typ, md.NACK_FORBIDDEN, role, 0)
    elif reads or typ > md.CMD_LAST:
        rep = execute(p, typ, frame[_BODY_AT:mac_at], role, cmd_id, now)
    else:
        size = HANDLERS[typ][1] if typ in HANDLERS else -1
        stale = a.stale(role, chal, now)
        if size >= 0 and mac_at - _BODY_AT != size:
            # PROTOCOL.md 4: a body of the wrong length is bad_frame, never executed
            rep = p.reply(now, cmd_id, typ, md.NACK_BAD_FRAME, mac_at - _BODY_AT, 0)
        elif stale < 0:
            return _change(p, typ, frame[_BODY_AT:mac_at], role, cmd_id, now)
        else:
            rep = p.reply(now, cmd_id, typ, md.NACK_STALE, stale, 0)
    _, _, res, detail = struct.unpack_from(md.REPLY_HEAD_FMT, rep, md.HDR_SIZE)
    a.executed(role, cmd_id, typ, res, detail, bytes(rep))
    return memoryview(a.cached[role])


def _retry(p, typ, frame, role, cmd_id, now, reads):
    # A retry of the command already executed: same answer, no second bolus (None: not
    # answerable as a retry, judge it as a new command).
    a = p.auth
    cached = a.cached[role]
    if cached is not None:
        return memoryview(cached)
    lr = a.last_result[role]
    if lr is not None and lr[0] == typ and not reads:
        # rebooted since: the answer (never a body for a change) was saved
        return p.reply(now, cmd_id, typ, lr[1], lr[2], 0)
    if reads:
        return execute(p, typ, frame[_BODY_AT : len(frame) - md.CRC_SIZE - md.MAC_SIZE],
                       role, cmd_id, now)
    return None


def _change(p, typ, body, role, cmd_id, now):
    # A fresh, allowed, state-changing command: executed and made durable once.
    a = p.auth
    p.tick(now)  # the therapy's own events up to now first: they are not the command's
    p.dirty = False
    p.hold_events()
    rep = None
    try:
        rep = execute(p, typ, body, role, cmd_id, now, ticked=True)
        _, _, res, detail = struct.unpack_from(md.REPLY_HEAD_FMT, rep, md.HDR_SIZE)
        a.executed(role, cmd_id, typ, res, detail, None)  # (its answer is in the snapshot)
        if p.store is not None and p.dirty:
            # durable before the host hears it: an acknowledged change survives a cut,
            # and its events are in the snapshot until they are in the log
            p.save(now)
    finally:
        rep = p.release_events(now, rep)
    a.cached[role] = bytes(rep)  # a retry gets these very bytes
    return memoryview(a.cached[role])


def execute(p, typ, body, role, cmd_id, now, ticked=False):
    """Run an authenticated command of type `typ`; returns the REPLY frame. `ticked`:
    the caller has brought therapy up to `now` already."""
    h = HANDLERS.get(typ)
    if h is None:
        return p.reply(now, cmd_id, typ, md.NACK_UNKNOWN_COMMAND, 0, 0)
    layout, size, kind, handler = h
    nb = len(body)
    if size >= 0 and nb != size:
        # PROTOCOL.md 4: a body of the wrong length is bad_frame, never executed
        return p.reply(now, cmd_id, typ, md.NACK_BAD_FRAME, nb, 0)
    # Bring therapy up to now first, so the command sees (and the reply reports) the
    # pump as it is, not as the therapy task last left it.
    if not ticked:
        p.tick(now)
    if not _reads(typ):
        p.changed = True
    if layout is None:
        v = (body,)
    elif layout:
        v = struct.unpack_from(layout, body, 0)
    else:
        v = ()
    if kind == _CHANGE:
        res, detail = getattr(p, handler)(now, role, *v)
        blen = 0
    elif kind == _ROOM:
        res, detail = getattr(__import__(handler[0]), handler[1])(p, now, role, *v)
        blen = 0
    else:
        res, detail, blen = handler(p, now, role, p.rtx.buf, _REPLY_AT, v)
    return p.reply(now, cmd_id, typ, res, detail, 0 if res else blen)
