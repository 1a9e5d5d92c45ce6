# The clinician's changes to the therapy plan, each a command of the link (commands.py):
# PROGRAM (a prescription, checked on its own and then with what was delivered and what
# is running, by the dose guard), REFILL (empty, measure the residual, fill; the
# catheter's old fill is delivered first, the bridge), SET_TIME (the wall clock only: the
# dose history runs on the monotonic clock), CATHETER and PRIME (a new catheter is empty:
# until its volume has been pushed the drug does not reach the patient, and only that
# volume is exempt from the dose limits, Delivery.account). Each changes the pump's parts
# through their methods. Imported with commands.py at the end of the boot.
import msgdefs as md
import schedule
from alarms import EMPTY_RESERVOIR, LOW_RESERVOIR, RX_INVALID, VOLUME_DISCREPANCY
from engine import KIND_PRIME
from eventlog import wall_u32
from gate import CAPACITY, IN_PROGRESS, NOT_RUNNING, OK, RESERVOIR
from micropython import const
import guard as guardmod
import rx as rxmod

_DISCREPANCY_NL = const(1_000_000)  # a residual further than 1 mL (or 20 %) is a discrepancy
_HOUR = const(3600)


# -- PROGRAM -----------------------------------------------------------------------------

def program(p, now, who, blob):
    """Accept a prescription (Rx blob). Returns (result, detail)."""
    try:
        rx = rxmod.parse(blob)
        rxmod.check_fields(rx, p.druglib.get(rx.drug), p.druglib)
    except rxmod.RxError as e:
        if e.field == md.FIELD_VERSION:
            return md.NACK_SCHEMA, rxmod.VERSION
        return md.NACK_INVALID, e.field
    pl = p.plan
    # The prescription must describe what is in the reservoir: refill first.
    if pl.drug and rx.drug != pl.drug:
        return md.NACK_INVALID, md.FIELD_DRUG
    if pl.drug and rx.mix != pl.mix:
        return md.NACK_INVALID, md.FIELD_DRUGS  # (the admixture's other drugs differ)
    if pl.conc and rx.conc_ng_ml != pl.conc:
        return md.NACK_INVALID, md.FIELD_CONCENTRATION
    dv = p.delivery
    reason = _check_rx(p, rx)
    first = pl.rx is None
    if reason == OK:
        # The new plan together with what was already delivered and what is running:
        # tried in the engine, put back if the guard says no.
        old = pl.try_rx(rx)
        schedule.load(p, now)
        reason = schedule.guard_check(p, now)
        if reason != OK:
            pl.put_back(old)
            if pl.rx is not None:
                schedule.load(p, now)
            else:
                p.engine.unload(now)
    if reason != OK:
        p.log(now, md.EV_PRESCRIPTION_REFUSED, who, reason, rx.drug, rx.crc)
        return md.NACK_LIMIT, reason
    learned = not pl.drug
    pl.learn_drug(rx.drug, rx.mix, now)
    # d: the soft limits the clinician overrode (Rx flags bits 1..)
    p.log(now, md.EV_PRESCRIPTION_CHANGED, who, rx.crc, rx.drug, len(blob), rx.flags >> 1)
    if learned and rx.mix[0]:
        import mix

        mix.log_fill(p, now, who, rx.mix)  # (a new pump learns its fill from it)
    if p.alarms.clear(RX_INVALID, now, dv.reservoir_nl):
        p.update_mode(now)  # a prescription is in force again
    if schedule.use_threshold(p, now):
        p.emit_info(now)  # DEVICE_INFO says the threshold in force
    if first or p.mode == md.MODE_STOPPED:
        p.set_mode(now, md.MODE_RUNNING)
        p.log(now, md.EV_THERAPY_STARTED, who, rx.crc, 0, 0)
    return 0, 0


def _check_rx(p, rx):
    # the prescription on its own, every drug of its fill by its own limits
    d = p.druglib[rx.drug]
    if rx.mix[0]:
        import mix  # (only a pump that meets an admixture loads it)

        if mix.check_conc_all(rx.mix, p.druglib) != OK:
            return guardmod.MAX_CONCENTRATION
        d = mix.limits(d, rx.conc_ng_ml, rx.mix, p.druglib)
    dv = p.delivery
    return guardmod.check_rx(rx, d, dv.max_rate_nl_h, dv.min_rate_nl_day)


# -- REFILL ------------------------------------------------------------------------------

def _check_fill(lib, drug, conc, mix):
    # None, or the NACK for a fill whose drugs the library lacks or whose concentration
    # is over a drug's maximum
    d = lib.get(drug) if drug else None
    if drug and d is None:
        return md.NACK_INVALID, md.FIELD_DRUG
    if d is not None and guardmod.check_conc(conc, d) != OK:
        return md.NACK_LIMIT, guardmod.MAX_CONCENTRATION
    if mix != rxmod.NO_MIX:
        import mix as mixmod

        if not drug or mixmod.check(mix, drug, lib) is not None:
            return md.NACK_INVALID, md.FIELD_DRUGS
        if mixmod.check_conc_all(mix, lib) != OK:
            return md.NACK_LIMIT, guardmod.MAX_CONCENTRATION
    return None


def refill(p, now, who, volume_nl, conc, residual_nl, drug, mix):
    """The clinician emptied the pump (residual_nl aspirated, measured) and filled
    volume_nl of drug at conc, with the other drugs of `mix` for an admixture: the
    reservoir is then volume_nl, nothing is mixed. drug 0: the reservoir's drug. A
    residual far from what the pump expected is logged and alarmed (a pocket fill, a
    leak or an underdose may have happened)."""
    dv = p.delivery
    pl = p.plan
    if volume_nl <= 0:
        return md.NACK_INVALID, md.FIELD_VOLUME
    if volume_nl > dv.capacity_nl:
        p.log(now, md.EV_REFILL_REFUSED, who, volume_nl, dv.reservoir_nl, dv.capacity_nl)
        return md.NACK_LIMIT, CAPACITY
    if conc <= 0:
        return md.NACK_INVALID, md.FIELD_CONCENTRATION
    if drug == 0:
        drug = pl.drug  # (and, naming none, its other drugs: the same fill)
        if not mix[0]:
            mix = pl.mix
    bad = _check_fill(p.druglib, drug, conc, mix)
    if bad is not None:
        return bad
    expected = dv.reservoir_nl
    end_now = pl.refill(now, drug, conc, mix, dv.held_nl())
    dv.fill(volume_nl)
    if end_now:
        schedule.end_bridge(p, now)
    p.log(now, md.EV_REFILLED, who, volume_nl, residual_nl, conc, drug)
    if mix[0]:
        import mix as mixmod

        mixmod.log_fill(p, now, who, mix)
    off = residual_nl - expected if residual_nl > expected else expected - residual_nl
    tol = expected // 5
    if off > (tol if tol > _DISCREPANCY_NL else _DISCREPANCY_NL):
        p.log(now, md.EV_REFILL_DISCREPANCY, who, expected, residual_nl, 0)
        p.alarms.raise_(VOLUME_DISCREPANCY, now, dv.reservoir_nl, residual_nl)
    if dv.reservoir_nl >= dv.stroke_nl:
        p.alarms.clear(EMPTY_RESERVOIR, now, dv.reservoir_nl)
    if dv.reservoir_nl >= pl.low_nl:
        p.alarms.clear(LOW_RESERVOIR, now, dv.reservoir_nl)
    if pl.rx is not None:
        dv.set_conc(pl.drug_conc())
    p.eta_stale()
    p.update_mode(now)
    return 0, 0


# -- SET_TIME ----------------------------------------------------------------------------

def set_time(p, now, who, utc, offset):
    """Set the wall clock (UTC) and local offset. Only the daily schedule moves: the
    monotonic clock, the dose history and the lockouts do not, so a clock change
    never frees a dose, and nothing is delivered or missed for the jump. Refused if
    the schedule in its new place would pass a limit with what was delivered."""
    if not md.UTC_MIN <= utc <= md.UTC_MAX:
        return md.NACK_INVALID, md.FIELD_UTC
    if not -md.MAX_LOCAL_OFFSET_S <= offset <= md.MAX_LOCAL_OFFSET_S:
        return md.NACK_INVALID, md.FIELD_OFFSET
    p.engine.advance(now, p.mode == md.MODE_RUNNING)
    old_wall = now + p.wall_delta
    old_utc, old_offset = old_wall, p.offset
    p.set_clock(now, utc, offset)
    reason = schedule.guard_check(p, now) if p.plan.rx is not None else OK
    if reason != OK:
        p.set_clock(now, old_utc, old_offset)
        p.log(now, md.EV_TIME_REFUSED, who, reason, utc, 0)
        return md.NACK_LIMIT, reason
    p.log(now, md.EV_TIME_CHANGED, who, wall_u32(old_wall), utc, offset)
    p.zone.plan(p, now)  # (a prescription's time zone has the last word on the offset)
    p.replanned()
    return 0, 0


# -- CATHETER and PRIME -------------------------------------------------------------------

def catheter(p, now, who, volume_nl):
    """The catheter is now volume_nl and empty: unprimed until that much is pushed. A
    bridge ends: the old fill it carried is gone with the old catheter."""
    if not 0 < volume_nl <= md.MAX_CATHETER_NL:
        return md.NACK_INVALID, md.FIELD_VOLUME
    if p.engine.bolus_active(KIND_PRIME):
        return md.NACK_BUSY, IN_PROGRESS
    p.delivery.new_catheter(volume_nl, now)
    p.log(now, md.EV_CATHETER_CHANGED, who, volume_nl, 0, 0)
    if p.plan.bridging():
        schedule.end_bridge(p, now)
    p.emit_info(now)  # DEVICE_INFO.catheter_nl
    p.replanned()
    return 0, 0


def prime(p, now, who):
    """A priming bolus of the catheter volume not yet pushed, at the mechanism's fastest
    rate; its exempt part is exempt from the limits (the drug only fills the catheter),
    the rest is checked by the dose guard as any bolus."""
    dv = p.delivery
    vol = dv.unprimed_nl
    if vol <= 0:
        return md.NACK_INVALID, md.FIELD_PRIMED
    if p.mode != md.MODE_RUNNING:
        return md.NACK_LIMIT, NOT_RUNNING  # (PRIME needs the motor running)
    e = p.engine
    if e.bolus_active(KIND_PRIME):
        return md.NACK_BUSY, IN_PROGRESS
    if dv.reservoir_nl < vol:
        return md.NACK_LIMIT, RESERVOIR
    dur = (vol * _HOUR + dv.max_rate_nl_h - 1) // dv.max_rate_nl_h
    counted = vol - dv.exempt_nl if dv.exempt_nl < vol else 0
    if counted:
        # not exempt (a second change in 24 h, SR-CATH-02): a bolus like any other
        reason = schedule.guard_check(p, now, rxmod.nl_to_ng(counted, p.plan.drug_conc()),
                                      counted, dur)
        if reason != OK:
            p.log(now, md.EV_BOLUS_DENIED, who, reason, KIND_PRIME, counted)
            return md.NACK_LIMIT, reason
    e.advance(now)
    e.start_bolus(now, vol, dur, KIND_PRIME)
    p.log(now, md.EV_PRIME_STARTED, who, vol, dur, 0)
    p.replanned()
    return 0, 0
