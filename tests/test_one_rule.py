"""Where the host and the device check the same limit, they draw the line at the same
place: the host's check (inputs/rxfile.py) against the firmware's (guard.py, rx.py) run
under MicroPython, on values around the line."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mphost import MPWorker
from theca.inputs import units as u
from theca.inputs.rxfile import MAX_RATE_NL_H, too_fast


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
