# One stroke of the mechanism: checked, journaled ahead, moved, then counted; a stroke the
# mechanism did not confirm raises its alarm and counts nothing; a stalled motor, or a
# flash that did not take the stroke's journal or the snapshot, is tried again (the
# probe) until it works. Functions of the pump, on its parts' methods; the tick (pump.py)
# calls them.
import micropython
import msgdefs as md
import schedule
from alarms import EMPTY_RESERVOIR, FLASH_FAULT, LOW_RESERVOIR, MOTOR_STALL, OCCLUSION
from engine import NEVER
from micropython import const

STALL_RETRY_S = const(60)  # how often a stalled motor or a failing flash is tried again


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


@micropython.native
def _move(p, now):
    # the motor's stroke, journaled ahead (a cut can only make the pump believe it
    # delivered a stroke it did not); 0, or the mechanism's fault. (Native: a handler's
    # frame would be a heap block per stroke, SR-HEAP-01.)
    e = p.engine
    d = p.delivery
    try:
        return d.move(p.hw.motor, p.store, now, e.acc, e.Q, p.mode,
                      p.rolling.total + d.ng_q + 1)
    except OSError:
        return md.STROKE_FLASH  # the journal was not written: nothing moved


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
    bit = _alarm_of(r)
    p.alarms.raise_(bit, now, p.delivery.reservoir_nl)
    p.missed(p.engine.drop_owed())
    if bit != OCCLUSION:
        p.delivery.retry_at(now + STALL_RETRY_S)
    p.update_mode(now)


def _alarm_of(r):
    # the alarm of a stroke the mechanism (or the flash) did not make
    return (MOTOR_STALL if r == md.STROKE_STALL else FLASH_FAULT if r == md.STROKE_FLASH
            else OCCLUSION)


def save(p, now):
    """The snapshot outside a command (the boot's, the hourly one). A flash that does not
    take it halts delivery with flash_fault until a later save works (SR-STO-03): the
    state in RAM stays the pump's, as nothing unsaved was acknowledged. False if it
    failed."""
    if p.alarms.active(FLASH_FAULT) and now < p.delivery.retry_t:
        return False  # the probe tries again at retry_t
    try:
        p.save(now)
    except OSError:
        if p.alarms.raise_(FLASH_FAULT, now, p.delivery.reservoir_nl):
            p.missed(p.engine.drop_owed())
            p.update_mode(now)
        p.delivery.retry_at(now + STALL_RETRY_S)
        return False
    if p.alarms.clear(FLASH_FAULT, now, p.delivery.reservoir_nl):
        p.update_mode(now)  # (its events make the pump dirty: the next tick saves them)
    return True


def probing(p):
    """A halted pump with a stalled motor or a failing flash tries it again at
    Delivery.retry_t."""
    return p.mode == md.MODE_HALTED and (p.alarms.active(MOTOR_STALL)
                                         or p.alarms.active(FLASH_FAULT))


def test_stroke(p, now):
    """One stroke with feedback outside delivery (after an MRI scan): 0 if the motor moved
    (counted as an early stroke, as the probe's), else the failure, whose alarm is raised
    (the pump stays where it is)."""
    r = _move(p, now)
    if r != 0:
        p.log(now, md.EV_STROKE_FAILED, 0, r, 0, 0)
        p.alarms.raise_(_alarm_of(r), now, p.delivery.reservoir_nl)
        return r
    p.engine.stroke_done()
    _account(p, now)
    for bit in (MOTOR_STALL, FLASH_FAULT):
        p.alarms.clear(bit, now, p.delivery.reservoir_nl)
    return 0


def rearm(p, now):
    """At boot: a pump halted by a stall before the reset tries its motor again
    STALL_RETRY_S on, as it would have had it not restarted (retry_t is not stored)."""
    if probing(p):
        p.delivery.retry_at(now + STALL_RETRY_S)


def probe(p, now):
    """Try the stalled motor with one real stroke. A success counts as an early stroke
    (acc goes below zero), so the plan is kept and never exceeded."""
    d = p.delivery
    if p.alarms.active(FLASH_FAULT):
        if not save(p, now) or not p.alarms.active(MOTOR_STALL):
            return  # (a flash that works again clears its alarm and resumes, save())
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
