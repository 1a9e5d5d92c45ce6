# The pump's snapshot (state.bin): what a restart needs. Each part declares the fields it
# owns (Part.SNAP) and puts them in and takes them up itself; this module only walks the
# parts and lays the values out. The head's layout is protocol/theca_protocol/storage.py's
# SnapshotHead (msgdefs SNAP_*); the bolus gate's start times, the rolling 24 h buckets,
# the Rx blobs, the held events, the running boluses and the priming exemption follow it. Only a pump with a
# store loads this module.
import struct

from msgdefs import (
    EVENT_SIZE,
    SNAP_BOLUS_FMT,
    SNAP_BOLUS_SIZE,
    SNAP_FIELDS,
    SNAP_FMT,
    SNAP_EVENTS_FMT,
    SNAP_EVENTS_SIZE,
    SNAP_PRIME_FMT,
    SNAP_PRIME_SIZE,
    SNAP_SIZE,
)


def parts(p):
    """The parts of pump `p` whose state the snapshot keeps (each declares its fields)."""
    return (p, p.delivery, p.plan, p.alarms, p.gate, p.rolling, p.auth)


def pack(p, now):
    """The snapshot of pump `p` at `now`, as bytes. Allocates: never called per stroke."""
    v = {"t": now, "mode": p.mode, "j_seq": p.store.j_seq, "seq": p.telemetry.seq}
    for part in parts(p):
        part.snap_into(v)
    rx, brx = p.plan.blobs()
    v["rx_len"], v["bridge_rx_len"] = len(rx), len(brx)
    ev = p.events
    first, n = ev.held_range()
    v["held_first"], v["held_n"] = first, n
    held = b"".join(bytes(ev.record(first + i)) for i in range(n))
    head = struct.pack(SNAP_FMT, *[v[k] for k in SNAP_FIELDS])
    tail = (struct.pack(SNAP_PRIME_FMT, v["exempt_nl"], v["exempt_t"])
            + struct.pack(SNAP_EVENTS_FMT, ev.next_seq))
    return head + v["gate"] + v["rolling"] + rx + brx + held + _boluses(p.engine) + tail


def _boluses(e):
    # the boluses running: a cut mid-bolus is then recorded at the restart (restore.py)
    out = [b""]
    n = 0
    for k in range(len(e.b_on)):
        if e.b_on[k]:
            out.append(struct.pack(SNAP_BOLUS_FMT, e.b_kind[k], e.b_dose[k], e.b_start[k],
                                   e.b_rate[k]))
            n += 1
    out[0] = bytes((n,))
    return b"".join(out)


def unpack(blob, gate_bytes, rolling_bytes):
    """The snapshot's values by name; "gate", "rolling", "rx", "bridge_rx" and "held" are
    the byte strings that follow the head (the gate's and the buckets' sizes are the
    pump's own), "boluses" the running boluses as tuples."""
    v: dict = dict(zip(SNAP_FIELDS, struct.unpack_from(SNAP_FMT, blob, 0)))
    off = SNAP_SIZE
    for name, n in (("gate", gate_bytes), ("rolling", rolling_bytes),
                    ("rx", v["rx_len"]), ("bridge_rx", v["bridge_rx_len"]),
                    ("held", v["held_n"] * EVENT_SIZE)):
        v[name] = blob[off : off + n]
        off += n
    b = []
    n = blob[off] if off < len(blob) else 0  # (none in a snapshot of older firmware)
    off += 1
    for _ in range(n):
        b.append(struct.unpack_from(SNAP_BOLUS_FMT, blob, off))
        off += SNAP_BOLUS_SIZE
    v["boluses"] = b
    if off + SNAP_PRIME_SIZE <= len(blob):
        v["exempt_nl"], v["exempt_t"] = struct.unpack_from(SNAP_PRIME_FMT, blob, off)
    else:  # a snapshot of older firmware: its catheter's unprimed volume is exempt
        v["exempt_nl"], v["exempt_t"] = v["unprimed_nl"], 0
    off += SNAP_PRIME_SIZE
    v["event_next"] = (struct.unpack_from(SNAP_EVENTS_FMT, blob, off)[0]
                       if off + SNAP_EVENTS_SIZE <= len(blob) else 0)
    return v


def saved_time(blob):
    """The monotonic device time the snapshot was taken at."""
    return struct.unpack_from(SNAP_FMT, blob, 0)[0]
