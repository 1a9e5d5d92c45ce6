"""The numbers of `theca report`, from the log alone: per day what was delivered against the
prescription, the alarm and mode spans, the notable events, the trumpet hour (`analyse`).
Days are UTC calendar days of device time, as in `theca simulate`'s summary.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from functools import cached_property
from typing import NamedTuple

import numpy as np
from theca_protocol import names as N

from theca.analysis import trumpet
from theca.errors import BadInput
from theca.log.data import LogData
from theca.log.devtime import iso
from theca.log.fills import fill_changes
from theca.log.records import Renderer

_RUNNING = next(k for k, v in N.MODES.items() if v == "running")
# STATUS.flags: a bolus is running (rate = basal + bolus); the catheter still holds the
# previous concentration
_FLAG_BOLUS = N.mask_of(N.STATUS_FLAGS, "bolus_running")
_FLAG_BRIDGE = N.mask_of(N.STATUS_FLAGS, "bridge")
DAY = 86400


def unix_time(t: int) -> _dt.datetime:
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
    mix: np.ndarray  # index into `mixes`: an admixture's other drugs delivered
    mixes: list  # [((drug id, conc ng/mL), ...), ...]

    @property
    def n(self) -> int:
        return len(self.t)

    def at(self, t: int) -> int:
        """Index of the first sample at or after `t`, clipped to the last."""
        return min(int(np.searchsorted(self.t, t)), self.n - 1)


def _series(log: LogData) -> _Series:
    st = log.status
    times = st["time"].astype(np.int64)
    ftimes, mixes = fill_changes(log.events)
    # (a frame of the refill's second is the one before it: the bridge takes its fill)
    mix_i = _through_bridge(st, np.searchsorted(np.array(ftimes), times, side="left") - 1)
    order = np.argsort(times, kind="stable")
    conc = effective_conc(st)
    basal = _basal_ng_day(log, conc)
    t_o = times[order]
    dl = st["delivered_total_nl"][order].astype(np.int64)
    c_o = conc[order]
    b_o = basal[order]
    g_o = effective_drug(st)[order]
    m_o = mix_i[order]
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
        m_o = np.concatenate(([m_o[0]], m_o))
    dates = np.array([_date(t) for t in t_o.tolist()])
    return _Series(order, t_o, dl, c_o, b_o, dates, g_o, m_o, mixes)


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
    mix = np.where(s.drug[:-1] > 0, s.mix[:-1], s.mix[1:])
    for d, v, c, g, m in zip(s.dates[:-1].tolist(), dv.tolist(), conc.tolist(), drug.tolist(),
                             mix.tolist(), strict=True):
        r = days[d]
        r.delivered_ul += v
        mg = _mg(v, c)
        r.delivered_mg += mg
        if mg:
            # each drug apart: one drug's mg say nothing of another's
            r.per_drug_mg[g] = r.per_drug_mg.get(g, 0.0) + mg
            for k, ck in s.mixes[m]:
                # the same volume carries each drug of an admixture at its own conc
                r.per_drug_mg[k] = r.per_drug_mg.get(k, 0.0) + _mg(v, ck)


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


#: A report covers at most this many days: longer than any pump lives (the battery's 7
#: years) and than any scenario runs. A log whose frames span more is damaged or crafted;
#: a report of it would take gigabytes and minutes (issue 23: 47,519 days from 55 kB).
MAX_REPORT_DAYS = 3660


def _check_span(log: LogData) -> None:
    st = log.status["time"]
    times = [int(st.min()), int(st.max())] if len(st) else []
    times += [e["time"] for e in log.events]
    if not times:
        return
    lo, hi = int(min(times)), int(max(times))
    if hi - lo > MAX_REPORT_DAYS * DAY:
        raise BadInput(f"{log.path}: its frames span {(hi - lo) // DAY} days ({iso(lo)} to "
                       f"{iso(hi)}), more than the {MAX_REPORT_DAYS} days a report covers: a "
                       "damaged or crafted log? (`theca decode --summary` shows its frames)")


def analyse(log: LogData, trumpet_start: int | None = None) -> Report:
    """Compute every number of the report (no drawing). BadInput for a log whose time span
    is beyond sense (MAX_REPORT_DAYS)."""
    _check_span(log)
    info = log.infos[-1] if log.infos else None
    low = info.get("low_reservoir_ul", 2000.0) if info else 2000.0
    st = log.status
    drug, conc = None, 0
    if len(st["time"]):
        last = int(np.argmax(st["time"]))
        r = Renderer()
        drug = r.drug_name(int(st["drug"][last]))
        conc = int(st["conc_ng_ml"][last])
    tr, why = None, None
    try:
        start = trumpet_start if trumpet_start is not None else trumpet.default_start(log)
        if start is None:
            if len(st["time"]) > 1 and trumpet.SAMPLE_S % max(trumpet.sample_period(st["time"]), 1):
                raise trumpet.lacks_30s(trumpet.sample_period(st["time"]))
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


def drug_days(days: list[DayRow]) -> list[DayRow]:
    """The days with delivery to account for (not a day holding only the log's last frame)."""
    return [d for d in days if d.hours > 0 or d.delivered_ul > 0]


def duration(s: int | None) -> str:
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
