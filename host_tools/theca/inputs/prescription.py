"""A prescription in device units (`Prescription`), its Rx blob and the bounds it is held
to; its rules are in rxrules.py, reading it from a TOML file in rxfile.py."""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from fractions import Fraction
from typing import NamedTuple

import theca_protocol as tp
from theca_protocol import messages as M
from theca_protocol import names as N

from theca.errors import Problems
from theca.inputs import units as u
from theca.inputs.druglib import DrugLibrary, load_druglib

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
_ZONE = tp.compiled(M.RxZoneChange)
_MIX = tp.compiled(M.MixEntry)
#: An admixture: the primary drug and up to this many more in one fill.
MAX_MIX = M.RX_MAX_MIX

OVERRIDE_HINT = "confirm with --override-soft-limit"


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


class MixDrug(NamedTuple):
    """One more drug of an admixture: it rides in the primary drug's volume."""

    drug_id: int
    drug: str
    conc_ng_ml: int


def mix_bytes(mix) -> bytes:
    """The admixture's other drugs as they travel (Rx blob, REFILL): MIX_BYTES of
    MixEntry slots, the unused ones zero."""
    out = b"".join(_MIX.pack(m[0], m[-1]) for m in mix)
    return out + bytes(M.MIX_BYTES - len(out))


def mix_from_bytes(raw: bytes, druglib: DrugLibrary | None = None) -> tuple[MixDrug, ...]:
    """The used slots of an admixture's MIX_BYTES, named from the library."""
    lib = druglib or load_druglib()
    out = []
    for k in range(0, len(raw) - _MIX.size + 1, _MIX.size):
        drug_id, conc = _MIX.unpack_from(raw, k)
        if drug_id:
            d = lib.by_id(drug_id)
            out.append(MixDrug(drug_id, d.name if d else f"#{drug_id}", conc))
    return tuple(out)


class PatientBolus(NamedTuple):
    """The patient's on-demand bolus and its limits."""

    dose_ng: int
    duration_s: int
    lockout_s: int
    max_per_day: int


def _fmt_offset(s: int) -> str:
    sign = "-" if s < 0 else "+"
    return f"UTC{sign}{abs(s) // 3600:02d}:{abs(s) % 3600 // 60:02d}"


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
    #: The local offset's changes ((device time, offset s), ...) of its `timezone`.
    zone: tuple[tuple[int, int], ...] = ()
    #: An admixture's other drugs (the primary drug is `drug`; every dose is of it).
    mix: tuple[MixDrug, ...] = ()
    #: The IANA name they came from (not in the blob: the pump needs only the changes).
    timezone: str | None = field(default=None, compare=False)
    #: Where it was loaded from (for messages); not part of the prescription.
    source: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        # Accept plain tuples/lists so callers can write steps=[(0, 1500000)].
        object.__setattr__(self, "steps", tuple(Step(*s) for s in self.steps))
        object.__setattr__(self, "timed", tuple(TimedBolus(*t) for t in self.timed))
        if self.pb is not None:
            object.__setattr__(self, "pb", PatientBolus(*self.pb))
        object.__setattr__(self, "mix", tuple(MixDrug(*m) for m in self.mix))

    def drugs(self) -> list[tuple[str, int, int]]:
        """(name, drug id, conc ng/mL) of every drug of the fill, the primary first."""
        return [(self.drug, self.drug_id, self.conc_ng_ml)] + [(m.drug, m.drug_id, m.conc_ng_ml)
                                                              for m in self.mix]

    def of(self, ng: int | Fraction, conc_ng_ml: int) -> Fraction:
        """An amount `ng` of the primary drug as the amount of a drug at conc_ng_ml in the
        same volume, exact."""
        return Fraction(ng) * conc_ng_ml / self.conc_ng_ml

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
        from theca.inputs.rxfile import parse_low
        from theca.inputs.rxrules import PatientBolusValues, apply_rules

        lib = druglib or load_druglib()
        probs = Problems()
        drug = lib.by_id(self.drug_id)
        if drug is None:
            probs.add("drug", f"drug id {self.drug_id} is not in the drug library ({', '.join(lib.names())})")
        pb = None
        if self.pb is not None:
            pb = PatientBolusValues(*self.pb)
        apply_rules(drug, self.conc_ng_ml, [tuple(s) for s in self.steps],
               [tuple(t) for t in self.timed], pb, override_soft, probs)
        if self.low_reservoir_nl:
            parse_low({"low_reservoir": f"{self.low_reservoir_nl} nL"}, probs)
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
            out += [bytes((len(self.zone),))] + [_ZONE.pack(*z) for z in self.zone]
            out += [mix_bytes(self.mix)]
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
        if not 2 <= ver <= RX_VERSION:
            raise ValueError(f"Rx blob version {ver}, expected {RX_VERSION}")
        if not 1 <= n_steps <= MAX_STEPS or n_timed > MAX_TIMED:
            raise ValueError(f"Rx blob has {n_steps} steps and {n_timed} timed boluses "
                             f"(1..{MAX_STEPS}, 0..{MAX_TIMED})")
        body = _HEADER.size + n_steps * _STEP.size + n_timed * _TIMED.size
        n_zone = blob[body] if ver >= 3 and len(blob) > body else 0
        zend = body + (1 + n_zone * _ZONE.size if ver >= 3 else 0)
        want = zend + (M.MIX_BYTES if ver >= 4 else 0)
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
        zone = tuple(_ZONE.unpack_from(blob, off + 1 + i * _ZONE.size) for i in range(n_zone))
        lib = druglib or load_druglib()
        d = lib.by_id(drug_id)
        pb = PatientBolus(pb_dose, pb_dur, pb_lock, pb_max) if pb_max else None
        return cls(drug_id=drug_id, drug=d.name if d else f"#{drug_id}", conc_ng_ml=conc,
                   steps=tuple(steps), timed=tuple(timed), pb=pb, flags=flags,
                   low_reservoir_nl=low_ul * 1000, zone=zone,
                   mix=mix_from_bytes(blob[zend:], lib))

    # -- for people

    def describe(self, druglib: DrugLibrary | None = None) -> str:
        """A human-readable summary, with volumes and (given a library) the daily limit."""
        drug = druglib.by_id(self.drug_id) if druglib else None
        # One unit throughout, chosen by the size of the daily limit (or dose).
        unit = u.amount_unit(drug.max_ng_day if drug else max(self.worst_case_ng(), 1))
        fill = " + ".join(f"{n} {u.fmt_conc(c)}" for n, _, c in self.drugs())
        lines = [f"{fill}, {self.phase} phase"
                 + (" (doses are of the first drug)" if self.mix else "")]
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
        if self.zone:
            lines.append(f"Local time: {self.timezone or 'offset changes'}, "
                         + "; ".join(f"{_fmt_offset(o)} from {u.fmt_time(t)}" for t, o in self.zone))
        total = (f"Per day: basal {u.fmt_reading(self.basal_ng(), unit)} + timed "
                 f"{u.fmt_reading(self.timed_ng(), unit)} = {u.fmt_reading(self.daily_ng(), unit)}; "
                 f"worst case in 24 h {u.fmt_reading(self.worst_case_ng(), unit)}")
        if drug:
            total += (f" (limit {u.fmt_rate(drug.max_ng_day, unit)}, soft "
                      f"{u.fmt_rate(drug.soft_ng_day, unit)})")
        lines.append(total)
        for m in self.mix:
            lines.append(self._mix_line(m, druglib))
        return "\n".join(lines)

    def _mix_line(self, m: MixDrug, druglib: DrugLibrary | None) -> str:
        # an admixture's other drug: what the same volumes carry of it
        d = druglib.by_id(m.drug_id) if druglib else None
        unit = u.amount_unit(d.max_ng_day if d else max(math.ceil(self.of(self.worst_case_ng(),
                                                                          m.conc_ng_ml)), 1))

        def of(ng: int) -> int:
            return math.ceil(self.of(ng, m.conc_ng_ml))

        line = (f"{m.drug} ({u.fmt_conc(m.conc_ng_ml)}): per day "
                f"{u.fmt_reading(of(self.daily_ng()), unit)}; worst case in 24 h "
                f"{u.fmt_reading(of(self.worst_case_ng()), unit)}")
        if self.pb:
            line += f"; patient bolus {u.fmt_reading(of(self.pb.dose_ng), unit)}"
        if d:
            line += f" (limit {u.fmt_rate(d.max_ng_day, unit)}, soft {u.fmt_rate(d.soft_ng_day, unit)})"
        return line
