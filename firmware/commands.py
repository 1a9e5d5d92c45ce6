# Commands from the link. `command()` authenticates a frame (auth.py), checks its body
# against the layout the protocol definition gives its type (msgdefs CMD_BODY_FMT and
# CMD_BODY_SIZE: a SUSPEND with junk after it is not a SUSPEND) and runs the handler
# HANDLERS names for the type. Every handler has one signature,
#     handler(pump, now, role, body values, reply buffer, offset) -> (result, detail, n)
# with the reply body (n bytes) packed at the offset. Imported at the end of the boot
# (powerup.py): its code and its rooms' (clinic.py, dosing.py) are not in the boot's peak.
import hashlib
import struct

import clinic
import dosing
import msgdefs as md
from codec import verify_mac
from eventlog import REC_SIZE
from gate import OK

_BODY_AT = md.HDR_SIZE + md.CMD_HEAD_SIZE  # the command body in the frame
_REPLY_AT = md.HDR_SIZE + md.REPLY_HEAD_SIZE  # the reply body in the reply frame
_MIN_CMD = md.HDR_SIZE + md.CMD_HEAD_SIZE + md.MAC_SIZE + md.CRC_SIZE


def _get_status(p, now, role, v, buf, off):
    p.telemetry.sample_heap(now)  # asked for: the heap as it is now
    return 0, 0, p.telemetry.status_into(p, buf, off, now)


def _get_info(p, now, role, v, buf, off):
    return 0, 0, p.telemetry.info_into(p, buf, off)


def _read_rx(p, now, role, v, buf, off):
    rx = p.plan.rx
    if rx is None:
        return md.NACK_INVALID, 0, 0
    blob = rx.blob
    n = md.RX_SHA256_SIZE
    buf[off : off + n] = hashlib.sha256(blob).digest()
    buf[off + n : off + n + len(blob)] = blob
    return 0, 0, n + len(blob)


def _patient_bolus(p, now, role, v, buf, off):
    reason = dosing.patient_bolus(p, now, role)
    return (0 if reason == OK else md.NACK_LIMIT), reason, 0


def _clinician_bolus(p, now, role, v, buf, off):
    return dosing.clinician_bolus(p, now, role, v[0], v[1]) + (0,)


def _suspend(p, now, role, v, buf, off):
    return p.suspend(now, role, v[0]) + (0,)


def _resume(p, now, role, v, buf, off):
    return p.resume(now, role) + (0,)


def _ack_alarm(p, now, role, v, buf, off):
    return 0, p.alarms.acknowledge(now, v[0], role, p.delivery.reservoir_nl, p.wall_delta), 0


def _log_read(p, now, role, v, buf, off):
    frm, mx = v
    if mx > md.LOG_PAGE_MAX or mx == 0:
        mx = md.LOG_PAGE_MAX
    ev = p.events
    first, cnt = ev.read_into(frm, mx, buf, off + md.LOG_READ_REPLY_HEAD_SIZE)
    struct.pack_into(md.LOG_READ_REPLY_HEAD_FMT, buf, off, ev.next_seq, first, cnt)
    return 0, 0, md.LOG_READ_REPLY_HEAD_SIZE + cnt * REC_SIZE


def _challenge(p, now, role, v, buf, off):
    struct.pack_into(md.CHALLENGE_REPLY_FMT, buf, off, p.auth.issue(role, now), md.FRESH_S)
    return 0, 0, md.CHALLENGE_REPLY_SIZE


def _maintenance(p, now, role, v, buf, off):
    p.maintenance(now, role)
    return 0, 0, 0


def _mri_prepare(p, now, role, v, buf, off):
    import mri  # (only a pump that meets an MRI scanner loads it)

    return mri.prepare(p, now, role) + (0,)


def _mri_check(p, now, role, v, buf, off):
    import mri

    return mri.check(p, now, role) + (0,)


def _room(fn):
    # a change of the plan (clinic.py): (pump, now, who, *body) -> (result, detail)
    return lambda p, now, role, v, buf, off: fn(p, now, role, *v) + (0,)


# type -> handler; the body's layout is the protocol definition's (CMD_BODY_FMT)
HANDLERS = {
    md.T_GET_STATUS: _get_status,
    md.T_PROGRAM: _room(clinic.program),
    md.T_READ_RX: _read_rx,
    md.T_REFILL: _room(clinic.refill),
    md.T_PATIENT_BOLUS: _patient_bolus,
    md.T_CLINICIAN_BOLUS: _clinician_bolus,
    md.T_SUSPEND: _suspend,
    md.T_RESUME: _resume,
    md.T_ACK_ALARM: _ack_alarm,
    md.T_SET_TIME: _room(clinic.set_time),
    md.T_LOG_READ: _log_read,
    md.T_GET_INFO: _get_info,
    md.T_MAINTENANCE: _maintenance,
    md.T_CATHETER: _room(clinic.catheter),
    md.T_PRIME: _room(clinic.prime),
    md.T_CHALLENGE: _challenge,
    md.T_MRI_PREPARE: _mri_prepare,
    md.T_MRI_CHECK: _mri_check,
}


def _reads(typ):
    return md.CMD_FIRST <= typ <= md.CMD_LAST and md.CMD_READS[typ - md.CMD_FIRST]


def _body(typ, body):
    # The body's values by the protocol's layout for the type, or None if its length is
    # not the layout's (PROTOCOL.md 4: a body of the wrong length is bad_frame, never
    # executed). A variable body (PROGRAM's Rx blob) is handed over as bytes.
    i = typ - md.CMD_FIRST
    fmt = md.CMD_BODY_FMT[i]
    if fmt is None:
        return (body,)
    if len(body) != md.CMD_BODY_SIZE[i]:
        return None
    return struct.unpack_from(fmt, body, 0) if fmt else ()


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
    tm = p.telemetry
    tm.unsigned()  # NACKs before the MAC is checked cannot be signed
    if ver != md.VERSION:
        return p.reply(now, 0, typ, md.NACK_SCHEMA, md.VERSION, 0)
    if n < _MIN_CMD:
        return p.reply(now, 0, typ, md.NACK_BAD_FRAME, n, 0)
    cmd_id, role, ctr, chal = struct.unpack_from(md.CMD_HEAD_FMT, frame, md.HDR_SIZE)
    a = p.auth
    key = a.key(role)
    if key is None or not verify_mac(key, frame, n):
        a.bad_mac(p, role, now)
        return p.reply(now, cmd_id, typ, md.NACK_BAD_MAC, 0, 0)
    # from here every reply is signed, bound to this command's role and counter
    tm.sign_with(key, role, ctr)
    body = frame[_BODY_AT : n - md.CRC_SIZE - md.MAC_SIZE]
    reads = _reads(typ)
    if a.is_retry(role, cmd_id, ctr):
        rep = _retry(p, typ, body, role, cmd_id, now, reads)
        if rep is not None:
            return rep
    if ctr <= a.last_ctr[role]:
        return p.reply(now, cmd_id, typ, md.NACK_REPLAY, a.last_ctr[role], 0)
    a.accept(role, ctr)
    if typ <= md.CMD_LAST and not md.CMD_ROLES[typ - md.CMD_FIRST] & (1 << role):
        rep = p.reply(now, cmd_id, typ, md.NACK_FORBIDDEN, role, 0)
    elif reads or typ > md.CMD_LAST:
        rep = execute(p, typ, body, role, cmd_id, now)
    else:
        v = _body(typ, body)
        stale = a.stale(role, chal, now)
        if v is None:
            rep = p.reply(now, cmd_id, typ, md.NACK_BAD_FRAME, len(body), 0)
        elif stale < 0:
            return _change(p, typ, v, role, cmd_id, now)
        else:
            rep = p.reply(now, cmd_id, typ, md.NACK_STALE, stale, 0)
    _, _, res, detail = struct.unpack_from(md.REPLY_HEAD_FMT, rep, md.HDR_SIZE)
    a.executed(role, cmd_id, typ, res, detail, bytes(rep))
    return memoryview(a.cached[role])


def _retry(p, typ, body, role, cmd_id, now, reads):
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
        return execute(p, typ, body, role, cmd_id, now)
    return None


def _change(p, typ, v, role, cmd_id, now):
    # A fresh, allowed, state-changing command: executed and made durable once.
    a = p.auth
    try:
        p.tick(now)  # the therapy's own events up to now first: they are not the command's
    except (OSError, MemoryError):
        p.save_failed(now)  # (its stroke journal: the flash failed before the command)
    p.command_begins()
    tm = p.telemetry
    tm.hold(p.events)
    rep = None
    try:
        try:
            if p.unsaved:  # a save failed since the boot: no change until a restart
                rep = p.reply(now, cmd_id, typ, md.NACK_FAULT, 0, 0)
            else:
                rep = _run(p, typ, v, role, cmd_id, now)
            _, _, res, detail = struct.unpack_from(md.REPLY_HEAD_FMT, rep, md.HDR_SIZE)
            a.executed(role, cmd_id, typ, res, detail, None)  # (its answer is in the snapshot)
            if p.store is not None and p.dirty and not p.unsaved:
                # durable before the host hears it: an acknowledged change survives a cut,
                # and its events are in the snapshot until they are in the log
                p.save(now)
        except (OSError, MemoryError):
            # not durable, so not done: refused on this try and every retry (SR-PWR-04)
            p.save_failed(now)
            rep = p.reply(now, cmd_id, typ, md.NACK_FAULT, 0, 0)
            a.executed(role, cmd_id, typ, md.NACK_FAULT, 0, None)
    finally:
        rep = tm.release(p.events, now + p.wall_delta, rep)
    a.remember(role, bytes(rep))  # a retry gets these very bytes
    return memoryview(a.cached[role])


def execute(p, typ, body, role, cmd_id, now):
    """Run an authenticated read (or an unknown type) of type `typ`, bringing therapy up
    to now first, so the reply reports the pump as it is; returns the REPLY frame."""
    if HANDLERS.get(typ) is None:
        return p.reply(now, cmd_id, typ, md.NACK_UNKNOWN_COMMAND, 0, 0)
    v = _body(typ, body)
    if v is None:
        return p.reply(now, cmd_id, typ, md.NACK_BAD_FRAME, len(body), 0)
    p.tick(now)
    return _run(p, typ, v, role, cmd_id, now)


def _run(p, typ, v, role, cmd_id, now):
    if not _reads(typ):
        p.wake()
    res, detail, blen = HANDLERS[typ](p, now, role, v, p.telemetry.rtx.buf, _REPLY_AT)
    return p.reply(now, cmd_id, typ, res, detail, 0 if res else blen)
