# The pump's snapshot (state.bin): what a restart needs, each value by name. Only a pump
# with a store loads this module. The head's
# layout is protocol/theca_protocol/storage.py's SnapshotHead (msgdefs SNAP_*); the bolus
# gate's start times, the rolling 24 h buckets and the Rx blob follow it.
import struct

from msgdefs import (
    EVENT_SIZE,
    SNAP_BOLUS_FMT,
    SNAP_BOLUS_SIZE,
    SNAP_FIELDS,
    SNAP_FMT,
    SNAP_SIZE,
)

_NONE_ID = 0xFFFFFFFF  # no command executed yet


def pack(p, now):
    """The snapshot of pump `p` at `now`, as bytes. Allocates: never called per stroke."""
    g = p.gate
    r = p.rolling
    rx = p.rx.blob if p.rx is not None else b""
    brx = p.bridge_rx.blob if p.bridge_drug and p.bridge_rx is not None else b""
    v = {
        "t": now, "mode": p.mode, "offset": p.offset, "wall_delta": p.wall_delta,
        "conc": p.conc, "drug": p.drug, "bridge_drug": p.bridge_drug,
        "bridge_nl": p.bridge_nl, "bridge_conc": p.bridge_conc,
        "alarm_mask": p.alarms.mask, "alarm_acked": p.alarms.acked,
        "reservoir_nl": p.reservoir_nl, "delivered_ul": p.delivered_ul,
        "delivered_nl": p.delivered_nl, "j_seq": p.store.j_seq, "ng_frac": p.ng_frac,
        "seq": p.seq, "gate_n": g.n, "gate_head": g.head, "rolling_idx": r.idx,
        "rolling_total": r.total, "rx_len": len(rx), "bridge_rx_len": len(brx),
        "suspend_alarm_t": p.suspend_alarm_t, "catheter_nl": p.catheter_nl,
        "unprimed_nl": p.unprimed_nl, "fill_t": p.fill_t, "fill_first": p.fill_first,
    }
    auth_into(p.auth, v)
    ev = p.events
    first, n = ev.held_range()
    v["held_first"], v["held_n"] = first, n
    held = b"".join(bytes(ev.record(first + i)) for i in range(n))
    head = struct.pack(SNAP_FMT, *[v[k] for k in SNAP_FIELDS])
    return head + bytes(g.starts) + bytes(r.b) + rx + brx + held + _boluses(p.engine)


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
    """The snapshot's values by name; "gate", "rolling" and "rx" are the byte strings
    that follow the head (the gate's and the buckets' sizes are the pump's own)."""
    v = dict(zip(SNAP_FIELDS, struct.unpack_from(SNAP_FMT, blob, 0)))
    off = SNAP_SIZE
    v["gate"] = blob[off : off + gate_bytes]
    off += gate_bytes
    v["rolling"] = blob[off : off + rolling_bytes]
    off += rolling_bytes
    v["rx"] = blob[off : off + v["rx_len"]]
    off += v["rx_len"]
    v["bridge_rx"] = blob[off : off + v["bridge_rx_len"]]
    off += v["bridge_rx_len"]
    hn = v["held_n"] * EVENT_SIZE
    v["held"] = blob[off : off + hn]
    off += hn
    b = []
    n = blob[off] if off < len(blob) else 0  # (none in a snapshot of older firmware)
    off += 1
    for _ in range(n):
        b.append(struct.unpack_from(SNAP_BOLUS_FMT, blob, off))
        off += SNAP_BOLUS_SIZE
    v["boluses"] = b
    return v


def saved_time(blob):
    """The monotonic device time the snapshot was taken at."""
    return struct.unpack_from(SNAP_FMT, blob, 0)[0]


def auth_into(a, v):
    """Put the state a reboot must keep into the snapshot's values `v`."""
    ids = [_NONE_ID if i is None else i for i in a.last_id]
    lr = [x if x is not None else (0, 0, 0) for x in a.last_result]
    v["ctr_clinician"], v["ctr_patient"] = a.last_ctr[1], a.last_ctr[2]
    v["id_clinician"], v["id_patient"] = ids[1], ids[2]
    (v["last_type_clinician"], v["last_result_clinician"],
     v["last_detail_clinician"]) = lr[1]
    v["last_type_patient"], v["last_result_patient"], v["last_detail_patient"] = lr[2]

def auth_from(a, v):
    """Take up the state saved by save_into."""
    a.last_ctr = [0, v["ctr_clinician"], v["ctr_patient"]]
    i1, i2 = v["id_clinician"], v["id_patient"]
    a.last_id = [None, None if i1 == _NONE_ID else i1, None if i2 == _NONE_ID else i2]
    t1, t2 = v["last_type_clinician"], v["last_type_patient"]
    a.last_result = [
        None,
        (t1, v["last_result_clinician"], v["last_detail_clinician"]) if t1 else None,
        (t2, v["last_result_patient"], v["last_detail_patient"]) if t2 else None,
    ]
