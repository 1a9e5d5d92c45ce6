"""Prescription files -> validated device units, the Rx blob, and the drug library."""

from __future__ import annotations

import copy
import json
from fractions import Fraction
from pathlib import Path

import pytest
import theca_protocol as tp
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from theca.errors import BadInput
from theca.inputs import druglib as dl
from theca.inputs.rxfile import (
    FLAG_TRIAL,
    PatientBolus,
    Prescription,
    Step,
    TimedBolus,
    load_prescription,
    toml_locator,
)
from theca_protocol import messages as M
from theca_protocol import names as N

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
LIB = dl.load_druglib()


def base() -> dict:
    """The interface.md example prescription, as a decoded table."""
    return {
        "drug": "morphine",
        "concentration": "10 mg/mL",
        "steps": [{"start": "00:00", "rate": "1.5 mg/day"}, {"start": "08:00", "rate": "2 mg/day"}],
        "timed_boluses": [{"start": "12:00", "dose": "0.2 mg", "duration": "30 min"}],
        "patient_bolus": {"dose": "0.1 mg", "duration": "10 min", "lockout": "60 min",
                          "max_per_day": 4},
    }


def errors(data, **kw) -> list[str]:
    with pytest.raises(BadInput) as e:
        load_prescription(data, **kw)
    return e.value.messages


def one_error(data, **kw) -> str:
    msgs = errors(data, **kw)
    assert len(msgs) == 1, msgs
    return msgs[0]


def lib_file(tmp_path: Path, **changes) -> Path:
    """A copy of the default library with some morphine fields changed."""
    data = json.loads((ROOT / "firmware" / "druglib.json").read_text())
    for d in data["drugs"]:
        if d["name"] == "morphine":
            d.update(changes)
    p = tmp_path / "lib.json"
    p.write_text(json.dumps(data))
    return p


# -- the examples and the happy path -------------------------------------------


def test_interface_example_in_device_units():
    rx = load_prescription(EXAMPLES / "rx_morphine.toml")
    assert rx.drug == "morphine" and rx.drug_id == 1
    assert rx.conc_ng_ml == 10_000_000
    assert rx.steps == ((0, 1_500_000), (480, 2_000_000))
    assert rx.timed == ((720, 1800, 200_000),)
    assert rx.pb == (100_000, 600, 3600, 4)
    assert rx.flags == 0 and rx.phase == "maintenance"
    assert rx.source == str(EXAMPLES / "rx_morphine.toml")
    # basal: 1.5 mg x 8/24 + 2 mg x 16/24 = 1.8333.. mg, rounded up to the ng
    assert rx.basal_exact() == Fraction(5_500_000, 3)
    assert rx.basal_ng() == 1_833_334
    assert rx.timed_ng() == 200_000
    assert rx.patient_ng() == 400_000
    assert rx.daily_ng() == 2_033_334
    assert rx.worst_case_ng() == 2_433_334
    assert rx.problems(LIB) == []
    assert load_prescription(base()) == rx   # a dict gives the same prescription


def test_other_examples():
    zic = load_prescription(EXAMPLES / "rx_ziconotide.toml")
    assert (zic.drug, zic.conc_ng_ml, zic.steps, zic.pb) == ("ziconotide", 25_000, ((0, 2400),), None)
    bac = load_prescription(EXAMPLES / "rx_baclofen_trial.toml")
    assert bac.flags == FLAG_TRIAL and bac.phase == "trial"
    assert bac.steps == ((0, 100_000), (420, 150_000), (1320, 100_000))
    assert bac.timed == ((480, 600, 50_000),)


def test_describe():
    rx = load_prescription(EXAMPLES / "rx_morphine.toml")
    text = rx.describe(LIB)
    assert "morphine 10 mg/mL" in text
    assert "00:00-08:00  1.5 mg/day (150 uL/day)" in text
    assert "12:00  0.2 mg over 30 min (20 uL)" in text
    assert "0.1 mg over 10 min, lockout 1 h, at most 4" in text
    assert "worst case in 24 h 2.433 mg (limit 15 mg/day" in text
    assert "Patient bolus: none" in load_prescription(EXAMPLES / "rx_ziconotide.toml").describe()


def test_drug_name_case_insensitive():
    d = base()
    d["drug"] = "  MORPHINE "
    assert load_prescription(d).drug == "morphine"


def test_phase():
    d = base()
    d["phase"] = "trial"
    assert load_prescription(d).flags == FLAG_TRIAL
    d["phase"] = "maintenance"
    assert load_prescription(d).flags == 0
    d["phase"] = "pilot"
    assert one_error(d) == "phase: expected \"trial\" or \"maintenance\", got 'pilot'"


def test_optional_parts():
    d = base()
    del d["timed_boluses"], d["patient_bolus"]
    rx = load_prescription(d)
    assert rx.timed == () and rx.pb is None
    d["description"] = "post-op"
    assert load_prescription(d) == rx


def test_volume_rate_in_steps():
    d = base()
    d["steps"][1]["rate"] = "0.2 mL/day"     # at 10 mg/mL: 2 mg/day
    assert load_prescription(d).steps[1] == (480, 2_000_000)
    d["steps"][1]["rate"] = "20 uL/h"        # 480 uL/day: 4.8 mg/day
    assert load_prescription(d).steps[1] == (480, 4_800_000)


def test_toml_local_time_start():
    d = base()
    from datetime import time

    d["steps"][1]["start"] = time(8, 0)
    assert load_prescription(d).steps[1].start_min == 480


# -- drug and concentration -------------------------------------------------------


def test_unknown_drug_lists_known():
    d = base()
    d["drug"] = "morfine"
    m = one_error(d)
    assert m.startswith('drug: unknown drug "morfine" (the drug library has: morphine, hydromorphone,')
    assert "ziconotide, baclofen" in m


def test_concentration_over_hard_limit():
    d = base()
    d["concentration"] = "26 mg/mL"
    assert "concentration: 26 mg/mL exceeds morphine hard limit 25 mg/mL" in errors(d)
    d["concentration"] = "25 mg/mL"       # the limit itself is allowed (with the soft override)
    load_prescription(d, override_soft=True)


def test_concentration_soft_limit_needs_override(tmp_path):
    lib = dl.load_druglib(lib_file(tmp_path, soft_conc_ng_ml=5_000_000))
    d = base()
    m = one_error(d, druglib=lib)
    assert m == ("concentration: 10 mg/mL exceeds morphine soft limit 5 mg/mL; "
                 "confirm with --override-soft-limit")
    assert load_prescription(d, druglib=lib, override_soft=True).conc_ng_ml == 10_000_000


@pytest.mark.parametrize("value, expect", [
    ("10 mg/L", 'concentration: unknown unit "mg/L"'),
    ("0 mg/mL", "concentration: \"0 mg/mL\" must be greater than zero"),
    ("-1 mg/mL", "concentration: \"-1 mg/mL\" is negative"),
    (10, "concentration: missing unit in 10"),
])
def test_bad_concentration(value, expect):
    d = base()
    d["concentration"] = value
    assert one_error(d).startswith(expect)


def test_missing_required_keys():
    msgs = errors({})
    assert msgs == [
        'drug: missing (e.g. drug = "morphine")',
        'concentration: missing (e.g. concentration = "10 mg/mL")',
        'steps: missing (e.g. [[steps]] with start = "00:00" and rate = "1.5 mg/day")',
        "steps: at least one [[steps]] is required (the first starting at 00:00)",
    ]


# -- steps -------------------------------------------------------------------------


def test_steps_rules():
    d = base()
    d["steps"] = []
    assert one_error(d) == "steps: at least one [[steps]] is required (the first starting at 00:00)"

    d = base()
    d["steps"][0]["start"] = "01:00"
    assert one_error(d) == "steps[1].start: the first step must start at 00:00, not 01:00"

    d = base()
    d["steps"].append({"start": "07:00", "rate": "1 mg/day"})
    assert one_error(d) == ("steps[3].start: 07:00 is not after steps[2].start 08:00 "
                            "(steps go in time order, each start once)")

    d = base()
    d["steps"].append({"start": "08:00", "rate": "1 mg/day"})
    assert one_error(d).startswith("steps[3].start: 08:00 is not after steps[2].start 08:00")

    d = base()
    d["steps"][1]["rate"] = "-1 mg/day"
    assert one_error(d) == 'steps[2].rate: "-1 mg/day" is negative (expected a rate >= 0)'

    # the mechanism's slowest rate, 48 uL/day on the twin, is a hard limit: 0 included
    d = base()
    d["steps"][1]["rate"] = "0 mg/day"
    assert one_error(d) == ("steps[2].rate: 0 mg/day at 10 mg/mL is 0 uL/day, slower than the "
                            "pump's hard limit min_rate 48 uL/day")
    d["steps"][1]["rate"] = "0.479 mg/day"   # 47.9 uL/day
    assert "min_rate 48 uL/day" in one_error(d)
    d["steps"][1]["rate"] = "0.48 mg/day"    # 48 uL/day: the slowest it keeps up
    assert load_prescription(d).steps[1] == (480, 480_000)

    d = base()
    d["steps"] = {"start": "00:00", "rate": "1 mg/day"}
    assert "steps: expected [[steps]] tables, got dict" in errors(d)


def test_step_count_limit():
    d = base()
    d["steps"] = [{"start": f"{h:02d}:00", "rate": "0.5 mg/day"} for h in range(24)]
    assert len(load_prescription(d).steps) == 24
    d["steps"].append({"start": "23:30", "rate": "0.5 mg/day"})
    assert one_error(d) == "steps: 25 steps given, at most 24 allowed"


def test_step_volume_rate_limit():
    # 1 mcg/mL morphine: 24 mcg/day is 24 mL/day, the mechanism's 1000 uL/h; no faster.
    d = base()
    del d["timed_boluses"], d["patient_bolus"]
    d["concentration"] = "1 mcg/mL"
    d["steps"] = [{"start": "00:00", "rate": "24 mcg/day"}]
    load_prescription(d)
    d["steps"] = [{"start": "00:00", "rate": "24.024 mcg/day"}]
    assert one_error(d) == ("steps[1].rate: 0.024024 mg/day at 1 mcg/mL is 1001 uL/h, faster "
                            "than the pump's hard limit max_rate 1000 uL/h")


# -- timed boluses ------------------------------------------------------------------


def timed(n: int, dose="0.1 mg", duration="10 min") -> list[dict]:
    return [{"start": f"{2 * h:02d}:00", "dose": dose, "duration": duration} for h in range(n)]


def test_timed_bolus_count():
    d = base()
    d["timed_boluses"] = timed(8)
    assert len(load_prescription(d).timed) == 8
    d["timed_boluses"] = timed(9)
    assert one_error(d) == "timed_boluses: 9 given, at most 8 a day allowed"


@pytest.mark.parametrize("key, value, expect", [
    ("dose", "0 mg", 'timed_boluses[1].dose: "0 mg" must be greater than zero'),
    ("dose", "0.2 mL", 'timed_boluses[1].dose: unknown unit "mL" (use mg or mcg)'),
    ("duration", "0 min", 'timed_boluses[1].duration: "0 min" must be greater than zero'),
    ("duration", "65536 s", "timed_boluses[1].duration: 65536 s is outside 1 s .. 65535 s"),
    ("duration", "1 day", "timed_boluses[1].duration: 1 day is outside 1 s .. 65535 s"),
    ("start", "25:00", 'timed_boluses[1].start: "25:00": expected a time of day'),
])
def test_timed_bolus_fields(key, value, expect):
    d = base()
    d["timed_boluses"][0][key] = value
    assert one_error(d).startswith(expect)


def test_timed_bolus_longest_duration_ok():
    d = base()
    d["timed_boluses"] = [{"start": "00:00", "dose": "0.2 mg", "duration": "65535 s"}]
    assert load_prescription(d).timed[0].duration_s == 65535


def test_timed_bolus_order_and_overlap():
    d = base()
    d["timed_boluses"] = [{"start": "12:00", "dose": "0.1 mg", "duration": "30 min"},
                          {"start": "08:00", "dose": "0.1 mg", "duration": "30 min"}]
    assert one_error(d) == ("timed_boluses[2].start: 08:00 is not after timed_boluses[1].start "
                            "12:00 (list timed boluses in time order)")
    d["timed_boluses"][1]["start"] = "12:15"
    assert one_error(d) == ("timed_boluses[2].start: 12:15 starts before timed_boluses[1] "
                            "(12:00 for 30 min) ends")
    d["timed_boluses"][1]["start"] = "12:30"       # back to back is fine
    load_prescription(d)
    # The schedule repeats: 23:50 for 30 min runs into 00:10 the next day.
    d["timed_boluses"] = [{"start": "00:10", "dose": "0.1 mg", "duration": "10 min"},
                          {"start": "23:50", "dose": "0.1 mg", "duration": "30 min"}]
    assert one_error(d) == ("timed_boluses[2].duration: 23:50 for 30 min runs into "
                            "timed_boluses[1] at 00:10 the next day")


def test_bolus_too_fast_for_the_pump():
    d = base()
    d["timed_boluses"][0]["duration"] = "1 s"      # 20 uL in 1 s = 72 mL/h
    m = one_error(d)
    assert m.startswith("timed_boluses[1].duration: 20 uL in 1 s is 7.2e+04 uL/h, faster than "
                        "the pump's hard limit max_rate 1000 uL/h")
    assert "longer duration" in m
    d = base()
    d["patient_bolus"]["duration"] = "1 s"
    assert one_error(d).startswith("patient_bolus.duration: 10 uL in 1 s")


# -- patient bolus --------------------------------------------------------------------


@pytest.mark.parametrize("key, value, expect", [
    ("dose", "0 mg", 'patient_bolus.dose: "0 mg" must be greater than zero'),
    ("duration", "0 s", 'patient_bolus.duration: "0 s" must be greater than zero'),
    ("duration", "65536 s", "patient_bolus.duration: 65536 s is outside 1 s .. 65535 s"),
    ("lockout", "5 min", "patient_bolus.lockout: 5 min is shorter than the bolus duration "
                         "10 min (the lockout must be at least the duration)"),
    ("lockout", "25 h", "patient_bolus.lockout: 25 h is longer than the maximum 1 day"),
    ("max_per_day", 25, "patient_bolus.max_per_day: 25 is outside 1..24 (0 means no patient bolus)"),
    ("max_per_day", -1, "patient_bolus.max_per_day: -1 is outside 1..24"),
    ("max_per_day", "4", "patient_bolus.max_per_day: expected a whole number 0..24, got '4'"),
    ("max_per_day", 4.0, "patient_bolus.max_per_day: expected a whole number 0..24, got 4.0"),
    ("max_per_day", True, "patient_bolus.max_per_day: expected a whole number 0..24, got True"),
])
def test_patient_bolus_fields(key, value, expect):
    d = base()
    d["patient_bolus"]["lockout"] = "1 day"  # so only `key` is wrong
    if key == "lockout":
        d["patient_bolus"]["lockout"] = value
    d["patient_bolus"][key] = value
    assert one_error(d).startswith(expect)


def test_patient_bolus_edges():
    d = base()
    d["patient_bolus"].update(lockout="10 min")      # lockout == duration
    assert load_prescription(d).pb.lockout_s == 600
    d["patient_bolus"].update(lockout="1 day", max_per_day=1)
    assert load_prescription(d).pb == (100_000, 600, 86400, 1)
    d["patient_bolus"].update(lockout="1 h", max_per_day=24)
    assert load_prescription(d).pb.max_per_day == 24
    d["patient_bolus"]["max_per_day"] = 0            # 0: no patient bolus
    rx = load_prescription(d)
    assert rx.pb is None and rx.patient_ng() == 0


def test_patient_bolus_missing_keys_and_wrong_type():
    d = base()
    d["patient_bolus"] = {"dose": "0.1 mg"}
    assert errors(d) == ['patient_bolus.duration: missing (e.g. duration = "10 min")',
                         'patient_bolus.lockout: missing (e.g. lockout = "60 min")',
                         "patient_bolus.max_per_day: missing (e.g. max_per_day = 4)"]
    d["patient_bolus"] = "0.1 mg"
    assert errors(d) == ["patient_bolus: expected a [patient_bolus] table"]


# -- rolling 24 h limits ------------------------------------------------------------


def over_limit() -> dict:
    d = base()
    d["steps"] = [{"start": "00:00", "rate": "14 mg/day"}]
    d["patient_bolus"]["dose"] = "0.3 mg"
    d["patient_bolus"]["lockout"] = "4 h"
    return d


def test_worst_case_over_hard_limit_message():
    assert one_error(over_limit()) == (
        "steps[1].rate: worst-case 24 h dose 15.4 mg exceeds morphine hard limit 15 mg/day "
        "(basal 14 mg + timed 0.2 mg + patient 4 x 0.3 mg)")
    # The hard limit cannot be overridden.
    assert len(errors(over_limit(), override_soft=True)) == 1


def test_worst_case_soft_limit_needs_override():
    d = base()
    d["steps"] = [{"start": "00:00", "rate": "10 mg/day"}]
    assert one_error(d) == (
        "steps[1].rate: worst-case 24 h dose 10.6 mg exceeds morphine soft limit 10 mg/day "
        "(basal 10 mg + timed 0.2 mg + patient 4 x 0.1 mg); confirm with --override-soft-limit")
    assert load_prescription(d, override_soft=True).worst_case_ng() == 10_600_000


def test_worst_case_exactly_at_limit_is_accepted():
    d = base()
    d["steps"] = [{"start": "00:00", "rate": "14.4 mg/day"}]   # + 0.2 + 0.4 = 15 mg
    rx = load_prescription(d, override_soft=True)
    assert rx.worst_case_ng() == 15_000_000


def test_worst_case_is_exact_not_rounded():
    # Ziconotide, limit 19.2 mcg/day. 19.2 for one minute then 19.201 for the
    # rest: 19200 + 1439/1440 ng, just over the limit although it rounds to it.
    d = {"drug": "ziconotide", "concentration": "25 mcg/mL",
         "steps": [{"start": "00:00", "rate": "19.2 mcg/day"}]}
    assert load_prescription(d, override_soft=True).worst_case_ng() == 19_200
    d["steps"] = [{"start": "00:00", "rate": "19.2 mcg/day"},
                  {"start": "00:01", "rate": "19.201 mcg/day"}]
    assert one_error(d, override_soft=True) == (
        "steps[2].rate: worst-case 24 h dose 19.201 mcg exceeds ziconotide hard limit 19.2 mcg/day "
        "(basal 19.201 mcg + timed 0 mcg + no patient bolus)")


def test_step_lengths_weight_the_basal():
    d = base()
    del d["timed_boluses"], d["patient_bolus"]
    d["steps"] = [{"start": "00:00", "rate": "1 mg/day"}, {"start": "23:00", "rate": "24 mg/day"}]
    rx = load_prescription(d)       # 1 mg/day for 23 h and 24 mg/day for one hour is 1.958 mg
    assert rx.basal_exact() == Fraction(23, 24) * 1_000_000 + 1_000_000
    assert rx.basal_ng() == 1_958_334


def test_druglib_env_override(tmp_path, monkeypatch):
    monkeypatch.setenv("THECA_DRUGLIB", str(lib_file(tmp_path, max_ng_day=2_000_000,
                                                     soft_ng_day=2_000_000)))
    m = one_error(base())
    assert m.startswith("steps[2].rate: worst-case 24 h dose 2.433 mg exceeds morphine hard "
                        "limit 2 mg/day")


# -- unknown keys, malformed files, locations, collecting everything ------------------


def test_unknown_keys_everywhere():
    d = base()
    d["concentraton"] = "1 mg/mL"
    d["steps"][0]["rat"] = "1 mg/day"
    d["timed_boluses"][0]["colour"] = "red"
    d["patient_bolus"]["lockut"] = "1 h"
    msgs = errors(d)
    assert msgs == [
        'concentraton: unknown key (did you mean "concentration"? expected drug, concentration, '
        "drugs, steps, timed_boluses, patient_bolus, phase, description, low_reservoir, timezone)",
        'steps[1].rat: unknown key (did you mean "rate"? expected start, rate)',
        "timed_boluses[1].colour: unknown key (expected start, dose, duration)",
        'patient_bolus.lockut: unknown key (did you mean "lockout"? expected dose, duration, '
        "lockout, max_per_day)",
    ]


BAD_FILE = """\
drug = "morphine"
concentration = "10 mg/mL"

[[steps]]
start = "00:00"
rate = "1.5 mg/week"

[[steps]]
start = "08:00"
rate = "12 mg/day"
speed = 3

[patient_bolus]
dose = "0.1 mg"
duration = "10 min"
lockout = "5 min"
max_per_day = 30
"""


def test_file_errors_are_all_collected_with_lines(tmp_path):
    p = tmp_path / "rx.toml"
    p.write_text(BAD_FILE)
    with pytest.raises(BadInput) as e:
        load_prescription(p)
    assert e.value.messages == [
        f'{p}:6: steps[1].rate: unknown unit "mg/week" (use mg/day, mcg/day, mg/h, mcg/h, mL/day or uL/h)',
        f"{p}:11: steps[2].speed: unknown key (expected start, rate)",
        f"{p}:16: patient_bolus.lockout: 5 min is shorter than the bolus duration 10 min "
        "(the lockout must be at least the duration)",
        f"{p}:17: patient_bolus.max_per_day: 30 is outside 1..24 (0 means no patient bolus)",
    ]


def test_malformed_toml(tmp_path):
    p = tmp_path / "rx.toml"
    p.write_text('drug = "morphine"\nconcentration = 10 mg/mL\n')
    m = errors(p)
    assert len(m) == 1
    assert m[0].startswith(f"{p}: not valid TOML: ")
    assert "line 2" in m[0]


def test_unreadable_files(tmp_path):
    assert errors(tmp_path / "nope.toml")[0].startswith(f"{tmp_path / 'nope.toml'}: cannot read")
    p = tmp_path / "latin1.toml"
    p.write_bytes(b'drug = "morph\xefne"\n')
    assert "not UTF-8" in errors(p)[0]


def test_not_a_table():
    assert errors(["drug"]) == [
        "a prescription must be a table (drug, concentration, [[steps]], ...)"]


def test_locator():
    text = BAD_FILE + '\n[[timed_boluses]]\nstart = "12:00"\n[[timed_boluses]]\nstart = "13:00"\n'
    loc = toml_locator(text)
    assert loc("drug") == 1
    assert loc("steps[2]") == 8
    assert loc("steps[2].rate") == 10
    assert loc("patient_bolus.max_per_day") == 17
    assert loc("patient_bolus.nothing") == 13     # the table, when the key is absent
    assert loc("timed_boluses[2].start") == 22
    assert loc("timed_boluses[3].start") is None
    assert loc(None) is None


# -- the Rx blob (docs/DESIGN.md) ----------------------------------------------------


def test_blob_layout():
    rx = load_prescription(EXAMPLES / "rx_morphine.toml")
    blob = rx.to_blob()
    assert blob.hex() == (
        "04" "01" "02" "01" "00" "04" "5802"       # version, drug, n_steps, n_timed, flags, pb max, pb dur 600
        "80969800" "a0860100" "100e0000"           # conc 10e6, pb dose 100000, lockout 3600
        "0000"                                     # low_reservoir_ul 0: the device's threshold
        "0000" "60e31600" "e001" "80841e00"        # steps (0, 1.5e6), (480, 2e6)
        "d002" "0807" "400d0300"                   # timed (720, 1800, 200000)
        "00"                                       # n_zone: no time zone
        + "00" * 15)                               # mix: one drug (3 empty MixEntry slots)
    assert len(blob) == 22 + 2 * 6 + 1 * 8 + 1 + 15
    bac = load_prescription(EXAMPLES / "rx_baclofen_trial.toml").to_blob()
    assert bac[4] == FLAG_TRIAL and bac[5] == 0 and bac[6:8] == b"\0\0"


def test_blob_roundtrip_examples():
    for name in ("rx_morphine", "rx_ziconotide", "rx_baclofen_trial"):
        rx = load_prescription(EXAMPLES / f"{name}.toml")
        assert Prescription.from_blob(rx.to_blob()) == rx


def test_blob_matches_protocol_rxblob():
    # Imported here: a broken protocol package fails this test, not the whole module.
    import theca_protocol

    RxBlob = getattr(theca_protocol, "RxBlob", None)
    if RxBlob is None:
        pytest.skip("theca_protocol has no RxBlob yet (protocol package not written)")
    for name in ("rx_morphine", "rx_ziconotide", "rx_baclofen_trial"):
        rx = load_prescription(EXAMPLES / f"{name}.toml")
        pb = rx.pb or PatientBolus(0, 0, 0, 0)
        built = RxBlob.build({
            "version": M.RX_VERSION, "drug": rx.drug_id, "n_steps": len(rx.steps), "n_timed": len(rx.timed),
            "flags": rx.flags, "pb_max_per_day": pb.max_per_day, "pb_duration_s": pb.duration_s,
            "conc_ng_ml": rx.conc_ng_ml, "pb_dose_ng": pb.dose_ng, "pb_lockout_s": pb.lockout_s,
            "steps": [{"start_min": s.start_min, "rate_ng_day": s.rate_ng_day} for s in rx.steps],
            "timed": [{"start_min": t.start_min, "duration_s": t.duration_s, "dose_ng": t.dose_ng}
                      for t in rx.timed],
        })
        assert built == rx.to_blob(), name


@pytest.mark.parametrize("mutate, expect", [
    (lambda b: b[:10], "too short"),
    (lambda b: b"\x01" + b[1:], "version 1"),
    (lambda b: b[:2] + b"\x00" + b[3:], "steps"),
    (lambda b: b[:3] + b"\x09" + b[4:], "timed"),
    (lambda b: b + b"\0", "expected"),
    (lambda b: b[:-1], "expected"),
])
def test_bad_blobs(mutate, expect):
    blob = load_prescription(EXAMPLES / "rx_morphine.toml").to_blob()
    with pytest.raises(ValueError, match=expect):
        Prescription.from_blob(mutate(blob))


def test_blob_does_not_fit():
    rx = Prescription(drug_id=1, drug="morphine", conc_ng_ml=2**32, steps=[(0, 1)])
    with pytest.raises(ValueError, match="does not fit"):
        rx.to_blob()


def test_problems_on_hand_made_prescriptions():
    rx = Prescription(drug_id=1, drug="morphine", conc_ng_ml=10_000_000,
                      steps=[(0, 20_000_000)], pb=(100_000, 600, 300, 4))
    assert rx.problems(LIB) == [
        "patient_bolus.lockout: 5 min is shorter than the bolus duration 10 min "
        "(the lockout must be at least the duration)",
        "steps[1].rate: worst-case 1 h dose 1.233 mg exceeds morphine hard limit max_per_hour "
        "1.125 mg "
        "(the fastest basal step for an hour, the timed boluses one hour can meet and the "
        "patient boluses its lockout allows)",
        "steps[1].rate: worst-case 24 h dose 20.4 mg exceeds morphine hard limit 15 mg/day "
        "(basal 20 mg + timed 0 mg + patient 4 x 0.1 mg)",
    ]
    assert isinstance(rx.steps[0], Step) and isinstance(rx.pb, PatientBolus)
    unknown = Prescription(drug_id=99, drug="#99", conc_ng_ml=1, steps=[(0, 1)], flags=0x80)
    probs = unknown.problems(LIB)
    assert probs[0].startswith("drug: drug id 99 is not in the drug library")
    assert probs[1] == "phase: unknown flag bits 0x80"
    late = Prescription(drug_id=1, drug="morphine", conc_ng_ml=1_000_000,
                        steps=[(0, 100_000), (1440, 100_000)], timed=[TimedBolus(0, 60, 1000)])
    assert late.problems(LIB) == ["steps[2].start: 1440 min is not a time of day (0..1439)"]
    assert Prescription.from_blob(late.to_blob(), LIB).drug == "morphine"
    assert Prescription.from_blob(unknown.to_blob(), LIB).drug == "#99"


# -- the drug library ------------------------------------------------------------------


def test_druglib_default_and_lookup():
    lib = dl.load_druglib()
    assert lib.path == ROOT / "firmware" / "druglib.json"
    assert lib.names() == ["morphine", "hydromorphone", "fentanyl", "sufentanil", "bupivacaine",
                           "clonidine", "ziconotide", "baclofen"]
    zic = lib.lookup("Ziconotide")
    assert (zic.id, zic.max_conc_ng_ml, zic.max_ng_day) == (7, 100_000, 19_200)
    assert lib.by_id(8).name == "baclofen" and lib.by_id(0) is None
    with pytest.raises(BadInput) as e:
        lib.lookup("aspirin", "events[2].drug")
    assert e.value.messages[0].startswith('events[2].drug: unknown drug "aspirin" (the drug library has: morphine,')
    with pytest.raises(BadInput, match="expected a drug name"):
        lib.lookup(3)


def test_druglib_env_and_path(tmp_path, monkeypatch):
    p = lib_file(tmp_path, max_ng_day=1_000_000, soft_ng_day=900_000, max_ng_hour=500_000,
                 max_bolus_ng=100_000)
    monkeypatch.setenv("THECA_DRUGLIB", str(p))
    assert dl.default_path() == p
    assert dl.load_druglib().lookup("morphine").max_ng_day == 1_000_000
    monkeypatch.delenv("THECA_DRUGLIB")
    assert dl.load_druglib().lookup("morphine").max_ng_day == 15_000_000
    assert dl.load_druglib(p).path == p


def _lib(**entry_changes) -> dict:
    data = json.loads((ROOT / "firmware" / "druglib.json").read_text())
    data["drugs"][0].update(entry_changes)
    return data


@pytest.mark.parametrize("data, expect", [
    ([], 'expected a JSON object with "version" and "drugs"'),
    ({"version": 2, "drugs": _lib()["drugs"]}, "version: expected 1, got 2"),
    ({"version": 1, "drugs": []}, "drugs: expected a non-empty list"),
    (_lib(id=2), "drugs[2] (hydromorphone).id: 2 is used by another drug"),
    (_lib(id=0), "drugs[1] (morphine).id: expected an integer 1..255, got 0"),
    (_lib(id=True), "drugs[1] (morphine).id: expected an integer 1..255"),
    (_lib(name="Hydromorphone"), 'drugs[2] (hydromorphone).name: "hydromorphone" appears twice'),
    (_lib(name=""), "drugs[1].name: expected a non-empty ASCII name"),
    (_lib(max_ng_day=0), "drugs[1] (morphine).max_ng_day: expected an integer 1..4294967295, got 0"),
    (_lib(max_ng_day=1.5e7), "max_ng_day: expected an integer"),
    (_lib(soft_ng_day=16_000_000), "drugs[1] (morphine): soft_ng_day is above max_ng_day"),
    (_lib(soft_conc_ng_ml=26_000_000), "soft_conc_ng_ml is above max_conc_ng_ml"),
    (_lib(max_mg_day=1), 'drugs[1]: unknown key "max_mg_day"'),
])
def test_druglib_validation(data, expect):
    with pytest.raises(BadInput) as e:
        dl.parse_druglib(data, "lib.json")
    assert any(expect in m for m in e.value.messages), e.value.messages
    assert all(m.startswith("lib.json: ") for m in e.value.messages)


def test_druglib_missing_key_and_bad_files(tmp_path):
    data = _lib()
    del data["drugs"][0]["soft_ng_day"]
    with pytest.raises(BadInput, match='drugs\\[1\\]: missing "soft_ng_day"'):
        dl.parse_druglib(data)
    p = tmp_path / "lib.json"
    p.write_text('{"version": 1,\n "drugs": [}')
    with pytest.raises(BadInput, match=f"{p}:2: drug library is not valid JSON"):
        dl.load_druglib(p)
    with pytest.raises(BadInput, match="cannot read the drug library"):
        dl.load_druglib(tmp_path / "none.json")


# -- properties -----------------------------------------------------------------------

_DRUGS = LIB.names()
amounts = st.sampled_from(["mg", "mcg"])


@st.composite
def rx_tables(draw) -> dict:
    """Prescription tables in file form, mostly plausible, many over some limit."""
    drug = LIB.lookup(draw(st.sampled_from(_DRUGS)))
    conc_ng = draw(st.integers(1, drug.max_conc_ng_ml * 2))
    n = draw(st.integers(1, 5))
    starts = sorted(draw(st.sets(st.integers(1, 1439), min_size=n - 1, max_size=n - 1)))
    day = drug.max_ng_day
    d = {
        "drug": drug.name,
        "concentration": f"{conc_ng} ng/mL",
        "steps": [{"start": f"{m // 60:02d}:{m % 60:02d}",
                   "rate": f"{draw(st.integers(0, day))} ng/day"} for m in [0, *starts]],
    }
    k = draw(st.integers(0, 3))
    tstarts = sorted(draw(st.sets(st.integers(0, 23), min_size=k, max_size=k)))
    d["timed_boluses"] = [{"start": f"{h:02d}:00", "dose": f"{draw(st.integers(1, day // 4))} ng",
                           "duration": f"{draw(st.integers(1, 60))} min"} for h in tstarts]
    if draw(st.booleans()):
        dur = draw(st.integers(1, 60))
        d["patient_bolus"] = {"dose": f"{draw(st.integers(1, day // 4))} ng",
                              "duration": f"{dur} min",
                              "lockout": f"{draw(st.integers(dur, 1440))} min",
                              "max_per_day": draw(st.integers(0, 24))}
    return d


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(rx_tables(), st.booleans())
def test_accepted_prescriptions_respect_limits(table, override):
    try:
        rx = load_prescription(copy.deepcopy(table), druglib=LIB, override_soft=override)
    except BadInput as e:
        assert e.messages  # refused, with reasons
        return
    drug = LIB.lookup(table["drug"])
    # Recompute the worst case independently, from the file's own numbers.
    mins = [int(s["start"][:2]) * 60 + int(s["start"][3:]) for s in table["steps"]] + [1440]
    basal = sum(Fraction(int(s["rate"].split()[0]) * (mins[i + 1] - mins[i]), 1440)
                for i, s in enumerate(table["steps"]))
    timed_ng = sum(int(t["dose"].split()[0]) for t in table["timed_boluses"])
    pb = table.get("patient_bolus")
    patient = pb["max_per_day"] * int(pb["dose"].split()[0]) if pb else 0
    worst = basal + timed_ng + patient
    assert worst <= drug.max_ng_day
    assert rx.worst_case_ng() <= drug.max_ng_day
    if not override:
        assert worst <= drug.soft_ng_day
    assert rx.conc_ng_ml <= drug.max_conc_ng_ml
    assert rx.problems(LIB, override) == []
    assert Prescription.from_blob(rx.to_blob(), LIB) == rx


@st.composite
def device_rx(draw) -> Prescription:
    n = draw(st.integers(1, 24))
    starts = [0, *sorted(draw(st.sets(st.integers(1, 1439), min_size=n - 1, max_size=n - 1)))]
    u32 = st.integers(0, 2**32 - 1)
    steps = [Step(s, draw(u32)) for s in starts]
    timed = draw(st.lists(st.builds(TimedBolus, st.integers(0, 1439), st.integers(0, 65535), u32),
                          max_size=8))
    pb = draw(st.none() | st.builds(PatientBolus, u32, st.integers(0, 65535), u32,
                                    st.integers(1, 255)))
    drug = draw(st.sampled_from(LIB.drugs))
    zone = draw(st.lists(st.tuples(u32, st.integers(-18 * 3600, 18 * 3600)), max_size=8))
    return Prescription(drug_id=drug.id, drug=drug.name, conc_ng_ml=draw(u32), steps=steps,
                        timed=timed, pb=pb, flags=draw(st.integers(0, 255)),
                        low_reservoir_nl=1000 * draw(st.integers(0, 65535)), zone=tuple(zone))


@given(device_rx())
def test_blob_roundtrip(rx):
    blob = rx.to_blob()
    assert len(blob) == 22 + 6 * len(rx.steps) + 8 * len(rx.timed) + 1 + 8 * len(rx.zone) + 15
    assert tp.compiled(tp.RxHead).unpack_from(blob)[:4] == (4, rx.drug_id, len(rx.steps), len(rx.timed))
    assert Prescription.from_blob(blob, LIB) == rx


@given(st.binary(max_size=300))
def test_from_blob_never_crashes_unexpectedly(blob):
    try:
        rx = Prescription.from_blob(blob, LIB)
    except ValueError:
        return
    assert rx.to_blob() == blob


@settings(max_examples=100)
@given(st.integers(0, 15_000_000), st.integers(0, 5), st.integers(1, 1_000_000))
def test_limit_decision_matches_arithmetic(rate, max_per_day, dose):
    assume(dose * max_per_day <= 20_000_000)
    d = {"drug": "morphine", "concentration": "10 mg/mL",
         "steps": [{"start": "00:00", "rate": f"{rate} ng/day"}],
         "patient_bolus": {"dose": f"{dose} ng", "duration": "1 min", "lockout": "1 h",
                           "max_per_day": max_per_day}}
    worst = rate + max_per_day * dose
    hour = -(-rate // 24) + min(2, max_per_day) * dose  # (1 h + 1 min) // 1 h + 1 boluses
    # 10 mg/mL over 1 min: 1000 uL/h is 166,666.7 ng
    bolus_ok = max_per_day == 0 or (dose <= 500_000 and dose * 360 <= 60_000_000)
    slow_ok = rate >= 480_000  # 48 uL/day at 10 mg/mL, the mechanism's min_rate
    try:
        load_prescription(d, druglib=LIB, override_soft=True)
        accepted = True
    except BadInput:
        accepted = False
    assert accepted == (worst <= 15_000_000 and hour <= 1_125_000 and bolus_ok and slow_ok)


@settings(max_examples=50)
@given(device_rx())
def test_blob_matches_protocol_rxblob_any(rx):
    import theca_protocol

    RxBlob = getattr(theca_protocol, "RxBlob", None)
    if RxBlob is None:
        pytest.skip("theca_protocol has no RxBlob yet (protocol package not written)")
    parsed = RxBlob.parse(rx.to_blob())
    pb = rx.pb or PatientBolus(0, 0, 0, 0)
    assert (parsed.version, parsed.drug, parsed.n_steps, parsed.n_timed, parsed.flags) == \
        (M.RX_VERSION, rx.drug_id, len(rx.steps), len(rx.timed), rx.flags)
    assert (parsed.pb_max_per_day, parsed.pb_duration_s, parsed.pb_dose_ng, parsed.pb_lockout_s) == \
        (pb.max_per_day, pb.duration_s, pb.dose_ng, pb.lockout_s)
    assert parsed.conc_ng_ml == rx.conc_ng_ml
    assert [(s.start_min, s.rate_ng_day) for s in parsed.steps] == list(rx.steps)
    assert [(t.start_min, t.duration_s, t.dose_ng) for t in parsed.timed] == list(rx.timed)
    assert RxBlob.build(parsed) == rx.to_blob()


# -- the prescription's low-reservoir threshold ------------------------------------------


def test_low_reservoir_round_trips_through_the_blob():
    d = base()
    d["low_reservoir"] = "3.5 mL"
    rx = load_prescription(d)
    assert rx.low_reservoir_nl == 3_500_000
    head = M.RxHead.parse(rx.to_blob())
    assert head.low_reservoir_ul == 3500
    assert Prescription.from_blob(rx.to_blob()) == rx
    assert "Low reservoir alarm below 3.5 mL" in rx.describe()


def test_low_reservoir_absent_is_the_devices():
    rx = load_prescription(base())
    assert rx.low_reservoir_nl == 0
    assert M.RxHead.parse(rx.to_blob()).low_reservoir_ul == 0


@pytest.mark.parametrize("value, words", [
    ("0.5 mL", "500 uL is outside 1 mL .. 5 mL"),
    ("6 mL", "6 mL is outside 1 mL .. 5 mL"),
    ("2000.5 uL", "not a whole number of uL"),
    ("2 mg", "low_reservoir"),
])
def test_low_reservoir_out_of_range_is_named(value, words):
    d = base()
    d["low_reservoir"] = value
    m = one_error(d)
    assert m.startswith("low_reservoir") and words in m, m


# -- the lower limits: the mechanism's min_rate (hard) and the drug's min_per_day (soft) ---


def test_a_mg_mcg_slip_is_caught_twice():
    # the case: morphine 2 mcg/day where 2 mg/day was meant
    d = base()
    del d["timed_boluses"]
    d["steps"] = [{"start": "00:00", "rate": "2 mcg/day"}]
    msgs = errors(d)
    assert any(m.startswith("steps[1].rate:") and "min_rate 48 uL/day" in m for m in msgs), msgs
    assert any("soft limit min_per_day" in m for m in msgs), msgs


def test_min_per_day_is_soft_and_recorded_when_overridden():
    d = base()
    del d["timed_boluses"], d["patient_bolus"]
    d["concentration"] = "0.1 mg/mL"
    d["steps"] = [{"start": "00:00", "rate": "5 mcg/day"}]   # 50 uL/day: the pump can
    m = one_error(d)
    assert m == ("steps: daily dose 0.005 mg is below morphine soft limit min_per_day "
                 "0.01 mg/day (a mg/mcg slip?); confirm with --override-soft-limit"), m
    rx = load_prescription(d, override_soft=True)
    assert rx.flags & N.mask_of(N.RX_FLAGS, "override_min_per_day")
    d["steps"] = [{"start": "00:00", "rate": "10 mcg/day"}]  # at the limit: fine
    assert load_prescription(d).flags == 0


def test_every_example_passes_the_lower_limits():
    for p in sorted(EXAMPLES.glob("rx_*.toml")):
        rx = load_prescription(p)
        d = LIB.by_id(rx.drug_id)
        assert d is not None and rx.daily_ng() >= d.min_ng_day, p


@pytest.mark.parametrize("changes, words", [
    ({"min_ng_day": -1}, "min_ng_day: expected an integer 0.."),
    ({"min_ng_day": 20_000_000}, "min_ng_day is above soft_ng_day"),
    ({"stability_days": 0}, "stability_days: expected an integer 1..3650"),
    ({"first_fill_stability_days": 100}, "first_fill_stability_days is above stability_days"),
])
def test_druglib_lower_limit_and_stability_keys_checked(tmp_path, changes, words):
    with pytest.raises(BadInput) as e:
        dl.load_druglib(lib_file(tmp_path, **changes))
    assert any(words in m for m in e.value.messages), e.value.messages


def test_device_library_is_what_the_device_reads():
    # the hard limits and the stability of every drug, without the sources: a board's
    # heap holds it (the whole file runs the 128 KiB twin out of memory at boot)
    dev = json.loads(dl.device_json(LIB))
    assert [d["id"] for d in dev["drugs"]] == [d.id for d in LIB.drugs]
    for d, full in zip(dev["drugs"], LIB.drugs, strict=True):
        assert tuple(d) == dl.DEVICE_KEYS
        assert all(d[k] == getattr(full, k) for k in dl.DEVICE_KEYS)
    whole = (ROOT / "firmware" / "druglib.json").stat().st_size
    assert len(dl.device_json(LIB)) * 4 < whole


def test_the_readme_s_over_limit_example_holds_as_written(tmp_path):
    # issue 13: over-limit errors gave no line and field; the README's example did not hold
    import re
    import subprocess
    import sys

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme.split("$ cat rx.toml\n", 1)[1].split("```", 1)[0]
    rx_text, rest = block.split("$ theca ", 1)
    cmd, expected = rest.split("\n", 1)
    (tmp_path / "rx.toml").write_text(rx_text)
    args = cmd.split()
    r = subprocess.run([sys.executable, "-m", "theca.cli", *args], capture_output=True,
                       text=True, cwd=tmp_path, env={**__import__("os").environ,
                                                     "THECA_HOME": str(tmp_path / "h")})
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip() == expected.strip(), (r.stderr, expected)
    assert re.match(r"theca program: rx\.toml:5: steps\[1\]\.rate: ", r.stderr)


def test_a_timezone_is_a_real_zone_or_named_wrong():
    # REQ: SR-TIME-04
    base = {"drug": "morphine", "concentration": "10 mg/mL",
            "steps": [{"start": "00:00", "rate": "3 mg/day"}]}
    rx = load_prescription(dict(base, timezone="America/New_York"), zone_from=189_388_800)
    # EST from 2026-01-01, EDT from 2026-03-08T07:00Z, EST from 2026-11-01T06:00Z, ...
    assert rx.zone[:3] == ((189_388_800, -18000), (195_116_400, -14400), (215_676_000, -18000))
    assert Prescription.from_blob(rx.to_blob()).zone == rx.zone
    with pytest.raises(BadInput) as e:
        load_prescription(dict(base, timezone="Europe/Berlinn"))
    assert e.value.messages == ['timezone: \'Europe/Berlinn\' is not an IANA time zone (e.g. '
                                '"Europe/Berlin", "America/New_York")']
    with pytest.raises(BadInput):
        load_prescription(dict(base, timezone="../../etc/passwd"))
