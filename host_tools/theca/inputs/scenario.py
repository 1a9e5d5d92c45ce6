"""Scenario files (TOML) for `theca simulate` -> a validated `Scenario` in device units.

The format is fixed by interface.md ("Scenario file"). All times become
device seconds (since 2020-01-01T00:00:00Z), volumes nL, drug ng. Every
problem in the file is reported at once, as `file:line: field: problem`.

Extensions beyond interface.md (all optional):
- `capacity_ml` (20 or 40), `stroke_nl`, `catheter_ul`, `battery_days`,
  `local_offset` ("+01:00"), `override_soft_limit` (bool), `description`;
- `status_period_s` defaults to 60 and `reservoir_ml` to a full reservoir;
- event `ack_alarm` takes an optional `alarms` list (default: all alarms);
- event `set_time` takes `utc` (a UTC datetime, default: the event time)
  and/or `local_offset` (default: the offset in effect).
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

from theca_protocol import messages as M
from theca_protocol import names as N

from theca.errors import BadInput, Problems, checked
from theca.inputs import titration
from theca.inputs import units as u
from theca.inputs.druglib import Drug, DrugLibrary, load_druglib
from theca.inputs.prescription import MAX_RATE_NL_H, Prescription, too_fast
from theca.inputs.rxfile import load_prescription
from theca.inputs.scenario_model import (
    DEFAULT_BATTERY_DAYS,
    DEFAULT_CAPACITY_NL,
    DEFAULT_CATHETER_NL,
    DEFAULT_STATUS_PERIOD_S,
    DEFAULT_STROKE_NL,
    Event,
    Fault,
    Scenario,
)
from theca.inputs.scenario_values import ml_to_nl as _ml_to_nl
from theca.inputs.scenario_values import serial as _serial
from theca.inputs.scenario_values import sim_days as _days
from theca.inputs.scenario_values import uint as _uint
from theca.inputs.tomlfile import check_keys, read_toml, table_list, toml_locator

CAPACITIES_NL = N.CAPACITIES_NL
#: STATUS.battery_days is a u16.
MAX_BATTERY_DAYS = 2 ** (8 * M.Status.battery_days.sizeof()) - 1
#: A clinician bolus longer than a day is not a bolus.
MAX_CLINICIAN_BOLUS_S = N.MAX_BOLUS_DURATION_S
_SMALL_INT = 2**30 - 1

#: Alarm names and their bit in the device's alarm mask (the protocol's ALARMS).
ALARM_BITS = {name: bit for bit, name in N.ALARMS.items()}
#: `ack_alarm` without `alarms` acknowledges every alarm.
ALL_ALARMS = (1 << len(ALARM_BITS)) - 1

#: Event action -> (required keys, optional keys).
ACTIONS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "patient_bolus": ((), ()),
    "clinician_bolus": (("dose", "duration"), ()),
    "refill": (("volume",), ("concentration", "drug", "drugs", "residual")),
    "program": (("prescription",), ("override_soft_limit",)),
    "suspend": ((), ("max",)),
    "resume": ((), ()),
    "ack_alarm": ((), ("alarms", "role")),
    "set_time": ((), ("utc", "local_offset")),
    "catheter": (("volume",), ("replaced",)),
    "prime": ((), ()),
    "mri_prepare": ((), ()),
    "mri_check": ((), ()),
}
#: Fault kind -> the key it needs.
FAULT_KINDS = {"motor_stall": "duration", "occlusion": "duration", "power_loss": "duration",
               "battery": "remaining", "pocket_fill": "volume", "storage": "duration",
               "flash_error": "duration", "mri": "duration"}
#: storage faults: the pump's flash files, and what happens to one while the pump is off
STORAGE_FILES = ("state", "journal", "events")
STORAGE_DAMAGE = ("bitflip", "erase")

__all__ = ["ACTIONS", "ALARM_BITS", "ALL_ALARMS", "FAULT_KINDS", "Event", "Fault", "Scenario",
           "load_scenario"]

_EXAMPLES = {"start": "start = 2026-01-01T08:00:00Z", "days": "days = 30",
             "prescription": 'prescription = "rx.toml"'}
_TOP_KEYS = ("start", "days", "status_period_s", "reservoir_ml", "prescription", "events",
             "faults", "capacity_ml", "stroke_nl", "catheter_ul", "battery_days", "local_offset",
             "override_soft_limit", "description", "serial")


def _quoted(v) -> str:
    return f'"{v}"' if isinstance(v, str) else repr(v)


def _did_you_mean(v, choices) -> str:
    close = difflib.get_close_matches(v, list(choices), n=1) if isinstance(v, str) else []
    return f'did you mean "{close[0]}"? ' if close else ""


def _alarm_mask(value, field: str) -> int:
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise BadInput.at(field, f"expected a list of alarm names ({', '.join(ALARM_BITS)})")
    mask, bad = 0, []
    for n in names:
        if n in ALARM_BITS:
            mask |= 1 << ALARM_BITS[n]
        else:
            bad.append(n)
    if bad:
        raise BadInput.at(field, f"unknown alarm {', '.join(map(_quoted, bad))} "
                                 f"(known: {', '.join(ALARM_BITS)})")
    return mask


@dataclass
class _InPump:
    """What is in the pump as the scenario's events go by: the drug, its concentration,
    the reservoir's capacity, the local offset."""

    drug: Drug | None
    conc: int | None
    capacity: int | None
    offset: int
    rx: Prescription | None = None  # the prescription in force, programmed at rx_t
    rx_t: int | None = None


class _Loader:
    """One pass over a scenario table, collecting problems."""

    def __init__(self, data: Mapping, base_dir: Path, lib: DrugLibrary, override_soft: bool):
        self.data = data
        self.base_dir = base_dir
        self.lib = lib
        self.override_soft = override_soft
        self.probs = Problems()

    def call(self, fn, *args):
        return self.probs.call(fn, *args)

    def rx(self, value, field: str, override: bool = False, at: int | None = None) -> Prescription | None:
        """A prescription: a path relative to the scenario file, or an inline table.
        Its soft limits pass if the scenario (or `override`, the event's) says so; a
        `timezone`'s offset changes are those from `at` (when it is programmed)."""
        override = override or self.override_soft
        try:
            if isinstance(value, Mapping):
                return load_prescription(value, druglib=self.lib, override_soft=override, zone_from=at)
            if isinstance(value, str) and value.strip():
                p = Path(value)
                if not p.is_absolute():
                    p = self.base_dir / p
                return load_prescription(p, druglib=self.lib, override_soft=override, zone_from=at)
            self.probs.add(field, f'expected a file name such as "rx.toml" or an inline table, got {value!r}')
        except BadInput as e:
            self.probs.extend(e, field, nested=isinstance(value, Mapping))
        return None

    def at(self, value, field: str, start: int | None, end: int | None) -> int | None:
        t = self.call(u.parse_datetime, value, field)
        if t is None or start is None or end is None:
            return t
        if not start <= t <= end:
            self.probs.add(field, f"{u.fmt_time(t)} is outside the scenario "
                                  f"({u.fmt_time(start)} to {u.fmt_time(end)})")
        return t

    def load(self, path: str | None) -> Scenario | None:
        d, probs = self.data, self.probs
        if not isinstance(d, Mapping):
            probs.add(None, "a scenario must be a table (start, days, prescription, ...)")
            return None
        if "prescription" not in d and "drug" in d and "steps" in d:
            # a prescription given where a scenario is wanted: say so, once
            probs.add(None, "this is a prescription (drug, steps), not a scenario: a scenario "
                            "names one with prescription = \"FILE.toml\" and says start and "
                            "days (see examples/demo.toml)")
            return None
        check_keys(d, _TOP_KEYS, ("start", "days", "prescription"), "", probs, _EXAMPLES)
        self.override_soft = self.override_soft or self._override(d)

        start = self.call(u.parse_datetime, d["start"], "start") if "start" in d else None
        length = self.call(_days, d["days"], "days") if "days" in d else None
        end = None
        if start is not None and length is not None:
            end = start + length
            if end > u.DEVICE_TIME_MAX:
                probs.add("days", f"the run would end after the last supported device time "
                                  f"{u.fmt_time(u.DEVICE_TIME_MAX)}")
                end = None

        period: int | None = DEFAULT_STATUS_PERIOD_S
        if "status_period_s" in d:
            period = self.call(_uint, d["status_period_s"], "status_period_s", 1, _SMALL_INT,
                               "seconds between status frames")
        capacity, reservoir, stroke, catheter = self._geometry(d)
        battery: int | None = DEFAULT_BATTERY_DAYS
        if "battery_days" in d:
            battery = self.call(_uint, d["battery_days"], "battery_days", 0, MAX_BATTERY_DAYS,
                                "days of battery left")
        offset = 0
        if "local_offset" in d:
            offset = self.call(u.parse_offset, d["local_offset"], "local_offset")
        if "description" in d and not isinstance(d["description"], str):
            probs.add("description", "expected a string")

        rx = self.rx(d["prescription"], "prescription", at=start) if "prescription" in d else None

        events = self._events(d.get("events", []), start, end, rx, capacity, offset)
        faults = self._faults(d.get("faults", []), start, end)

        serial = _serial(d, probs)
        if probs:
            return None
        return Scenario(
            start=checked(start), end=checked(end), status_period_s=checked(period),
            reservoir_nl=checked(reservoir), prescription=checked(rx), events=events,
            faults=faults, capacity_nl=checked(capacity), stroke_nl=checked(stroke),
            catheter_nl=checked(catheter), battery_days=checked(battery),
            local_offset_s=offset, override_soft_limit=self.override_soft, path=path,
            serial=serial,
        )

    def _geometry(self, d: Mapping) -> tuple[int | None, int | None, int | None, int | None]:
        # (capacity, fill at start, stroke, catheter), nL; None where a problem was found
        probs = self.probs
        capacity: int | None = DEFAULT_CAPACITY_NL
        if "capacity_ml" in d:
            capacity = self.call(_ml_to_nl, d["capacity_ml"], "capacity_ml", "reservoir capacity in mL")
            if capacity is not None and capacity not in CAPACITIES_NL:
                probs.add("capacity_ml", f"{u.fmt_volume(capacity)} is not a pump model (20 or 40 mL)")
                capacity = None
        reservoir = capacity
        if "reservoir_ml" in d:
            reservoir = self.call(_ml_to_nl, d["reservoir_ml"], "reservoir_ml", "fill at start in mL")
            if reservoir is not None and capacity is not None and reservoir > capacity:
                probs.add("reservoir_ml", f"{u.fmt_volume(reservoir)} is more than the reservoir "
                                          f"capacity {u.fmt_volume(capacity)}")
        stroke: int | None = DEFAULT_STROKE_NL
        if "stroke_nl" in d:
            stroke = self.call(_uint, d["stroke_nl"], "stroke_nl", 1, N.MAX_STROKE_NL,
                               "nL per pump stroke")
        catheter: int | None = DEFAULT_CATHETER_NL
        if "catheter_ul" in d:
            v = d["catheter_ul"]
            if isinstance(v, str):
                catheter = self.call(u.parse_volume, v, "catheter_ul")
            else:
                q = self.call(u.parse_number, v, "catheter_ul", "catheter volume in uL")
                if q is not None and q < 0:
                    probs.add("catheter_ul", f"{v!r} must not be negative")
                    q = None
                catheter = u.round_half_up(q * 1000) if q is not None else None
            if catheter is not None and catheter > _SMALL_INT:
                probs.add("catheter_ul", f"{u.fmt_volume(catheter)} is not a catheter volume")
        return capacity, reservoir, stroke, catheter

    def _override(self, d: Mapping) -> bool:
        v = d.get("override_soft_limit", False)
        if not isinstance(v, bool):
            self.probs.add("override_soft_limit", f"expected true or false, got {v!r}")
            return False
        return v

    def _event_list(self, raw, start, end) -> list[tuple[int | None, int, Mapping]]:
        # (time, index, table) of each event with a known action, in time order
        probs = self.probs
        found: list[tuple[int | None, int, Mapping]] = []
        for i, ev in enumerate(table_list(raw, "events", probs), 1):
            f = f"events[{i}]"
            action = ev.get("action")
            if "action" not in ev:
                probs.add(f"{f}.action", f"missing (one of {', '.join(ACTIONS)})")
            elif action not in ACTIONS:
                probs.add(f"{f}.action", f"unknown action {_quoted(action)} "
                                         f"({_did_you_mean(action, ACTIONS)}one of {', '.join(ACTIONS)})")
            if action not in ACTIONS:
                if "at" in ev:
                    self.at(ev["at"], f"{f}.at", start, end)
                else:
                    probs.add(f"{f}.at", "missing (e.g. at = 2026-01-03T10:00:00Z)")
                continue
            req, opt = ACTIONS[action]
            check_keys(ev, ("at", "action", *req, *opt, "expect"), ("at", *req), f, probs)
            if "expect" in ev and ev["expect"] != "refused":
                probs.add(f"{f}.expect", f'expected "refused" (the pump is to refuse it), '
                                         f"got {ev['expect']!r}")
            t = self.at(ev["at"], f"{f}.at", start, end) if "at" in ev else None
            found.append((t, i, ev))
        return sorted(found, key=lambda p: (p[0] if p[0] is not None else -1))

    def _events(self, raw, start, end, rx, capacity, offset) -> tuple[Event, ...]:
        # Refills and boluses are checked against the drug in the pump at that moment,
        # so the events are walked in time order, `pump` following what they change.
        pump = _InPump(self.lib.by_id(rx.drug_id) if rx else None,
                       rx.conc_ng_ml if rx else None, capacity, offset, rx, start)
        out: list[Event] = []
        for t, i, ev in self._event_list(raw, start, end):
            action = ev["action"]
            check = self._EVENT_CHECKS.get(action)
            kw = check(self, f"events[{i}]", ev, t, pump) if check else {}
            if t is not None:
                out.append(Event(at=t, action=action, index=i,
                                 expect_refused=ev.get("expect") == "refused", **kw))
        return tuple(out)

    def _clinician_bolus(self, f: str, ev: Mapping, t, pump: _InPump) -> dict:
        probs, drug, conc = self.probs, pump.drug, pump.conc
        dose = self.call(u.parse_amount, ev["dose"], f"{f}.dose") if "dose" in ev else None
        dur = self.call(u.parse_duration, ev["duration"], f"{f}.duration") if "duration" in ev else None
        if dur is not None and dur > MAX_CLINICIAN_BOLUS_S:
            probs.add(f"{f}.duration", f"{u.fmt_duration(dur)} is longer than the maximum "
                                       f"{u.fmt_duration(MAX_CLINICIAN_BOLUS_S)}")
        if dose is not None and drug is not None and dose > drug.max_bolus_ng:
            unit = u.amount_unit(drug.max_ng_day)
            probs.add(f"{f}.dose", f"{u.fmt_amount(dose, unit)} exceeds {drug.name} hard "
                                   f"limit max_bolus {u.fmt_amount(drug.max_bolus_ng, unit)}")
        nl_h = too_fast(dose, dur, conc) if dose and dur and conc else None
        if nl_h is not None and dur is not None:
            probs.add(f"{f}.duration", f"{u.fmt_duration(dur)} is too short: "
                                       f"{float(nl_h / 1000):.4g} uL/h is faster than "
                                       f"the pump's hard limit max_rate "
                                       f"{MAX_RATE_NL_H / 1000:g} uL/h")
        return {"dose_ng": dose, "duration_s": dur}

    def _refill(self, f: str, ev: Mapping, t, pump: _InPump) -> dict:
        probs = self.probs
        new_drug = False
        mix: tuple = ()
        if "drugs" in ev:
            # an admixture: the whole fill, the first drug the primary
            from theca.inputs.rxfile import parse_fill

            d0, c0, others = parse_fill(ev, self.lib, probs, prefix=f"{f}.")
            for i, (d, c) in enumerate(others, 2):
                self._fill_conc(f"{f}.drugs[{i}].concentration", d, c)
            mix = tuple((d.id, c) for d, c in others if d is not None and c is not None)
            if d0 is not None:
                new_drug = True
                pump.drug = d0
            ev = {**ev, "concentration": c0} if c0 is not None else ev
        elif "concentration" not in ev:
            probs.add(f"{f}.concentration", "missing (e.g. \"10 mg/mL\"), or the whole fill as "
                                            "drugs = [{name = ..., concentration = ...}, ...]")
        if "drug" in ev and "drugs" not in ev:
            d = self.call(self.lib.lookup, ev["drug"], f"{f}.drug")
            if d is not None:
                new_drug = True
                if pump.drug is None or d.id != pump.drug.id:
                    pump.conc = None  # another drug: its concentration is the fill's
                pump.drug = d
        drug = pump.drug
        vol = self.call(u.parse_volume, ev["volume"], f"{f}.volume") if "volume" in ev else None
        c = ev["concentration"] if "drugs" in ev else (
            self.call(u.parse_concentration, ev["concentration"], f"{f}.concentration")
            if "concentration" in ev else None)
        if vol is not None and pump.capacity is not None and vol > pump.capacity:
            probs.add(f"{f}.volume", f"{u.fmt_volume(vol)} is more than the reservoir "
                                     f"capacity {u.fmt_volume(pump.capacity)}")
        self._fill_conc(f"{f}.drugs[1].concentration" if "drugs" in ev else f"{f}.concentration",
                        drug, c)
        if c is not None:
            pump.conc = c
        res = None
        if "residual" in ev:
            res = self.probs.call(u.parse_volume, ev["residual"], f"{f}.residual", allow_zero=True)
        return {"volume_nl": vol, "conc_ng_ml": c,
                "drug_id": drug.id if new_drug and drug is not None else None, "residual_nl": res,
                "mix": mix}

    def _fill_conc(self, f: str, drug: Drug | None, c: int | None) -> None:
        # a drug of a fill within its concentration limits
        if c is None or drug is None:
            return
        if c > drug.max_conc_ng_ml:
            self.probs.add(f, f"{u.fmt_conc(c)} exceeds {drug.name} hard "
                              f"limit {u.fmt_conc(drug.max_conc_ng_ml)}")
        elif c > drug.soft_conc_ng_ml and not self.override_soft:
            self.probs.add(f, f"{u.fmt_conc(c)} exceeds {drug.name} soft "
                              f"limit {u.fmt_conc(drug.soft_conc_ng_ml)}; "
                              f"set override_soft_limit = true to confirm")

    def _program(self, f: str, ev: Mapping, t, pump: _InPump) -> dict:
        # every soft limit as `theca program` has them, titration included: against the
        # prescription in force and when it was programmed (an override is recorded)
        override = ev.get("override_soft_limit", False)
        if not isinstance(override, bool):
            self.probs.add(f"{f}.override_soft_limit", f"expected true or false, got {override!r}")
            override = False
        new = (self.rx(ev["prescription"], f"{f}.prescription", override, at=t)
               if "prescription" in ev else None)
        if new is not None:
            drug = self.lib.by_id(new.drug_id)
            if drug is not None and pump.rx is not None and t is not None:
                since = t - pump.rx_t if pump.rx_t is not None else None
                try:
                    extra = titration.check(pump.rx, new, drug, since, override or self.override_soft)
                except BadInput as e:
                    self.probs.extend(e, f"{f}.prescription")
                    extra = 0
                if extra:
                    new = replace(new, flags=new.flags | extra)
            pump.drug, pump.conc = drug, new.conc_ng_ml
            pump.rx, pump.rx_t = new, t
        return {"prescription": new}

    def _ack_alarm(self, f: str, ev: Mapping, t, pump: _InPump) -> dict:
        mask = ALL_ALARMS
        if "alarms" in ev:
            mask = self.call(_alarm_mask, ev["alarms"], f"{f}.alarms")
        role = None
        if "role" in ev:
            role = ev["role"]
            if role not in ("clinician", "patient"):
                self.probs.add(f"{f}.role", f"expected \"clinician\" (the programmer) or "
                                            f"\"patient\" (the remote), got {role!r}")
                role = None
        return {"alarm_mask": mask, "role": role}

    def _set_time(self, f: str, ev: Mapping, t, pump: _InPump) -> dict:
        if "utc" not in ev and "local_offset" not in ev:
            self.probs.add(f, "set_time needs utc (a UTC date and time) and/or local_offset")
        utc = self.call(u.parse_datetime, ev["utc"], f"{f}.utc") if "utc" in ev else t
        if "local_offset" in ev:
            off = self.call(u.parse_offset, ev["local_offset"], f"{f}.local_offset")
            if off is not None:
                pump.offset = off
        return {"utc": utc, "local_offset_s": pump.offset}

    def _catheter(self, f: str, ev: Mapping, t, pump: _InPump) -> dict:
        vol = self.call(u.parse_volume, ev["volume"], f"{f}.volume") if "volume" in ev else None
        if vol is not None and vol > N.MAX_CATHETER_NL:
            self.probs.add(f"{f}.volume", f"{u.fmt_volume(vol)} is more than a catheter holds "
                                          f"(at most {u.fmt_volume(N.MAX_CATHETER_NL)})")
        replaced = ev.get("replaced", True)
        if not isinstance(replaced, bool):
            self.probs.add(f"{f}.replaced", f"expected true or false, got {replaced!r}")
            replaced = True
        return {"volume_nl": vol, "replaced": replaced}

    def _suspend(self, f: str, ev: Mapping, t, pump: _InPump) -> dict:
        mx = self.call(u.parse_duration, ev["max"], f"{f}.max") if "max" in ev else None
        return {"max_s": mx}

    # action -> the check of its keys (actions without keys of their own have none)
    _EVENT_CHECKS = {
        "suspend": _suspend,
        "clinician_bolus": _clinician_bolus,
        "refill": _refill,
        "program": _program,
        "ack_alarm": _ack_alarm,
        "set_time": _set_time,
        "catheter": _catheter,
    }

    def _faults(self, raw, start, end) -> tuple[Fault, ...]:
        probs = self.probs
        out: list[Fault] = []
        for i, fl in enumerate(table_list(raw, "faults", probs), 1):
            f = f"faults[{i}]"
            kind = fl.get("kind")
            if "kind" not in fl:
                probs.add(f"{f}.kind", f"missing (one of {', '.join(FAULT_KINDS)})")
            elif kind not in FAULT_KINDS:
                probs.add(f"{f}.kind", f"unknown fault {_quoted(kind)} "
                                       f"({_did_you_mean(kind, FAULT_KINDS)}one of {', '.join(FAULT_KINDS)})")
            if kind not in FAULT_KINDS:
                if "at" in fl:
                    self.at(fl["at"], f"{f}.at", start, end)
                continue
            need = FAULT_KINDS[kind]
            more = ("file", "damage") if kind == "storage" else ()
            optional = ("recovery",) if kind == "mri" else ()
            check_keys(fl, ("at", "kind", need, *more, *optional), ("at", need, *more), f, probs)
            recovery = fl.get("recovery", True)
            if not isinstance(recovery, bool):
                probs.add(f"{f}.recovery", f"expected true (the rotor moves again after the "
                                           f"scan) or false (it stays stuck), got {recovery!r}")
            file = damage = None
            if more:
                file = self._one_of(fl.get("file"), STORAGE_FILES, f"{f}.file")
                damage = self._one_of(fl.get("damage"), STORAGE_DAMAGE, f"{f}.damage")
            t = self.at(fl["at"], f"{f}.at", start, end) if "at" in fl else None
            dur = days = vol = None
            if need == "volume" and "volume" in fl:
                vol = self.call(u.parse_volume, fl["volume"], f"{f}.volume")
            if need == "duration" and "duration" in fl:
                dur = self.call(u.parse_duration, fl["duration"], f"{f}.duration")
                if dur is not None and dur > _SMALL_INT:
                    probs.add(f"{f}.duration", f"{u.fmt_duration(dur)} is too long")
            elif need == "remaining" and "remaining" in fl:
                s = self.probs.call(u.parse_duration, fl["remaining"], f"{f}.remaining", allow_zero=True) \
                    if isinstance(fl["remaining"], str) else self._bad_remaining(fl["remaining"], f)
                if s is not None:
                    # The battery gauge counts whole days: round to nearest, halves up.
                    days = u.round_half_up(Fraction(s, u.S_PER_DAY))
                    if days > MAX_BATTERY_DAYS:
                        probs.add(f"{f}.remaining",
                                  f"{days} days is outside 0..{MAX_BATTERY_DAYS} days")
            if t is not None:
                out.append(Fault(at=t, kind=kind, index=i, duration_s=dur, remaining_days=days,
                                 volume_nl=vol, file=file, damage=damage,
                                 recovery=recovery is not False))
        out.sort(key=lambda x: x.at)
        return tuple(out)

    def _one_of(self, value, allowed: tuple[str, ...], f: str) -> str | None:
        if value is None:
            return None  # (missing: check_keys said so)
        if value not in allowed:
            self.probs.add(f, f"{value!r} is not one of {', '.join(allowed)}")
            return None
        return value

    def _bad_remaining(self, value, f: str) -> int | None:
        self.probs.add(f"{f}.remaining", f'expected a duration such as "80 days", got {value!r}')
        return None


def load_scenario(source: str | os.PathLike | Mapping, *, druglib: DrugLibrary | None = None,
                  base_dir: str | os.PathLike | None = None,
                  override_soft: bool = False) -> Scenario:
    """Load and validate a scenario from a TOML file or an already-decoded table.

    A prescription given as a path is resolved relative to the scenario
    file (or `base_dir`, default the current directory, for a table).
    `override_soft` (or `override_soft_limit = true` in the file) accepts
    values above the drug library's soft limits. Raises BadInput listing
    every problem.
    """
    lib = druglib or load_druglib()
    if not isinstance(source, (str, os.PathLike)):
        loader = _Loader(source, Path(base_dir) if base_dir else Path.cwd(), lib, override_soft)
        sc = loader.load(None)
        loader.probs.raise_if_any()
        return checked(sc)
    data, text = read_toml(source)
    p = Path(source)
    loader = _Loader(data, Path(base_dir) if base_dir else p.parent, lib, override_soft)
    sc = loader.load(str(source))
    loader.probs.raise_if_any(str(source), toml_locator(text))
    return checked(sc)


__all__ = ["ACTIONS", "ALARM_BITS", "ALL_ALARMS", "FAULT_KINDS", "Event", "Fault", "Scenario",
           "load_scenario"]
