"""Scenario files -> validated `Scenario` in device units (host_tools/theca/scenario.py)."""

from __future__ import annotations

import copy
import json
import textwrap
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from theca.errors import BadInput
from theca.inputs import druglib as dl
from theca.inputs.rxfile import load_prescription
from theca.inputs.scenario import ALARM_BITS, ALL_ALARMS, Event, Fault, Scenario, load_scenario
from theca.inputs.units import fmt_time, parse_datetime

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
T0 = 189_388_800           # 2026-01-01T00:00:00Z in device seconds
DAY = 86_400
H = 3600

RX = {
    "drug": "morphine", "concentration": "10 mg/mL",
    "steps": [{"start": "00:00", "rate": "1.5 mg/day"}],
    "patient_bolus": {"dose": "0.1 mg", "duration": "10 min", "lockout": "60 min",
                      "max_per_day": 4},
}


def base(**extra) -> dict:
    d = {"start": "2026-01-01T00:00:00Z", "days": 30, "status_period_s": 60,
         "reservoir_ml": 20.0, "prescription": copy.deepcopy(RX)}
    d.update(extra)
    return d


def errors(data, **kw) -> list[str]:
    with pytest.raises(BadInput) as e:
        load_scenario(data, **kw)
    return e.value.messages


def one_error(data, **kw) -> str:
    msgs = errors(data, **kw)
    assert len(msgs) == 1, msgs
    return msgs[0]


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


# -- the examples ----------------------------------------------------------------------


def test_demo_scenario():
    sc = load_scenario(EXAMPLES / "demo.toml")
    assert isinstance(sc, Scenario)
    assert sc.start == T0 and fmt_time(sc.start) == "2026-01-01T00:00:00Z"
    assert sc.end == T0 + 30 * DAY and sc.duration_s == 30 * DAY
    assert sc.status_period_s == 30  # (the trumpet curve samples every 30 s)
    assert sc.reservoir_nl == 20_000_000 and sc.capacity_nl == 20_000_000
    assert sc.prescription == load_prescription(EXAMPLES / "rx_morphine.toml")
    assert (sc.stroke_nl, sc.catheter_nl, sc.battery_days, sc.local_offset_s) == (250, 150_000, 2555, 0)
    assert [e.at for e in sc.events] == sorted(e.at for e in sc.events)
    assert all(sc.start <= e.at <= sc.end for e in sc.events)

    boluses = [e.at for e in sc.events if e.action == "patient_bolus"]
    lockout = sc.prescription.pb.lockout_s
    # Some presses fall inside the lockout of the previous accepted one.
    assert any(b - a < lockout for a, b in zip(boluses, boluses[1:], strict=False))
    # And some day has more presses than max_per_day.
    per_day: dict[int, int] = {}
    for b in boluses:
        per_day[(b - T0) // DAY] = per_day.get((b - T0) // DAY, 0) + 1
    assert max(per_day.values()) > sc.prescription.pb.max_per_day

    (refill,) = [e for e in sc.events if e.action == "refill"]
    assert 18 * DAY <= refill.at - T0 <= 21 * DAY
    # a refill visit: emptied (the residual measured by the twin), then filled with 18 mL
    assert refill.volume_nl == 18_000_000 and refill.conc_ng_ml == 10_000_000
    assert refill.residual_nl is None and refill.drug_id is None
    assert refill.volume_nl <= sc.capacity_nl

    stall, battery = sc.faults
    assert stall == Fault(at=T0 + 4 * DAY + 6 * H, kind="motor_stall", index=1, duration_s=2400)
    assert battery == Fault(at=T0 + 5 * DAY + 8 * H, kind="battery", index=2, remaining_days=80)
    assert stall.to_config() == {"at": T0 + 4 * DAY + 6 * H, "kind": "motor_stall", "duration_s": 2400}
    assert battery.to_config()["remaining_days"] == 80
    (ack,) = [e for e in sc.events if e.action == "ack_alarm"]
    assert ack.alarm_mask == 1 << ALARM_BITS["battery_eri"]


def test_inline_example():
    sc = load_scenario(EXAMPLES / "inline.toml")
    assert sc.prescription.drug == "hydromorphone" and sc.prescription.pb.max_per_day == 6
    assert sc.local_offset_s == 3600 and sc.reservoir_nl == 18_000_000
    assert sc.end - sc.start == 2 * DAY
    actions = [e.action for e in sc.events]
    assert actions == ["clinician_bolus", "suspend", "resume", "set_time", "program"]
    cb = sc.events[0]
    assert (cb.dose_ng, cb.duration_s) == (100_000, 900)
    st_ = sc.events[3]
    assert (st_.utc, st_.local_offset_s) == (st_.at, 7200)
    prog = sc.events[4].prescription
    assert prog.steps == ((0, 600_000), (420, 1_000_000)) and prog.pb is None
    assert [f.kind for f in sc.faults] == ["occlusion", "power_loss"]
    assert sc.faults[1].duration_s == 90


def test_interface_example_scenario(tmp_path):
    # The scenario block of interface.md, verbatim apart from the file name.
    (tmp_path / "rx.toml").write_text((EXAMPLES / "rx_morphine.toml").read_text())
    p = write(tmp_path, "sc.toml", """\
        start = 2026-01-01T00:00:00Z
        days = 30                         # may be fractional
        status_period_s = 60              # a status frame every N virtual seconds
        reservoir_ml = 20.0               # fill at start
        prescription = "rx.toml"          # path relative to this file, or an inline table
        [[events]]
        at = 2026-01-03T10:00:00Z
        action = "patient_bolus"          # also: clinician_bolus, refill, program, suspend, resume, ack_alarm
        [[events]]
        at = 2026-01-20T09:00:00Z
        action = "refill"
        volume = "18 mL"                  # volume added
        concentration = "10 mg/mL"
        [[faults]]
        at = 2026-01-05T06:00:00Z
        kind = "motor_stall"              # also: occlusion (catheter blocked), power_loss, battery
        duration = "40 min"
        [[faults]]
        at = 2026-01-06T08:00:00Z
        kind = "battery"
        remaining = "80 days"             # elective replacement below 90 days; end of service at 0
        """)
    sc = load_scenario(p)
    assert sc.events == (
        Event(at=T0 + 2 * DAY + 10 * H, action="patient_bolus", index=1),
        Event(at=T0 + 19 * DAY + 9 * H, action="refill", index=2, volume_nl=18_000_000,
              conc_ng_ml=10_000_000),
    )
    assert sc.path == str(p)
    assert sc.prescription.source == str(tmp_path / "rx.toml")


def test_prescription_path_is_relative_to_the_scenario(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)       # not the examples directory
    sc = load_scenario(EXAMPLES / "demo.toml")
    assert sc.prescription.drug == "morphine"
    # A table scenario resolves against base_dir (default: the current directory).
    d = base(prescription="rx_morphine.toml")
    assert load_scenario(d, base_dir=EXAMPLES).prescription.drug == "morphine"
    assert "cannot read" in one_error(d)


# -- top-level fields ------------------------------------------------------------------


def test_start_forms():
    assert load_scenario(base()).start == T0
    assert load_scenario(base(start="2026-01-01T01:00:00+01:00")).start == T0
    import tomllib

    dt = tomllib.loads("s = 2026-01-01T00:00:00Z")["s"]
    assert load_scenario(base(start=dt)).start == T0


@pytest.mark.parametrize("value, expect", [
    ("2026-01-01T00:00:00", "start: 2026-01-01T00:00:00 has no UTC offset: add Z (UTC)"),
    ("1 Jan 2026", 'start: "1 Jan 2026": expected a UTC date and time'),
    ("2019-06-01T00:00:00Z", "start: 2019-06-01T00:00:00+00:00 is before the device epoch 2020-01-01T00:00:00Z"),
])
def test_bad_start(value, expect):
    assert one_error(base(start=value)).startswith(expect)


@pytest.mark.parametrize("days, seconds", [
    (30, 30 * DAY), (0.5, DAY // 2), (1.25, DAY + 6 * H), (3660, 3660 * DAY), ("36 h", 36 * H),
    (0.00001, 1),
])
def test_days(days, seconds):
    sc = load_scenario(base(days=days))
    assert sc.end - sc.start == seconds


@pytest.mark.parametrize("days, expect", [
    (0, "days: 0 must be greater than zero"),
    (-1, "days: -1 must be greater than zero"),
    (3661, "days: 3661 days is longer than the maximum 3660 days"),
    (True, "days: expected a number"),
    ("thirty", 'days: "thirty" is not a number with a unit'),
    (float("nan"), "days: nan is not a number"),
    (0.000001, "days: 1e-06 is shorter than 1 s"),
])
def test_bad_days(days, expect):
    assert one_error(base(days=days)).startswith(expect)


def test_run_must_end_in_device_time_range():
    m = one_error(base(start="2049-06-01T00:00:00Z", days=3000))
    assert m.startswith("days: the run would end after the last supported device time")


@pytest.mark.parametrize("value, expect", [
    (0, "status_period_s: 0 is outside 1.."),
    (1.5, "status_period_s: expected a whole number"),
    ("60", "status_period_s: expected a whole number"),
    (True, "status_period_s: expected a whole number"),
])
def test_bad_status_period(value, expect):
    assert one_error(base(status_period_s=value)).startswith(expect)


def test_defaults():
    d = base()
    del d["status_period_s"], d["reservoir_ml"]
    sc = load_scenario(d)
    assert sc.status_period_s == 60 and sc.reservoir_nl == 20_000_000


def test_reservoir_and_capacity():
    assert load_scenario(base(reservoir_ml=0.5)).reservoir_nl == 500_000
    assert load_scenario(base(reservoir_ml="18 mL")).reservoir_nl == 18_000_000
    assert one_error(base(reservoir_ml=0)) == "reservoir_ml: 0 must be greater than zero (fill at start in mL)"
    assert one_error(base(reservoir_ml=20.5)) == "reservoir_ml: 20.5 mL is more than the reservoir capacity 20 mL"
    sc = load_scenario(base(reservoir_ml=35, capacity_ml=40))
    assert (sc.reservoir_nl, sc.capacity_nl) == (35_000_000, 40_000_000)
    assert load_scenario(base(capacity_ml=20.0)).capacity_nl == 20_000_000
    assert one_error(base(capacity_ml=30)) == "capacity_ml: 30 mL is not a pump model (20 or 40 mL)"
    assert one_error(base(reservoir_ml="18 mg")).startswith('reservoir_ml: unknown unit "mg"')


def test_board_options():
    sc = load_scenario(base(stroke_nl=500, catheter_ul=200.5, battery_days=100,
                            local_offset="-05:00"))
    assert (sc.stroke_nl, sc.catheter_nl, sc.battery_days, sc.local_offset_s) == \
        (500, 200_500, 100, -5 * H)
    assert load_scenario(base(catheter_ul="0.2 mL")).catheter_nl == 200_000
    assert load_scenario(base(catheter_ul=0)).catheter_nl == 0
    msgs = errors(base(stroke_nl=0, catheter_ul=-1, battery_days=70000, local_offset="+1"))
    assert msgs == [
        "stroke_nl: 0 is outside 1..65535 (nL per pump stroke)",
        "catheter_ul: -1 must not be negative",
        "battery_days: 70000 is outside 0..65535 (days of battery left)",
        'local_offset: "+1": expected a UTC offset such as "+01:00" or "-05:30"',
    ]


def test_unknown_and_missing_top_level_keys():
    d = base(dayz=3, colour="blue")
    del d["prescription"]
    assert errors(d) == [
        'dayz: unknown key (did you mean "days"? expected start, days, status_period_s, '
        "reservoir_ml, prescription, events, faults, capacity_ml, stroke_nl, catheter_ul, "
        "battery_days, local_offset, override_soft_limit, description, serial)",
        "colour: unknown key (expected start, days, status_period_s, reservoir_ml, prescription, "
        "events, faults, capacity_ml, stroke_nl, catheter_ul, battery_days, local_offset, "
        "override_soft_limit, description, serial)",
        'prescription: missing (e.g. prescription = "rx.toml")',
    ]
    assert errors("not a file.toml")[0].startswith("not a file.toml: cannot read")
    assert errors(["x"]) == ["a scenario must be a table (start, days, prescription, ...)"]


# -- the prescription inside a scenario ----------------------------------------------------


def test_inline_prescription_errors_are_nested():
    d = base()
    d["prescription"]["steps"][0]["rate"] = "1 mg/week"
    d["prescription"]["drug"] = "morfine"
    msgs = errors(d)
    assert msgs[0].startswith('prescription.drug: unknown drug "morfine"')
    assert msgs[1].startswith('prescription.steps[1].rate: unknown unit "mg/week"')


def test_prescription_file_errors_name_both_files(tmp_path):
    write(tmp_path, "rx.toml", """\
        drug = "morphine"
        concentration = "10 mg/mL"
        [[steps]]
        start = "00:00"
        rate = "16 mg/day"
        """)
    sc = write(tmp_path, "sc.toml", """\
        start = 2026-01-01T00:00:00Z
        days = 1
        prescription = "rx.toml"
        """)
    assert errors(sc) == [
        f"{sc}:3: prescription: {tmp_path / 'rx.toml'}:5: steps[1].rate: worst-case 24 h dose 16 mg exceeds "
        "morphine hard limit 15 mg/day (basal 16 mg + timed 0 mg + no patient bolus)"]


def test_prescription_wrong_type():
    assert one_error(base(prescription=3)).startswith(
        'prescription: expected a file name such as "rx.toml" or an inline table')


def test_override_soft_limit():
    d = base()
    d["prescription"]["steps"][0]["rate"] = "10 mg/day"      # + 0.4 patient: over soft 10
    assert "soft limit 10 mg/day" in one_error(d)
    assert load_scenario(d, override_soft=True).override_soft_limit is True
    sc = load_scenario(base(prescription=d["prescription"], override_soft_limit=True))
    assert sc.prescription.worst_case_ng() == 10_400_000
    assert one_error(base(override_soft_limit="yes")).startswith("override_soft_limit: expected true or false")


# -- events -----------------------------------------------------------------------------


def ev(at: str, action: str, **kw) -> dict:
    return {"at": at, "action": action, **kw}


def test_events_sorted_stably():
    d = base(events=[
        ev("2026-01-05T00:00:00Z", "resume"),
        ev("2026-01-02T00:00:00Z", "patient_bolus"),
        ev("2026-01-05T00:00:00Z", "suspend"),
        ev("2026-01-02T00:00:00Z", "ack_alarm"),
    ])
    sc = load_scenario(d)
    assert [(e.index, e.action) for e in sc.events] == [
        (2, "patient_bolus"), (4, "ack_alarm"), (1, "resume"), (3, "suspend")]
    assert sc.events[1].alarm_mask == ALL_ALARMS == 0x3FFF


def test_event_time_range():
    sc = load_scenario(base(days=1, events=[ev("2026-01-01T00:00:00Z", "patient_bolus"),
                                            ev("2026-01-02T00:00:00Z", "patient_bolus")]))
    assert [e.at for e in sc.events] == [T0, T0 + DAY]          # both ends inclusive
    msgs = errors(base(days=1, events=[ev("2025-12-31T23:59:59Z", "suspend"),
                                       ev("2026-01-02T00:00:01Z", "resume")]))
    assert msgs == [
        "events[1].at: 2025-12-31T23:59:59Z is outside the scenario (2026-01-01T00:00:00Z to "
        "2026-01-02T00:00:00Z)",
        "events[2].at: 2026-01-02T00:00:01Z is outside the scenario (2026-01-01T00:00:00Z to "
        "2026-01-02T00:00:00Z)",
    ]


@pytest.mark.parametrize("event, expect", [
    ({"action": "refill", "volume": "1 mL", "concentration": "10 mg/mL"},
     "events[1].at: missing"),
    (ev("2026-01-02T00:00:00", "suspend"), "events[1].at: 2026-01-02T00:00:00 has no UTC offset"),
    ({"at": "2026-01-02T00:00:00Z"}, "events[1].action: missing (one of patient_bolus,"),
    (ev("2026-01-02T00:00:00Z", "bolus"), 'events[1].action: unknown action "bolus"'),
    (ev("2026-01-02T00:00:00Z", "refil"), 'events[1].action: unknown action "refil" (did you mean "refill"?'),
    (ev("2026-01-02T00:00:00Z", "resume", volume="1 mL"), "events[1].volume: unknown key (expected at, action, expect)"),
    (ev("2026-01-02T00:00:00Z", "clinician_bolus", dose="0.4 mg"), 'events[1].duration: missing'),
    (ev("2026-01-02T00:00:00Z", "clinician_bolus", dose="1 mg/h", duration="1 h"),
     'events[1].dose: unknown unit "mg/h"'),
    (ev("2026-01-02T00:00:00Z", "clinician_bolus", dose="12 mg", duration="12 h"),
     "events[1].dose: 12 mg exceeds morphine hard limit max_bolus 0.5 mg"),
    (ev("2026-01-02T00:00:00Z", "clinician_bolus", dose="0.4 mg", duration="2 days"),
     "events[1].duration: 2 days is longer than the maximum 1 day"),
    (ev("2026-01-02T00:00:00Z", "clinician_bolus", dose="0.3 mg", duration="1 s"),
     "events[1].duration: 1 s is too short: 1.08e+05 uL/h is faster than the pump's hard "
     "limit max_rate 1000 uL/h"),
    (ev("2026-01-02T00:00:00Z", "refill", volume="18 mL"), "events[1].concentration: missing"),
    (ev("2026-01-02T00:00:00Z", "refill", volume="21 mL", concentration="10 mg/mL"),
     "events[1].volume: 21 mL is more than the reservoir capacity 20 mL"),
    (ev("2026-01-02T00:00:00Z", "refill", volume="0 mL", concentration="10 mg/mL"),
     'events[1].volume: "0 mL" must be greater than zero'),
    (ev("2026-01-02T00:00:00Z", "refill", volume="18 mL", concentration="30 mg/mL"),
     "events[1].concentration: 30 mg/mL exceeds morphine hard limit 25 mg/mL"),
    (ev("2026-01-02T00:00:00Z", "refill", volume="18", concentration="10 mg/mL"),
     'events[1].volume: missing unit in "18"'),
    (ev("2026-01-02T00:00:00Z", "program"), "events[1].prescription: missing"),
    (ev("2026-01-02T00:00:00Z", "ack_alarm", alarms=["low_reservoir", "lo_battery"]),
     "events[1].alarms: unknown alarm \"lo_battery\" (known: low_reservoir,"),
    (ev("2026-01-02T00:00:00Z", "ack_alarm", alarms=[]), "events[1].alarms: expected a list of alarm names"),
    (ev("2026-01-02T00:00:00Z", "set_time"), "events[1]: set_time needs utc"),
    (ev("2026-01-02T00:00:00Z", "set_time", local_offset="+25:00"), 'events[1].local_offset: "+25:00"'),
    (ev("2026-01-02T00:00:00Z", "set_time", utc="2026-01-02T00:00:00"), "events[1].utc: 2026-01-02T00:00:00 has no UTC offset"),
])
def test_bad_events(event, expect):
    assert one_error(base(events=[event])).startswith(expect)


def test_event_payloads():
    sc = load_scenario(base(events=[
        ev("2026-01-02T00:00:00Z", "clinician_bolus", dose="0.5 mg", duration="30 min"),
        ev("2026-01-02T01:00:00Z", "refill", volume="500 uL", concentration="10 mg/mL"),
        ev("2026-01-02T02:00:00Z", "ack_alarm", alarms=["low_reservoir", "occlusion"]),
        ev("2026-01-02T02:00:00Z", "ack_alarm", alarms="motor_stall"),
        ev("2026-01-02T03:00:00Z", "set_time", utc="2026-01-02T03:00:30Z"),
        ev("2026-01-02T04:00:00Z", "set_time", local_offset="+02:00"),
        ev("2026-01-02T05:00:00Z", "set_time", utc="2026-01-02T05:00:00Z", local_offset="-01:00"),
        ev("2026-01-02T06:00:00Z", "program", prescription=dict(RX, concentration="5 mg/mL")),
    ], local_offset="+01:00"))
    e = sc.events
    assert (e[0].dose_ng, e[0].duration_s) == (500_000, 1800)
    assert (e[1].volume_nl, e[1].conc_ng_ml) == (500_000, 10_000_000)
    assert e[2].alarm_mask == 0b1001 and e[3].alarm_mask == 0b100
    # set_time: utc defaults to the event time, the offset to the one in effect.
    assert (e[4].utc, e[4].local_offset_s) == (T0 + DAY + 3 * H + 30, 3600)
    assert (e[5].utc, e[5].local_offset_s) == (T0 + DAY + 4 * H, 7200)
    assert (e[6].utc, e[6].local_offset_s) == (T0 + DAY + 5 * H, -3600)
    assert e[7].prescription.conc_ng_ml == 5_000_000


def test_program_prescription_errors_are_nested(tmp_path):
    bad = dict(RX, steps=[{"start": "00:00", "rate": "1.5 mg/fortnight"}])
    m = one_error(base(events=[ev("2026-01-02T00:00:00Z", "program", prescription=bad)]))
    assert m.startswith('events[1].prescription.steps[1].rate: unknown unit "mg/fortnight"')
    msgs = errors(base(events=[ev("2026-01-02T00:00:00Z", "program", prescription="nope.toml")]),
                  base_dir=tmp_path)
    assert msgs[0].startswith(f"events[1].prescription: {tmp_path / 'nope.toml'}: cannot read")


def test_limits_follow_the_drug_in_the_pump():
    # After a switch to ziconotide, a 30 mg/mL refill is over its 100 mcg/mL limit;
    # before it, the same refill of morphine concentration 15 mg/mL is fine.
    zic = {"drug": "ziconotide", "concentration": "25 mcg/mL",
           "steps": [{"start": "00:00", "rate": "2.4 mcg/day"}]}
    d = base(events=[
        ev("2026-01-03T00:00:00Z", "refill", volume="1 mL", concentration="15 mg/mL"),
        ev("2026-01-02T00:00:00Z", "program", prescription=zic),
        ev("2026-01-01T12:00:00Z", "refill", volume="1 mL", concentration="15 mg/mL"),
    ])
    assert errors(d) == ["events[1].concentration: 15 mg/mL exceeds ziconotide hard limit 100 mcg/mL"]


def test_events_must_be_tables():
    assert one_error(base(events="soon")) == "events: expected [[events]] tables, got str"
    assert one_error(base(faults=[1])) == "faults: expected [[faults]] tables, got list"


# -- faults -----------------------------------------------------------------------------


def test_faults():
    sc = load_scenario(base(faults=[
        {"at": "2026-01-06T00:00:00Z", "kind": "battery", "remaining": "80 days"},
        {"at": "2026-01-02T00:00:00Z", "kind": "occlusion", "duration": "2 h"},
        {"at": "2026-01-03T00:00:00Z", "kind": "power_loss", "duration": "30 s"},
        {"at": "2026-01-04T00:00:00Z", "kind": "battery", "remaining": "0 days"},
        {"at": "2026-01-05T00:00:00Z", "kind": "battery", "remaining": "12 h"},
    ]))
    assert [(f.kind, f.index, f.duration_s, f.remaining_days) for f in sc.faults] == [
        ("occlusion", 2, 7200, None), ("power_loss", 3, 30, None), ("battery", 4, None, 0),
        ("battery", 5, None, 1),       # half a day rounds up
        ("battery", 1, None, 80)]


@pytest.mark.parametrize("fault, expect", [
    ({"at": "2026-01-02T00:00:00Z", "kind": "motor_stall"}, "faults[1].duration: missing"),
    ({"at": "2026-01-02T00:00:00Z", "kind": "motor_stall", "duration": "0 min"},
     'faults[1].duration: "0 min" must be greater than zero'),
    ({"at": "2026-01-02T00:00:00Z", "kind": "motor_stall", "duration": "40 mins", "remaining": "1 day"},
     "faults[1].remaining: unknown key (expected at, kind, duration)"),
    ({"at": "2026-01-02T00:00:00Z", "kind": "battery", "remaining": 80},
     'faults[1].remaining: expected a duration such as "80 days", got 80'),
    ({"at": "2026-01-02T00:00:00Z", "kind": "battery", "remaining": "-1 days"},
     'faults[1].remaining: "-1 days" is negative'),
    ({"at": "2026-01-02T00:00:00Z", "kind": "battery", "remaining": "70000 days"},
     "faults[1].remaining: 70000 days is outside 0..65535 days"),
    ({"at": "2026-01-02T00:00:00Z", "kind": "batery", "remaining": "1 day"},
     'faults[1].kind: unknown fault "batery" (did you mean "battery"?'),
    ({"at": "2026-01-02T00:00:00Z"}, "faults[1].kind: missing (one of motor_stall, occlusion, power_loss, battery, pocket_fill, storage, flash_error, mri)"),
    ({"at": "2027-01-02T00:00:00Z", "kind": "occlusion", "duration": "1 h"},
     "faults[1].at: 2027-01-02T00:00:00Z is outside the scenario"),
    ({"kind": "occlusion", "duration": "1 h"}, "faults[1].at: missing"),
])
def test_bad_faults(fault, expect):
    assert one_error(base(faults=[fault])).startswith(expect)


# -- files: lines, malformed TOML, everything collected ------------------------------------------


BAD = """\
start = 2026-01-01T00:00:00Z
days = 2
reservoir_ml = 25
prescription = "rx.toml"

[[events]]
at = 2026-01-01T10:00:00Z
action = "patient_bolus"

[[events]]
at = 2026-01-02T10:00:00Z
action = "refill"
volume = "18 ml"
concentraton = "10 mg/mL"

[[faults]]
at = 2026-01-05T06:00:00Z
kind = "motor_stall"
duration = "40 min"
"""


def test_file_errors_collected_with_lines(tmp_path):
    (tmp_path / "rx.toml").write_text((EXAMPLES / "rx_morphine.toml").read_text())
    p = write(tmp_path, "sc.toml", BAD)
    assert errors(p) == [
        f"{p}:3: reservoir_ml: 25 mL is more than the reservoir capacity 20 mL",
        f'{p}:14: events[2].concentraton: unknown key (did you mean "concentration"? expected at, '
        "action, volume, concentration, drug, drugs, residual, expect)",
        f'{p}:10: events[2].concentration: missing (e.g. "10 mg/mL"), or the whole fill as drugs = '
        "[{name = ..., concentration = ...}, ...]",
        f"{p}:17: faults[1].at: 2026-01-05T06:00:00Z is outside the scenario "
        "(2026-01-01T00:00:00Z to 2026-01-03T00:00:00Z)",
    ]


def test_inline_prescription_lines(tmp_path):
    p = write(tmp_path, "sc.toml", """\
        start = 2026-01-01T00:00:00Z
        days = 1

        [prescription]
        drug = "morphine"
        concentration = "10 mg/mL"

        [[prescription.steps]]
        start = "00:00"
        rate = "1 mg/day"

        [[prescription.steps]]
        start = "08:00"
        rate = "1 mg/week"
        """)
    assert errors(p) == [f'{p}:14: prescription.steps[2].rate: unknown unit "mg/week" '
                         "(use mg/day, mcg/day, mg/h, mcg/h, mL/day or uL/h)"]


def test_malformed_scenario_toml(tmp_path):
    p = write(tmp_path, "sc.toml", "start = 2026-01-01T00:00:00Z\ndays = \n")
    (m,) = errors(p)
    assert m.startswith(f"{p}: not valid TOML:") and "line 2" in m


def test_custom_druglib_applies_to_scenarios(tmp_path):
    data = json.loads((ROOT / "firmware" / "druglib.json").read_text())
    data["drugs"][0]["max_conc_ng_ml"] = data["drugs"][0]["soft_conc_ng_ml"] = 5_000_000
    (tmp_path / "lib.json").write_text(json.dumps(data))
    lib = dl.load_druglib(tmp_path / "lib.json")
    assert one_error(base(), druglib=lib) == (
        "prescription.concentration: 10 mg/mL exceeds morphine hard limit 5 mg/mL")


# -- properties ---------------------------------------------------------------------------


@given(st.lists(st.tuples(st.integers(0, 2 * DAY), st.sampled_from(["suspend", "resume",
                                                                  "patient_bolus"])),
                max_size=12))
def test_events_sorted_and_stable_for_any_order(items):
    events = [ev(fmt_time(T0 + t), a) for t, a in items]
    sc = load_scenario(base(days=2, events=events))
    assert len(sc.events) == len(items)
    keys = [(e.at, e.index) for e in sc.events]
    assert keys == sorted(keys)            # by time, ties in file order
    for e in sc.events:
        t, a = items[e.index - 1]
        assert (e.at, e.action) == (T0 + t, a)


@given(st.integers(0, 30 * 86400), st.sampled_from(["Z", "+01:00", "-05:30", "+14:00"]))
def test_event_times_are_utc_device_seconds(t, off):
    from datetime import datetime, timedelta

    utc = datetime(2026, 1, 1) + timedelta(seconds=t)
    sign = -1 if off.startswith("-") else 1
    shift = 0 if off == "Z" else sign * (int(off[1:3]) * 3600 + int(off[4:6]) * 60)
    local = (utc + timedelta(seconds=shift)).strftime("%Y-%m-%dT%H:%M:%S") + off
    assert parse_datetime(local, "at") == T0 + t


def test_a_prescription_given_as_a_scenario_is_named_as_such(tmp_path):
    # issue 13: a prescription given to `simulate` got a list of unknown keys and the
    # hint start = "08:00" (a prescription's step start, not a scenario's start)
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "-m", "theca.cli", "simulate",
                        str(root / "examples" / "rx_morphine.toml"), "-o", str(tmp_path / "x.tlog")],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert "this is a prescription" in r.stderr and "unknown key" not in r.stderr, r.stderr
    sc = tmp_path / "s.toml"
    sc.write_text("days = 1\n")
    r = subprocess.run([sys.executable, "-m", "theca.cli", "simulate", str(sc), "-o",
                        str(tmp_path / "x.tlog")], capture_output=True, text=True)
    assert r.returncode == 2 and "start = 2026-" in r.stderr and '"08:00"' not in r.stderr


@pytest.mark.parametrize("fault, msg", [
    ({"at": "2026-01-02T00:00:00Z", "kind": "storage", "damage": "erase", "duration": "1 min"},
     "faults[1].file: missing"),
    ({"at": "2026-01-02T00:00:00Z", "kind": "storage", "file": "state.bin", "damage": "erase",
      "duration": "1 min"}, "faults[1].file: 'state.bin' is not one of state, journal, events"),
    ({"at": "2026-01-02T00:00:00Z", "kind": "storage", "file": "state", "damage": "melt",
      "duration": "1 min"}, "faults[1].damage: 'melt' is not one of bitflip, erase"),
    ({"at": "2026-01-02T00:00:00Z", "kind": "flash_error"}, "faults[1].duration: missing"),
])
def test_bad_storage_faults_are_named(fault, msg):
    assert any(m.startswith(msg) for m in errors(base(faults=[fault]))), errors(base(faults=[fault]))


def test_storage_faults_load():
    sc = load_scenario(base(faults=[
        {"at": "2026-01-02T00:00:00Z", "kind": "storage", "file": "journal", "damage": "bitflip",
         "duration": "1 min"},
        {"at": "2026-01-03T00:00:00Z", "kind": "flash_error", "duration": "10 min"}]))
    assert [(f.kind, f.file, f.damage, f.duration_s) for f in sc.faults] == [
        ("storage", "journal", "bitflip", 60), ("flash_error", None, None, 600)]
