"""Prescription files (TOML) -> a validated `Prescription` in device units.

The file format is fixed by interface.md ("Prescription file"); the Rx blob
the device receives is fixed by docs/DESIGN.md ("Rx blob"). Everything a
clinician can get wrong is reported at once, each message naming the field
and the limit, so nothing questionable reaches a device.

Rules (device units; see `Prescription.problems`):
- drug in the drug library; concentration <= its hard maximum (and <= the
  soft maximum unless overridden);
- 1..24 basal steps, the first at 00:00, starts strictly increasing, rates >= 0;
- <= 8 timed boluses in time order, not overlapping, dose > 0,
  0 < duration <= 65535 s;
- patient bolus (optional): dose > 0, 0 < duration <= 65535 s,
  duration <= lockout <= 86400 s, 1 <= max_per_day <= 24 (0: no patient bolus);
- worst case in any rolling 24 h (basal daily total + all timed doses +
  max_per_day x patient dose) <= the drug's hard daily limit (and soft unless
  overridden);
- the volume rate the engine runs (basal, and basal + a bolus) stays below
  500,000,000 nL/day, the engine's small-int bound.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import replace

from theca_protocol import messages as M

from theca.errors import Problems, checked
from theca.inputs import units as u
from theca.inputs.druglib import DrugLibrary, load_druglib
from theca.inputs.prescription import (
    FLAG_TRIAL,
    MAX_MIX,
    MAX_PB_PER_DAY,
    MAX_RATE_NL_H,
    MIN_RATE_NL_DAY,
    RX_VERSION,
    PatientBolus,
    Prescription,
    Step,
    TimedBolus,
    too_fast,
)
from theca.inputs.rxrules import PatientBolusValues, apply_rules, build, override_flag, rx_drug
from theca.inputs.tomlfile import check_keys, read_toml, table_list, toml_locator

# what other modules take from here (the file, the prescription, the rules)
__all__ = ["FLAG_TRIAL", "MAX_RATE_NL_H", "MIN_RATE_NL_DAY", "RX_VERSION", "PatientBolus",
           "Prescription", "Step", "TimedBolus", "load_prescription", "override_flag",
           "parse_prescription", "rx_drug", "toml_locator", "too_fast"]

# ---------------------------------------------------------------------------
# Parsing a decoded TOML table.

_TOP_KEYS = ("drug", "concentration", "drugs", "steps", "timed_boluses", "patient_bolus", "phase",
             "description", "low_reservoir", "timezone")
#: The range of `low_reservoir`, nL (the blob's, in whole uL).
LOW_RESERVOIR_NL = (M.RX_LOW_RESERVOIR_UL[0] * 1000, M.RX_LOW_RESERVOIR_UL[1] * 1000)
_STEP_KEYS = ("start", "rate")
_TIMED_KEYS = ("start", "dose", "duration")
_PB_KEYS = ("dose", "duration", "lockout", "max_per_day")
_DRUG_KEYS = ("name", "concentration")


def parse_fill(data: Mapping, lib: DrugLibrary, probs: Problems, *, need: bool = True,
               prefix: str = ""):
    """(primary drug, its concentration, [(other drug, concentration), ...]) of a table that
    names one drug (`drug`, `concentration`) or an admixture (`[[drugs]]`, up to
    MAX_MIX + 1, the first the primary). Entries that did not parse are None (each has its
    message, its field name after `prefix`); `need`: a missing fill is a problem."""
    if "drugs" in data:
        if "drug" in data or "concentration" in data:
            probs.add(f"{prefix}drugs", "give the fill once: `drug` and `concentration` for one "
                                        "drug, or [[drugs]] (name, concentration; the first is "
                                        "the primary drug) for an admixture, not both")
        entries = table_list(data["drugs"], f"{prefix}drugs", probs)
        if not entries:
            probs.add(f"{prefix}drugs", "at least one [[drugs]] table (name, concentration) is "
                                        "needed")
        elif len(entries) > MAX_MIX + 1:
            probs.add(f"{prefix}drugs", f"{len(entries)} drugs given, an admixture holds at most "
                                        f"{MAX_MIX + 1}")
        fill: list = []
        for i, e in enumerate(entries[:MAX_MIX + 1], 1):
            f = f"{prefix}drugs[{i}]"
            check_keys(e, _DRUG_KEYS, _DRUG_KEYS, f, probs,
                       {"name": '"bupivacaine"', "concentration": '"20 mg/mL"'})
            d = probs.call(lib.lookup, e["name"], f"{f}.name") if "name" in e else None
            c = (probs.call(u.parse_concentration, e["concentration"], f"{f}.concentration")
                 if "concentration" in e else None)
            if d is not None and any(x[0] is not None and x[0].id == d.id for x in fill):
                probs.add(f"{f}.name", f"{d.name} is named twice (each drug of the fill once)")
            fill.append((d, c))
        if not fill:
            return None, None, []
        return fill[0][0], fill[0][1], fill[1:]
    if need:
        check_keys({}, (), tuple(k for k in ("drug", "concentration") if k not in data),
                   prefix.rstrip("."), probs)
    drug = probs.call(lib.lookup, data["drug"], f"{prefix}drug") if "drug" in data else None
    conc = (probs.call(u.parse_concentration, data["concentration"], f"{prefix}concentration")
            if "concentration" in data else None)
    return drug, conc, []


def _parse_steps(data: Mapping, probs: Problems, rate_of) -> list[tuple]:
    steps: list[tuple] = []
    for i, st in enumerate(table_list(data.get("steps", []), "steps", probs), 1):
        f = f"steps[{i}]"
        check_keys(st, _STEP_KEYS, _STEP_KEYS, f, probs)
        start = probs.call(u.parse_clock, st["start"], f"{f}.start") if "start" in st else None
        rate = rate_of(st["rate"], f"{f}.rate") if "rate" in st else None
        steps.append((start, rate))
    return steps


def _parse_timed(data: Mapping, probs: Problems) -> list[tuple]:
    timed: list[tuple] = []
    for i, tb in enumerate(table_list(data.get("timed_boluses", []), "timed_boluses", probs), 1):
        f = f"timed_boluses[{i}]"
        check_keys(tb, _TIMED_KEYS, _TIMED_KEYS, f, probs)
        start = probs.call(u.parse_clock, tb["start"], f"{f}.start") if "start" in tb else None
        dur = probs.call(u.parse_duration, tb["duration"], f"{f}.duration") if "duration" in tb else None
        dose = probs.call(u.parse_amount, tb["dose"], f"{f}.dose") if "dose" in tb else None
        timed.append((start, dur, dose))
    return timed


def _parse_pb(data: Mapping, probs: Problems) -> PatientBolusValues | None:
    if "patient_bolus" not in data:
        return None
    t = data["patient_bolus"]
    if not isinstance(t, Mapping):
        probs.add("patient_bolus", "expected a [patient_bolus] table")
        return PatientBolusValues(None, None, None, None)
    f = "patient_bolus"
    check_keys(t, _PB_KEYS, _PB_KEYS, f, probs)
    mpd = t.get("max_per_day")
    if "max_per_day" in t and (isinstance(mpd, bool) or not isinstance(mpd, int)):
        probs.add(f"{f}.max_per_day", f"expected a whole number 0..{MAX_PB_PER_DAY}, got {mpd!r}")
        mpd = None
    return PatientBolusValues(
        probs.call(u.parse_amount, t["dose"], f"{f}.dose") if "dose" in t else None,
        probs.call(u.parse_duration, t["duration"], f"{f}.duration") if "duration" in t else None,
        probs.call(u.parse_duration, t["lockout"], f"{f}.lockout") if "lockout" in t else None,
        mpd,
    )


def parse_prescription(data: Mapping, druglib: DrugLibrary | None = None, *,
                       override_soft: bool = False, probs: Problems,
                       zone_from: int | None = None) -> Prescription | None:
    """Check a decoded prescription table; record every problem in `probs`.

    Returns the Prescription when there were no problems, else None. A `timezone` gives
    the offset's changes for 24 months from `zone_from` (device time; None: now).
    """
    before = len(probs)
    if not isinstance(data, Mapping):
        probs.add(None, "a prescription must be a table (drug, concentration, [[steps]], ...)")
        return None
    lib = druglib or load_druglib()
    check_keys(data, _TOP_KEYS, (), "", probs)
    drug, conc, fill_mix = parse_fill(data, lib, probs)
    if "steps" not in data:
        check_keys({}, (), ("steps",), "", probs)

    flags = 0
    if "phase" in data:
        phase = data["phase"]
        if phase == "trial":
            flags |= FLAG_TRIAL
        elif phase != "maintenance":
            probs.add("phase", f'expected "trial" or "maintenance", got {phase!r}')
    if "description" in data and not isinstance(data["description"], str):
        probs.add("description", "expected a string")

    def rate_of(value, f: str) -> int | None:
        if value == "minimum":
            # the mechanism's minimum rate, keeping the catheter open (SynchroMed's): the
            # drug a day whose volume the device rounds to it, never below it
            if conc is None:
                return None
            return -(-MIN_RATE_NL_DAY * conc // 1_000_000)
        exact = probs.call(u.parse_rate_exact, value, f)
        if exact is None:
            return None
        if exact[1] == "nl":
            if conc is None:
                return None  # the concentration has its own message
            return probs.call(u.parse_rate, value, f, conc)
        return probs.call(u.parse_rate, value, f)

    steps = _parse_steps(data, probs, rate_of)
    timed = _parse_timed(data, probs)
    pb = _parse_pb(data, probs)
    low_nl = parse_low(data, probs)

    mix = [(d, c) for d, c in fill_mix if d is not None and c is not None]
    if len(mix) < len(fill_mix):
        mix = []  # (a drug that did not parse has its message; no half admixture judged)
    flags |= apply_rules(drug, conc, steps, timed, pb, override_soft, probs, mix)
    zone = _parse_zone(data, probs, zone_from)
    if len(probs) > before:
        return None
    rx = build(drug, conc, steps, timed, pb, flags, low_nl, mix)
    return replace(rx, zone=zone[1], timezone=zone[0]) if zone else rx


def _parse_zone(data: Mapping, probs: Problems, start: int | None):
    # (name, changes) of a `timezone`, or None
    if "timezone" not in data:
        return None
    from theca.inputs import timezone as tz

    try:
        return data["timezone"], tz.changes(data["timezone"], tz.now_device() if start is None else start)
    except ValueError as e:
        probs.add("timezone", str(e))
        return None


def parse_low(data: Mapping, probs: Problems) -> int:
    # low_reservoir = "2 mL": 1..5 mL in whole uL; 0 (absent): the device's threshold
    if "low_reservoir" not in data:
        return 0
    nl = probs.call(u.parse_volume, data["low_reservoir"], "low_reservoir")
    if nl is None:
        return 0
    lo, hi = LOW_RESERVOIR_NL
    if not lo <= nl <= hi:
        probs.add("low_reservoir", f"{u.fmt_volume(nl)} is outside {u.fmt_volume(lo)} .. "
                                   f"{u.fmt_volume(hi)}")
    elif nl % 1000:
        probs.add("low_reservoir", f"{u.fmt_volume(nl)} is not a whole number of uL")
    return nl


def load_prescription(source: str | os.PathLike | Mapping, *, druglib: DrugLibrary | None = None,
                      override_soft: bool = False, zone_from: int | None = None) -> Prescription:
    """Load and validate a prescription from a TOML file path or an already-decoded table.
    A `timezone`'s offset changes are those of 24 months from `zone_from` (device time;
    None: now).

    Raises BadInput listing every problem; for a file, each message starts
    with `file:line:` where the line can be found.
    """
    if not isinstance(source, (str, os.PathLike)):
        probs = Problems()
        rx = parse_prescription(source, druglib, override_soft=override_soft, probs=probs,
                                zone_from=zone_from)
        probs.raise_if_any()
        return checked(rx)
    data, text = read_toml(source)
    probs = Problems()
    rx = parse_prescription(data, druglib, override_soft=override_soft, probs=probs,
                            zone_from=zone_from)
    probs.raise_if_any(str(source), toml_locator(text))
    return replace(checked(rx), source=str(source))
