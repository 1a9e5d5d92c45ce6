# A refill visit on the twin: the clinician empties the reservoir through the septum
# (what comes out is measured), then fills; and the REFILL command that reports it, its
# residual measured when it is sent; and the signing of a scheduled command at its
# delivery (visit.signed). Loaded by the first refill or command.
import struct

import msgdefs as md
from codec import FrameWriter, cobs_frame_into


def residual_at(m, t):
    """What a clinician aspirating at true time t finds: the reservoir before the
    refill made at t."""
    m._refill(before=t)
    vt, a = m.last_visit
    return a if vt == t and a is not None else m.reservoir_nl


def refill(m, nl, conc, pocket_nl=0):
    """A refill visit: the reservoir emptied through the septum, then nl of conc
    injected, less pocket_nl that went into the pocket beside the pump (a missed
    septum). Refused (nothing done) if nl overfills. Returns what was aspirated."""
    if nl > m.capacity_nl:
        return None
    residual = m.reservoir_nl
    m.reservoir_nl = nl - pocket_nl
    m.mass = (nl - pocket_nl) * conc
    m.pocket_nl += pocket_nl
    m.aspirated_nl += residual
    m.filled_nl += nl - pocket_nl
    return residual


def signed(hw, t, frame, flags, challenge):
    # A command put on the wire at t: a REFILL's residual set to what the clinician
    # really aspirates at t (flag measure_residual), the challenge the device just gave
    # (flag fresh), then signed with its role's key as a programmer signs it.
    w = FrameWriter(len(frame) + 4)
    buf = w.buf
    buf[: len(frame)] = frame
    at = md.HDR_SIZE + md.CMD_HEAD_SIZE
    if flags & md.LINK_IN_MEASURE_RESIDUAL:
        v = list(struct.unpack_from(md.REFILL_FMT, buf, at))
        v[2] = residual_at(hw.motor, t)
        struct.pack_into(md.REFILL_FMT, buf, at, *v)
    _, typ, seq, time_ = struct.unpack_from(md.HDR_FMT, buf, 0)
    cmd_id, role, ctr, chal = struct.unpack_from(md.CMD_HEAD_FMT, buf, md.HDR_SIZE)
    if flags & md.LINK_IN_FRESH:
        chal = challenge
    struct.pack_into(md.CMD_HEAD_FMT, buf, md.HDR_SIZE, cmd_id, role, ctr, chal)
    n = len(frame) - md.HDR_SIZE - md.MAC_SIZE - md.CRC_SIZE
    fr = w.finish_signed(typ, seq, time_, n, hw.keys[role])
    out = bytearray(len(fr) + len(fr) // 254 + 2)
    m = cobs_frame_into(fr, len(fr), out)
    return bytes(out[:m])
