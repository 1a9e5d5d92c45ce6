"""The prescription's rules, shared by file loading (rxfile.py) and
`Prescription.problems`: every problem with the field and the limit named, at once. Values
may be None where the file's entry did not parse; rules needing them are skipped (that
entry already has its own message)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction
from typing import NamedTuple

from theca_protocol import names as N

from theca.errors import Problems
from theca.inputs import units as u
from theca.inputs.druglib import Drug
from theca.inputs.prescription import (
    MAX_BOLUS_DURATION_S,
    MAX_LOCKOUT_S,
    MAX_PB_PER_DAY,
    MAX_RATE_NL_H,
    MAX_STEPS,
    MAX_TIMED,
    MIN_RATE_NL_DAY,
    MINUTES_PER_DAY,
    OVERRIDE_HINT,
    MixDrug,
    PatientBolus,
    Prescription,
    Step,
    TimedBolus,
    too_fast,
)


class PatientBolusValues(NamedTuple):
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

    def concentration(self, f: str = "concentration") -> None:
        drug, conc = self.drug, self.conc
        if drug is None or conc is None:
            return
        if conc > drug.max_conc_ng_ml:
            self.probs.add(f, f"{u.fmt_conc(conc)} exceeds {drug.name} hard limit "
                              f"{u.fmt_conc(drug.max_conc_ng_ml)}")
        elif conc > drug.soft_conc_ng_ml:
            if self.override_soft:
                self.overridden |= override_flag("max_concentration")
            else:
                self.probs.add(f, f"{u.fmt_conc(conc)} exceeds {drug.name} soft "
                                  f"limit {u.fmt_conc(drug.soft_conc_ng_ml)}; {OVERRIDE_HINT}")

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

    def patient_bolus(self, pb: PatientBolusValues | None) -> None:
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
        self.probs.add("steps", f"daily dose {u.fmt_reading(daily, self.unit)} is below "
                                f"{drug.name} soft limit min_per_day "
                                f"{u.fmt_rate(drug.min_ng_day, self.unit)} (a mg/mcg slip?); "
                                f"{OVERRIDE_HINT}")

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
            probs.add(self._culprit(rx, hour=True), f"worst-case 1 h dose {u.fmt_reading(hour, unit)} exceeds {drug.name} "
                            f"hard limit max_per_hour {u.fmt_amount(drug.max_ng_hour, unit)} (the "
                            "fastest basal step for an hour, the timed boluses one hour can meet "
                            "and the patient boluses its lockout allows)")
        worst = rx.worst_case_ng()
        if worst > drug.max_ng_day:
            kind, limit, hint = "hard", drug.max_ng_day, ""
        elif worst > drug.soft_ng_day and not self.override_soft:
            kind, limit, hint = "soft", drug.soft_ng_day, f"; {OVERRIDE_HINT}"
        else:
            if worst > drug.soft_ng_day:
                self.overridden |= override_flag("daily_limit")
            return
        parts = (f"basal {u.fmt_reading(rx.basal_ng(), unit)} + timed "
                 f"{u.fmt_reading(rx.timed_ng(), unit)}")
        if rx.pb:
            parts += f" + patient {rx.pb.max_per_day} x {u.fmt_amount(rx.pb.dose_ng, unit)}"
        else:
            parts += " + no patient bolus"
        probs.add(self._culprit(rx), f"worst-case 24 h dose {u.fmt_reading(worst, unit)} exceeds {drug.name} "
                        f"{kind} limit {u.fmt_rate(limit, unit)} ({parts}){hint}")


class _Prefixed:
    """Problems whose every message starts with `prefix` (an admixture's drug)."""

    def __init__(self, probs: Problems, prefix: str):
        self.probs, self.prefix = probs, prefix

    def add(self, fieldname: str | None, message: str) -> None:
        self.probs.add(fieldname, self.prefix + message)


def _as_drug(rx: Prescription, m: MixDrug, d: Drug) -> Prescription:
    # the prescription as the amounts of the admixture's drug `m` it gives: each amount
    # of the primary drug times m's concentration over the primary's, rounded up
    def of(ng: int) -> int:
        return math.ceil(rx.of(ng, m.conc_ng_ml))

    pb = rx.pb._replace(dose_ng=of(rx.pb.dose_ng)) if rx.pb else None
    return Prescription(drug_id=d.id, drug=d.name, conc_ng_ml=m.conc_ng_ml,
                        steps=tuple(Step(s.start_min, of(s.rate_ng_day)) for s in rx.steps),
                        timed=tuple(t._replace(dose_ng=of(t.dose_ng)) for t in rx.timed), pb=pb)


def mix_rules(rx: Prescription, mix: Sequence[tuple[Drug, int]], override_soft: bool,
              probs: Problems) -> int:
    """Each other drug of an admixture held to its own hard and soft limits (the doses are
    of the primary drug; each drug's amount is the same volume at its concentration).
    Returns the Rx flags of the soft limits overridden."""
    flags = 0
    for i, (d, conc) in enumerate(mix, 2):
        m = MixDrug(d.id, d.name, conc)
        pre = _Prefixed(probs, f"{d.name} (drugs[{i}], {u.fmt_conc(conc)}): ")
        r = _Rules(d, conc, override_soft, pre)  # type: ignore[arg-type]
        r.concentration(f"drugs[{i}].concentration")
        as_d = _as_drug(rx, m, d)
        for j, t in enumerate(as_d.timed, 1):
            r.bolus(f"timed_boluses[{j}]", t.dose_ng, None)
        if as_d.pb:
            r.bolus("patient_bolus", as_d.pb.dose_ng, None)
        r.worst_case(as_d)
        r.min_per_day(as_d)
        flags |= r.overridden
    return flags


def rx_drug(drug: Drug | None) -> Drug:
    """The drug of a prescription whose rules found it complete."""
    assert drug is not None, "complete implies a drug"
    return drug


def build(drug: Drug | None, conc: int | None, steps: list[tuple], timed: list[tuple],
           pb: PatientBolusValues | None, flags: int = 0, low_nl: int = 0,
           mix: Sequence[tuple[Drug, int]] = ()) -> Prescription:
    # A Prescription from values the rules found complete (none of them None).
    d = rx_drug(drug)
    assert conc is not None, "complete implies a concentration"
    pbv = None
    if pb is not None and pb.max_per_day:
        pbv = PatientBolus(*(int(x) for x in pb))  # type: ignore[arg-type]
    return Prescription(drug_id=d.id, drug=d.name, conc_ng_ml=conc,
                        steps=tuple(Step(*s) for s in steps),
                        timed=tuple(TimedBolus(*x) for x in timed), pb=pbv, flags=flags,
                        low_reservoir_nl=low_nl,
                        mix=tuple(MixDrug(m.id, m.name, c) for m, c in mix))


def override_flag(limit: str) -> int:
    """The Rx flags bit that records an override of the soft limit `limit`."""
    return N.mask_of(N.RX_FLAGS, f"override_{limit}")


def apply_rules(drug: Drug | None, conc: int | None, steps: list[tuple], timed: list[tuple],
           pb: PatientBolusValues | None, override_soft: bool, probs: Problems,
           mix: Sequence[tuple[Drug, int]] = ()) -> int:
    # every problem into probs; returns the Rx flags of the soft limits overridden
    r = _Rules(drug, conc, override_soft, probs)
    r.concentration()
    r.steps(steps)
    r.timed(timed)
    r.patient_bolus(pb)
    flags = 0
    if r.complete:
        built = build(drug, conc, steps, timed, pb)
        r.worst_case(built)
        r.min_per_day(built)
        if mix:
            flags = mix_rules(built, mix, override_soft, probs)
    return r.overridden | flags
