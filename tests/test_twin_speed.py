"""The twin's speed-ups decide nothing (issue 15): today's firmware on a fixed heavy scenario
gives, day by day, the same EVENT and STATUS frames and the same strokes at the same true
times as the recorded behaviour (tests/twin_golden.py wrote it before the speed work)."""

from __future__ import annotations

import json

import pytest
from twin_golden import GOLDEN, run


def _first_difference(want: dict, got: dict) -> str | None:
    for kind in ("stroke", "event", "status"):
        w, g = want[kind], got.get(kind, {})
        for day in sorted(set(w) | set(g), key=int):
            if w.get(day) != g.get(day):
                return f"{kind}s of day {day}: recorded {w.get(day)}, now {g.get(day)}"
    if want["truth"] != got["truth"]:
        return f"physical truth: recorded {want['truth']}, now {got['truth']}"
    return None


@pytest.mark.parametrize("period", ["60", "3600"])
def test_the_fast_twin_decides_as_the_recorded_one_stroke_for_stroke(tmp_path, period):
    want = json.loads(GOLDEN.read_text())[period]
    got = run(tmp_path, int(period))
    # the scenario did what it is for: strokes every day, a stall's failed strokes, events
    assert got["truth"]["failed_strokes"] > 0 and len(got["stroke"]) == 4
    assert _first_difference(want, got) is None, _first_difference(want, got)
