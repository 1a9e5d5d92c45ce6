# One stroke of the mechanism: checked, journaled ahead, moved, then counted; a stroke the
# mechanism did not confirm raises its alarm and counts nothing; a stalled motor is tried
# again (the probe) until it moves. Functions of the pump, on its parts' methods; the
# tick (pump.py) calls them.
import msgdefs as md
import schedule
from alarms import EMPTY_RESERVOIR, LOW_RESERVOIR, MOTOR_STALL, OCCLUSION
from engine import NEVER
from micropython import const

STALL_RETRY_S = const(60)  # how often a stalled motor is tried again


def stroke(p, now):
    """One stroke: check, move, then account. False if delivery must stop."""
    d = p.delivery
    if d.reservoir_nl < d.stroke_nl:
        if p.alarms.raise_(EMPTY_RESERVOIR, now, d.reservoir_nl):
            p.update_mode(now)
        return False
    r = _move(p, now)
    if r != 0:
        _failed(p, now, r)
        return False
    p.engine.stroke_done()
    _account(p, now)
    return True


def _move(p, now):
    # the motor's stroke, journaled ahead (a cut can only make the pump believe it
    # delivered a stroke it did not); 0, or the mechanism's fault
    e = p.engine
    return p.delivery.move(p.hw.motor, p.store, now, e.acc, e.Q, p.mode)


def _account(p, now):
    # A confirmed stroke: the volumes, the drug in the rolling window, the bridge, the
    # reservoir's alarms.
    d = p.delivery
    unprimed = d.unprimed_nl
    p.rolling.add(now, d.account())
    if unprimed and not d.unprimed_nl:
        p.wake()  # primed: the catheter's fill now reaches the patient
    if p.plan.pushed(d.stroke_nl):
        schedule.end_bridge(p, now)
    res = d.reservoir_nl
    if res < p.plan.low_nl:
        if p.alarms.raise_(LOW_RESERVOIR, now, res):
            p.low_reached()
    if res < d.stroke_nl:
        if p.alarms.raise_(EMPTY_RESERVOIR, now, res):
            p.update_mode(now)


def _failed(p, now, r):
    # Nothing is counted for a stroke the mechanism did not confirm; what was owed is not
    # caught up, it is counted into the halt's delivery_gap.
    p.log(now, md.EV_STROKE_FAILED, 0, r, 0, 0)
    bit = MOTOR_STALL if r == 1 else OCCLUSION
    p.alarms.raise_(bit, now, p.delivery.reservoir_nl)
    p.missed(p.engine.drop_owed())
    if bit == MOTOR_STALL:
        p.delivery.retry_at(now + STALL_RETRY_S)
    p.update_mode(now)


def probing(p):
    """A halted pump with a stalled motor tries it again at Delivery.retry_t."""
    return p.mode == md.MODE_HALTED and p.alarms.active(MOTOR_STALL)


def rearm(p, now):
    """At boot: a pump halted by a stall before the reset tries its motor again
    STALL_RETRY_S on, as it would have had it not restarted (retry_t is not stored)."""
    if probing(p):
        p.delivery.retry_at(now + STALL_RETRY_S)


def probe(p, now):
    """Try the stalled motor with one real stroke. A success counts as an early stroke
    (acc goes below zero), so the plan is kept and never exceeded."""
    d = p.delivery
    if d.reservoir_nl < d.stroke_nl:
        d.retry_at(NEVER)
        return
    if _move(p, now) != 0:
        d.retry_at(now + STALL_RETRY_S)
        return
    p.engine.stroke_done()
    _account(p, now)
    d.retry_at(NEVER)
    p.alarms.clear(MOTOR_STALL, now, d.reservoir_nl)
    p.log(now, md.EV_MOTOR_RECOVERED, 0, 0, 0, 0)
    p.update_mode(now)
