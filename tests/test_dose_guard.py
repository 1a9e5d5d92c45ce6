"""The hard limits hold on every path (issue 10's cases), on the real firmware in the twin,
judged from the twin's physical truth: the drug that reached the catheter tip, in true time.

Each case here passed a limit, hung or killed the twin before the dose guard.
"""

from __future__ import annotations

import pytest
import theca_protocol as tp
from theca.inputs.rxfile import Prescription
from twinctl import PATIENT, ControlledTwin, max_window

T0 = 189_388_800  # 2026-01-01T00:00:00Z
H, DAY = 3600, 86400
E6 = 1_000_000  # the truth's drug unit is 1e-6 ng
MORPHINE_DAY, MORPHINE_HOUR = 15_000_000, 1_125_000


def morphine(rate_ng_day: int, pb=None, timed=()) -> Prescription:
    return Prescription(drug_id=1, drug="morphine", conc_ng_ml=10_000_000,
                        steps=[(0, rate_ng_day)], timed=timed, pb=pb)


@pytest.fixture
def twin(tmp_path):
    tw = ControlledTwin(tmp_path, T0)
    yield tw
    tw.close()


def bolus(tw: ControlledTwin, dose_ng: int, dur_s: int):
    return tw.command("CLINICIAN_BOLUS", tp.compiled(tp.ClinicianBolus).pack(dose_ng, dur_s))


def set_time(tw: ControlledTwin, utc: int, offset: int = 0):
    return tw.command("SET_TIME", tp.compiled(tp.SetTime).pack(utc, offset))


def assert_within_limits(tw: ControlledTwin, day=MORPHINE_DAY, hour=MORPHINE_HOUR):
    s = tw.strokes()
    assert s, "no stroke was delivered at all"
    assert max_window(s, DAY) <= day * E6, max_window(s, DAY) / E6
    assert max_window(s, H) <= hour * E6, max_window(s, H) / E6


def test_programming_after_boluses_counts_what_was_delivered(twin):
    # REQ: SR-LIM-04
    assert twin.program(morphine(10_000_000)).result == "ack"
    twin.run(DAY)
    for _ in range(3):
        assert bolus(twin, 450_000, 1800).result == "ack"
        twin.run(2 * H)
    twin.run(-twin.now % H)
    # 15 mg/day is within the drug's limit alone, not with the 1.35 mg just given
    r = twin.program(morphine(15_000_000))
    assert (r.result, r.limit) == ("limit", "daily_limit")
    assert twin.program(morphine(12_000_000)).result == "ack"
    twin.run(2 * DAY)
    assert_within_limits(twin)


def test_setting_the_clock_frees_no_bolus(twin):
    # REQ: SR-LIM-05
    pb = (100_000, 600, H, 4)
    # 13.8 mg/day: two 0.45 mg boluses fit in 24 h, a third would pass 15 mg
    assert twin.program(morphine(13_800_000, pb=pb)).result == "ack"
    twin.run(DAY)
    assert bolus(twin, 450_000, 1800).result == "ack"
    twin.run(2 * H)
    assert bolus(twin, 450_000, 1800).result == "ack"
    twin.run(2 * H)
    r = bolus(twin, 450_000, 1800)
    assert (r.result, r.limit) == ("limit", "daily_limit")
    wall = twin.now
    assert set_time(twin, wall + DAY + 300).result == "ack"  # 24 h 05 min forward
    twin.run(60)
    r = bolus(twin, 450_000, 1800)
    assert (r.result, r.limit) == ("limit", "daily_limit")
    # the patient's lockout runs in true time too
    assert twin.command("PATIENT_BOLUS", role=PATIENT).result == "ack"
    twin.run(660)  # that bolus (10 min) is over; its 1 h lockout is not
    assert set_time(twin, wall + 2 * DAY).result == "ack"
    r = twin.command("PATIENT_BOLUS", role=PATIENT)
    assert (r.result, r.limit) == ("limit", "lockout")
    # and back: no start is left in the future, so the lockout ends on time
    assert set_time(twin, wall).result == "ack"
    twin.run(H)
    assert twin.command("PATIENT_BOLUS", role=PATIENT).result == "ack"
    twin.run(DAY)
    assert_within_limits(twin)


def test_a_bolus_faster_than_the_mechanism_is_refused_and_the_basal_goes_on(tmp_path):
    # REQ: SR-LIM-06
    tw = ControlledTwin(tmp_path, T0, conc_ng_ml=1_000_000)
    try:
        assert tw.program(Prescription(drug_id=1, drug="morphine", conc_ng_ml=1_000_000,
                                       steps=[(0, 300_000)])).result == "ack"  # 300 uL/day
        tw.run(H)
        r = bolus(tw, 300_000, 1)
        assert (r.result, r.limit) == ("limit", "max_rate")
        before = tw.truth["pumped_nl"]
        tw.run(2 * H)
        # the basal went on at its 12.5 uL/h: nothing wrapped, nothing stopped
        assert 24_000 <= tw.truth["pumped_nl"] - before <= 26_000
    finally:
        tw.close()


def test_a_far_future_clock_is_refused_and_the_pump_runs_on(twin):
    # REQ: SR-TIME-02
    assert twin.program(morphine(2_000_000)).result == "ack"
    r = set_time(twin, 1_073_741_823)  # 2054-01-09T13:37:03Z: 2**30 - 1
    assert r.result == "invalid"
    assert set_time(twin, 946_771_200).result == "invalid"  # 2050-01-01T00:00:00Z
    assert set_time(twin, 946_771_199).result == "ack"  # 2049-12-31T23:59:59Z: the last
    s0 = twin.truth["strokes"]
    twin.run(DAY)
    assert twin.truth["strokes"] - s0 >= 790  # 2 mg/day at 10 mg/mL: 800 strokes a day
    assert twin.status()["mode"] == 1


@pytest.mark.parametrize("jump", [H, 5 * H, -5 * H, 48 * H, -48 * H])
def test_clock_jumps_neither_stop_nor_catch_up_delivery(twin, jump):
    # REQ: SR-TIME-01
    assert twin.program(morphine(12_000_000)).result == "ack"
    twin.run(2 * H)
    n0 = twin.truth["pumped_nl"]
    assert set_time(twin, twin.now + jump).result == "ack"
    twin.run(DAY)
    # one day of 1.2 mL/day, to a stroke: no gap, no catch-up, no watchdog reset
    assert abs(twin.truth["pumped_nl"] - n0 - 1_200_000) <= 250
    assert twin.boots == 1


def test_single_boluses_and_bursts_have_a_ceiling(twin, tmp_path):
    # REQ: SR-LIM-03
    assert twin.program(morphine(2_000_000)).result == "ack"
    r = bolus(twin, 12_000_000, 300)  # 12 mg of morphine: far past any single dose
    assert (r.result, r.limit) == ("limit", "max_bolus")
    # hydromorphone 0.2 mg a press with a 1 min lockout: refused as a prescription (on a
    # pump filled with hydromorphone: a morphine pump refuses any hydromorphone one)
    hm = Prescription(drug_id=2, drug="hydromorphone", conc_ng_ml=10_000_000, steps=[(0, 2_000_000)],
                      pb=(200_000, 60, 60, 24))
    (tmp_path / "hm").mkdir()
    tw2 = ControlledTwin(tmp_path / "hm", T0)
    try:
        assert tw2.program(Prescription(drug_id=2, drug="hydromorphone", conc_ng_ml=10_000_000,
                                        steps=[(0, 2_000_000)])).result == "ack"
        r = tw2.program(hm)
        assert (r.result, r.limit) == ("limit", "max_bolus")
    finally:
        tw2.close()
    burst = morphine(2_000_000, pb=(100_000, 300, 300, 24))  # 0.1 mg, 5 min lockout
    r = twin.program(burst)
    assert (r.result, r.limit) == ("limit", "max_per_hour")
    twin.run(H)
    assert_within_limits(twin)


def test_a_reboot_without_a_clock_frees_no_bolus(tmp_path):
    # REQ: SR-LIM-07
    tw = ControlledTwin(tmp_path, T0, extra={"rtc_backed": False, "rtc_epoch": 1000})
    try:
        pb = (100_000, 600, 4 * H, 4)
        assert tw.program(morphine(2_000_000, pb=pb)).result == "ack"
        assert tw.command("PATIENT_BOLUS", role=PATIENT).result == "ack"
        tw.power_cut(6 * H)  # 6 h off; the board's clock knows nothing of it
        r = tw.command("PATIENT_BOLUS", role=PATIENT)
        assert (r.result, r.limit) == ("limit", "lockout")
        tw.run(4 * H)
        assert tw.command("PATIENT_BOLUS", role=PATIENT).result == "ack"
    finally:
        tw.close()


def test_boluses_stacked_within_an_hour_stop_at_max_per_hour(twin):
    # Each bolus is within max_bolus and the day's limit; two in one hour on a 10 mg/day
    # basal would put 1.32 mg into an hour against 1.125 mg.
    # REQ: SR-LIM-03
    assert twin.program(morphine(10_000_000)).result == "ack"
    twin.run(2 * H)
    assert bolus(twin, 450_000, 600).result == "ack"
    twin.run(660)
    r = bolus(twin, 450_000, 600)
    assert (r.result, r.limit) == ("limit", "max_per_hour")
    twin.run(H)
    assert bolus(twin, 450_000, 600).result == "ack"  # an hour on: allowed again
    twin.run(DAY)
    assert_within_limits(twin)


def test_a_stall_then_a_suspension_does_not_hang_the_pump(twin):
    # The stateful test's counterexample, as it was found: the firmware stopped answering.
    # REQ: SR-STALL-01
    assert twin.program(morphine(900_000)).result == "ack"
    twin.fault("motor_stall", 560)
    twin.run(446)
    assert twin.command("SUSPEND", tp.compiled(tp.Suspend).pack(0)).result == "ack"
    twin.fault("occlusion", 2369)
    twin.run(3 * H)  # past the stall's retry time, suspended: must not spin
    p0 = twin.truth["pumped_nl"]
    assert twin.command("RESUME").result == "ack"  # its probe stroke moves the motor
    twin.run(DAY)
    # 0.9 mg/day at 10 mg/mL: 90 uL in the day from the resume, to a stroke
    assert abs(twin.truth["pumped_nl"] - p0 - 90_000) <= 250
