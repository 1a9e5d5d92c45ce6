# Restore: the pump takes up its stored state (store.py) after a restart. Each part takes
# up its own fields (snapshot.parts); the stroke journal's strokes after the snapshot go
# on top. Nothing missed while it was off is caught up: the schedule resumes at the boot
# time. What is damaged or missing is made up for on the safe side (SR-STO-01, -02): the
# reservoir is never over-estimated, a dose that may have been given counts as given and
# as recent, and a pump whose files say it was used never boots as a new one (witness.py
# takes up a pump whose state is lost). Only a pump with a store loads this module.
import msgdefs as md
import schedule
import rx as rxmod
import snapshot
from pump import SAVE_S  # a running pump saves at least this often

_COPY = md.DAMAGE_STATE_COPY  # storage_damaged's detail bits
_LOST = md.DAMAGE_STATE_LOST
_JOURNAL = md.DAMAGE_JOURNAL
_EVENTS = md.DAMAGE_EVENTS


def restore(p, store, now):
    """Load the snapshot and the stroke journal into pump `p`, booting at monotonic time
    `now`. Returns (now, gap, damage, cut): the boot time (moved on if the clock came back
    behind the stored state), the seconds that went undelivered, what was found damaged
    or missing (STORAGE_DAMAGE bits, 0: nothing) and the boluses the cut ended as (kind,
    delivered, rest)."""
    blob, damaged = store.load_state()
    jrec = store.journal_last()  # also where the journal goes on
    damage = (_COPY if damaged else 0) | (_JOURNAL if store.j_bad else 0) | (
        _EVENTS if store.ev_bad else 0)
    if blob is None:
        if not damaged and store.is_blank():
            return now, 0, 0, ()  # a new pump
        import witness  # only a pump whose state is lost pays for it

        return witness.take_up(p, store, jrec, now), 0, damage | _LOST, ()
    t_last = snapshot.saved_time(blob)
    if jrec is not None and jrec[1] > t_last:
        t_last = jrec[1]
    if now < t_last:
        # A board without a battery-backed clock boots at its epoch: the monotonic clock
        # must never go back behind what the pump already did (lockouts, the 24 h window).
        p.take_up_clock(now, t_last)
        now = t_last
    gap, cut, more = _take_up(p, blob, jrec, now, store.j_bad)
    return now, gap, damage | more, cut


def _take_up(p, blob, jrec, now, j_bad):
    # The snapshot's values into the parts; strokes the journal has after it on top.
    v = snapshot.unpack(blob, len(p.gate.starts) * 4, len(p.rolling.b) * 4)
    for part in snapshot.parts(p):
        part.take_up(v)
    damage = 0
    if v["held_n"]:
        # the command the snapshot completed: its events, if the cut came before they
        # reached the log (before the boot is logged, so their numbers stay theirs)
        p.events.replay(v["held"], v["held_first"], v["held_n"])
    if v["event_next"] > p.events.next_seq:
        # the event log lost its newest (erased, damaged): its numbers are never reused
        p.events.skip_to(v["event_next"])
        damage |= _EVENTS
    # (auth_backoff is no longer raised: a state saved by older firmware drops it)
    p.alarms.retire(md.ALARM_AUTH_BACKOFF)
    t_last = v["t"]
    acc = 0
    conc = p.plan.conc
    if jrec is not None and jrec[0] > v["j_seq"]:
        # strokes after the snapshot: the write-ahead journal has the accounting
        _, t_last, jres, jul, acc, jnl, _flags, _win = jrec
        extra = p.delivery.take_up_journal(jres, jul, jnl)
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
    unknown = 0
    if jrec is None and v["j_seq"]:
        # the journal is gone: the strokes after the snapshot are not known. A running
        # pump saves at least hourly, so they are at most an hour of its plan and the
        # boluses it was giving: counted as pushed and as recent
        damage |= _JOURNAL
        unknown = p.delivery.stroke_nl + sum(dose for _, dose, _, _ in v["boluses"])
        if p.engine.loaded:
            unknown += (p.engine.plan_units(t_last, t_last + SAVE_S) + 86399) // 86400
    elif j_bad:
        unknown = p.delivery.stroke_nl  # the damaged record may be the newest stroke's
    if unknown:
        p.delivery.assume_pushed(unknown)
        if conc:
            p.rolling.add(now, rxmod.nl_to_ng(unknown, conc) + 1)
    p.set_mode(now, v["mode"])
    if p.plan.rx is not None:
        p.engine.take_up_owed(acc)
    p.resumed_at(now)
    return (now - t_last if now > t_last else 0), cut, damage
