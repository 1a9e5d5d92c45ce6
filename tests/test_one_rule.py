"""Where the host and the device check the same limit, they draw the line at the same
place: the host's check (inputs/rxfile.py) against the firmware's (guard.py, rx.py) run
under MicroPython, on values around the line."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mphost import MPWorker
from theca.inputs import units as u
from theca.inputs.rxfile import MAX_RATE_NL_H, MIN_RATE_NL_DAY, Prescription, too_fast
from theca_protocol import names as N

DENY_MIN_RATE = next(k for k, v in N.DENY_REASONS.items() if v == "min_rate")


@pytest.fixture(scope="module")
def mp():
    w = MPWorker()
    yield w
    w.close()


@settings(max_examples=300, deadline=None, derandomize=True)
@given(conc=st.integers(1_000, 50_000_000), dur=st.integers(1, 65535), off=st.integers(-3, 3))
def test_bolus_rate_limit_is_the_devices(mp, conc, dur, off):
    # REQ: SR-LIM-08
    # the dose (ng) whose volume is exactly max_rate for `dur`, then a few ng either side
    line_ng = MAX_RATE_NL_H * dur * conc // (3600 * u.NL_PER_ML)
    dose = max(1, line_ng + off * max(1, conc // u.NL_PER_ML))
    dose_nl = mp.call("rx.ng_to_nl", dose, conc)
    device = mp.call("guard.rate_too_fast", dose_nl, dur, MAX_RATE_NL_H)
    assert dose_nl == u.ng_to_nl(dose, conc)
    assert (too_fast(dose, dur, conc) is not None) == device, (dose, dur, conc)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(conc=st.integers(1_000, 50_000_000), off=st.integers(-3, 3))
def test_basal_rate_limit_is_the_devices(mp, conc, off):
    # REQ: SR-LIM-08
    # the rate (ng/day) whose volume is 24 h at max_rate, give or take
    line = MAX_RATE_NL_H * 24 * conc // u.NL_PER_ML
    rate = max(0, line + off * max(1, conc // u.NL_PER_ML))
    device = mp.call("rx.ng_to_nl", rate, conc) > MAX_RATE_NL_H * 24
    host = u.ng_to_nl(rate, conc) > MAX_RATE_NL_H * 24
    assert host == device


@settings(max_examples=200, deadline=None, derandomize=True)
@given(conc=st.integers(100_000, 25_000_000), off=st.integers(-3, 3))
def test_slowest_basal_is_the_devices(mp, conc, off):
    # REQ: SR-LIM-08
    # REQ: SR-LIM-09
    # the basal (ng/day) whose volume is the mechanism's min_rate, give or take: the host's
    # verdict on the whole prescription against the device's on the same blob
    line = MIN_RATE_NL_DAY * conc // u.NL_PER_ML
    rate = max(0, line + off * max(1, conc // 20_000))  # steps of about 50 nL/day
    rx = Prescription(drug_id=1, drug="morphine", conc_ng_ml=conc, steps=[(0, rate)])
    host = any("min_rate" in m for m in rx.problems(override_soft=True))
    device = mp.call("mp_helpers.rx_verdict", rx.to_blob().hex(), MAX_RATE_NL_H,
                     MIN_RATE_NL_DAY) == DENY_MIN_RATE
    assert host == device, (rate, conc)
