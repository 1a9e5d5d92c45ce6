# Restore: the pump takes up its stored state (store.py) after a restart. Each part takes
# up its own fields (snapshot.parts); the stroke journal's strokes after the snapshot go
# on top. Nothing missed while it was off is caught up: the schedule resumes at the boot
# time. Only a pump with a store loads this module.
import msgdefs as md
import schedule
import rx as rxmod
import snapshot


def restore(p, store, now):
    """Load the snapshot and the stroke journal into pump `p`, booting at monotonic time
    `now`. Returns (now, gap, bad, cut): the boot time (moved on if the clock came back
    behind the stored state), the seconds that went undelivered, whether the stored state
    failed its CRC, and the boluses the cut ended as (kind, delivered, rest)."""
    bad = False
    try:
        blob = store.load_state()
    except ValueError:
        blob = None
        bad = True
    jrec = store.journal_last()  # also where the journal goes on
    if blob is None:
        return now, 0, bad, ()
    t_last = snapshot.saved_time(blob)
    if jrec is not None and jrec[1] > t_last:
        t_last = jrec[1]
    if now < t_last:
        # A board without a battery-backed clock boots at its epoch: the monotonic clock
        # must never go back behind what the pump already did (lockouts, the 24 h window).
        p.take_up_clock(now, t_last)
        now = t_last
    gap, cut = _take_up(p, blob, jrec, now)
    return now, gap, False, cut


def _take_up(p, blob, jrec, now):
    # The snapshot's values into the parts; strokes the journal has after it on top.
    v = snapshot.unpack(blob, len(p.gate.starts) * 4, len(p.rolling.b) * 4)
    for part in snapshot.parts(p):
        part.take_up(v)
    if v["held_n"]:
        # the command the snapshot completed: its events, if the cut came before they
        # reached the log (before the boot is logged, so their numbers stay theirs)
        p.events.replay(v["held"], v["held_first"], v["held_n"])
    # (auth_backoff is no longer raised: a state saved by older firmware drops it)
    p.alarms.retire(md.ALARM_AUTH_BACKOFF)
    t_last = v["t"]
    acc = 0
    if jrec is not None and jrec[0] > v["j_seq"]:
        # strokes after the snapshot: the write-ahead journal has the accounting
        _, t_last, jres, jul, acc, jnl, _flags = jrec
        extra = p.delivery.take_up_journal(jres, jul, jnl)
        conc = p.plan.conc
        if extra > 0 and conc:
            # what they delivered goes into the newest rolling bucket: counted longer
            # than it really stays in the window, never shorter
            p.rolling.add(now if now > t_last else t_last, rxmod.nl_to_ng(extra, conc) + 1)
    # boluses the cut ended: what each delivered by the last stroke recorded, and the rest
    # (missed: it is not given after the restart); powerup.py logs them
    cut = []
    for kind, dose, start, rate in v["boluses"]:
        done = rate * (t_last - start) // 86400 if t_last > start else 0
        done = done if done < dose else dose
        cut.append((kind, done, dose - done))
    p.plan.take_up_rx(v["rx"], v["bridge_rx"])
    if p.plan.plan_rx() is not None:
        schedule.load(p, now)
    p.set_mode(now, v["mode"])
    if p.plan.rx is not None:
        p.engine.take_up_owed(acc)
    p.resumed_at(now)
    return (now - t_last if now > t_last else 0), cut
