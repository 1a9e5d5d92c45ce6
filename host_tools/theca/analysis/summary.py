"""A therapy summary of a telemetry log: what `theca simulate` and `make demo` print.

Drug delivered per day (from the delivered volume and the concentration in successive
status frames), boluses given and denied, alarms, refills, the reservoir at the end
and the projected date of the low-reservoir alarm, i.e. when to refill.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from theca_protocol import names as N

from theca.log.fields import REFILL_DUE_WORDS, refill_due_reason
from theca.log.records import records

_FLAG_BRIDGE = N.mask_of(N.STATUS_FLAGS, "bridge")


@dataclass
class Day:
    date: str
    delivered_ul: float = 0.0
    drug_mg: float = 0.0  # all drugs (one drug: its mg)
    per_drug: dict[str, float] = field(default_factory=lambda: defaultdict(float))  # name -> mg
    boluses: int = 0
    denied: int = 0
    timed: int = 0


@dataclass
class Summary:
    frames: int = 0
    first: str | None = None
    last: str | None = None
    info: dict | None = None
    drug: str | None = None
    conc_mg_ml: float | None = None
    #: an admixture's other drugs in the reservoir at the end: [(name, conc ng/mL)]
    mix: list[tuple[str, int]] = field(default_factory=list)
    days: list[Day] = field(default_factory=list)
    alarms: list[tuple[str, str, str]] = field(default_factory=list)  # (t, alarm, raised|cleared)
    refills: list[tuple[str, float, float]] = field(default_factory=list)  # t, emptied, filled
    discrepancies: list[tuple[str, float, float]] = field(default_factory=list)  # t, expected, found
    reservoir_ul: float | None = None
    delivered_ul: float | None = None
    low_eta: str | None = None
    refill_due: str | None = None  # the pump's one refill date (STATUS.refill_due)
    refill_why: str = "reservoir"
    mode: str | None = None
    active_alarms: list[str] = field(default_factory=list)
    denials: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    anomalies: int = 0


def _event(s: Summary, day: Day | None, o: dict, t: str) -> None:
    ev = o.get("event")
    if ev == "bolus_started" and day is not None:
        if o.get("bolus") == "timed":
            day.timed += 1
        else:
            day.boluses += 1
    elif ev == "bolus_denied":
        if day is not None:
            day.denied += 1
        s.denials[str(o.get("reason"))] += 1
    elif ev in ("alarm_raised", "alarm_cleared"):
        s.alarms.append((t, str(o.get("alarm")), "raised" if ev == "alarm_raised" else "cleared"))
    elif ev == "refilled":
        s.refills.append((t, o.get("residual_ul", 0.0), o.get("volume_ul", 0.0)))
    elif ev == "refill_discrepancy":
        s.discrepancies.append((t, o.get("expected_ul", 0.0), o.get("residual_ul", 0.0)))


def _pump_now(s: Summary, o: dict, conc: int) -> None:
    # what the pump says of itself in its newest status
    s.reservoir_ul = o["reservoir_ul"]
    s.delivered_ul = o["delivered_ul"]
    s.low_eta = o.get("low_reservoir_eta")
    s.refill_due = o.get("refill_due")
    s.refill_why = refill_due_reason(o.get("flags") or 0)
    s.mode = o.get("mode")
    s.active_alarms = list(o.get("alarms", []))
    if o.get("drug"):
        s.drug = o["drug"]
    if conc:
        s.conc_mg_ml = conc / 1e6


def _status(s: Summary, days: dict[str, Day], prev, o: dict, t: str, fill_mix: list):
    # a status frame: what was delivered since the previous one, on that one's day; returns
    # the new `prev` (delivered_ul, conc_ng_ml, date, drug, mix)
    d = o["delivered_ul"]
    conc = o.get("conc_ng_ml") or 0
    drug = o.get("drug")
    mix = tuple(fill_mix)
    if o.get("flags", 0) & _FLAG_BRIDGE and prev is not None:
        # the catheter still delivers what the reservoir held before the refill,
        # drug and concentration (the report's effective_conc: one accounting)
        conc = prev[1] or conc
        drug = prev[3] or drug
        mix = prev[4]
    if prev is not None:
        # what was delivered since the previous status belongs to that one's day, at the
        # concentration then in force: the previous frame's, or, when that frame came
        # before the pump knew its drug (the boot's, before the first prescription), this
        # one's (issue 13: the first interval was counted as no drug at all)
        pday = days.setdefault(prev[2], Day(prev[2]))
        dv = d - prev[0]
        pday.delivered_ul += dv
        mg = dv * (prev[1] or conc) / 1e9  # uL x ng/mL = 1e-3 ng
        pday.drug_mg += mg
        if mg:
            # each drug apart: one drug's mg say nothing of another's
            pday.per_drug[str(prev[3] or drug)] += mg
        for name, ck in (prev[4] if prev[3] else mix):
            # the same volume carries each drug of an admixture at its own conc
            pday.per_drug[name] += dv * ck / 1e9
    _pump_now(s, o, conc)
    return (d, conc, t[:10], drug, mix)


def summarize(path: str | Path) -> Summary:
    s = Summary()
    days: dict[str, Day] = {}
    prev = None  # (delivered_ul, conc_ng_ml, date, drug, mix) of the previous status
    # an admixture's other drugs [(name, conc ng/mL)] in the reservoir: the `fill_drug`
    # events after its `refilled` (or after the first prescription of a new pump)
    fill_mix: list[tuple[str, int]] = []
    for o in records(path):
        s.frames += 1
        kind = o.get("kind")
        t: str = o.get("t") or ""
        # the span of what the log holds, not of its writing: a pulled log begins with
        # the pull's device info, then the events of months before (ISO strings sort)
        if t and (s.first is None or t < s.first):
            s.first = t
        if t and (s.last is None or t > s.last):
            s.last = t
        day = days.setdefault(t[:10], Day(t[:10])) if t and kind == "event" else None
        if kind == "device_info":
            s.info = o
        elif kind == "status":
            prev = _status(s, days, prev, o, t, fill_mix)
        elif kind == "event":
            if o.get("event") == "refilled":
                fill_mix = []
            elif o.get("event") == "fill_drug":
                fill_mix.append((str(o.get("drug")), int(o.get("conc_ng_ml") or 0)))
            _event(s, day, o, t)
        elif kind == "unknown":
            s.anomalies += 1
    s.days = [days[k] for k in sorted(days)]
    s.mix = fill_mix
    return s


def _date(iso: str | None) -> str:
    if not iso:
        return "-"
    return datetime.strptime(iso, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).strftime("%Y-%m-%d %H:%M UTC")


def _daily_table(s: Summary, lib, unit: str, per_mg: int):
    # the drug delivered per day; a change of drug: a column per drug, each in its own unit
    from rich.table import Table

    from theca.inputs.druglib import dose_unit

    tab = Table(title="Drug delivered per day", title_justify="left")
    drugs = sorted({k for d in s.days for k in d.per_drug})
    if len(drugs) > 1:
        # a change of drug: a column per drug, each in its own unit
        units = {n: dose_unit(lib.find(n)) for n in drugs}
        dcols = [f"{n} ({units[n]})" for n in drugs]
    else:
        units, dcols = {}, [f"drug ({unit})"]
    for col in ("day", "date", "volume (uL)", *dcols, "timed", "patient/clinician", "denied"):
        tab.add_column(col, justify="right" if col not in ("date",) else "left")
    for i, d in enumerate(s.days, 1):
        if units:
            vals = [f"{d.per_drug.get(n, 0.0) * (1000 if units[n] == 'mcg' else 1):.3f}"
                    for n in drugs]
        else:
            vals = [f"{d.drug_mg * per_mg:.3f}"]
        tab.add_row(str(i), d.date, f"{d.delivered_ul:.1f}", *vals, str(d.timed),
                    str(d.boluses), str(d.denied))
    return tab


def _print_visits_and_end(con, s: Summary, truth: dict | None) -> None:
    # the refills, their discrepancies, the pump at the end and the physical truth
    for t, emptied, filled in s.refills:
        con.print(f"Refill {_date(t)}: emptied {emptied / 1000:.2f} mL, filled {filled / 1000:.2f} mL")
    for t, expected, found in s.discrepancies:
        con.print(f"[bold red]Refill {_date(t)}: {found / 1000:.2f} mL aspirated where the pump "
                  f"expected {expected / 1000:.2f} mL (volume_discrepancy: a pocket fill, a leak "
                  "or an underdose may have happened)[/bold red]")
    if s.reservoir_ul is not None:
        con.print(f"Reservoir at the end: {s.reservoir_ul / 1000:.3f} mL; delivered since therapy "
                  f"start {(s.delivered_ul or 0) / 1000:.3f} mL; mode {s.mode}"
                  + (f"; alarms active: {', '.join(s.active_alarms)}" if s.active_alarms else ""))
    if s.refill_due:
        # one refill date, the pump's: the earliest of the reservoir, the fill's stability
        # and the battery
        low = f"; low-reservoir alarm projected {_date(s.low_eta)}" if s.low_eta else ""
        con.print(f"Refill by [bold]{_date(s.refill_due)}[/bold] ({REFILL_DUE_WORDS[s.refill_why]}){low}")
    elif s.reservoir_ul is not None and s.reservoir_ul < 2000:
        con.print("[bold]Refill now[/bold]: the reservoir is below 2 mL")
    if truth:
        con.print(f"Mechanism (physical truth): {truth['pumped_nl'] / 1e6:.3f} mL pumped, "
                  f"{truth['reservoir_nl'] / 1e6:.3f} mL left, {truth['failed_strokes']} strokes failed")


def print_summary(s: Summary, path, seconds: float | None = None, truth: dict | None = None) -> None:
    """Print the summary as tables (rich) on stdout."""
    import sys

    from rich.console import Console
    from rich.table import Table

    # outside a terminal (make demo in CI, a pipe) rich would wrap at 80 columns and cut
    # column names ("patient/clini…"): lay the tables out for a wide page instead
    con = Console(highlight=False, width=None if sys.stdout.isatty() else 132)
    from theca.inputs.druglib import dose_unit, load_druglib

    # each drug in the unit it is dosed in: ziconotide in mcg, not "0.002 mg"
    lib = load_druglib()
    unit = dose_unit(lib.find(s.drug) if s.drug else None)
    per_mg = 1000 if unit == "mcg" else 1
    what = f"{s.drug or 'drug ?'}"
    if s.conc_mg_ml:
        what += f" {s.conc_mg_ml * per_mg:g} {unit}/mL"
    from theca.inputs.units import fmt_conc

    for name, ck in s.mix:
        what += f" + {name} {fmt_conc(ck)}"
    took = f" in {seconds:.2f} s" if seconds is not None else ""
    con.print(f"[bold]Theca twin[/bold]: {_date(s.first)} to {_date(s.last)}, {what}{took}")
    con.print(_daily_table(s, lib, unit, per_mg))
    if s.denials:
        con.print("Denied boluses: " + ", ".join(f"{k} {v}" for k, v in sorted(s.denials.items())))
    if s.alarms:
        at = Table(title="Alarms", title_justify="left")
        at.add_column("time")
        at.add_column("alarm")
        at.add_column("")
        for t, name, what in s.alarms:
            at.add_row(_date(t), name, what)
        con.print(at)
    else:
        con.print("Alarms: none")
    _print_visits_and_end(con, s, truth)
    con.print(f"Telemetry: {path} ({s.frames} frames"
              + (f", {s.anomalies} unreadable" if s.anomalies else "") + ")")
