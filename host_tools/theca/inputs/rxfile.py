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

import difflib
import math
import os
import re
import struct
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import NamedTuple

import theca_protocol as tp
from theca_protocol import messages as M
from theca_protocol import names as N

from theca.errors import BadInput, Problems, checked
from theca.inputs import units as u
from theca.inputs.druglib import Drug, DrugLibrary, load_druglib

RX_VERSION = M.RX_VERSION
#: flags bit `trial`: the prescription of a trial phase.
FLAG_TRIAL = N.mask_of(N.RX_FLAGS, "trial")
MAX_STEPS = M.RX_MAX_STEPS
MAX_TIMED = M.RX_MAX_TIMED
MAX_PB_PER_DAY = M.RX_MAX_PB_PER_DAY
MAX_BOLUS_DURATION_S = 2 ** (8 * M.RxHead.pb_duration_s.sizeof()) - 1  # u16 in the blob
MAX_LOCKOUT_S = M.RX_MAX_LOCKOUT_S
#: The mechanism's fastest rate (the twin's, a board's unless provisioned otherwise): a
#: basal step or a bolus faster than this is refused, here and by the device (max_rate).
MAX_RATE_NL_H = tp.DEFAULT_MAX_RATE_NL_H
#: ... and its slowest basal rate: a step below it (0 included) is refused (min_rate).
MIN_RATE_NL_DAY = tp.DEFAULT_MIN_RATE_NL_DAY
MINUTES_PER_DAY = 1440

_HEADER = tp.compiled(M.RxHead)
_STEP = tp.compiled(M.RxStep)
_TIMED = tp.compiled(M.RxTimed)

_OVERRIDE_HINT = "confirm with --override-soft-limit"


def too_fast(dose_ng: int, duration_s: int, conc_ng_ml: int,
             max_rate_nl_h: int = MAX_RATE_NL_H) -> Fraction | None:
    """The bolus's rate (nL/h) if it is faster than the mechanism's max_rate, else None:
    the device's rule (guard.rate_too_fast on the dose in nL rounded as rx.ng_to_nl
    rounds it), so host and device draw the line at the same place."""
    dose_nl = u.ng_to_nl(dose_ng, conc_ng_ml)
    if dose_nl * 3600 > max_rate_nl_h * duration_s:
        return Fraction(dose_nl * 3600, duration_s)
    return None


class Step(NamedTuple):
    """A basal step: from `start_min` (local minutes after midnight) until the next step."""

    start_min: int
    rate_ng_day: int


class TimedBolus(NamedTuple):
    """A bolus given every day at `start_min` (local time)."""

    start_min: int
    duration_s: int
    dose_ng: int


class PatientBolus(NamedTuple):
    """The patient's on-demand bolus and its limits."""

    dose_ng: int
    duration_s: int
    lockout_s: int
    max_per_day: int


@dataclass(frozen=True)
class Prescription:
    """A prescription in device units (ng, ng/mL, ng/day, s, minutes of the local day).

    Build one with `load_prescription` (validated) or `from_blob`; a
    hand-made one can be checked with `problems`.
    """

    drug_id: int
    drug: str
    conc_ng_ml: int
    steps: tuple[Step, ...]
    timed: tuple[TimedBolus, ...] = ()
    pb: PatientBolus | None = None
    flags: int = 0
    #: The low-reservoir alarm threshold while this prescription is in force, nL
    #: (whole uL, 1..5 mL); 0: the device's own.
    low_reservoir_nl: int = 0
    #: Where it was loaded from (for messages); not part of the prescription.
    source: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        # Accept plain tuples/lists so callers can write steps=[(0, 1500000)].
        object.__setattr__(self, "steps", tuple(Step(*s) for s in self.steps))
        object.__setattr__(self, "timed", tuple(TimedBolus(*t) for t in self.timed))
        if self.pb is not None:
            object.__setattr__(self, "pb", PatientBolus(*self.pb))

    @property
    def phase(self) -> str:
        """"trial" or "maintenance" (flags bit 0)."""
        return "trial" if self.flags & FLAG_TRIAL else "maintenance"

    # -- dose accounting (exact; rounded up to whole ng so limits are never understated)

    def basal_exact(self) -> Fraction:
        """Basal drug per day in ng, exact: sum of rate x step length / 24 h."""
        total = Fraction(0)
        for i, s in enumerate(self.steps):
            end = self.steps[i + 1].start_min if i + 1 < len(self.steps) else MINUTES_PER_DAY
            total += Fraction(s.rate_ng_day * (end - s.start_min), MINUTES_PER_DAY)
        return total

    def basal_ng(self) -> int:
        """Basal drug per day, ng, rounded up."""
        return math.ceil(self.basal_exact())

    def timed_ng(self) -> int:
        """Drug in the timed boluses per day, ng."""
        return sum(t.dose_ng for t in self.timed)

    def patient_ng(self) -> int:
        """Most drug the patient can add in 24 h (max_per_day x dose), ng."""
        return self.pb.max_per_day * self.pb.dose_ng if self.pb else 0

    def daily_ng(self) -> int:
        """Scheduled drug per day (basal + timed boluses), ng, rounded up."""
        return self.basal_ng() + self.timed_ng()

    def worst_case_ng(self) -> int:
        """Most drug in any rolling 24 h: scheduled + every allowed patient bolus, ng.

        The schedule repeats daily, so every 24 h window holds exactly one
        day of basal and each timed bolus once.
        """
        return self.daily_ng() + self.patient_ng()

    def worst_hour_ng(self) -> int:
        """Most drug in any 1 h window, ng (as the device's dose guard counts it): the
        fastest basal step for an hour (a clock change can hold the pump in it), every
        timed bolus one window can meet, and the patient boluses the lockout allows."""
        top = max((s.rate_ng_day for s in self.steps), default=0)
        tot = -(-top * 3600 // u.S_PER_DAY)
        if self.timed:
            span = 3600 + max(t.duration_s for t in self.timed)
            starts = [t.start_min * 60 for t in self.timed]
            tot += max(sum(t.dose_ng for s, t in zip(starts, self.timed, strict=True)
                           if (s - s0) % u.S_PER_DAY < span) for s0 in starts)
        if self.pb:
            n = min((3600 + self.pb.duration_s) // self.pb.lockout_s + 1, self.pb.max_per_day)
            tot += n * self.pb.dose_ng
        return tot

    def volume_nl(self, ng: int | Fraction) -> Fraction:
        """Volume of solution holding `ng` of drug at this concentration, nL."""
        return Fraction(ng) * u.NL_PER_ML / self.conc_ng_ml

    # -- validation

    def problems(self, druglib: DrugLibrary | None = None, override_soft: bool = False) -> list[str]:
        """Every rule this prescription breaks, as messages; [] if none.

        Applies the same rules as `load_prescription`, in device units.
        """
        lib = druglib or load_druglib()
        probs = Problems()
        drug = lib.by_id(self.drug_id)
        if drug is None:
            probs.add("drug", f"drug id {self.drug_id} is not in the drug library ({', '.join(lib.names())})")
        pb = None
        if self.pb is not None:
            pb = _PB(*self.pb)
        _rules(drug, self.conc_ng_ml, [tuple(s) for s in self.steps],
               [tuple(t) for t in self.timed], pb, override_soft, probs)
        if self.low_reservoir_nl:
            _parse_low({"low_reservoir": f"{self.low_reservoir_nl} nL"}, probs)
        known = sum(1 << b for b in N.RX_FLAGS)
        if self.flags & ~known:
            probs.add("phase", f"unknown flag bits 0x{self.flags & ~known:02x}")
        return [m for _, m in probs.entries]

    # -- the Rx blob (docs/DESIGN.md)

    def to_blob(self) -> bytes:
        """The DESIGN.md Rx blob, little-endian."""
        pb = self.pb or PatientBolus(0, 0, 0, 0)
        try:
            out = [_HEADER.pack(RX_VERSION, self.drug_id, len(self.steps), len(self.timed),
                                self.flags, pb.max_per_day, pb.duration_s, self.conc_ng_ml,
                                pb.dose_ng, pb.lockout_s, self.low_reservoir_nl // 1000)]
            out += [_STEP.pack(*s) for s in self.steps]
            out += [_TIMED.pack(*t) for t in self.timed]
        except struct.error as e:
            raise ValueError(f"prescription does not fit the Rx blob: {e}") from None
        return b"".join(out)

    @classmethod
    def from_blob(cls, blob: bytes, druglib: DrugLibrary | None = None) -> Prescription:
        """Decode an Rx blob (e.g. from READ_RX). Structure is checked, limits are not.

        Raises ValueError on a malformed blob. The drug name comes from the
        library (`#<id>` if the id is unknown).
        """
        blob = bytes(blob)
        if len(blob) < _HEADER.size:
            raise ValueError(f"Rx blob too short: {len(blob)} bytes, header is {_HEADER.size}")
        (ver, drug_id, n_steps, n_timed, flags, pb_max, pb_dur, conc, pb_dose,
         pb_lock, low_ul) = _HEADER.unpack_from(blob, 0)
        if ver != RX_VERSION:
            raise ValueError(f"Rx blob version {ver}, expected {RX_VERSION}")
        if not 1 <= n_steps <= MAX_STEPS or n_timed > MAX_TIMED:
            raise ValueError(f"Rx blob has {n_steps} steps and {n_timed} timed boluses "
                             f"(1..{MAX_STEPS}, 0..{MAX_TIMED})")
        want = _HEADER.size + n_steps * _STEP.size + n_timed * _TIMED.size
        if len(blob) != want:
            raise ValueError(f"Rx blob is {len(blob)} bytes, expected {want}")
        off = _HEADER.size
        steps = []
        for _ in range(n_steps):
            steps.append(Step(*_STEP.unpack_from(blob, off)))
            off += _STEP.size
        timed = []
        for _ in range(n_timed):
            timed.append(TimedBolus(*_TIMED.unpack_from(blob, off)))
            off += _TIMED.size
        lib = druglib or load_druglib()
        d = lib.by_id(drug_id)
        pb = PatientBolus(pb_dose, pb_dur, pb_lock, pb_max) if pb_max else None
        return cls(drug_id=drug_id, drug=d.name if d else f"#{drug_id}", conc_ng_ml=conc,
                   steps=tuple(steps), timed=tuple(timed), pb=pb, flags=flags,
                   low_reservoir_nl=low_ul * 1000)

    # -- for people

    def describe(self, druglib: DrugLibrary | None = None) -> str:
        """A human-readable summary, with volumes and (given a library) the daily limit."""
        drug = druglib.by_id(self.drug_id) if druglib else None
        # One unit throughout, chosen by the size of the daily limit (or dose).
        unit = u.amount_unit(drug.max_ng_day if drug else max(self.worst_case_ng(), 1))
        lines = [f"{self.drug} {u.fmt_conc(self.conc_ng_ml)}, {self.phase} phase"]
        lines.append("Basal (local time):")
        for i, s in enumerate(self.steps):
            end = self.steps[i + 1].start_min if i + 1 < len(self.steps) else MINUTES_PER_DAY
            vol = u.round_half_up(self.volume_nl(s.rate_ng_day))
            lines.append(f"  {u.fmt_clock(s.start_min)}-{u.fmt_clock(end)}  "
                         f"{u.fmt_rate(s.rate_ng_day, unit)} ({u.fmt_volume(vol)}/day)")
        if self.timed:
            lines.append("Timed boluses (local time):")
            for t in self.timed:
                vol = u.round_half_up(self.volume_nl(t.dose_ng))
                lines.append(f"  {u.fmt_clock(t.start_min)}  {u.fmt_amount(t.dose_ng, unit)} "
                             f"over {u.fmt_duration(t.duration_s)} ({u.fmt_volume(vol)})")
        if self.pb:
            lines.append(f"Patient bolus: {u.fmt_amount(self.pb.dose_ng, unit)} over "
                         f"{u.fmt_duration(self.pb.duration_s)}, lockout "
                         f"{u.fmt_duration(self.pb.lockout_s)}, at most {self.pb.max_per_day} "
                         f"in any 24 h")
        else:
            lines.append("Patient bolus: none")
        if self.low_reservoir_nl:
            lines.append(f"Low reservoir alarm below {u.fmt_volume(self.low_reservoir_nl)}")
        total = (f"Per day: basal {u.fmt_amount(self.basal_ng(), unit)} + timed "
                 f"{u.fmt_amount(self.timed_ng(), unit)} = {u.fmt_amount(self.daily_ng(), unit)}; "
                 f"worst case in 24 h {u.fmt_amount(self.worst_case_ng(), unit)}")
        if drug:
            total += (f" (limit {u.fmt_rate(drug.max_ng_day, unit)}, soft "
                      f"{u.fmt_rate(drug.soft_ng_day, unit)})")
        lines.append(total)
        return "\n".join(lines)


# ---------------------------------------------------------------------------
# Rules, shared by file loading and `Prescription.problems`. Values may be
# None where the file's entry did not parse; rules needing them are skipped
# (that entry already has its own message).


class _PB(NamedTuple):
    dose_ng: int | None
    duration_s: int | None
    lockout_s: int | None
    max_per_day: int | None


class _Rules:
    """The prescription's rules, section by section; every problem goes to `probs`.
    `complete` stays True while every value needed to build the Prescription is there."""

    def __init__(self, drug: Drug | None, conc: int | None, override_soft: bool,
                 probs: Problems):
        self.drug, self.conc, self.override_soft, self.probs = drug, conc, override_soft, probs
        self.overridden = 0  # Rx flags of the soft limits passed by the override
        self.unit = u.amount_unit(drug.max_ng_day) if drug else "mg"
        self.complete = drug is not None and conc is not None
        self.max_ul_h = f"{MAX_RATE_NL_H / 1000:g} uL/h"

    def concentration(self) -> None:
        drug, conc = self.drug, self.conc
        if drug is None or conc is None:
            return
        if conc > drug.max_conc_ng_ml:
            self.probs.add("concentration", f"{u.fmt_conc(conc)} exceeds {drug.name} hard limit "
                                            f"{u.fmt_conc(drug.max_conc_ng_ml)}")
        elif conc > drug.soft_conc_ng_ml:
            if self.override_soft:
                self.overridden |= override_flag("max_concentration")
            else:
                self.probs.add("concentration", f"{u.fmt_conc(conc)} exceeds {drug.name} soft "
                                                f"limit {u.fmt_conc(drug.soft_conc_ng_ml)}; "
                                                f"{_OVERRIDE_HINT}")

    def steps(self, steps: list[tuple]) -> None:
        probs = self.probs
        if not steps:
            probs.add("steps", "at least one [[steps]] is required (the first starting at 00:00)")
            self.complete = False
        elif len(steps) > MAX_STEPS:
            probs.add("steps", f"{len(steps)} steps given, at most {MAX_STEPS} allowed")
        prev = None
        for i, (start, rate) in enumerate(steps, 1):
            f = f"steps[{i}]"
            if start is None or rate is None:
                self.complete = False
            if start is not None:
                self._step_start(f, i, start, prev)
                prev = start
            elif i > 1:
                prev = None
            if rate is not None and rate < 0:
                probs.add(f"{f}.rate", "must not be negative")
                self.complete = False
        self._step_rates(steps)

    def _step_start(self, f: str, i: int, start: int, prev: int | None) -> None:
        if not 0 <= start < MINUTES_PER_DAY:
            self.probs.add(f"{f}.start", f"{start} min is not a time of day (0..1439)")
        elif i == 1 and start != 0:
            self.probs.add(f"{f}.start",
                           f"the first step must start at 00:00, not {u.fmt_clock(start)}")
        elif prev is not None and start <= prev:
            self.probs.add(f"{f}.start", f"{u.fmt_clock(start)} is not after steps[{i - 1}].start "
                                         f"{u.fmt_clock(prev)} (steps go in time order, each "
                                         "start once)")
        else:
            return
        self.complete = False

    def _step_rates(self, steps: list[tuple]) -> None:
        conc = self.conc
        if not conc:
            return
        for i, (_, rate) in enumerate(steps, 1):
            if rate is None or rate < 0:
                continue
            nl = u.ng_to_nl(rate, conc)  # nL/day, rounded as the device rounds it
            if nl < MIN_RATE_NL_DAY:
                self.probs.add(f"steps[{i}].rate",
                               f"{u.fmt_rate(rate, self.unit)} at {u.fmt_conc(conc)} is "
                               f"{nl / 1000:.6g} uL/day, slower than the pump's hard limit "
                               f"min_rate {MIN_RATE_NL_DAY / 1000:g} uL/day")
            elif nl > MAX_RATE_NL_H * 24:
                self.probs.add(f"steps[{i}].rate",
                               f"{u.fmt_rate(rate, self.unit)} at {u.fmt_conc(conc)} is "
                               f"{nl / 24000:.6g} uL/h, faster than the pump's hard limit "
                               f"max_rate {self.max_ul_h}")

    def bolus(self, f: str, dose: int | None, dur: int | None) -> None:
        drug, conc = self.drug, self.conc
        if drug is not None and dose is not None and dose > drug.max_bolus_ng:
            self.probs.add(f"{f}.dose", f"{u.fmt_amount(dose, self.unit)} exceeds {drug.name} "
                                        f"hard limit max_bolus "
                                        f"{u.fmt_amount(drug.max_bolus_ng, self.unit)}")
        if not conc or dose is None or not dur or dose <= 0 or dur <= 0:
            return
        fast = too_fast(dose, dur, conc)
        if fast is not None:
            nl = Fraction(dose) * u.NL_PER_ML / conc
            self.probs.add(f"{f}.duration",
                           f"{u.fmt_volume(math.ceil(nl))} in {u.fmt_duration(dur)} is "
                           f"{float(fast / 1000):.4g} uL/h, faster than the pump's hard "
                           f"limit max_rate {self.max_ul_h}; give a longer duration")

    def duration(self, f: str, dur: int | None) -> None:
        if dur is not None and not 0 < dur <= MAX_BOLUS_DURATION_S:
            self.probs.add(f"{f}.duration", f"{u.fmt_duration(dur)} is outside 1 s .. "
                                            f"{MAX_BOLUS_DURATION_S} s")

    def timed(self, timed: list[tuple]) -> None:
        probs = self.probs
        if len(timed) > MAX_TIMED:
            probs.add("timed_boluses", f"{len(timed)} given, at most {MAX_TIMED} a day allowed")
        prev_t = None
        for i, (start, dur, dose) in enumerate(timed, 1):
            f = f"timed_boluses[{i}]"
            if None in (start, dur, dose):
                self.complete = False
            if start is not None and not 0 <= start < MINUTES_PER_DAY:
                probs.add(f"{f}.start", f"{start} min is not a time of day (0..1439)")
                start = None
            if start is not None and prev_t is not None:
                self._timed_order(f, start, prev_t)
            if dose is not None and dose <= 0:
                probs.add(f"{f}.dose", "must be greater than zero")
                self.complete = False
            self.duration(f, dur)
            self.bolus(f, dose, dur)
            prev_t = (start, dur, i) if start is not None else prev_t
        self._timed_wrap(timed)

    def _timed_order(self, f: str, start: int, prev_t: tuple) -> None:
        pstart, pdur, pi = prev_t
        if start <= pstart:
            self.probs.add(f"{f}.start", f"{u.fmt_clock(start)} is not after "
                                         f"timed_boluses[{pi}].start {u.fmt_clock(pstart)} "
                                         "(list timed boluses in time order)")
        elif pdur is not None and pstart * 60 + pdur > start * 60:
            self.probs.add(f"{f}.start", f"{u.fmt_clock(start)} starts before "
                                         f"timed_boluses[{pi}] ({u.fmt_clock(pstart)} for "
                                         f"{u.fmt_duration(pdur)}) ends")

    def _timed_wrap(self, timed: list[tuple]) -> None:
        # The schedule repeats: the last bolus of the day must end before the first of
        # the next.
        if len(timed) < 2 or not all(t[0] is not None and t[1] is not None for t in timed):
            return
        first, last = timed[0], timed[-1]
        if (0 <= first[0] < last[0] < MINUTES_PER_DAY
                and last[0] * 60 + last[1] > (MINUTES_PER_DAY + first[0]) * 60):
            self.probs.add(f"timed_boluses[{len(timed)}].duration",
                           f"{u.fmt_clock(last[0])} for {u.fmt_duration(last[1])} runs into "
                           f"timed_boluses[1] at {u.fmt_clock(first[0])} the next day")

    def patient_bolus(self, pb: _PB | None) -> None:
        # max_per_day 0 means none: nothing more to check
        if pb is None or pb.max_per_day == 0:
            return
        probs, f = self.probs, "patient_bolus"
        if None in pb:
            self.complete = False
        if pb.dose_ng is not None and pb.dose_ng <= 0:
            probs.add(f"{f}.dose", "must be greater than zero")
            self.complete = False
        self.duration(f, pb.duration_s)
        if pb.lockout_s is not None:
            if pb.lockout_s > MAX_LOCKOUT_S:
                probs.add(f"{f}.lockout", f"{u.fmt_duration(pb.lockout_s)} is longer than the "
                                          f"maximum {u.fmt_duration(MAX_LOCKOUT_S)}")
            elif pb.duration_s is not None and pb.lockout_s < pb.duration_s:
                probs.add(f"{f}.lockout", f"{u.fmt_duration(pb.lockout_s)} is shorter than the "
                                          f"bolus duration {u.fmt_duration(pb.duration_s)} (the "
                                          "lockout must be at least the duration)")
        if pb.max_per_day is not None and not 0 <= pb.max_per_day <= MAX_PB_PER_DAY:
            probs.add(f"{f}.max_per_day", f"{pb.max_per_day} is outside 1..{MAX_PB_PER_DAY} "
                                          f"(0 means no patient bolus)")
            self.complete = False
        self.bolus(f, pb.dose_ng, pb.duration_s)

    def min_per_day(self, rx: Prescription) -> None:
        # the soft lower limit: a daily dose (basal + timed) below it is a likely unit slip
        drug = rx_drug(self.drug)
        daily = rx.daily_ng()
        if daily >= drug.min_ng_day:
            return
        if self.override_soft:
            self.overridden |= override_flag("min_per_day")
            return
        self.probs.add("steps", f"daily dose {u.fmt_amount(daily, self.unit)} is below "
                                f"{drug.name} soft limit min_per_day "
                                f"{u.fmt_rate(drug.min_ng_day, self.unit)} (a mg/mcg slip?); "
                                f"{_OVERRIDE_HINT}")

    @staticmethod
    def _culprit(rx: Prescription, hour: bool = False) -> str:
        # The field to name for a worst case over a limit: the biggest of its parts (the
        # fastest basal step, the largest timed bolus, the patient boluses; over a day, or
        # over the worst hour), so that the message points at a line the clinician can
        # change (issue 13: it named none).
        if hour:
            per_h = -(-3600 // max(rx.pb.lockout_s, 1)) if rx.pb else 0
            parts = {"basal": max(st.rate_ng_day for st in rx.steps) // 24,
                     "timed": max((t.dose_ng for t in rx.timed), default=0),
                     "patient": min(per_h, rx.pb.max_per_day) * rx.pb.dose_ng if rx.pb else 0}
        else:
            parts = {"basal": rx.basal_ng(), "timed": rx.timed_ng(),
                     "patient": rx.pb.max_per_day * rx.pb.dose_ng if rx.pb else 0}
        top = max(parts, key=lambda k: parts[k])
        if top == "timed" and rx.timed:
            i = max(range(len(rx.timed)), key=lambda j: rx.timed[j].dose_ng)
            return f"timed_boluses[{i + 1}].dose"
        if top == "patient" and rx.pb:
            return "patient_bolus.dose" if hour else "patient_bolus.max_per_day"
        i = max(range(len(rx.steps)), key=lambda j: rx.steps[j].rate_ng_day)
        return f"steps[{i + 1}].rate"

    def worst_case(self, rx: Prescription) -> None:
        drug, unit, probs = rx_drug(self.drug), self.unit, self.probs
        hour = rx.worst_hour_ng()
        if hour > drug.max_ng_hour:
            probs.add(self._culprit(rx, hour=True), f"worst-case 1 h dose {u.fmt_amount(hour, unit)} exceeds {drug.name} "
                            f"hard limit max_per_hour {u.fmt_amount(drug.max_ng_hour, unit)} (the "
                            "fastest basal step for an hour, the timed boluses one hour can meet "
                            "and the patient boluses its lockout allows)")
        worst = rx.worst_case_ng()
        if worst > drug.max_ng_day:
            kind, limit, hint = "hard", drug.max_ng_day, ""
        elif worst > drug.soft_ng_day and not self.override_soft:
            kind, limit, hint = "soft", drug.soft_ng_day, f"; {_OVERRIDE_HINT}"
        else:
            if worst > drug.soft_ng_day:
                self.overridden |= override_flag("daily_limit")
            return
        parts = (f"basal {u.fmt_amount(rx.basal_ng(), unit)} + timed "
                 f"{u.fmt_amount(rx.timed_ng(), unit)}")
        if rx.pb:
            parts += f" + patient {rx.pb.max_per_day} x {u.fmt_amount(rx.pb.dose_ng, unit)}"
        else:
            parts += " + no patient bolus"
        probs.add(self._culprit(rx), f"worst-case 24 h dose {u.fmt_amount(worst, unit)} exceeds {drug.name} "
                        f"{kind} limit {u.fmt_rate(limit, unit)} ({parts}){hint}")


def rx_drug(drug: Drug | None) -> Drug:
    """The drug of a prescription whose rules found it complete."""
    assert drug is not None, "complete implies a drug"
    return drug


def _build(drug: Drug | None, conc: int | None, steps: list[tuple], timed: list[tuple],
           pb: _PB | None, flags: int = 0, low_nl: int = 0) -> Prescription:
    # A Prescription from values the rules found complete (none of them None).
    d = rx_drug(drug)
    assert conc is not None, "complete implies a concentration"
    pbv = None
    if pb is not None and pb.max_per_day:
        pbv = PatientBolus(*(int(x) for x in pb))  # type: ignore[arg-type]
    return Prescription(drug_id=d.id, drug=d.name, conc_ng_ml=conc,
                        steps=tuple(Step(*s) for s in steps),
                        timed=tuple(TimedBolus(*x) for x in timed), pb=pbv, flags=flags,
                        low_reservoir_nl=low_nl)


def override_flag(limit: str) -> int:
    """The Rx flags bit that records an override of the soft limit `limit`."""
    return N.mask_of(N.RX_FLAGS, f"override_{limit}")


def _rules(drug: Drug | None, conc: int | None, steps: list[tuple], timed: list[tuple],
           pb: _PB | None, override_soft: bool, probs: Problems) -> int:
    # every problem into probs; returns the Rx flags of the soft limits overridden
    r = _Rules(drug, conc, override_soft, probs)
    r.concentration()
    r.steps(steps)
    r.timed(timed)
    r.patient_bolus(pb)
    if r.complete:
        built = _build(drug, conc, steps, timed, pb)
        r.worst_case(built)
        r.min_per_day(built)
    return r.overridden


# ---------------------------------------------------------------------------
# TOML reading and locating fields in the text, for `file:line:` messages.


def read_toml(path: str | os.PathLike) -> tuple[dict, str]:
    """Read and decode a TOML file -> (data, text); BadInput naming the file on failure."""
    p = Path(path)
    try:
        text = p.read_bytes().decode("utf-8")
    except OSError as e:
        raise BadInput(f"{p}: cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise BadInput(f"{p}: not UTF-8 text (byte {e.start})") from None
    try:
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as e:
        raise BadInput(f"{p}: not valid TOML: {e}") from None


_HEADER_RE = re.compile(r"\s*(\[\[?)\s*([^\]\[]+?)\s*(\]\]?)\s*(?:#.*)?")
_PART_RE = re.compile(r"([A-Za-z_][A-Za-z0-9_-]*)(?:\[(\d+)\])?")


def toml_locator(text: str) -> Callable[[str | None], int | None]:
    """A function mapping a field path (`events[3].volume`) to its 1-based line in `text`.

    A cheap scan of table headers and `key =` lines, not a TOML parser: it
    finds keys in `[table]` and `[[array]]` sections; for inline tables it
    returns the line of the enclosing key, and None if it cannot tell.
    """
    lines = text.splitlines()
    headers: list[tuple[int, str, bool]] = []
    for i, line in enumerate(lines):
        m = _HEADER_RE.fullmatch(line)
        if m and (m.group(1) == "[[") == (m.group(3) == "]]"):
            name = ".".join(p.strip().strip("\"'") for p in m.group(2).split("."))
            headers.append((i, name, m.group(1) == "[["))
    header_lines = {h[0] for h in headers}

    def key_line(start: int, key: str) -> int | None:
        pat = re.compile(rf"\s*[\"']?{re.escape(key)}[\"']?\s*=")
        for j in range(start, len(lines)):
            if j in header_lines:
                return None
            if pat.match(lines[j]):
                return j + 1
        return None

    def locate(fieldpath: str | None) -> int | None:
        if not fieldpath:
            return None
        matches = [_PART_RE.fullmatch(p) for p in fieldpath.split(".")]
        parts = [m for m in matches if m is not None]
        if len(parts) != len(matches):
            return None
        body, end, prefix, found = 0, len(lines), "", None
        for m in parts:
            name, idx = m.group(1), m.group(2)
            joined = f"{prefix}.{name}" if prefix else name
            cands = [h for h in headers if body <= h[0] < end and h[1] == joined]
            hdr = None
            if idx is not None:
                arr = [h for h in cands if h[2]]
                if len(arr) >= int(idx) >= 1:
                    hdr = arr[int(idx) - 1]
            elif cands and not cands[0][2]:
                hdr = cands[0]
            if hdr is None:
                ln = key_line(body, name)
                return ln if ln is not None else found
            found = hdr[0] + 1
            body = hdr[0] + 1
            end = next((h[0] for h in headers
                        if h[0] > hdr[0] and not h[1].startswith(joined + ".")), len(lines))
            prefix = joined
        return found

    return locate


# ---------------------------------------------------------------------------
# Parsing a decoded TOML table.

_TOP_KEYS = ("drug", "concentration", "steps", "timed_boluses", "patient_bolus", "phase",
             "description", "low_reservoir")
#: The range of `low_reservoir`, nL (the blob's, in whole uL).
LOW_RESERVOIR_NL = (M.RX_LOW_RESERVOIR_UL[0] * 1000, M.RX_LOW_RESERVOIR_UL[1] * 1000)
_STEP_KEYS = ("start", "rate")
_TIMED_KEYS = ("start", "dose", "duration")
_PB_KEYS = ("dose", "duration", "lockout", "max_per_day")
_EXAMPLES = {
    "drug": 'drug = "morphine"', "concentration": 'concentration = "10 mg/mL"',
    "steps": '[[steps]] with start = "00:00" and rate = "1.5 mg/day"',
    "start": 'start = "08:00"', "rate": 'rate = "1.5 mg/day"', "dose": 'dose = "0.1 mg"',
    "duration": 'duration = "10 min"', "lockout": 'lockout = "60 min"',
    "max_per_day": "max_per_day = 4",
}


def check_keys(table: Mapping, allowed: tuple[str, ...], required: tuple[str, ...],
               prefix: str, probs: Problems, examples: Mapping[str, str] | None = None) -> bool:
    """Report unknown keys (with a did-you-mean) and missing required keys; True if none
    missing. `examples`: the hint for a missing key (default: a prescription's)."""
    for k in table:
        if k not in allowed:
            close = difflib.get_close_matches(str(k), allowed, n=1)
            hint = f'did you mean "{close[0]}"? ' if close else ""
            probs.add(f"{prefix}.{k}" if prefix else str(k),
                      f"unknown key ({hint}expected {', '.join(allowed)})")
    ok = True
    for k in required:
        if k not in table:
            ex = (_EXAMPLES if examples is None else examples).get(k)
            probs.add(f"{prefix}.{k}" if prefix else k, f"missing{f' (e.g. {ex})' if ex else ''}")
            ok = False
    return ok


def table_list(value, fieldname: str, probs: Problems) -> list:
    """An array of tables (`[[name]]`), or [] with a message if it is something else."""
    if isinstance(value, list) and all(isinstance(x, Mapping) for x in value):
        return value
    probs.add(fieldname, f"expected [[{fieldname.rsplit('.', 1)[-1]}]] tables, got {type(value).__name__}")
    return []


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


def _parse_pb(data: Mapping, probs: Problems) -> _PB | None:
    if "patient_bolus" not in data:
        return None
    t = data["patient_bolus"]
    if not isinstance(t, Mapping):
        probs.add("patient_bolus", "expected a [patient_bolus] table")
        return _PB(None, None, None, None)
    f = "patient_bolus"
    check_keys(t, _PB_KEYS, _PB_KEYS, f, probs)
    mpd = t.get("max_per_day")
    if "max_per_day" in t and (isinstance(mpd, bool) or not isinstance(mpd, int)):
        probs.add(f"{f}.max_per_day", f"expected a whole number 0..{MAX_PB_PER_DAY}, got {mpd!r}")
        mpd = None
    return _PB(
        probs.call(u.parse_amount, t["dose"], f"{f}.dose") if "dose" in t else None,
        probs.call(u.parse_duration, t["duration"], f"{f}.duration") if "duration" in t else None,
        probs.call(u.parse_duration, t["lockout"], f"{f}.lockout") if "lockout" in t else None,
        mpd,
    )


def parse_prescription(data: Mapping, druglib: DrugLibrary | None = None, *,
                       override_soft: bool = False, probs: Problems) -> Prescription | None:
    """Check a decoded prescription table; record every problem in `probs`.

    Returns the Prescription when there were no problems, else None.
    """
    before = len(probs)
    if not isinstance(data, Mapping):
        probs.add(None, "a prescription must be a table (drug, concentration, [[steps]], ...)")
        return None
    lib = druglib or load_druglib()
    check_keys(data, _TOP_KEYS, ("drug", "concentration", "steps"), "", probs)

    drug = probs.call(lib.lookup, data["drug"], "drug") if "drug" in data else None
    conc = probs.call(u.parse_concentration, data["concentration"], "concentration") \
        if "concentration" in data else None

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
    low_nl = _parse_low(data, probs)

    flags |= _rules(drug, conc, steps, timed, pb, override_soft, probs)
    if len(probs) > before:
        return None
    return _build(drug, conc, steps, timed, pb, flags, low_nl)


def _parse_low(data: Mapping, probs: Problems) -> int:
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
                      override_soft: bool = False) -> Prescription:
    """Load and validate a prescription from a TOML file path or an already-decoded table.

    Raises BadInput listing every problem; for a file, each message starts
    with `file:line:` where the line can be found.
    """
    if not isinstance(source, (str, os.PathLike)):
        probs = Problems()
        rx = parse_prescription(source, druglib, override_soft=override_soft, probs=probs)
        probs.raise_if_any()
        return checked(rx)
    data, text = read_toml(source)
    probs = Problems()
    rx = parse_prescription(data, druglib, override_soft=override_soft, probs=probs)
    probs.raise_if_any(str(source), toml_locator(text))
    return replace(checked(rx), source=str(source))
