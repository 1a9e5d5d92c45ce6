"""The clinic, round 2 (issue 24), on the twin, judged from the events and the physical
truth (`simulate --truth`)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from scenario_run import events, simulate, statuses
from theca.errors import BadInput
from theca.inputs.scenario import load_scenario

MORPHINE_TIMED = """
drug = "morphine"
concentration = "10 mg/mL"
[[steps]]
start = "00:00"
rate = "4 mg/day"
[[timed_boluses]]
start = "08:00"
dose = "0.5 mg"
duration = "30 min"
"""


def test_a_prescribed_timed_bolus_is_counted_once_and_given_every_day(tmp_path):
    # REQ: SR-LIM-10
    # the case: 4 mg/day + 0.5 mg daily at 08:00 (worst hour 0.667 of 1.125 mg)
    # was accepted, then denied max_per_hour on 4 days of 4 (16.0 mg at the tip, not 18.0)
    objs, truth, _ = simulate(tmp_path, MORPHINE_TIMED, days=4)
    assert len(events(objs, "bolus_started", bolus="timed")) == 4
    assert not events(objs, "bolus_denied")
    tip = truth["tip"]["morphine"]
    assert abs(tip["total_ng"] - 18_000_000) <= 2 * 2_500  # within two strokes
    assert tip["max_24h_ng"] <= 15_000_000 and tip["max_1h_ng"] <= 1_125_000


MORPHINE = """
drug = "morphine"
concentration = "10 mg/mL"
[[steps]]
start = "00:00"
rate = "3 mg/day"
"""
STALL = ('[[faults]]\nat = 2026-01-01T02:00:00Z\nkind = "motor_stall"\nduration = "20 h"\n')


def test_a_critical_alarm_acknowledged_is_only_paused_for_30_minutes(tmp_path):
    # REQ: SR-TONE-02
    # the case: a 20 h motor stall (an MRI) acknowledged from the remote after 1 h
    # was silent for 19 h (122 tones, 2,400 without the acknowledgement)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    _, quiet, _ = simulate(tmp_path / "a", MORPHINE, STALL, days=1)
    ack = ('[[events]]\nat = 2026-01-01T03:00:00Z\naction = "ack_alarm"\nalarms = ["motor_stall"]\n'
           'role = "patient"\n')
    objs, acked, _ = simulate(tmp_path / "b", MORPHINE, STALL + ack, days=1)
    ev = events(objs, "alarm_acknowledged")
    assert ev and ev[0]["alarms"] == ["motor_stall"] and ev[0]["paused_until"] == "2026-01-01T03:30:00Z"
    # the tones stop for the pause only: what is missing is at most 30 minutes' worth
    per_min = quiet["tones"] / (20 * 60)
    assert quiet["tones"] - acked["tones"] <= 31 * per_min, (quiet["tones"], acked["tones"])
    assert acked["tones"] > 0.9 * quiet["tones"]


def test_battery_days_read_0_from_end_of_service_and_never_wrap(tmp_path):
    # REQ: SR-BATT-02
    body = '[[faults]]\nat = 2026-01-01T06:00:00Z\nkind = "battery"\nremaining = "0 days"\n'
    objs, _, _ = simulate(tmp_path, MORPHINE, body, days=3)
    days = [s["battery_days"] for s in statuses(objs) if s["t"] >= "2026-01-01T06:10:00Z"]
    assert days and set(days) == {0}, sorted(set(days))[-3:]


def test_the_refill_date_right_after_a_diluting_refill_is_the_new_volume_rate(tmp_path):
    # REQ: SR-RES-06
    # the case: morphine 10 -> 2 mg/mL at 3 mg/day; during the 12 h bridge the
    # date said 7 weeks later than the truth (the bridge's volume rate)
    body = ('[[events]]\nat = 2026-01-02T09:00:00Z\naction = "refill"\nvolume = "18 mL"\n'
            'concentration = "2 mg/mL"\n')
    objs, truth, _ = simulate(tmp_path, MORPHINE, body, days=3)
    after = [s for s in statuses(objs) if s["t"] >= "2026-01-02T09:10:00Z"]
    # 18 mL at 1.5 mL/day: 16 mL above the 2 mL threshold lasts 10.7 days
    assert after[0]["refill_due"] <= "2026-01-13T02:00:00Z", after[0]["refill_due"]
    assert after[0]["refill_due"] >= "2026-01-12T00:00:00Z", after[0]["refill_due"]
    dates = {s["refill_due"][:10] for s in after}
    assert len(dates) <= 2, dates  # one date through the bridge and after it


def test_the_refill_date_is_the_battery_s_end_of_service_when_that_comes_first(tmp_path):
    # REQ: SR-RES-06
    body = '[[faults]]\nat = 2026-01-01T06:00:00Z\nkind = "battery"\nremaining = "20 days"\n'
    objs, _, _ = simulate(tmp_path, MORPHINE, body, days=1)
    last = statuses(objs)[-1]
    assert last["refill_due"] <= "2026-01-21T06:00:00Z", last["refill_due"]


def test_titration_and_every_soft_limit_hold_on_a_scenario_s_program(tmp_path):
    # REQ: SR-TITR-02
    # the case: morphine 2 -> 8 mg/day by a scenario's program passed unchecked
    (tmp_path / "rx8.toml").write_text(MORPHINE.replace("3 mg/day", "8 mg/day"))
    rx2 = MORPHINE.replace("3 mg/day", "2 mg/day")
    prog = '[[events]]\nat = 2026-01-03T10:00:00Z\naction = "program"\nprescription = "rx8.toml"\n'
    (tmp_path / "rx.toml").write_text(rx2)
    sc = tmp_path / "s.toml"
    sc.write_text('start = 2026-01-01T00:00:00Z\ndays = 4\nprescription = "rx.toml"\n' + prog)
    with pytest.raises(BadInput) as e:
        load_scenario(sc)
    msg = "\n".join(e.value.messages)
    assert "events[1].prescription" in msg and "titration" in msg, msg
    # with the event's override it runs, and the override is recorded
    objs, _, _ = simulate(tmp_path, rx2, prog + "override_soft_limit = true\n", days=4)
    changed = events(objs, "prescription_changed")
    assert changed[-1]["overrides"] == ["titration"], changed[-1]


def _set_offset(at: str, offset: str) -> str:
    return f'[[events]]\nat = {at}\naction = "set_time"\nlocal_offset = "{offset}"\n'


def test_a_clock_set_back_over_a_timed_bolus_does_not_give_it_twice(tmp_path):
    # REQ: SR-TIME-03
    # the case: winter time set at an 08:15 visit gave the 08:00 bolus again
    body = 'local_offset = "+02:00"\n' + _set_offset("2026-01-01T06:15:00Z", "+01:00")
    objs, truth, _ = simulate(tmp_path, MORPHINE_TIMED, body, days=1)
    started = events(objs, "bolus_started", bolus="timed")
    assert [e["t"] for e in started] == ["2026-01-01T06:00:00Z"], started
    assert truth["tip"]["morphine"]["max_24h_ng"] <= 4_500_000 + 2 * 2_500


def test_a_clock_jump_over_a_timed_bolus_starts_it_late_or_records_it(tmp_path):
    # REQ: SR-TIME-03
    # forward 1 h at 07:30 local: the 08:00 bolus starts at the jump, 30 min late
    (tmp_path / "a").mkdir()
    objs, _, _ = simulate(tmp_path / "a", MORPHINE_TIMED, _set_offset("2026-01-01T07:30:00Z", "+01:00"),
                          days=1)
    started = events(objs, "bolus_started", bolus="timed")
    assert len(started) == 1 and started[0]["late_s"] == 1800 and started[0]["t"] == "2026-01-01T07:30:00Z"
    # forward 3 h: more than 2 h late, it is recorded as not given, never skipped silently
    (tmp_path / "b").mkdir()
    objs, _, _ = simulate(tmp_path / "b", MORPHINE_TIMED, _set_offset("2026-01-01T07:30:00Z", "+03:00"),
                          days=1)
    assert not events(objs, "bolus_started", bolus="timed")
    denied = events(objs, "bolus_denied", bolus="timed")
    assert [d["reason"] for d in denied] == ["clock_changed"], denied


BACLOFEN_TRIAL = """
drug = "baclofen"
concentration = "500 mcg/mL"
phase = "trial"
[[steps]]
start = "00:00"
rate = "minimum"
"""


def test_the_minimum_rate_keeps_the_catheter_open_for_a_screening_trial(tmp_path):
    # REQ: SR-LIM-09
    # a baclofen screening trial through the pump (the Lioresal label's 50 mcg test dose):
    # the mechanism's minimum rate, and the test bolus by the clinician
    body = ('[[events]]\nat = 2026-01-01T09:00:00Z\naction = "clinician_bolus"\ndose = "50 mcg"\n'
            'duration = "10 min"\n')
    objs, truth, _ = simulate(tmp_path, BACLOFEN_TRIAL, body, days=1)
    assert statuses(objs)[-1]["rate_ul_per_day"] == 48.0
    assert events(objs, "bolus_started", bolus="clinician")
    # at the tip: 48 uL/day of 500 mcg/mL (24 mcg; less what fills the first hours' catheter
    # delay) and the 50 mcg test dose
    tip = truth["tip"]["baclofen"]["total_ng"]
    assert 50_000 < tip <= 50_000 + 24_000 + 500, tip


BERLIN = """
drug = "morphine"
concentration = "10 mg/mL"
timezone = "Europe/Berlin"
[[steps]]
start = "00:00"
rate = "3 mg/day"
[[timed_boluses]]
start = "02:30"
dose = "0.2 mg"
duration = "10 min"
"""


def _dst(tmp_path, start: str):
    (tmp_path / "rx.toml").write_text(BERLIN)
    sc = tmp_path / "s.toml"
    sc.write_text(f'start = {start}\ndays = 2\nstatus_period_s = 3600\nprescription = "rx.toml"\n')
    out, truth = tmp_path / "r.tlog", tmp_path / "t.json"
    r = subprocess.run([sys.executable, "-m", "theca.cli", "simulate", str(sc), "-o", str(out),
                        "--truth", str(truth), "--quiet"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    d = subprocess.run([sys.executable, "-m", "theca.cli", "decode", str(out), "--format", "jsonl"],
                       capture_output=True, text=True, check=True)
    return [json.loads(x) for x in d.stdout.splitlines()]


def test_daylight_saving_days_of_a_real_zone_move_the_schedule_and_never_repeat_or_skip(tmp_path):
    # REQ: SR-TIME-04
    # spring (2026-03-29, 02:00 -> 03:00 CEST at 01:00Z): the 02:30 bolus is jumped over:
    # it starts at the change, 30 min late; every other day at 02:30 local
    (tmp_path / "spring").mkdir()
    objs = _dst(tmp_path / "spring", "2026-03-28T00:00:00Z")
    changed = events(objs, "time_changed", who="schedule")
    # (the zone's offset comes into force with the prescription, then changes on time)
    assert [(e["t"], e["local_offset_s"]) for e in changed] == [
        ("2026-03-28T00:00:00Z", 3600), ("2026-03-29T01:00:00Z", 7200)], changed
    started = [(e["t"], e["late_s"]) for e in events(objs, "bolus_started", bolus="timed")]
    assert started == [("2026-03-28T01:30:00Z", 0), ("2026-03-29T01:00:00Z", 1800)], started
    # autumn (2026-10-25, 03:00 -> 02:00 CET at 01:00Z): 02:30 comes twice that night, the
    # bolus once
    (tmp_path / "autumn").mkdir()
    objs = _dst(tmp_path / "autumn", "2026-10-24T00:00:00Z")
    started = [e["t"] for e in events(objs, "bolus_started", bolus="timed")]
    assert started == ["2026-10-24T00:30:00Z", "2026-10-25T00:30:00Z"], started


def _mri(at_prep: str, at_check: str) -> str:
    return (f'[[events]]\nat = {at_prep}\naction = "mri_prepare"\n'
            f'[[events]]\nat = {at_check}\naction = "mri_check"\n')


def test_an_mri_is_prepared_checked_and_therapy_resumes_only_if_the_motor_moves(tmp_path):
    # REQ: SR-STALL-02
    # the scanner holds the rotor 09:00-09:40; prepared at 08:55, checked at 09:45
    scan = '[[faults]]\nat = 2026-01-01T09:00:00Z\nkind = "mri"\nduration = "40 min"\n'
    (tmp_path / "a").mkdir()
    objs, truth, _ = simulate(tmp_path / "a", MORPHINE,
                              scan + _mri("2026-01-01T08:55:00Z", "2026-01-01T09:45:00Z"), days=0.5)
    assert events(objs, "mri_prepared") and events(objs, "mri_checked", result="moved")
    assert events(objs, "resumed") and statuses(objs)[-1]["mode"] == "running"
    assert truth["failed_strokes"] == 0  # nothing was tried against the held rotor
    # without recovery the rotor stays stuck: the check says so, therapy stays stopped and
    # the stall alarm sounds
    scan2 = scan + "recovery = false\n"
    (tmp_path / "b").mkdir()
    objs, truth, r = simulate(tmp_path / "b", MORPHINE,
                              scan2 + _mri("2026-01-01T08:55:00Z", "2026-01-01T09:45:00Z"),
                              days=0.5, ok=(3,))
    assert events(objs, "mri_checked", result="stalled")
    assert [e for e in events(objs, "alarm_raised") if e["alarm"] == "motor_stall"]
    assert statuses(objs)[-1]["mode"] != "running"
    assert "refused" in r.stderr
