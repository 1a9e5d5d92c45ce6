# A pump whose state is lost (no good copy of it) while its journal or event log says it
# was used: it never boots as a new pump (SR-STO-02). What the witnesses say is taken up,
# erring safe:
# - the reservoir and the delivered total: the journal's newest record (written ahead of
#   each stroke, so never over the truth); without a journal, an empty reservoir;
# - the dose history: the drug the rolling 24 h window held at the newest stroke (the
#   journal's window_ng), all of it as recent as that stroke; every patient bolus slot
#   as used now (the gate's history is not known: it counts as recent);
# - the fill: the drug and concentration of the newest `refilled` event in the log, and
#   the `fill_drug` events after it (an admixture's other drugs);
# - no prescription (rx_invalid, halted until a clinician programs the pump), no
#   catheter exemption for 24 h.
# Only a pump whose state is lost loads this module.
import struct

import msgdefs as md
from gate import MAX_STARTS

_SCAN = 4096  # events looked back through for the newest refill (boot only)


def take_up(p, store, jrec, now):
    """Take up what the journal `jrec` (or None) and the event log say into pump `p`,
    booting at monotonic time `now`; returns the boot time (never behind the journal)."""
    d = p.delivery
    t_j = 0
    if jrec is not None:
        _, t_j, jres, jul, _acc, jnl, _flags, win = jrec
        if now < t_j:
            p.take_up_clock(now, t_j)
            now = t_j
        d.take_up_journal(jres, jul, jnl)
        if store.j_bad:
            d.assume_pushed(d.stroke_nl)  # the damaged record may be the newest stroke's
        if win > 0:
            p.rolling.add(t_j, win)
    else:
        d.take_up_journal(0, 0, 0)  # not known: empty, never over the truth
    d.forget_catheter(now)
    for _ in range(MAX_STARTS):
        p.gate.record(now)
    fill = _newest_refill(p.events)
    if fill is not None:
        p.plan.take_up_fill(fill[0], fill[1], fill[2])
        d.set_conc(fill[1])
    p.set_mode(now, md.MODE_HALTED)
    p.resumed_at(now)
    return now


def _newest_refill(ev):
    # (drug, conc, mix) of the newest `refilled` event the log still holds, or None
    seq = ev.next_seq - 1
    mix = bytearray(md.MIX_BYTES)
    stop = seq - _SCAN
    if stop < ev.first_seq - 1:
        stop = ev.first_seq - 1
    while seq > stop:
        r = ev.record(seq)
        if r is not None:
            rec = struct.unpack_from(md.EVENT_FMT, r, 0)
            if rec[2] == md.EV_REFILLED:
                return rec[7], rec[6], bytes(mix)
            if rec[2] == md.EV_FILL_DRUG:
                # (seen newest first: each moves the ones before it up a slot)
                mix[md.MIX_SIZE:] = mix[:md.MIX_BYTES - md.MIX_SIZE]
                struct.pack_into(md.MIX_FMT, mix, 0, rec[4], rec[5])
        seq -= 1
    return None
