# A refill visit on the twin: the clinician empties the reservoir through the septum
# (what comes out is measured), then fills; and the REFILL command that reports it, its
# residual measured when it is sent. Loaded by the first refill only.
import struct

import msgdefs as md
from codec import FrameWriter, cobs_frame_into


def residual_at(m, t):
    """What a clinician aspirating at true time t finds: the reservoir before the
    refill made at t."""
    m._refill(before=t)
    return m.reservoir_nl


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
    return residual


def measured(hw, t, frame):
    # A REFILL whose residual is what the clinician really aspirates at t: set it,
    # sign the command again with its role's key, and put it on the wire.
    w = FrameWriter(len(frame) + 4)
    buf = w.buf
    buf[: len(frame)] = frame
    at = md.HDR_SIZE + md.CMD_HEAD_SIZE
    v = list(struct.unpack_from(md.REFILL_FMT, buf, at))
    v[2] = residual_at(hw.motor, t)
    struct.pack_into(md.REFILL_FMT, buf, at, *v)
    _, typ, seq, time_ = struct.unpack_from(md.HDR_FMT, buf, 0)
    role = struct.unpack_from(md.CMD_HEAD_FMT, buf, md.HDR_SIZE)[1]
    n = md.CMD_HEAD_SIZE + md.REFILL_SIZE
    fr = w.finish_signed(typ, seq, time_, n, hw.keys[role])
    out = bytearray(len(fr) + len(fr) // 254 + 2)
    m = cobs_frame_into(fr, len(fr), out)
    return bytes(out[:m])
