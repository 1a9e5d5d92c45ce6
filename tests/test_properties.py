"""Safety invariants of the firmware's therapy core, as properties (hypothesis).

Hypothesis makes prescriptions and request sequences on the host; the real firmware
runs each case under MicroPython (tests/mp/props.py) and the host checks the result:
- never above a hard limit: drug in any rolling 24 h <= the drug library's limit;
- the lockout and the rolling maximum of patient boluses hold;
- volume is conserved: delivered + reservoir == everything filled;
- delivered never goes down.
"""

from __future__ import annotations

import bisect
import json
from pathlib import Path

from hypothesis import HealthCheck, given, settings, target
from hypothesis import strategies as st

LIB = {d["id"]: d for d in json.loads(
    (Path(__file__).resolve().parents[1] / "firmware" / "druglib.json").read_text())["drugs"]}
DAY = 86400


@st.composite
def cases(draw):
    drug = draw(st.sampled_from(sorted(LIB)))
    d = LIB[drug]
    conc = draw(st.integers(d["max_conc_ng_ml"] // 10, d["max_conc_ng_ml"]))
    limit = d["max_ng_day"]
    n = draw(st.integers(1, 4))
    starts = sorted(draw(st.sets(st.integers(1, 1439), min_size=n - 1, max_size=n - 1)))
    starts = [0] + starts
    # basal well inside the limit, boluses may push the worst case to or over it
    rates = [limit * draw(st.integers(0, 95)) // 100 for _ in starts]
    pb = None
    if draw(st.booleans()):
        dose = limit * draw(st.integers(1, 25)) // 100
        dur = draw(st.integers(60, 1800))
        lock = draw(st.integers(dur, 4 * 3600))
        pb = [dose, dur, lock, draw(st.integers(1, 8))]
    timed = []
    if draw(st.booleans()):
        timed = [[draw(st.integers(0, 1439)), draw(st.integers(60, 3600)),
                  draw(st.integers(1, max(1, limit // 10)))]]
    days = draw(st.integers(1, 3))
    reqs = draw(st.lists(
        st.one_of(
            st.tuples(st.integers(0, days * DAY - 1), st.just("pb")),
            st.tuples(st.integers(0, days * DAY - 1), st.just("cb"),
                      st.integers(1, 100).map(lambda pc: max(1, limit * pc // 100)),
                      st.integers(60, 3600)),
            st.tuples(st.integers(0, days * DAY - 1), st.just("suspend")),
            st.tuples(st.integers(0, days * DAY - 1), st.just("resume")),
            st.tuples(st.integers(0, days * DAY - 1), st.just("refill"),
                      st.integers(1, 5_000_000), st.just(conc)),
        ),
        max_size=40,
    ))
    return {
        "drug": drug, "conc": conc, "steps": [[s, r] for s, r in zip(starts, rates, strict=True)],
        "timed": timed, "pb": pb, "days": days,
        "reservoir_nl": draw(st.integers(100_000, 20_000_000)),
        "stroke_nl": draw(st.sampled_from([250, 500, 1000])),
        "requests": [list(q) for q in reqs],
    }


def max_rolling_24h(times: list[int], amounts: list[int]) -> int:
    """Largest total of `amounts` in any 24 h window (exact, by two pointers)."""
    best = tot = 0
    j = 0
    for i, t in enumerate(times):
        tot += amounts[i]
        while times[j] <= t - DAY:
            tot -= amounts[j]
            j += 1
        best = max(best, tot)
    return best


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_therapy_invariants(mpw, case):
    # REQ: SR-LIM-02
    # REQ: SR-PB-01
    # REQ: SR-PB-02
    # REQ: SR-RES-03
    # REQ: SR-DOSE-03
    out = mpw.call("props.run_case", case)
    if not out["accepted"]:
        return
    # never above a hard limit (the drug in any rolling 24 h, counted exactly)
    # drug per stroke is exact: nL x ng/mL = ng x 1e6 (no rounding to whole ng)
    worst = max_rolling_24h(out["strokes"], out["ng_per_stroke"])
    limit = out["limit_ng"] * 1_000_000
    target(worst / limit)  # steer the search towards the limit
    assert worst <= limit, (worst / 1e6, out["limit_ng"])
    # lockout between patient bolus starts, and the rolling maximum
    starts = out["pb_starts"]
    for a, b in zip(starts, starts[1:], strict=False):
        assert b - a >= out["lockout_s"], (a, b)
    if case["pb"]:
        for i, t in enumerate(starts):
            k = i - bisect.bisect_right(starts, t - DAY) + 1
            assert k <= case["pb"][3], (t, k)
    assert out["conserved"], "delivered + reservoir != fills"
    assert out["monotonic"], "delivered went down"
    assert out["delivered_nl"] == out["stroke_count"] * case["stroke_nl"]


def test_property_checker_catches_an_overdose():
    # the checker itself: a window holding more than the limit must be found
    assert max_rolling_24h([0, 100, DAY + 50], [5, 7, 11]) == 18
    assert max_rolling_24h([0, DAY, 2 * DAY], [5, 7, 11]) == 11
