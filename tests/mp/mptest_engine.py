# Delivery engine rules, run under MicroPython.
from engine import KIND_PATIENT, KIND_TIMED, NEVER, Engine

DAY = 86400
S = 250  # stroke nL


class Host:
    """Records the engine's callbacks; starts timed boluses like the pump does."""

    def __init__(self):
        self.steps = []
        self.ends = []
        self.timed = []
        self.missed = []
        self.engine = None

    def on_step(self, t, i, rate):
        self.steps.append((t, i, rate))

    def on_timed(self, t, dose_nl, dur, late_s=0):
        self.timed.append((t, dose_nl, dur))
        self.engine.start_bolus(t, dose_nl, dur, KIND_TIMED)

    def on_timed_missed(self, t, dose_nl):
        self.missed.append((t, dose_nl))

    def on_bolus_end(self, t, kind, vol):
        self.ends.append((t, kind, vol))


def make(steps, rates, timed=(), offset=0, now=0):
    h = Host()
    e = Engine(S, h)
    h.engine = e
    e.load(steps, rates, list(timed), now, offset)
    return e, h


def run(e, t0, t1, check=None):
    """Drive the engine as the pump does: call at next_time, take every stroke due."""
    t = t0
    k = 0
    while True:
        due = e.advance(t)
        for _ in range(due):
            e.stroke_done()
            k += 1
        if check:
            check(t, k)
        nt = e.next_time(t)
        if nt > t1:
            break
        t = nt
    return k


def exact_units(steps, rates, t0, t1):
    # Exact integral (in 1/86400 nL) of a daily schedule (offset 0) over [t0, t1).
    tot = 0
    t = t0
    while t < t1:
        tod = t % DAY
        i = len(steps) - 1
        while i > 0 and steps[i] > tod:
            i -= 1
        end = t - tod + (steps[i + 1] if i + 1 < len(steps) else DAY)
        if end > t1:
            end = t1
        tot += rates[i] * (end - t)
        t = end
    return tot


def test_constant_rate_strokes_per_day():
    # REQ: SR-DOSE-01
    e, _ = make([0], [150_000])
    k = run(e, 0, DAY)
    assert k == 600, k  # 0.15 mL/day in 250 nL strokes


def test_never_a_whole_stroke_from_the_exact_integral():
    # REQ: SR-DOSE-01
    steps = [0, 8 * 3600, 20 * 3600 + 60]
    rates = [150_000, 200_000, 37_777]

    def check(t, k):
        ex = exact_units(steps, rates, 0, t)
        diff = ex - k * S * DAY
        assert 0 <= diff < S * DAY, (t, k, diff)

    run(e := make(steps, rates)[0], 0, 3 * DAY, check)
    assert e.acc < e.Q


def test_steps_change_at_local_times():
    # local = UTC + 1 h: the 08:00 local step starts at 07:00 UTC
    # REQ: SR-DOSE-02
    e, h = make([0, 8 * 3600], [100_000, 300_000], offset=3600)
    run(e, 0, DAY)
    ts = [t for t, i, r in h.steps]
    assert 7 * 3600 in ts, ts
    assert 23 * 3600 in ts, ts  # local midnight
    assert h.steps[0][1] == 1 and h.steps[0][2] == 300_000


def test_bolus_exact_volume_over_duration():
    # REQ: SR-DOSE-01
    e, h = make([0], [0])
    e.start_bolus(100, 10_000, 600, KIND_PATIENT)  # 10 uL over 10 min
    k = run(e, 100, 10_000)
    assert k * S == 10_000, k
    assert h.ends == [(700, KIND_PATIENT, 10_000)], h.ends


def test_bolus_on_top_of_basal():
    e, h = make([0], [86_400])  # 1 nL/s
    e.start_bolus(0, 5_000, 1000, KIND_PATIENT)
    k = run(e, 0, 2000)
    # 2000 s basal (2000 nL) + 5000 nL bolus = 7000 nL = 28 strokes
    assert k == 28, k


def test_high_rate_gives_several_strokes_at_once():
    e, _ = make([0], [0])
    e.start_bolus(0, 50_000, 60, KIND_PATIENT)  # 833 nL/s: > 3 strokes per second
    due = e.advance(1)
    assert due == 3, due


def test_timed_bolus_every_day():
    # REQ: SR-DOSE-02
    e, h = make([0], [0], timed=[(12 * 3600, 1800, 20_000)])
    k = run(e, 0, 3 * DAY)
    assert [t for t, d, u in h.timed] == [12 * 3600, DAY + 12 * 3600, 2 * DAY + 12 * 3600]
    assert k * S == 60_000, k


def test_hold_does_not_catch_up():
    # REQ: SR-PWR-02
    e, _ = make([0], [864_000])  # 10 nL/s
    assert e.advance(100) == 4  # 1000 nL
    for _ in range(4):
        e.stroke_done()
    assert e.advance(5000, False) == 0  # suspended for 4900 s
    assert e.acc < e.Q
    assert e.advance(5010) <= 1  # only the 10 s since resuming, never the gap


def test_missed_timed_bolus_is_reported_while_held():
    e, h = make([0], [0], timed=[(3600, 600, 1000)])
    e.advance(7200, False)
    assert h.missed == [(3600, 1000)], h.missed
    assert h.timed == []


def test_drop_owed_forgets_undelivered_strokes():
    # REQ: SR-STALL-01
    e, _ = make([0], [864_000])
    assert e.advance(100) == 4
    assert e.drop_owed() == 4 * S
    assert e.advance(100) == 0


def test_projection_matches_delivery():
    # REQ: SR-RES-01
    steps = [0, 6 * 3600, 18 * 3600]
    rates = [100_000, 250_000, 40_000]
    e, _ = make(steps, rates, timed=[(12 * 3600, 1800, 30_000)])
    vol = 2_000_000
    t_proj = e.time_to_deliver(0, vol)
    e2, _ = make(steps, rates, timed=[(12 * 3600, 1800, 30_000)])
    t = 0
    k = 0
    while True:
        for _ in range(e2.advance(t)):
            e2.stroke_done()
            k += 1
        if k * S >= vol:
            break
        t = e2.next_time(t)
    # the stroke that completes vol is taken the second the integral reaches it
    assert t_proj > 5 * DAY
    assert abs(t_proj - t) <= 1, (t_proj, t)


def test_zero_rate_never_wakes_for_strokes():
    e, _ = make([0], [0])
    assert e.next_time(0) == DAY  # only the daily step wrap
    e.unload(0)
    assert e.next_time(0) == NEVER


def test_reprogram_keeps_owed_fraction():
    e, _ = make([0], [864_000])
    e.advance(10)  # 100 nL owed, no stroke yet
    acc = e.acc
    e.load([0], [432_000], [], 10, 0)
    assert e.acc == acc


def test_breakpoint_at_the_resume_second_is_not_lost():
    # Found by the occlusion scenario: delivery resumed exactly at a timed bolus's
    # start; the engine must still start it, and next_time must move on.
    # REQ: SR-DOSE-02
    e, h = make([0], [200_000], timed=[(12 * 3600, 1800, 20_000)])
    e.advance(12 * 3600 - 10, False)
    e.t = 12 * 3600  # a caller that sets the engine's time past a breakpoint
    e.advance(12 * 3600)
    assert h.timed == [(12 * 3600, 20_000, 1800)], h.timed
    assert e.next_time(12 * 3600) > 12 * 3600


def test_late_call_handles_every_breakpoint_at_its_time():
    # REQ: SR-DOSE-02
    e, h = make([0, 8 * 3600], [100_000, 300_000], timed=[(9 * 3600, 600, 5_000)])
    e.advance(10 * 3600)  # one late call across a step, a timed start and its end
    assert [s[0] for s in h.steps] == [8 * 3600]
    assert h.timed == [(9 * 3600, 5_000, 600)]
    assert h.ends == [(9 * 3600 + 600, KIND_TIMED, 5_000)]


def test_no_clock_value_makes_the_engine_loop():
    # Before: at device time NEVER (2**30 - 1) every "never" breakpoint counted as due and
    # advance() looped for ever, again after every reboot. Each call here must return.
    # REQ: SR-TIME-02
    for t0 in (0, 1, NEVER - 3 * DAY, NEVER - DAY - 5, NEVER - 1):
        e, h = make([0, 8 * 3600], [200_000, 400_000], [(12 * 3600, 600, 5_000)], now=t0)
        for t in (t0 + 1, t0 + 48 * 3600, t0 + 24 * 3600, NEVER - 1, NEVER, NEVER + 100, 2**31):
            if t - t0 > 3 * DAY:
                continue  # 30 years of breakpoints one by one: correct, but not a clock edge
            e.advance(t)
            assert e.t < NEVER
            e.next_time(t)
    e, h = make([0], [0], now=NEVER - 1)  # no basal, no bolus: every breakpoint NEVER
    assert e.advance(NEVER) == 0 and e.advance(NEVER + DAY) == 0


def test_a_bolus_that_does_not_fit_is_refused_not_truncated():
    # Before: dose_nl * 86400 // duration went into array('i') truncated: 0.3 mg over 1 s
    # on a 300 uL/day pump wrapped the rate negative and stopped the basal.
    # REQ: SR-LIM-06
    e, h = make([0], [300_000])
    try:
        e.start_bolus(0, 30_000_000, 1, KIND_PATIENT)
        raise AssertionError("a rate of 2.6e12 units/s was stored")
    except ValueError:
        pass
    assert not e.bolus_active(KIND_PATIENT) and e.rate == 300_000
    try:
        e.start_bolus(NEVER - 10, 1000, 600, KIND_PATIENT)
        raise AssertionError("an end time past NEVER was stored")
    except ValueError:
        pass
