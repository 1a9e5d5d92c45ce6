# When the pump should be refilled (STATUS.refill_due): the earliest of the reservoir
# reaching its low threshold with every allowed patient bolus taken, and the fill's
# stability limit from the drug library. Imported at the first projection, after the
# boot, so its code is not part of the boot's memory peak.
from engine import NEVER
from micropython import const
import rx as rxmod

_DAY = const(86400)


def due(p, now):
    """(monotonic time to refill by, 0 for none; True if the fill's stability sets it).

    The reservoir's date uses the plan's average daily volume, boluses included, in
    whole hours rounded down (earlier, never later). Small ints only: margin * 24 stays
    below 2**30 because margin is under a day's volume times the days it lasts."""
    t = NEVER
    stab = False
    rx = p._plan_rx()
    e = p.engine
    if rx is not None and e.loaded:
        day = e.day_units // _DAY
        if rx.pb_max_per_day:
            day += rx.pb_max_per_day * rxmod.ng_to_nl(rx.pb_dose_ng, p._drug_conc())
        margin = p.reservoir_nl - p.low_nl
        if margin <= 0:
            t = now
        elif day > 0:
            days = margin // day
            t = now + days * _DAY + (margin - days * day) * 24 // day * 3600
    d = p.druglib.get(p.drug) if p.fill_t and p.drug else None
    if d is not None:
        n = d["stability_days"]
        if p.fill_first and d["first_fill_stability_days"]:
            n = d["first_fill_stability_days"]
        if n and p.fill_t + n * _DAY < t:
            t = p.fill_t + n * _DAY
            stab = True
    return (t if t < NEVER else 0), stab
