"""`theca report RUN.tlog -o DIR [--trumpet-start ISO]`: a therapy report a person can take to a review.

DIR/index.html (self-contained but for the PNG pictures beside it) has four sections,
each a picture drawn with matplotlib (Agg) and the numbers under it:

1. Reservoir over time, with the low-reservoir line (2 mL by default, from
   DEVICE_INFO) and the refills marked; a table per day and the refills.
2. Drug delivered per day against the prescription (see `daily` for how the
   prescribed amount is derived from the log alone).
3. Alarms and events on a timeline; tables of alarm periods and notable events.
4. The IEC 60601-2-24 trumpet curve (`trumpet.py`) of the first steady hour
   beginning an hour or more after therapy start, or of `--trumpet-start`; a log
   without 30 s samples gets the reason instead of the curve.

Days are UTC calendar days of device time, as in `theca simulate`'s summary.
"""

from __future__ import annotations

import datetime as _dt
import html
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import NamedTuple

import numpy as np
from theca_protocol import names as N

from theca.analysis import trumpet
from theca.errors import BadInput
from theca.log.data import LogData, read_log
from theca.log.records import Renderer, iso
from theca.log.writers.base import table_value

_RUNNING = next(k for k, v in N.MODES.items() if v == "running")
# STATUS.flags: a bolus is running (rate = basal + bolus); the catheter still holds the
# previous concentration
_FLAG_BOLUS = N.mask_of(N.STATUS_FLAGS, "bolus_running")
_FLAG_BRIDGE = N.mask_of(N.STATUS_FLAGS, "bridge")
DAY = 86400


def _unix(t: int) -> _dt.datetime:
    return _dt.datetime.fromtimestamp(int(t) + N.EPOCH_UNIX, _dt.UTC)


def _date(t: int) -> str:
    return iso(int(t))[:10]


def _mg(ul: float, conc_ng_ml: float) -> float:
    # uL x ng/mL = 1e-3 ng; 1 mg = 1e6 ng
    return ul * conc_ng_ml / 1e9


# --- the numbers -------------------------------------------------------------------------------


def _through_bridge(st: dict, values: np.ndarray) -> np.ndarray:
    # `values` per status frame, with each frame of a bridge given the value of the
    # frame before the refill that started it: what the catheter still delivers
    bridge = (st["flags"] & _FLAG_BRIDGE) != 0
    if not bridge.any():
        return values
    idx = np.arange(len(values))
    start = bridge & ~np.concatenate(([False], bridge[:-1]))
    run_start = np.maximum.accumulate(np.where(start, idx, 0))
    return np.where(bridge, values[np.maximum(run_start - 1, 0)], values)


def effective_conc(st: dict) -> np.ndarray:
    """The concentration (ng/mL) the patient receives at each status frame.

    STATUS.conc_ng_ml is what the reservoir holds; while the bridge flag is set
    the catheter still delivers the concentration held before the refill that
    started the bridge (the firmware converts rates with that one too).
    """
    return _through_bridge(st, st["conc_ng_ml"].astype(np.float64))


def effective_drug(st: dict) -> np.ndarray:
    """The drug (library id) the patient receives at each status frame: the reservoir's,
    or during a bridge the one before the refill that started it (as effective_conc)."""
    return _through_bridge(st, st["drug"].astype(np.int64))


@dataclass
class DayRow:
    """One UTC day: what was delivered and what the prescription asked for."""

    date: str
    hours: float = 0.0  # of the day covered by status frames
    delivered_ul: float = 0.0
    delivered_mg: float = 0.0
    per_drug_mg: dict = field(default_factory=dict)  # drug id -> mg delivered
    on_demand_ul: float = 0.0  # patient and clinician boluses completed
    on_demand_mg: float = 0.0
    basal_mg: float = 0.0  # prescribed basal
    timed_mg: float = 0.0  # prescribed timed boluses
    timed_given: int = 0
    timed_missed: int = 0
    patient_given: int = 0
    patient_denied: int = 0
    clinician_given: int = 0
    reservoir_end_ul: float | None = None
    reservoir_min_ul: float | None = None

    @property
    def prescribed_mg(self) -> float:
        """Basal integral plus timed boluses."""
        return self.basal_mg + self.timed_mg

    @property
    def scheduled_mg(self) -> float:
        """Delivered minus on-demand boluses: what the prescription's schedule got."""
        return self.delivered_mg - self.on_demand_mg

    @property
    def error_pct(self) -> float | None:
        """Scheduled delivery against the prescription, percent."""
        if self.prescribed_mg <= 0:
            return None
        return 100.0 * (self.scheduled_mg - self.prescribed_mg) / self.prescribed_mg


def _basal_ng_day(log: LogData, conc_eff: np.ndarray) -> np.ndarray:
    """The prescribed basal drug rate (ng/day) in force at each status frame.

    Learned per (rx_crc, step) from frames running without a bolus
    (rate x concentration: a drug rate, unchanged by a refill of another
    concentration) and from step_changed events; NaN where unknown.
    """
    st = log.status
    n = len(st["time"])
    out = np.full(n, np.nan)
    if not n:
        return out
    rx = st["rx_crc"].astype(np.int64)
    step = st["step"].astype(np.int64)
    clean = (st["mode"] == _RUNNING) & ((st["flags"] & _FLAG_BOLUS) == 0)
    ng = st["rate_nl_day"].astype(np.float64) * conc_eff / 1e6
    learned: dict[tuple[int, int], float] = {}
    for r, s, v in zip(rx[clean].tolist(), step[clean].tolist(), ng[clean].tolist(), strict=True):
        learned.setdefault((r, s), v)
    times = st["time"]
    for e in log.events:
        if e["event"] != "step_changed" or "rate_ul_per_day" not in e:
            continue
        k = min(int(np.searchsorted(times, e["time"])), n - 1)
        key = (int(rx[k]), int(e.get("step", -1)))
        learned.setdefault(key, e["rate_ul_per_day"] * 1000 * conc_eff[k] / 1e6)
    for k, (r, s) in enumerate(zip(rx.tolist(), step.tolist(), strict=True)):
        if r == 0:
            out[k] = 0.0  # no prescription in force
        else:
            v = learned.get((r, s))
            if v is not None:
                out[k] = v
    return out


def daily(log: LogData) -> list[DayRow]:
    """Drug delivered per UTC day against the prescription.

    Delivered: the growth of `delivered_ul` between consecutive status frames,
    counted on the day of the earlier frame, in mg at the concentration then
    delivered (as `theca simulate`'s summary does).

    Delivered counts from therapy start (the counter is 0 then): a therapy_started
    event before the first status frame is a sample of 0.

    Prescribed = basal integral + timed boluses. The basal drug rate of each
    (prescription, step) is read from the log (`_basal_ng_day`); it holds from
    each status frame to the next, and changes exactly at each step_changed
    event (its rate) and at therapy_started / prescription_changed (the basal of
    the next status frame). It is integrated over the time the log covers, split at midnight,
    whatever the pump did (a suspension or a stall is a shortfall). Timed
    boluses: the dose of every bolus_started of kind timed, and of every timed
    bolus the pump could not give (bolus_denied, kind timed). Patient and
    clinician boluses are on demand, not prescribed amounts per day: they are
    shown apart (from bolus_completed) and left out of the comparison.
    """
    st = log.status
    if len(st["time"]) == 0:
        return []
    s = _series(log)
    days = _Days()
    _delivered(s, days)
    res = st["reservoir_nl"][s.order] / 1000.0
    for d, v in zip(s.dates[len(s.dates) - len(res):].tolist(), res.tolist(), strict=True):
        r = days[d]
        r.reservoir_end_ul = v
        r.reservoir_min_ul = v if r.reservoir_min_ul is None else min(r.reservoir_min_ul, v)
    _prescribed_basal(log, s, days)
    _boluses(log, s, days)
    return [days[d] for d in sorted(days)]


class _Days(dict):
    """DayRows by date, made on first use."""

    def __missing__(self, d: str) -> DayRow:
        row = self[d] = DayRow(d)
        return row


class _Series(NamedTuple):
    """The status frames in time order: time, delivered (nL), concentration delivered,
    prescribed basal (ng/day); with a sample of 0 at therapy start when the log holds it."""

    order: np.ndarray
    t: np.ndarray
    delivered_nl: np.ndarray
    conc: np.ndarray
    basal: np.ndarray
    dates: np.ndarray
    drug: np.ndarray  # drug id delivered (the catheter's old one during a bridge)

    @property
    def n(self) -> int:
        return len(self.t)

    def at(self, t: int) -> int:
        """Index of the first sample at or after `t`, clipped to the last."""
        return min(int(np.searchsorted(self.t, t)), self.n - 1)


def _series(log: LogData) -> _Series:
    st = log.status
    times = st["time"].astype(np.int64)
    order = np.argsort(times, kind="stable")
    conc = effective_conc(st)
    basal = _basal_ng_day(log, conc)
    t_o = times[order]
    dl = st["delivered_total_nl"][order].astype(np.int64)
    c_o = conc[order]
    b_o = basal[order]
    g_o = effective_drug(st)[order]
    # The delivered counter starts at 0 at therapy start: when the log holds that moment
    # before its first status frame, it is a sample too.
    ts = [e["time"] for e in log.events if e["event"] == "therapy_started"
          and e["time"] < int(t_o[0])]
    if ts:
        t_o = np.concatenate(([ts[-1]], t_o))
        dl = np.concatenate(([0], dl))
        c_o = np.concatenate(([c_o[0]], c_o))
        b_o = np.concatenate(([b_o[0]], b_o))
        g_o = np.concatenate(([g_o[0]], g_o))
    dates = np.array([_date(t) for t in t_o.tolist()])
    return _Series(order, t_o, dl, c_o, b_o, dates, g_o)


def _delivered(s: _Series, days: _Days) -> None:
    # per interval between consecutive samples, on the day of the earlier one
    dv = np.diff(s.delivered_nl) / 1000.0  # uL
    dv = np.where(dv < 0, 0.0, dv)  # therapy restarted: the counter began again
    # at the concentration delivered: the earlier frame's, or, when that frame came
    # before the pump knew its drug (0: the boot's, before programming), the later one's
    # (issue 13: the first interval was counted as no drug, a 1 mg bolus as 0)
    before, after = s.conc[:-1], s.conc[1:]
    conc = np.where(before > 0, before, after)
    drug = np.where(s.drug[:-1] > 0, s.drug[:-1], s.drug[1:])
    for d, v, c, g in zip(s.dates[:-1].tolist(), dv.tolist(), conc.tolist(), drug.tolist(),
                          strict=True):
        r = days[d]
        r.delivered_ul += v
        mg = _mg(v, c)
        r.delivered_mg += mg
        if mg:
            # each drug apart: one drug's mg say nothing of another's
            r.per_drug_mg[g] = r.per_drug_mg.get(g, 0.0) + mg


def _prescribed_basal(log: LogData, s: _Series, days: _Days) -> None:
    # piecewise constant from change points (events after frames at a tie), integrated
    # over the time the log covers and split at midnight
    t_o, n = s.t, s.n
    pts = [(int(t), 0, float(b)) for t, b in zip(t_o.tolist(), s.basal.tolist(), strict=True)]
    for e in log.events:
        if e["event"] == "step_changed" and "rate_ul_per_day" in e:
            k = s.at(e["time"])
            pts.append((int(e["time"]), 1, e["rate_ul_per_day"] * 1000 * s.conc[k] / 1e6))
        elif e["event"] in ("therapy_started", "prescription_changed"):
            # a new prescription holds from this moment: its basal is the next frame's
            k = int(np.searchsorted(t_o, e["time"], side="right"))
            if k < n:
                pts.append((int(e["time"]), 1, float(s.basal[k])))
    pts.sort(key=lambda p: (p[0], p[1]))
    t_end = int(t_o[-1])
    cur = np.nan
    for (t0, _, v), nxt in zip(pts, pts[1:] + [(t_end, 2, np.nan)], strict=True):
        if not np.isnan(v):
            cur = v
        a, b = max(t0, int(t_o[0])), min(nxt[0], t_end)
        while a < b:
            seg_end = min(b, (a // DAY + 1) * DAY)  # device days are UTC days (epoch 2020-01-01)
            r = days[_date(a)]
            r.hours += (seg_end - a) / 3600
            if not np.isnan(cur):
                r.basal_mg += cur * (seg_end - a) / DAY / 1e6
            a = seg_end


def _conc_at(s: _Series, t: int) -> float:
    # the concentration delivered at t: the last frame's before it, or the next one's
    # when that frame came before the pump knew its drug (0)
    k = max(min(int(np.searchsorted(s.t, t, side="right")) - 1, s.n - 1), 0)
    c = float(s.conc[k])
    return c if c > 0 or k + 1 >= s.n else float(s.conc[k + 1])


def _timed_during_power_off(log: LogData, s: _Series, days: _Days) -> None:
    # A timed bolus due while the power was off never starts and is never denied: the
    # pump cannot say so. The schedule is learned from the timed boluses the log shows
    # (their time of day and dose), and each one due in a power-off span counts as
    # prescribed and missed (issue 13: -36.6 % shown, about -42.8 % true).
    slots = {(int(e["time"]) % DAY, float(e.get("dose_ul", 0.0))) for e in log.events
             if e["event"] in ("bolus_started", "bolus_denied") and e.get("bolus") == "timed"}
    for a, b, _ in _power_off(log):
        for tod, dose in slots:
            t = a - a % DAY + tod
            while t < b:
                if t >= a:
                    r = days[_date(t)]
                    r.timed_missed += 1
                    r.timed_mg += _mg(dose, _conc_at(s, t))
                t += DAY


def _boluses(log: LogData, s: _Series, days: _Days) -> None:
    _timed_during_power_off(log, s, days)
    for e in log.events:
        ev = e["event"]
        if ev not in ("bolus_started", "bolus_completed", "bolus_denied"):
            continue
        c = _conc_at(s, e["time"])
        r = days[_date(e["time"])]
        kind = e.get("bolus")
        if ev == "bolus_started":
            if kind == "timed":
                r.timed_given += 1
                r.timed_mg += _mg(e.get("dose_ul", 0.0), c)
            elif kind == "patient":
                r.patient_given += 1
            elif kind == "clinician":
                r.clinician_given += 1
        elif ev == "bolus_completed" and kind in ("patient", "clinician"):
            r.on_demand_ul += e.get("volume_ul", 0.0)
            r.on_demand_mg += _mg(e.get("volume_ul", 0.0), c)
        elif ev == "bolus_denied":
            if kind == "timed":
                r.timed_missed += 1
                r.timed_mg += _mg(e.get("dose_ul", 0.0), c)
            else:
                r.patient_denied += 1


@dataclass
class AlarmSpan:
    """One alarm from raised to cleared (cleared None: still active at the end of the log)."""

    alarm: str
    raised: int
    cleared: int | None
    reservoir_ul: float | None = None
    acknowledged: int | None = None

    @property
    def critical(self) -> bool:
        """A critical alarm stops delivery."""
        return self.alarm in N.CRITICAL_ALARMS


def alarm_spans(log: LogData) -> list[AlarmSpan]:
    """Alarm periods from alarm_raised / alarm_cleared events (and alarms active at log start)."""
    spans: list[AlarmSpan] = []
    open_: dict[str, AlarmSpan] = {}
    st = log.status
    if len(st["time"]):
        t0 = int(st["time"].min())
        first_ev: dict[str, str] = {}
        for e in log.events:
            if e["event"] in ("alarm_raised", "alarm_cleared"):
                first_ev.setdefault(e.get("alarm"), e["event"])
        for name in N.alarm_names(int(st["alarms"][int(np.argmin(st["time"]))])):
            if first_ev.get(name) != "alarm_raised":  # raised before the log began
                sp = AlarmSpan(name, t0, None)
                open_[name] = sp
                spans.append(sp)
    for e in log.events:
        ev = e["event"]
        if ev == "alarm_raised":
            name = e.get("alarm", "?")
            if name in open_:
                continue
            sp = AlarmSpan(name, e["time"], None, e.get("reservoir_ul"))
            open_[name] = sp
            spans.append(sp)
        elif ev == "alarm_cleared":
            done = open_.pop(e.get("alarm", "?"), None)
            if done is not None:
                done.cleared = e["time"]
        elif ev == "alarm_acknowledged":
            for name in e.get("alarms", []):
                if name in open_ and open_[name].acknowledged is None:
                    open_[name].acknowledged = e["time"]
    return spans


def mode_spans(log: LogData) -> list[tuple[int, int, str]]:
    """(start, end, mode) of each period the pump was not running, from status frames."""
    st = log.status
    if not len(st["time"]):
        return []
    order = np.argsort(st["time"], kind="stable")
    t = st["time"][order]
    m = st["mode"][order]
    out = []
    ch = np.flatnonzero(np.diff(m)) + 1
    bounds = np.concatenate(([0], ch, [len(m)]))
    ev = sorted((e["time"], e["event"]) for e in log.events)
    ev_t = [x[0] for x in ev]

    def first_event(lo: int, hi: int, names: set[str]) -> int | None:
        # the earliest event named in (lo, hi]: when the change really happened
        import bisect

        for k in range(bisect.bisect_right(ev_t, lo), bisect.bisect_right(ev_t, hi)):
            if ev[k][1] in names:
                return ev[k][0]
        return None

    for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
        if m[a] != _RUNNING:
            start = int(t[a])
            if a > 0:
                start = first_event(int(t[a - 1]), start, _STOPS) or start
            end = int(t[b]) if b < len(t) else int(t[-1])
            if b < len(t):
                end = first_event(int(t[b - 1]) - 1, end, _STARTS) or end
            if end > start:  # a mode seen for no time at all (e.g. before programming)
                out.append((start, end, N.MODES.get(int(m[a]), f"mode_{m[a]}")))
    out += _power_off(log)
    return sorted(out)


def _power_off(log: LogData) -> list[tuple[int, int, str]]:
    # A power loss sends no status frames at all: its span is the delivery_gap the pump
    # logs as it boots again (gap_s back from the boot). Issue 13: the report listed a
    # stall but not 6 h without power.
    out = []
    boots = {e["time"] for e in log.events if e["event"] == "boot"}
    for e in log.events:
        if e["event"] == "delivery_gap" and e.get("gap_s") and e["time"] in boots:
            out.append((int(e["time"]) - int(e["gap_s"]), int(e["time"]), "no power"))
    return out


_STOPS = {"stroke_failed", "alarm_raised", "suspended", "fault", "boot"}
_STARTS = {"therapy_started", "resumed", "alarm_cleared", "motor_recovered"}


#: Events that are routine and shown only as counts.
_ROUTINE = {"step_changed"}


def notable_events(log: LogData) -> list[dict]:
    """Events worth a line in the report: all but step changes and routine timed boluses."""
    out = []
    for e in log.events:
        if e["event"] in _ROUTINE:
            continue
        if e["event"] in ("bolus_started", "bolus_completed") and e.get("bolus") == "timed":
            continue
        if e["event"] == "bolus_completed":
            continue
        out.append(e)
    return out


@dataclass
class Report:
    """Everything the page shows."""

    @cached_property
    def unit(self) -> str:
        """The unit the drug is dosed in (mcg for ziconotide, baclofen...; else mg)."""
        from theca.inputs.druglib import dose_unit, load_druglib

        return dose_unit(load_druglib().find(self.drug) if self.drug else None)

    @property
    def per_mg(self) -> int:
        """How many of `unit` make a mg (1 or 1000): the figures are kept in mg."""
        return 1000 if self.unit == "mcg" else 1

    log: LogData
    days: list[DayRow]
    spans: list[AlarmSpan]
    modes: list
    events: list[dict]
    info: dict | None
    low_ul: float
    drug: str | None
    conc_ng_ml: int
    trumpet: trumpet.Trumpet | None
    trumpet_why: str | None
    refills: list[dict] = field(default_factory=list)


def analyse(log: LogData, trumpet_start: int | None = None) -> Report:
    """Compute every number of the report (no drawing)."""
    info = log.infos[-1] if log.infos else None
    low = info.get("low_reservoir_ul", 2000.0) if info else 2000.0
    st = log.status
    drug, conc = None, 0
    if len(st["time"]):
        last = int(np.argmax(st["time"]))
        r = Renderer()
        drug = r._drug(int(st["drug"][last]))
        conc = int(st["conc_ng_ml"][last])
    tr, why = None, None
    try:
        start = trumpet_start if trumpet_start is not None else trumpet.default_start(log)
        if start is None:
            if len(st["time"]) > 1 and trumpet.SAMPLE_S % max(trumpet._period(st["time"]), 1):
                raise trumpet._lacks_30s(trumpet._period(st["time"]))
            raise BadInput("the log has no hour of steady delivery sampled every 30 s")
        tr = trumpet.compute(log, start)
    except BadInput as e:
        why = "; ".join(e.messages)
    return Report(
        log=log, days=daily(log), spans=alarm_spans(log), modes=mode_spans(log),
        events=notable_events(log), info=info, low_ul=low, drug=drug, conc_ng_ml=conc,
        trumpet=tr, trumpet_why=why,
        refills=[e for e in log.events if e["event"] == "refilled"],
    )


# --- pictures ----------------------------------------------------------------------------------


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _date_axis(ax, span_days: float) -> None:
    import matplotlib.dates as mdates

    if span_days > 3:
        loc = mdates.AutoDateLocator(minticks=4, maxticks=10)
        ax.xaxis.set_major_locator(loc)
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%b %d"))
    else:
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%b %d %H:%M"))
    ax.set_xlabel("date (UTC)")


def plot_reservoir(rep: Report, path: Path) -> None:
    """Reservoir (mL) over time, the low-reservoir line and the refills."""
    plt = _plt()
    st = rep.log.status
    order = np.argsort(st["time"], kind="stable")
    t = [_unix(x) for x in st["time"][order].tolist()]
    ml = st["reservoir_nl"][order] / 1e6
    fig, ax = plt.subplots(figsize=(10, 4.2))
    ax.plot(t, ml, color="tab:blue", lw=1.5, label="reservoir")
    ax.axhline(rep.low_ul / 1000, color="tab:red", ls="--", lw=1.2,
               label=f"low-reservoir alarm {rep.low_ul / 1000:g} mL")
    for i, e in enumerate(rep.refills):
        x = _unix(e["time"])
        ax.axvline(x, color="tab:green", lw=1, alpha=0.7,
                   label="refill" if i == 0 else None)
        ax.annotate(f"refill {e.get('volume_ul', 0) / 1000:.2f} mL", (x, e.get("volume_ul", 0) / 1000),
                    textcoords="offset points", xytext=(5, -14), fontsize=8, color="tab:green")
    for sp in rep.spans:
        if sp.alarm in ("low_reservoir", "empty_reservoir"):
            ax.plot([_unix(sp.raised)], [(sp.reservoir_ul or 0) / 1000], "v", color="tab:red")
    cap = rep.info.get("capacity_ul") if rep.info else None
    top = max(float(ml.max()) if len(ml) else 0, (cap or 0) / 1000, rep.low_ul / 1000)
    ax.set_ylim(0, top * 1.08 + 0.1)
    ax.set_ylabel("reservoir (mL)")
    if len(t):
        _date_axis(ax, (st["time"].max() - st["time"].min()) / DAY)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    ax.set_title("Reservoir over time")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_daily(rep: Report, path: Path) -> None:
    """Drug per day: scheduled + on-demand delivered (stacked) against the prescription."""
    plt = _plt()
    days = drug_days(rep.days)
    x = np.arange(len(days))
    k = rep.per_mg
    sched = np.array([d.scheduled_mg for d in days]) * k
    ond = np.array([d.on_demand_mg for d in days]) * k
    pres = np.array([d.prescribed_mg for d in days]) * k
    fig, ax = plt.subplots(figsize=(10, 4.2))
    ax.bar(x, sched, color="tab:blue", width=0.75, label="delivered on schedule (basal + timed)")
    ax.bar(x, ond, bottom=sched, color="tab:orange", width=0.75,
           label="delivered on demand (patient/clinician boluses)")
    ax.plot(x, pres, "_", color="black", ms=14, mew=2.2, label="prescribed (basal + timed)")
    short = [i for i, d in enumerate(days) if d.error_pct is not None and d.error_pct < -1.0]
    for i in short:
        ax.annotate(f"{days[i].error_pct:+.1f}%", (i, max(sched[i] + ond[i], pres[i])),
                    textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8,
                    color="tab:red")
    step = max(1, len(days) // 15)
    ax.set_xticks(x[::step])
    ax.set_xticklabels([d.date[5:] for d in days][::step], rotation=0, fontsize=8)
    ax.set_xlabel("day (UTC)")
    unit = rep.unit
    if rep.drug:
        unit = f"{rep.unit} of {rep.drug}"
    ax.set_ylabel(unit)
    top = float(max((sched + ond).max(initial=0), pres.max(initial=0)))
    ax.set_ylim(0, top * 1.25 + 1e-6)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper right", fontsize=8, ncol=2)
    ax.set_title("Drug delivered per day against the prescription")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


_MODE_COLORS = {"halted": "tab:red", "suspended": "tab:orange", "stopped": "tab:gray",
                "no power": "tab:purple",
                "safe": "black"}


def _alarm_lanes(ax, rep: Report, y: dict, t_hi: int, span: int) -> None:
    for sp in rep.spans:
        a = _unix(sp.raised)
        b = _unix(sp.cleared if sp.cleared is not None else t_hi)
        color = "tab:red" if sp.critical else "tab:orange"
        ax.barh(y[sp.alarm], (b - a), left=a, height=0.5, color=color, alpha=0.85)
        ax.plot([a], [y[sp.alarm]], "|", color="black", ms=12)
        end = sp.cleared if sp.cleared is not None else t_hi
        if (end - sp.raised) < 0.05 * span:  # too short to see: say how long
            ax.annotate(f" {_dur(end - sp.raised)}", (a, y[sp.alarm]), xytext=(4, -3),
                        textcoords="offset points", fontsize=8, color=color)


def _mode_lane(ax, rep: Report, lane: int, span: int) -> None:
    for a, b, mode in rep.modes:
        color = _MODE_COLORS.get(mode, "tab:gray")
        ax.barh(lane, _unix(b) - _unix(a), left=_unix(a), height=0.5, color=color, alpha=0.8)
        ax.plot([_unix(a)], [lane], "|", color=color, ms=12)
        if (b - a) < 0.05 * span:
            ax.annotate(f" {mode} {_dur(b - a)}", (_unix(a), lane), xytext=(4, -3),
                        textcoords="offset points", fontsize=8, color=color)


#: (event, bolus kind) -> (lane, marker, colour, legend)
_MARKS = {
    ("bolus_started", "timed"): ("boluses", "|", "tab:gray", "timed bolus"),
    ("bolus_started", "patient"): ("boluses", "^", "tab:green", "patient bolus"),
    ("bolus_started", "clinician"): ("boluses", "D", "tab:blue", "clinician bolus"),
    ("bolus_denied", None): ("boluses", "x", "tab:red", "bolus denied"),
    ("refilled", None): ("refills", "v", "tab:purple", "refill"),
}


def _event_marks(ax, rep: Report, y: dict) -> set[str]:
    # one mark per event in its lane; returns the legends used
    seen: set[str] = set()
    for e in rep.log.events:
        ev = e["event"]
        key = (ev, e.get("bolus")) if ev == "bolus_started" else (ev, None)
        spec = _MARKS.get(key)
        if spec is None:
            if ev in ("step_changed", "bolus_completed", "alarm_raised", "alarm_cleared"):
                continue
            spec = ("other events", "o", "black", "other event")
        lane, m, c, label = spec
        ax.plot([_unix(e["time"])], [y[lane]], m, color=c, ms=6 if m != "|" else 9,
                label=label if label not in seen else None, mfc="none" if m == "o" else c)
        seen.add(label)
    return seen


def plot_timeline(rep: Report, path: Path) -> None:
    """Lanes: each alarm (raised to cleared), pump not running, boluses, refills, other events."""
    plt = _plt()
    st = rep.log.status
    if len(st["time"]):
        t_lo, t_hi = int(st["time"].min()), int(st["time"].max())
    else:
        ts = [e["time"] for e in rep.log.events] or [0]
        t_lo, t_hi = min(ts), max(ts) + 1
    alarms = sorted({sp.alarm for sp in rep.spans})
    lanes = alarms + ["pump not running", "boluses", "refills", "other events"]
    y = {name: len(lanes) - 1 - i for i, name in enumerate(lanes)}
    fig, ax = plt.subplots(figsize=(10, 1.2 + 0.45 * len(lanes)))
    span = max(t_hi - t_lo, 1)
    _alarm_lanes(ax, rep, y, t_hi, span)
    _mode_lane(ax, rep, y["pump not running"], span)
    seen = _event_marks(ax, rep, y)
    ax.set_yticks([y[n] for n in lanes])
    ax.set_yticklabels(lanes, fontsize=8)
    ax.set_ylim(-0.7, len(lanes) - 0.3)
    ax.set_xlim(_unix(t_lo), _unix(t_hi))
    _date_axis(ax, (t_hi - t_lo) / DAY)
    ax.grid(axis="x", alpha=0.3)
    if seen:
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.28), ncol=6, fontsize=8,
                  frameon=False)
    ax.set_title("Alarms and events (red: critical alarm, orange: other alarm)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# --- the page ----------------------------------------------------------------------------------

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1100px;
color:#222;padding:0 1em}
h1{font-size:1.6em;margin-bottom:0.2em}h2{border-bottom:1px solid #ccc;padding-bottom:0.2em;
margin-top:2em}
table{border-collapse:collapse;margin:0.8em 0;font-size:0.88em}
th,td{border:1px solid #ccc;padding:3px 8px;white-space:nowrap}th{background:#f2f2f2;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}
tr.warn td{background:#fff1f0}
img{max-width:100%;border:1px solid #ddd}
.note{color:#555;font-size:0.9em;max-width:60em}
.bad{color:#b00;font-weight:bold}.ok{color:#070}
dl.meta{display:grid;grid-template-columns:max-content auto;gap:2px 14px}dl.meta dt{color:#555}
"""


def _e(x) -> str:
    return html.escape(str(x))


def _table(head: list[str], rows: list[list], num: set[int] | None = None,
           warn: list[bool] | None = None) -> str:
    num = num or set()
    out = ["<table><tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>"]
    for i, r in enumerate(rows):
        cls = ' class="warn"' if warn and warn[i] else ""
        cells = "".join(
            f'<td class="n">{_e(v)}</td>' if j in num else f"<td>{_e(v)}</td>"
            for j, v in enumerate(r)
        )
        out.append(f"<tr{cls}>{cells}</tr>")
    out.append("</table>")
    return "\n".join(out)


def _dur(s: int | None) -> str:
    if s is None:
        return "-"
    s = int(s)
    if s < 60:
        return f"{s} s"
    d, rem = divmod(s, DAY)
    h, rem = divmod(rem, 3600)
    m = rem // 60
    if d >= 2:
        return f"{d} d {h} h"
    h += 24 * d
    return f"{h} h {m:02d} min" if h else f"{m} min"


def _event_text(e: dict) -> str:
    skip = ("kind", "t", "seq", "event_seq", "event", "who", "time")
    return ", ".join(f"{k} {table_value(v)}" for k, v in e.items() if k not in skip)


def _head(rep: Report, took: float | None) -> list[str]:
    """The title, what the log is, and the section links."""
    log = rep.log
    st = log.status
    summ = log.summary
    info = rep.info or {}
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
             f"<title>Theca therapy report: {_e(Path(log.path).name)}</title>"
             f"<style>{_CSS}</style></head><body>"]
    parts.append("<h1>Theca therapy report</h1>")
    parts.append("<p class='note'>Research platform: not for use in people. Generated by "
                 f"<code>theca report</code> on {_e(_dt.datetime.now(_dt.UTC).strftime('%Y-%m-%d %H:%M UTC'))}"
                 + (f" in {took:.1f} s" if took else "") + ".</p>")
    # the span of what the log holds: its status frames and its events (a pulled log has
    # one status, at the pull, and events of months before it)
    ts = [int(st["time"].min()), int(st["time"].max())] if len(st["time"]) else []
    ts += [e["time"] for e in log.events]
    first = iso(min(ts)) if ts else "-"
    last = iso(max(ts)) if ts else "-"
    conc = f"{rep.conc_ng_ml / 1e6 * rep.per_mg:g} {rep.unit}/mL" if rep.conc_ng_ml else "-"
    integrity = ("<span class='ok'>clean</span>" if summ["clean"] else
                 "<span class='bad'>" + _e("; ".join(summ["problems"])) + "</span>")
    meta = [
        ("log", Path(log.path).name),
        ("device", f"{info.get('serial', '?')} (firmware {info.get('firmware', '?')}, "
                   f"{info.get('runtime', '?')}, stroke {info.get('stroke_nl', '?')} nL, "
                   f"capacity {info.get('capacity_ul', 0) / 1000:g} mL)"),
        ("period", f"{first} to {last}"),
        ("drug", f"{rep.drug or '-'} {conc}"),
        ("frames", f"{summ['frames']} ({', '.join(f'{k} {v}' for k, v in sorted(summ['kinds'].items()))})"),
    ]
    parts.append("<dl class='meta'>" + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in meta)
                 + f"<dt>integrity</dt><dd>{integrity}</dd></dl>")
    parts.append("<p>Sections: <a href='#reservoir'>reservoir</a> · <a href='#daily'>drug per "
                 "day</a> · <a href='#timeline'>alarms and events</a> · <a href='#trumpet'>trumpet "
                 "curve</a></p>")

    return parts


def _reservoir_section(rep: Report, pictures: dict[str, str]) -> list[str]:
    """1: the reservoir over time, its refills and its lowest days."""
    st = rep.log.status
    parts: list[str] = []
    parts.append("<h2 id='reservoir'>1. Reservoir</h2>")
    parts.append(f"<img src='{pictures['reservoir']}' alt='reservoir over time'>")
    if len(st["time"]):
        order = np.argsort(st["time"], kind="stable")
        res = st["reservoir_nl"][order] / 1000
        kmin = int(np.argmin(res))
        last_i = int(order[-1])
        eta = int(st["low_eta"][last_i])
        rows: list[list] = [
            ["at the start", iso(int(st["time"][order[0]])), f"{res[0]:.3f}"],
            ["lowest", iso(int(st["time"][order[kmin]])), f"{res[kmin]:.3f}"],
            ["at the end", iso(int(st["time"][last_i])), f"{res[-1]:.3f}"],
        ]
        parts.append(_table(["reservoir", "time", "uL"], rows, {2}))
        parts.append(f"<p>Low-reservoir alarm threshold: {rep.low_ul:.0f} uL. Projected "
                     "low-reservoir alarm (refill by): <b>"
                     + (_e(iso(eta)) if eta else "none projected") + "</b>.</p>")
    if rep.refills:
        parts.append(_table(
            ["refill", "emptied (uL)", "filled (uL)", "concentration (ng/mL)", "by"],
            [[e["t"], f"{e.get('residual_ul', 0):.3f}", f"{e.get('volume_ul', 0):.3f}",
              e.get("conc_ng_ml", "-"), e.get("who", "-")] for e in rep.refills], {1, 2, 3}))
    else:
        parts.append("<p>No refills in this log.</p>")
    parts.append(_table(
        ["day (UTC)", "reservoir at end of day (uL)", "lowest (uL)"],
        [[d.date, f"{d.reservoir_end_ul:.3f}" if d.reservoir_end_ul is not None else "-",
          f"{d.reservoir_min_ul:.3f}" if d.reservoir_min_ul is not None else "-"]
         for d in _reservoir_days(rep)], {1, 2},
        [d.reservoir_min_ul is not None and d.reservoir_min_ul < rep.low_ul
         for d in _reservoir_days(rep)]))

    return parts


def _daily_section(rep: Report, pictures: dict[str, str]) -> list[str]:
    """2: drug delivered per day against the prescription."""
    parts: list[str] = []
    parts.append("<h2 id='daily'>2. Drug delivered per day against the prescription</h2>")
    parts.append(f"<img src='{pictures['daily']}' alt='drug delivered per day'>")
    parts.append(
        "<p class='note'><b>How this is computed.</b> <i>Delivered</i>: the growth of the pump's "
        "delivered-volume counter between consecutive status frames, on the day of the earlier "
        "frame, times the concentration the patient was receiving (the previous concentration "
        "while the catheter still held it after a refill). <i>Prescribed</i> = basal integral + "
        "timed boluses, read from the log alone: the basal drug rate of each prescription step "
        "(rate x concentration of status frames that run without a bolus, and the rate of each "
        "step_changed event) is integrated over the hours the log covers, changing exactly at "
        "each step change, whatever the pump did, so that a stall or a suspension shows as a "
        "shortfall; timed boluses count with the dose of each one started or denied. Patient "
        "and clinician boluses are on demand: shown in orange and in their own column, they are "
        "left out of the comparison. <i>Error</i> = (delivered on schedule - prescribed) / "
        "prescribed; the pump delivers in strokes, so a day is within one stroke of its exact "
        "share. Days are UTC days; a row with fewer than 24 hours covers part of a day.</p>")
    rows: list[list] = []
    warn: list[bool] = []
    k, u = rep.per_mg, rep.unit  # in the unit the drug is dosed in

    def q(mg: float) -> str:
        return f"{mg * k:.4f}"

    for d in drug_days(rep.days):
        err = d.error_pct
        rows.append([d.date, f"{d.hours:.1f}", f"{d.delivered_ul:.2f}", q(d.delivered_mg),
                     q(d.on_demand_mg), q(d.scheduled_mg), q(d.basal_mg),
                     q(d.timed_mg), q(d.prescribed_mg),
                     f"{err:+.2f}" if err is not None else "-",
                     f"{d.timed_given}" + (f" (+{d.timed_missed} missed)" if d.timed_missed else ""),
                     d.patient_given, d.patient_denied, d.clinician_given])
        warn.append(err is not None and abs(err) > 1.0)
    tot = _totals(rep.days)
    rows.append(["total", f"{tot.hours:.1f}", f"{tot.delivered_ul:.2f}", q(tot.delivered_mg),
                 q(tot.on_demand_mg), q(tot.scheduled_mg), q(tot.basal_mg),
                 q(tot.timed_mg), q(tot.prescribed_mg),
                 f"{tot.error_pct:+.2f}" if tot.error_pct is not None else "-",
                 tot.timed_given, tot.patient_given, tot.patient_denied, tot.clinician_given])
    warn.append(False)
    parts.append(_table(
        ["day (UTC)", "hours", "delivered (uL)", f"delivered ({u})", f"on demand ({u})",
         f"on schedule ({u})", f"prescribed basal ({u})", f"prescribed timed ({u})",
         f"prescribed ({u})", "error (%)", "timed boluses", "patient boluses", "denied",
         "clinician boluses"], rows, set(range(1, 14)), warn))
    drugs = sorted({g for d in rep.days for g in d.per_drug_mg})
    if len(drugs) > 1:
        # a change of drug: each drug's amount apart, each in the unit it is dosed in
        from theca.inputs.druglib import dose_unit, load_druglib

        lib = load_druglib()
        named = [(g, lib.by_id(g)) for g in drugs]
        heads = [f"{d.name if d else f'drug {g}'} ({dose_unit(d)})" for g, d in named]
        scale = [1000 if dose_unit(d) == "mcg" else 1 for _, d in named]
        parts.append("<p>After a change of drug each drug is counted apart (the catheter's "
                     "old drug while the bridge pushes it out is the old drug's).</p>")
        parts.append(_table(["day (UTC)", *heads],
                            [[d.date, *[f"{d.per_drug_mg.get(g, 0.0) * k:.4f}"
                                        for g, k in zip(drugs, scale, strict=True)]]
                             for d in rep.days], set(range(1, 1 + len(drugs)))))

    return parts


def _timeline_section(rep: Report, pictures: dict[str, str]) -> list[str]:
    """3: alarms, the time the pump was not running, and the events."""
    log = rep.log
    st = log.status
    parts: list[str] = []
    parts.append("<h2 id='timeline'>3. Alarms and events</h2>")
    parts.append(f"<img src='{pictures['timeline']}' alt='alarms and events timeline'>")
    end_t = int(st["time"].max()) if len(st["time"]) else None
    if rep.spans:
        parts.append(_table(
            ["alarm", "critical", "raised", "cleared", "lasted", "acknowledged", "reservoir (uL)"],
            [[sp.alarm, "yes" if sp.critical else "no", iso(sp.raised),
              iso(sp.cleared) if sp.cleared is not None else "active at end of log",
              _dur((sp.cleared if sp.cleared is not None else end_t or sp.raised) - sp.raised),
              iso(sp.acknowledged) if sp.acknowledged else "-",
              f"{sp.reservoir_ul:.3f}" if sp.reservoir_ul is not None else "-"]
             for sp in rep.spans], {6}, [sp.critical for sp in rep.spans]))
    else:
        parts.append("<p>No alarms.</p>")
    if rep.modes:
        parts.append(_table(["pump not running", "from", "to", "lasted"],
                            [[m, iso(a), iso(b), _dur(b - a)] for a, b, m in rep.modes]))
    counts = log.summary["events"]
    parts.append(_table(["event", "count"], [[k, v] for k, v in sorted(counts.items())], {1}))
    shown = rep.events[:500]
    parts.append(f"<p>Events other than step changes and timed boluses ({len(rep.events)}"
                 + (", the first 500 shown" if len(rep.events) > 500 else "") + "):</p>")
    parts.append(_table(["time", "event", "by", "details"],
                        [[e["t"], e["event"], e.get("who", "-"), _event_text(e)] for e in shown]))

    return parts


def _trumpet_section(rep: Report, pictures: dict[str, str]) -> list[str]:
    """4: the trumpet curve (IEC 60601-2-24)."""
    parts: list[str] = []
    parts.append("<h2 id='trumpet'>4. Trumpet curve (IEC 60601-2-24)</h2>")
    tr = rep.trumpet
    if tr is None:
        parts.append(f"<p class='bad'>No trumpet curve: {_e(rep.trumpet_why)}.</p>")
    else:
        parts.append(f"<img src='{pictures['trumpet']}' alt='trumpet curve'>")
        parts.append(
            f"<p>Hour {iso(tr.start)} to {iso(tr.start + trumpet.PERIOD_S)}, set rate "
            f"{tr.rate_nl_day / 1000:.3f} uL/day ({tr.rate_ul_h:.4f} uL/h), "
            f"{len(tr.times)} samples of the delivered volume every {trumpet.SAMPLE_S} s (status "
            f"frames every {tr.status_period_s} s). Mean flow error over the hour A = "
            f"<b>{tr.mean_error:+.3f} %</b>.</p>")
        parts.append(_table(["window P (min)", "Ep(max) (%)", "Ep(min) (%)", "windows"],
                            [[p, f"{mx:+.3f}", f"{mn:+.3f}", m] for p, (mx, mn, m) in tr.windows.items()],
                            {0, 1, 2, 3}))
        parts.append(
            "<p class='note'>Ep of a window of P minutes = 100 x (mean flow over the window - set "
            "rate) / set rate, over every window of 2P consecutive 30 s intervals in the hour; "
            "Ep(max) and Ep(min) are the extremes. The pump moves the drug in strokes of "
            f"{tr.stroke_nl or '?'} nL, so short windows swing by whole strokes. The hour is the "
            "first with steady delivery (one set rate, running, every 30 s sampled) beginning an "
            "hour or more after therapy start, unless chosen with --trumpet-start; "
            "<code>theca trumpet</code> gives the same numbers.</p>")
    return parts


def render_html(rep: Report, pictures: dict[str, str], took: float | None = None) -> str:
    """The page, pointing at the PNG files named in `pictures`."""
    parts = _head(rep, took)
    for section in (_reservoir_section, _daily_section, _timeline_section, _trumpet_section):
        parts += section(rep, pictures)
    parts.append("</body></html>\n")
    return "\n".join(parts)


def drug_days(days: list[DayRow]) -> list[DayRow]:
    """The days with delivery to account for (not a day holding only the log's last frame)."""
    return [d for d in days if d.hours > 0 or d.delivered_ul > 0]


def _reservoir_days(rep: Report) -> list[DayRow]:
    return [d for d in rep.days if d.reservoir_end_ul is not None]


def _totals(days: list[DayRow]) -> DayRow:
    t = DayRow("total")
    for d in days:
        for k in ("hours", "delivered_ul", "delivered_mg", "on_demand_ul", "on_demand_mg",
                  "basal_mg", "timed_mg", "timed_given", "timed_missed", "patient_given",
                  "patient_denied", "clinician_given"):
            setattr(t, k, getattr(t, k) + getattr(d, k))
    return t


def make_report(path, out_dir, trumpet_start: int | None = None,
                log: LogData | None = None) -> tuple[Path, Report]:
    """Write DIR/index.html and its PNGs; returns (index path, report)."""
    t0 = time.perf_counter()
    if log is None:
        log = read_log(path)
    rep = analyse(log, trumpet_start)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pics = {"reservoir": "reservoir.png", "daily": "daily.png", "timeline": "timeline.png"}
    plot_reservoir(rep, out / pics["reservoir"])
    plot_daily(rep, out / pics["daily"])
    plot_timeline(rep, out / pics["timeline"])
    if rep.trumpet is not None:
        pics["trumpet"] = "trumpet.png"
        trumpet.plot(rep.trumpet, out / pics["trumpet"])
    else:
        (out / "trumpet.png").unlink(missing_ok=True)  # never leave a stale picture
    index = out / "index.html"
    index.write_text(render_html(rep, pics, time.perf_counter() - t0), encoding="utf-8")
    return index, rep


# --- command line ------------------------------------------------------------------------------


