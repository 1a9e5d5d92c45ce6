# The clinician's changes to the therapy plan, each a command of the link (commands.py,
# _ROOM): PROGRAM (a prescription, checked on its own and then with what was delivered
# and what is running, by the dose guard), REFILL (empty, measure the residual, fill; the
# catheter's old fill is delivered first, the bridge), SET_TIME (the wall clock only: the
# dose history runs on the monotonic clock), CATHETER and PRIME (a new catheter is empty:
# until its volume has been pushed the drug does not reach the patient, and only that
# volume is exempt from the dose limits, Pump._account). Imported at the end of the
# boot, after the pump's buffers (powerup.py): its code is not in the boot's memory peak.
import msgdefs as md
from alarms import EMPTY_RESERVOIR, LOW_RESERVOIR, RX_INVALID, VOLUME_DISCREPANCY
from engine import KIND_PRIME
from eventlog import wall_u32
from gate import IN_PROGRESS, OK, RESERVOIR
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
        rxmod.check_fields(rx, p.druglib.get(rx.drug))
    except rxmod.RxError as e:
        if e.field == md.FIELD_VERSION:
            return md.NACK_SCHEMA, rxmod.VERSION
        return md.NACK_INVALID, e.field
    # The prescription must describe what is in the reservoir: refill first.
    if p.drug and rx.drug != p.drug:
        return md.NACK_INVALID, md.FIELD_DRUG
    if p.conc and rx.conc_ng_ml != p.conc:
        return md.NACK_INVALID, md.FIELD_CONCENTRATION
    d = p.druglib[rx.drug]
    reason = guardmod.check_rx(rx, d, p.max_rate_nl_h, p.min_rate_nl_day)
    old = p.rx
    old_conc = p.conc
    if reason == OK:
        # The new plan together with what was already delivered and what is running:
        # tried in the engine, put back if the guard says no.
        p.rx = rx
        p.conc = rx.conc_ng_ml
        p.load_plan(now)
        reason = p._guard(now)
        if reason != OK:
            p.rx = old
            p.conc = old_conc
            if old is not None:
                p.load_plan(now)
            else:
                p.engine.unload(now)
    if reason != OK:
        p.log(now, md.EV_PRESCRIPTION_REFUSED, who, reason, rx.drug, rx.crc)
        return md.NACK_LIMIT, reason
    first = old is None
    if not p.drug:
        # a new pump learns its reservoir's drug from its first prescription: that
        # fill is its first of the drug (the label's first-fill stability)
        p.fill_t = now if now else 1
        p.fill_first = 1
    p.drug = rx.drug
    # d: the soft limits the clinician overrode (Rx flags bits 1..)
    p.log(now, md.EV_PRESCRIPTION_CHANGED, who, rx.crc, rx.drug, len(blob), rx.flags >> 1)
    if p.alarms.clear(RX_INVALID, now, p.reservoir_nl):
        p._update_mode(now)  # a prescription is in force again
    if p.use_threshold(now):
        p.emit_info(now)  # DEVICE_INFO says the threshold in force
    if first or p.mode == md.MODE_STOPPED:
        p.set_mode(now, md.MODE_RUNNING)
        p.log(now, md.EV_THERAPY_STARTED, who, rx.crc, 0, 0)
    return 0, 0


# -- REFILL ------------------------------------------------------------------------------

def refill(p, now, who, volume_nl, conc, residual_nl, drug):
    """The clinician emptied the pump (residual_nl aspirated, measured) and filled
    volume_nl of drug at conc: the reservoir is then volume_nl, nothing is mixed. drug 0:
    the reservoir's drug. A residual far from what the pump expected is logged and
    alarmed (a pocket fill, a leak or an underdose may have happened)."""
    if volume_nl <= 0:
        return md.NACK_INVALID, md.FIELD_VOLUME
    if volume_nl > p.capacity_nl:
        p.log(now, md.EV_REFILL_REFUSED, who, volume_nl, p.reservoir_nl, p.capacity_nl)
        return md.NACK_LIMIT, p.capacity_nl
    if conc <= 0:
        return md.NACK_INVALID, md.FIELD_CONCENTRATION
    if drug == 0:
        drug = p.drug
    d = p.druglib.get(drug) if drug else None
    if drug and d is None:
        return md.NACK_INVALID, md.FIELD_DRUG
    if d is not None and guardmod.check_conc(conc, d) != OK:
        return md.NACK_LIMIT, guardmod.MAX_CONCENTRATION
    expected = p.reservoir_nl
    p.fill_first = 1 if drug != p.drug else 0
    p.fill_t = now if now else 1
    old_drug, old_conc = p.drug, p.conc
    _start_bridge(p, drug, conc)
    p.reservoir_nl = volume_nl
    p.conc = conc
    p.drug = drug
    if p.bridge_nl <= 0 and (old_drug and drug != old_drug or old_conc and conc != old_conc):
        # nothing of the old fill is in the catheter (none, or a new one not yet filled):
        # the new fill reaches the tip with the next stroke. Its volume plan is made at
        # once (the same drug: the dose per day kept), or, for another drug, its own
        # prescription is needed: the old one at the new drug's concentration would be
        # the wrong drug at the wrong rate (found by the stateful test: morphine's
        # 10.8 mg/day run as 432 mL/day of ziconotide)
        if old_drug and drug != old_drug:
            p.bridge_drug = old_drug
        p.end_bridge(now)
    p.log(now, md.EV_REFILLED, who, volume_nl, residual_nl, conc, drug)
    off = residual_nl - expected if residual_nl > expected else expected - residual_nl
    tol = expected // 5
    if off > (tol if tol > _DISCREPANCY_NL else _DISCREPANCY_NL):
        p.log(now, md.EV_REFILL_DISCREPANCY, who, expected, residual_nl, 0)
        p.alarms.raise_(VOLUME_DISCREPANCY, now, p.reservoir_nl, residual_nl)
    if p.reservoir_nl >= p.stroke_nl:
        p.alarms.clear(EMPTY_RESERVOIR, now, p.reservoir_nl)
    if p.reservoir_nl >= p.low_nl:
        p.alarms.clear(LOW_RESERVOIR, now, p.reservoir_nl)
    if p.rx is not None:
        p.drug_per_stroke()
    p.eta_dirty = True
    p._update_mode(now)
    return 0, 0


def _start_bridge(p, drug, conc):
    # The catheter still holds the fill before this one (all of it but what a new
    # catheter has not been filled with yet): it is delivered first.
    held = p.catheter_nl - p.unprimed_nl
    if held <= 0:
        return
    if p.drug and drug != p.drug:
        # another drug: the old prescription's volume rate pushes the old drug out (with
        # no old prescription, the new one's, limited by the old drug's limits)
        if not p.bridge_drug:
            p.bridge_drug = p.drug
            p.bridge_rx = p.rx
            p.bridge_conc = p.conc if p.bridge_nl <= 0 else p.bridge_conc
        p.bridge_nl = held
    elif p.conc and conc != p.conc and not p.bridge_drug:
        # the same drug, another concentration: the drug per day is kept
        if p.bridge_nl <= 0:
            p.bridge_conc = p.conc
        p.bridge_nl = held


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
    old = (p.wall_delta, p.offset)
    p.wall_delta = utc - now
    p.offset = offset
    p.engine.set_offset(offset + p.wall_delta, now)
    reason = p._guard(now) if p.rx is not None else OK
    if reason != OK:
        p.wall_delta, p.offset = old
        p.engine.set_offset(p.offset + p.wall_delta, now)
        p.log(now, md.EV_TIME_REFUSED, who, reason, utc, 0)
        return md.NACK_LIMIT, reason
    p.log(now, md.EV_TIME_CHANGED, who, wall_u32(old_wall), utc, offset)
    p.eta_dirty = True
    p.changed = True
    return 0, 0


# -- CATHETER and PRIME -------------------------------------------------------------------

def catheter(p, now, who, volume_nl):
    """The catheter is now volume_nl and empty: unprimed until that much is pushed. A
    bridge ends: the old fill it carried is gone with the old catheter."""
    if not 0 < volume_nl <= md.MAX_CATHETER_NL:
        return md.NACK_INVALID, md.FIELD_VOLUME
    if p.engine.bolus_active(KIND_PRIME):
        return md.NACK_BUSY, IN_PROGRESS
    p.catheter_nl = volume_nl
    p.unprimed_nl = volume_nl
    p.log(now, md.EV_CATHETER_CHANGED, who, volume_nl, 0, 0)
    if p.bridge_nl > 0 or p.bridge_drug:
        p.end_bridge(now)
    p.emit_info(now)  # DEVICE_INFO.catheter_nl
    p.eta_dirty = True
    p.changed = True
    return 0, 0


def prime(p, now, who):
    """A priming bolus of the catheter volume not yet pushed, at the mechanism's fastest
    rate; exempt from the limits (the drug only fills the catheter)."""
    vol = p.unprimed_nl
    if vol <= 0:
        return md.NACK_INVALID, md.FIELD_PRIMED
    if p.mode != md.MODE_RUNNING:
        return md.NACK_INVALID, p.mode
    e = p.engine
    if e.bolus_active(KIND_PRIME):
        return md.NACK_BUSY, IN_PROGRESS
    if p.reservoir_nl < vol:
        return md.NACK_LIMIT, RESERVOIR
    dur = (vol * _HOUR + p.max_rate_nl_h - 1) // p.max_rate_nl_h
    e.advance(now)
    e.start_bolus(now, vol, dur, KIND_PRIME)
    p.log(now, md.EV_PRIME_STARTED, who, vol, dur, 0)
    p.eta_dirty = True
    p.changed = True
    return 0, 0
