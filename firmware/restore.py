# Restore: the pump takes up its stored state (store.py) after a restart. Nothing missed
# while it was off is caught up: the schedule resumes at the boot time. Only a pump
# with a store loads this module.
from array import array

import msgdefs as md
import rx as rxmod
import snapshot


def restore(p, store, now):
    """Load the snapshot and the stroke journal into pump `p`, booting at monotonic time
    `now`. Returns (now, gap, bad): the boot time (moved on if the clock came back behind
    the stored state), the seconds that went undelivered, and whether the stored state
    failed its CRC."""
    bad = False
    try:
        blob = store.load_state()
    except ValueError:
        blob = None
        bad = True
    jrec = store.journal_last()  # also where the journal goes on
    if blob is None:
        return now, 0, bad
    t_last = snapshot.saved_time(blob)
    if jrec is not None and jrec[1] > t_last:
        t_last = jrec[1]
    if now < t_last:
        # A board without a battery-backed clock boots at its epoch: the monotonic clock
        # must never go back behind what the pump already did (lockouts, the 24 h
        # window). Move it on to the last known time: an unknown downtime counts as
        # none, so the history counts as recent and a reboot never frees a bolus. The
        # host sets the wall clock.
        p.hw.clock.set(t_last)
        p.clock_moved = (now, t_last)
        now = t_last
    return now, _take_up(p, blob, jrec, now), False


def _take_up(p, blob, jrec, now):
    # The snapshot's values into the pump; strokes the journal has after it on top.
    g = p.gate
    r = p.rolling
    v = snapshot.unpack(blob, len(g.starts) * 4, len(r.b) * 4)
    p.offset = v["offset"]
    p.wall_delta = v["wall_delta"]
    p.conc = v["conc"]
    p.drug = v["drug"]
    p.suspend_alarm_t = v["suspend_alarm_t"]
    p.catheter_nl = v["catheter_nl"]
    p.unprimed_nl = v["unprimed_nl"]
    p.fill_t = v["fill_t"]
    p.fill_first = v["fill_first"]
    p.bridge_nl = v["bridge_nl"]
    p.bridge_conc = v["bridge_conc"]
    p.ng_frac = v["ng_frac"]
    g.starts[:] = array("i", v["gate"])
    g.n = v["gate_n"]
    g.head = v["gate_head"]
    g.forget_count()
    r.b[:] = array("i", v["rolling"])
    r.idx = v["rolling_idx"]
    r.total = v["rolling_total"]
    if v["held_n"]:
        # the command the snapshot completed: its events, if the cut came before they
        # reached the log (before the boot is logged, so their numbers stay theirs)
        p.events.replay(v["held"], v["held_first"], v["held_n"])
    # (auth_backoff is no longer raised: a state saved by older firmware drops it)
    p.alarms.mask = v["alarm_mask"] & ~(1 << md.ALARM_AUTH_BACKOFF)
    p.alarms.acked = v["alarm_acked"]
    # the frame counter starts again at 0 after a boot (decoders read that as a restart)
    snapshot.auth_from(p.auth, v)
    res, dul, dnl = v["reservoir_nl"], v["delivered_ul"], v["delivered_nl"]
    t_last = v["t"]
    acc = 0
    if jrec is not None and jrec[0] > v["j_seq"]:
        # strokes after the snapshot: the write-ahead journal has the accounting
        _, t_last, jres, jul, acc, jnl, _flags = jrec
        # what they delivered goes into the newest rolling bucket: counted longer than
        # it really stays in the window, never shorter
        extra = (jul - dul) * 1000 + (jnl - dnl)
        if extra > 0 and p.conc:
            r.add(now if now > t_last else t_last, rxmod.nl_to_ng(extra, p.conc) + 1)
        if extra > 0:
            # and they filled the catheter that much: never exempt the same volume twice
            p.unprimed_nl = p.unprimed_nl - extra if p.unprimed_nl > extra else 0
        res, dul, dnl = jres, jul, jnl
    p.reservoir_nl = res
    p.delivered_ul = dul
    p.delivered_nl = dnl
    # boluses the cut ended: what each delivered by the last stroke recorded, and the rest
    # (missed: it is not given after the restart); powerup.py logs them
    for kind, dose, start, rate in v["boluses"]:
        done = rate * (t_last - start) // 86400 if t_last > start else 0
        done = done if done < dose else dose
        p.cut_boluses.append((kind, done, dose - done))
    if v["rx_len"]:
        try:
            p.rx = rxmod.parse(v["rx"])
        except rxmod.RxError:
            p.rx = None
            p.rx_bad = True
    if v["bridge_drug"]:
        # a drug change's bridge; its blob is empty when the old drug had no prescription
        p.bridge_drug = v["bridge_drug"]
        if v["bridge_rx_len"]:
            try:
                p.bridge_rx = rxmod.parse(v["bridge_rx"])
            except rxmod.RxError:
                p.rx_bad = True
    if p.rx is not None and p.rx.low_nl:
        p.low_nl = p.rx.low_nl
    if p._plan_rx() is not None:
        p.drug_per_stroke()
        p.load_plan(now)
    p.set_mode(now, v["mode"])
    if p.rx is not None and 0 < acc < p.engine.Q:
        p.engine.acc = acc  # the fraction of a stroke owed, never more
    p.last_tick = now
    p.eta_dirty = True
    return now - t_last if now > t_last else 0
