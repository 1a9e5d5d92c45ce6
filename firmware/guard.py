# The dose guard: the one place that answers "may this drug be given, and if not, which
# limit?". Every path that can add drug asks it (programming, timed / patient / clinician
# boluses, resume, a clock change) and gets back OK or the name of the limit, as the
# protocol numbers them (DENY_*, the NACK `limit` detail).
#
# It judges on the pump's monotonic clock, which SET_TIME never moves: the delivered
# history (5-minute buckets) plus the planned future (basal and timed boluses as the
# schedule now stands, running boluses, the new dose) for every 24 h and every 1 h window
# the dose will be in. Everything is rounded towards denial.
from micropython import const

from gate import BUCKET_S, NBUCKETS, OK
from msgdefs import (
    DENY_DAILY_LIMIT as DAILY_LIMIT,
    DENY_MAX_BOLUS as MAX_BOLUS,
    DENY_MAX_CONCENTRATION as MAX_CONCENTRATION,
    DENY_MAX_PER_HOUR as MAX_PER_HOUR,
    DENY_MAX_RATE as MAX_RATE,
    DENY_MIN_RATE as MIN_RATE,
)
import rx as rxmod

DAY = const(86400)
HOUR = const(3600)
# the current (partial) bucket and the 12 before it: always at least 1 h
HOUR_BUCKETS = const(13)
_E6 = const(1_000_000)


def load_limits(lib):
    """The drug library's hard limits as {drug id: entry}. The soft limits are the host's."""
    out = {}
    for d in lib["drugs"]:
        out[d["id"]] = {
            "max_conc_ng_ml": d["max_conc_ng_ml"],
            "max_ng_day": d["max_ng_day"],
            "max_ng_hour": d["max_ng_hour"],
            "max_bolus_ng": d["max_bolus_ng"],
            # the fill's stability (STATUS.refill_due), days; 0: none
            "stability_days": d.get("stability_days", 0),
            "first_fill_stability_days": d.get("first_fill_stability_days", 0),
        }
    return out


def rate_too_fast(dose_nl, duration_s, max_rate_nl_h):
    """True if dose_nl over duration_s is faster than the mechanism's max_rate."""
    return dose_nl * HOUR > max_rate_nl_h * duration_s


def check_conc(conc, d):
    """OK, or MAX_CONCENTRATION if conc (ng/mL) is over the drug's hard maximum."""
    return MAX_CONCENTRATION if conc > d["max_conc_ng_ml"] else OK


def check_rx(rx, d, max_rate_nl_h, min_rate_nl_day):
    """The prescription on its own: OK or the limit it breaks (a DENY_* code).

    A basal step slower than the mechanism keeps up (min_rate, 0 included) is refused: a
    pump that cannot move the catheter's fluid is an unnoticed underdose.

    Worst cases: every allowed patient bolus taken, every timed bolus given; the basal
    at its fastest step for the hourly limit (a clock change can keep it there)."""
    conc = rx.conc_ng_ml
    if check_conc(conc, d) != OK:
        return MAX_CONCENTRATION
    big = d["max_bolus_ng"]
    for dose in rx.timed_dose_ng:
        if dose > big:
            return MAX_BOLUS
    if rx.pb_max_per_day and rx.pb_dose_ng > big:
        return MAX_BOLUS
    top = 0
    for r in rx.step_rate_ng_day:
        if r > top:
            top = r
        if rxmod.ng_to_nl(r, conc) < min_rate_nl_day:
            return MIN_RATE
    if rxmod.ng_to_nl(top, conc) > max_rate_nl_h * 24:
        return MAX_RATE
    for i in range(len(rx.timed_dose_ng)):
        if rate_too_fast(rxmod.ng_to_nl(rx.timed_dose_ng[i], conc), rx.timed_duration_s[i],
                         max_rate_nl_h):
            return MAX_RATE
    if rx.pb_max_per_day and rate_too_fast(rxmod.ng_to_nl(rx.pb_dose_ng, conc),
                                           rx.pb_duration_s, max_rate_nl_h):
        return MAX_RATE
    if rx.worst_case_ng() > d["max_ng_day"]:
        return DAILY_LIMIT
    if worst_hour_ng(rx, top) > d["max_ng_hour"]:
        return MAX_PER_HOUR
    return OK


def worst_hour_ng(rx, top_rate_ng_day):
    """Most drug the prescription can put into any 1 h window (ng, rounded up).

    A window [w, w + 1 h) meets a bolus that starts in (w - its duration, w + 1 h), so all
    the boluses one window meets start within 1 h + the longest duration of each other.
    """
    tot = (top_rate_ng_day * HOUR + DAY - 1) // DAY
    n = len(rx.timed_start_s)
    if n:
        span = HOUR
        for dur in rx.timed_duration_s:
            if HOUR + dur > span:
                span = HOUR + dur
        most = 0
        for j in range(n):
            s = 0
            for k in range(n):
                if (rx.timed_start_s[k] - rx.timed_start_s[j]) % DAY < span:
                    s += rx.timed_dose_ng[k]
            if s > most:
                most = s
        tot += most
    if rx.pb_max_per_day:
        c = (HOUR + rx.pb_duration_s) // rx.pb_lockout_s + 1
        if c > rx.pb_max_per_day:
            c = rx.pb_max_per_day
        tot += c * rx.pb_dose_ng
    return tot


class Guard:
    """The dynamic check: history on the monotonic clock plus the planned future."""

    def __init__(self, rolling, engine, max_rate_nl_h):
        self.rolling = rolling
        self.engine = engine
        self.max_rate_nl_h = max_rate_nl_h

    def check(self, now, d, conc, dose_ng=0, dose_nl=0, duration_s=0, cap_nl=0):
        """OK if a dose of dose_ng (dose_nl over duration_s; 0: no new dose, only the plan
        as it stands) may start at `now`, else the limit (DENY_*). cap_nl, if not 0: at
        most that volume of the plan is of drug `d` (the old drug left in the catheter
        after a change of drug). Allocates little, and only on a command or a timed bolus
        start, never per stroke."""
        if dose_ng:
            if dose_ng > d["max_bolus_ng"]:
                return MAX_BOLUS
            if rate_too_fast(dose_nl, duration_s, self.max_rate_nl_h):
                return MAX_RATE
        # running patient and clinician boluses: what is left of them, rounded up
        base = dose_ng + (self.engine.committed_extra_nl(now) * conc + _E6 - 1) // _E6
        cap = cap_nl * DAY if cap_nl else 0
        if self._over(now, conc, base, NBUCKETS, d["max_ng_day"], cap):
            return DAILY_LIMIT
        if self._over(now, conc, base, HOUR_BUCKETS, d["max_ng_hour"], cap):
            return MAX_PER_HOUR
        return OK

    def _over(self, now, conc, base, nb, limit, cap=0):
        # Every window of nb buckets that holds the dose ends in one of the next nb
        # buckets: history still inside it + the plan up to its end + base.
        r = self.rolling
        r.sum(now)  # roll the buckets up to now
        b = r.b
        first = r.idx - nb + 1  # oldest bucket of the window that ends now
        hist = 0
        for k in range(first, r.idx + 1):
            hist += b[k % NBUCKETS]
        e = self.engine
        scale = DAY * _E6  # units (1/86400 nL) x ng/mL -> ng
        planned = 0
        t = now
        for j in range(nb):
            if j:
                hist -= b[(first + j - 1) % NBUCKETS]  # that bucket left the window
                if e.loaded:
                    planned += e.plan_units(t, t + BUCKET_S)
                    if cap and planned > cap:
                        planned = cap
                t += BUCKET_S
            if hist + (planned * conc + scale - 1) // scale + base > limit:
                return True
        return False
