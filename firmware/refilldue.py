# When the pump should be refilled (STATUS.refill_due): the earliest of the reservoir
# reaching its low threshold with every allowed patient bolus taken, and the fill's
# stability limit from the drug library; and when the reservoir reaches its threshold
# by the plan alone (STATUS.low_reservoir_eta). Imported at the first projection, after
# the boot, so its code is not part of the boot's memory peak.
from engine import KIND_CLINICIAN, KIND_PATIENT, NEVER
from micropython import const
import rx as rxmod

_DAY = const(86400)


def due(p, now):
    """(monotonic time to refill by, 0 for none; why: 0 the reservoir, 1 the fill's
    stability, 2 the battery's end of service): the earliest of the three.

    The reservoir's date uses the daily volume of the plan that follows any bridge (right
    after a refill with a new concentration the catheter's old fill runs at the old rate
    for hours, but the reservoir empties at the new one), boluses included, in whole hours
    rounded down (earlier, never later). Small ints only: margin * 24 stays below 2**30
    because margin is under a day's volume times the days it lasts. Allocates (big ints
    for a day's drug): called on a change, never per stroke."""
    t = NEVER
    why = 0
    pl = p.plan
    rx = pl.rx if pl.rx is not None else pl.plan_rx()
    conc = pl.conc if pl.rx is not None else pl.drug_conc()
    if rx is not None and p.engine.loaded and conc:
        day = _day_nl(rx, conc)
        if rx.pb_max_per_day:
            day += rx.pb_max_per_day * rxmod.ng_to_nl(rx.pb_dose_ng, conc)
        margin = p.delivery.reservoir_nl - pl.low_nl
        if margin <= 0:
            t = now
        elif day > 0:
            days = margin // day
            t = now + days * _DAY + (margin - days * day) * 24 // day * 3600
    d = p.druglib.get(pl.drug) if pl.fill_t and pl.drug else None
    if d is not None:
        n = d["stability_days"]
        if pl.fill_first and d["first_fill_stability_days"]:
            n = d["first_fill_stability_days"]
        if pl.mix[0]:  # an admixture keeps as long as its least stable drug
            import mix

            n = mix.stability_days(n, pl.mix, p.druglib)
        if n and pl.fill_t + n * _DAY < t:
            t = pl.fill_t + n * _DAY
            why = 1
    b = now + p.battery_days * _DAY  # (0 days from end of service on: now)
    if b < t:
        t = b
        why = 2
    return (t if t < NEVER else 0), why


def _day_nl(rx, conc):
    # the prescription's volume a day (nL) at conc: its basal and its timed boluses
    ng = rx.daily_basal_ng()
    for dose in rx.timed_dose_ng:
        ng += dose
    return rxmod.ng_to_nl(ng, conc)


def low_eta(p, now):
    """Monotonic time the running plan takes the reservoir below its threshold (0: not
    known, or already below). The alarm comes with the stroke that crosses it."""
    if p.plan.rx is None:
        return 0
    d = p.delivery
    margin = d.reservoir_nl - p.plan.low_nl
    if margin < 0:
        return 0
    k = margin // d.stroke_nl + 1
    extra = 0
    e = p.engine
    if e.bolus_active(KIND_PATIENT) or e.bolus_active(KIND_CLINICIAN):
        extra = e.committed_nl(now)
    t = e.time_to_deliver(now, k * d.stroke_nl, extra)
    return 0 if t >= NEVER else t
