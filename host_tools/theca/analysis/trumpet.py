"""`theca trumpet RUN.tlog --start ISO [--json] [--png FILE]`: the IEC 60601-2-24 trumpet curve.

The method of IEC 60601-2-24 (infusion pumps; "trumpet curve"), with the pump's own
telemetry in place of the balance:

- Samples: the delivered volume (`delivered_ul` of STATUS frames, exact to the nL)
  every S = 30 s over the analysis period T = 60 min from `--start`: 121 samples,
  120 intervals. A log whose status frames come every 30 s, or every P s with P
  dividing 30 (1, 2, 3, 5, 6, 10, 15 s), is sampled exactly (the frame at each
  30 s point); any other period is refused: the log lacks 30 s samples.
- Flow of interval i: Q_i = (D_i - D_(i-1)) / S. For an observation window of
  P = 2, 5, 11, 19 and 31 min (P/S = 2P consecutive intervals), sliding by one
  interval, there are m = (T - P)/S + 1 windows; the percentage flow error of
  window j is Ep_j = 100 (mean of Q over the window - r) / r, which is
  100 (volume in the window / P - r) / r. Ep(max) and Ep(min) are the largest and
  smallest Ep_j. The mean error A is the same over the whole hour.
- r, the set rate, is the STATUS `rate_ul_per_day` (basal plus any running bolus).
  The standard measures at one set rate, so an hour in which the set rate
  changes (a basal step, a bolus, a new prescription), the pump is not running
  (suspended, halted by an alarm), or the device clock is changed, is refused
  with exit status 2, naming what changed and when, and suggesting the next
  steady hour. A test engineer picks a steady hour; a curve that mixed two set
  rates would not be the standard's curve.

`--json` prints exactly `{"2": [max, min], "5": [...], "11": [...], "19": [...],
"31": [...]}` (percent, 3 decimals). Without `--start`, the first steady hour that
begins at least one hour after therapy start is used (the standard analyses the
second hour, after an hour to settle) and named on stderr.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from theca_protocol import names as N

from theca.errors import BadInput
from theca.log.data import LogData
from theca.log.devtime import iso
from theca.log.writers.base import table_value

#: Observation windows of IEC 60601-2-24, minutes.
WINDOWS_MIN = (2, 5, 11, 19, 31)
#: Sample interval, s.
SAMPLE_S = 30
#: Analysis period, s.
PERIOD_S = 3600
_N = PERIOD_S // SAMPLE_S  # intervals in the hour
_RUNNING = next(k for k, v in N.MODES.items() if v == "running")
# Events after which the set rate (or the clock) is not what it was.
_UNSTEADY_EVENTS = {"step_changed", "bolus_started", "bolus_completed", "prescription_changed",
                    "suspended", "resumed", "time_changed", "therapy_started", "boot"}


@dataclass
class Trumpet:
    """A trumpet curve: the hour, its samples and the errors per window."""

    start: int  # device time of the first sample
    rate_nl_day: int  # the set rate
    times: np.ndarray  # 121 device times, 30 s apart
    delivered_nl: np.ndarray  # delivered volume at each time (since therapy start)
    status_period_s: int | None  # how far apart the log's status frames are (None: unknown)
    mean_error: float  # A: % error of the mean flow over the hour
    windows: dict  # P (min) -> (Ep max, Ep min, number of windows)
    stroke_nl: int | None = None

    @property
    def flow_ul_h(self) -> np.ndarray:
        """Flow of each 30 s interval, uL/h."""
        return np.diff(self.delivered_nl) / 1000 * (3600 / SAMPLE_S)

    @property
    def rate_ul_h(self) -> float:
        """The set rate, uL/h."""
        return self.rate_nl_day / 1000 / 24

    def as_json(self) -> dict:
        """Exactly the interface's object: {"2": [max, min], ...} (percent, 3 decimals)."""
        return {str(p): [round(mx, 3), round(mn, 3)] for p, (mx, mn, _) in self.windows.items()}


def errors(delivered_nl: np.ndarray, rate_nl_day: int) -> tuple[float, dict]:
    """(A, {P: (Ep max, Ep min, windows)}) from 121 samples 30 s apart at set rate r.

    Ep of a window = 100 (volume in the window / its length - r) / r, for every
    window of 2P consecutive 30 s intervals.
    """
    d = np.asarray(delivered_nl, dtype=np.int64)
    if len(d) != _N + 1:
        raise ValueError(f"need {_N + 1} samples, got {len(d)}")
    r = float(rate_nl_day)
    out = {}
    for p in WINDOWS_MIN:
        m = 2 * p
        vol = (d[m:] - d[:-m]).astype(np.float64)  # nL in each window
        ep = 100.0 * (vol * 86400.0 / (m * SAMPLE_S) - r) / r
        out[p] = (float(ep.max()), float(ep.min()), len(ep))
    mean = 100.0 * ((d[-1] - d[0]) * 86400.0 / PERIOD_S - r) / r
    return float(mean), out


def sample_period(times: np.ndarray) -> int:
    """The most common spacing of status frames (s), 0 if it cannot be told."""
    d = np.diff(times)
    d = d[(d > 0) & (d < 86400)]
    if not len(d):
        return 0
    v, c = np.unique(d, return_counts=True)
    return int(v[np.argmax(c)])


def lacks_30s(period: int) -> BadInput:
    return BadInput(
        f"the log lacks 30 s samples: its status frames are {period} s apart, and a trumpet "
        "curve needs the delivered volume every 30 s (status every 30 s, or every 1, 2, 3, 5, "
        "6, 10 or 15 s); record the run with status_period_s = 30 in the scenario"
    )


def _fmt_rate(nl_day: int) -> str:
    return f"{nl_day / 1000:.3f} uL/day"


def _cause(events: list, t0: int, t1: int) -> str:
    """What happened in (t0, t1]: the events there, for an error message."""
    hits = [e for e in events if t0 < e["time"] <= t1 and e["event"] not in ("alarm_acknowledged",)]
    if not hits:
        return ""
    parts = []
    for e in hits[:3]:
        extra = ", ".join(f"{k} {table_value(v)}" for k, v in e.items()
                          if k not in ("kind", "t", "seq", "event_seq", "event", "who", "time"))
        parts.append(e["event"] + (f": {extra}" if extra else "") + f" at {e['t']}")
    return " (" + "; ".join(parts) + ")"


def _first_frame(times: np.ndarray, start: int, end: int) -> tuple[int, int | None]:
    # (index of the status frame at `start`, the status period near it), or BadInput
    if not len(times):
        raise BadInput("the log has no status frames, so no delivered volume to sample")
    lo, hi = int(times.min()), int(times.max())
    if start < lo or end > hi:
        raise BadInput(
            f"the hour from --start ({iso(start)} .. {iso(end)}) is not inside the "
            f"log's status frames ({iso(lo)} .. {iso(hi)})"
        )
    first = np.flatnonzero(times == start)
    near = times[(times >= start - 600) & (times <= end + 600)]
    period = sample_period(near) or sample_period(times)
    if not len(first):
        if period and SAMPLE_S % period:
            raise lacks_30s(period)
        cand = times[(times > start) & (times <= start + 3600)]
        nxt = f"; the next one is at {iso(int(cand[0]))}" if len(cand) else ""
        raise BadInput(
            f"--start: no status frame at {iso(start)} (status frames here are every "
            f"{period} s{nxt}); the first sample must be a status frame"
        )
    return int(first[0]), period


def _hour(times: np.ndarray, i0: int, end: int) -> slice:
    # the frames of the hour, in file order from the first at `start`
    j = i0
    n = len(times)
    while j + 1 < n and times[j + 1] <= end:
        if times[j + 1] < times[j]:
            raise BadInput(
                f"the device clock goes back within the hour, at frame time "
                f"{iso(int(times[j + 1]))} (time changed): choose another --start"
            )
        j += 1
    return slice(i0, j + 1)


def _samples(tt: np.ndarray, start: int, period: int | None) -> tuple[np.ndarray, np.ndarray]:
    # (the 30 s grid, the position in the hour's frames of the state at each grid second)
    grid = start + SAMPLE_S * np.arange(_N + 1)
    pos = np.searchsorted(tt, grid, side="right") - 1
    ok = (pos >= 0) & (tt[np.maximum(pos, 0)] == grid)
    if not ok.all():
        if period and SAMPLE_S % period:
            raise lacks_30s(period)
        miss = int(grid[np.argmin(ok)])
        raise BadInput(
            f"the log lacks the 30 s sample at {iso(miss)}: no status frame at that time "
            f"(frames lost, or the pump restarted); choose another --start"
        )
    return grid, pos


def _steady_rate(log: LogData, inside: np.ndarray, start: int, end: int,
                 suggestion: str) -> int:
    # the one set rate of the hour (every frame running at it, no bolus or change)
    st = log.status
    times = st["time"]
    modes = st["mode"][inside]
    rates = st["rate_nl_day"][inside].astype(np.int64)
    bad_mode = np.flatnonzero(modes != _RUNNING)
    if len(bad_mode):
        k = inside[bad_mode[0]]
        alarms = N.alarm_names(int(st["alarms"][k]))
        raise BadInput(
            f"the pump is not delivering steadily in this hour: mode "
            f"{N.MODES.get(int(st['mode'][k]), st['mode'][k])} at {iso(int(times[k]))}"
            + (f" (alarms: {', '.join(alarms)})" if alarms else "") + suggestion
        )
    change = np.flatnonzero(rates != rates[0])
    if len(change):
        k = inside[change[0]]
        raise BadInput(
            f"the set rate changes within the hour: {_fmt_rate(int(rates[0]))} until "
            f"{iso(int(times[k - 1]))}, then {_fmt_rate(int(st['rate_nl_day'][k]))} at "
            f"{iso(int(times[k]))}{_cause(log.events, int(times[k - 1]), int(times[k]))}; "
            "a trumpet curve is measured at one set rate" + suggestion
        )
    rate = int(rates[0])
    if rate <= 0:
        raise BadInput(f"the set rate is 0 in this hour: nothing to measure{suggestion}")
    for e in log.events:
        if start < e["time"] < end and e["event"] in _UNSTEADY_EVENTS:
            if e["event"] == "step_changed" and round(e.get("rate_ul_per_day", -1) * 1000) == rate:
                continue  # a new step at the same rate changes nothing
            raise BadInput(
                f"{e['event']} at {e['t']} within the hour: the set rate is not steady"
                + suggestion
            )
    return rate


def compute(log: LogData, start: int, hint: bool = True) -> Trumpet:
    """The trumpet curve of the hour from `start` (device time); BadInput naming the problem."""
    st = log.status
    times = st["time"]
    end = start + PERIOD_S
    i0, period = _first_frame(times, start, end)
    seg = _hour(times, i0, end)
    tt = times[seg]
    grid, pos = _samples(tt, start, period)
    n = len(times)
    dl = st["delivered_total_nl"][np.arange(n)[seg][pos]]
    suggestion = ""
    if hint:
        later = first_steady_hour(log, after=start + SAMPLE_S)
        suggestion = (f"; the next steady hour starts at {iso(later)}" if later is not None
                      else "; the log has no later steady hour")
    # Steadiness: every status frame in [start, end) running at one set rate.
    rate = _steady_rate(log, np.arange(n)[seg][tt < end], start, end, suggestion)
    if np.any(np.diff(dl) < 0):
        k = int(np.argmax(np.diff(dl) < 0)) + 1
        raise BadInput(f"the delivered volume goes down at {iso(int(grid[k]))} "
                       "(therapy restarted?): choose another --start")
    mean, win = errors(dl, rate)
    stroke = None
    for info in log.infos:
        stroke = info.get("stroke_nl", stroke)
    return Trumpet(start, rate, grid, dl, period, mean, win, stroke)


def first_steady_hour(log: LogData, after: int | None = None) -> int | None:
    """Start (device time) of the first hour from `after` on that `compute` accepts, or None.

    Candidates are status frame times whose hour has a status frame every 30 s,
    running at one positive set rate, with no rate-changing event inside.
    """
    st = log.status
    times = st["time"]
    if not len(times):
        return None
    order = np.argsort(times, kind="stable")
    ts = times[order]
    u, last = np.unique(ts[::-1], return_index=True)
    last = order[len(ts) - 1 - last]  # index of the last frame at each distinct time
    cand = np.ones(len(u), dtype=bool)
    if after is not None:
        cand &= u >= after
    for k in range(1, _N + 1):
        want = u + SAMPLE_S * k
        p = np.minimum(np.searchsorted(u, want), len(u) - 1)
        cand &= u[p] == want
        if not cand.any():
            return None
    running = (st["mode"][last] == _RUNNING) & (st["rate_nl_day"][last] > 0)
    rate = st["rate_nl_day"][last].astype(np.int64)
    # change points in time order: a frame not running, or at another rate than the one before
    brk = ~running
    brk[1:] |= rate[1:] != rate[:-1]
    cs = np.cumsum(brk)
    # frames in [u, u + 3600): from i to e - 1
    e = np.searchsorted(u, u + PERIOD_S) - 1
    i = np.arange(len(u))
    cand &= running & (cs[np.maximum(e, 0)] - cs[i] == 0)
    ev = np.array(sorted(x["time"] for x in log.events if x["event"] in _UNSTEADY_EVENTS),
                  dtype=np.int64)
    if len(ev):
        a = np.searchsorted(ev, u, side="right")
        b = np.searchsorted(ev, u + PERIOD_S, side="left")
        cand &= b <= a
    for k in np.flatnonzero(cand)[:50].tolist():
        try:
            compute(log, int(u[k]), hint=False)
        except BadInput:
            continue
        return int(u[k])
    return None


def default_start(log: LogData) -> int | None:
    """The first steady hour beginning at least an hour after therapy start (or log start)."""
    t0 = next((e["time"] for e in log.events if e["event"] == "therapy_started"), None)
    if t0 is None and len(log.status["time"]):
        t0 = int(log.status["time"].min())
    if t0 is None:
        return None
    return first_steady_hour(log, after=t0 + PERIOD_S)


def text(tr: Trumpet, path: str) -> str:
    """The curve as text for a person."""
    dv = int(tr.delivered_nl[-1] - tr.delivered_nl[0])
    lines = [
        f"trumpet curve (IEC 60601-2-24) of {path}",
        f"hour         {iso(tr.start)} .. {iso(tr.start + PERIOD_S)} "
        f"({_N + 1} samples every {SAMPLE_S} s, from status frames every {tr.status_period_s} s)",
        f"set rate     {_fmt_rate(tr.rate_nl_day)} ({tr.rate_ul_h:.4f} uL/h)",
        f"delivered    {dv / 1000:.3f} uL in the hour (set rate: {tr.rate_nl_day / 24000:.3f} uL)",
        f"mean error   {tr.mean_error:+.3f} %  (A, over the hour)",
        "",
        "window    Ep(max)     Ep(min)   windows",
    ]
    for p, (mx, mn, m) in tr.windows.items():
        lines.append(f"{p:>3} min  {mx:+8.3f} %  {mn:+8.3f} %  {m:>6}")
    if tr.stroke_nl:
        every = tr.stroke_nl / (tr.rate_nl_day / 86400)
        lines += ["", f"one stroke is {tr.stroke_nl} nL: at this rate one every {every:.0f} s, so a "
                  f"{WINDOWS_MIN[0]} min window holds {120 / every:.2f} strokes on average and its "
                  "error moves in whole strokes"]
    return "\n".join(lines) + "\n"


def plot(tr: Trumpet, path, title: str | None = None) -> Path:
    """A PNG: flow per 30 s over the hour (top) and the trumpet curve (bottom)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 7.5), gridspec_kw={"height_ratios": [1, 1.4]})
    minutes = (tr.times[1:] - tr.start) / 60
    ax1.step(minutes, tr.flow_ul_h, where="post", color="tab:blue", lw=1,
             label="flow per 30 s interval")
    ax1.axhline(tr.rate_ul_h, color="black", ls="--", lw=1, label=f"set rate {tr.rate_ul_h:.3f} uL/h")
    ax1.set_xlabel(f"minutes from {iso(tr.start)}")
    ax1.set_ylabel("flow (uL/h)")
    ax1.set_xlim(0, 60)
    ax1.set_ylim(bottom=min(0.0, float(tr.flow_ul_h.min())), top=float(tr.flow_ul_h.max()) * 1.3 + 1)
    ax1.legend(loc="upper right", fontsize=8, ncol=2)
    ax1.grid(alpha=0.3)
    ps = list(tr.windows)
    mx = [tr.windows[p][0] for p in ps]
    mn = [tr.windows[p][1] for p in ps]
    ax2.plot(ps, mx, "o-", color="tab:red", label="Ep(max)")
    ax2.plot(ps, mn, "o-", color="tab:blue", label="Ep(min)")
    ax2.fill_between(ps, mn, mx, color="tab:gray", alpha=0.15)
    ax2.axhline(tr.mean_error, color="black", ls="--", lw=1,
                label=f"mean error A = {tr.mean_error:+.2f} %")
    ax2.axhline(0, color="gray", lw=0.6)
    for p, a, b in zip(ps, mx, mn, strict=True):
        ax2.annotate(f"{a:+.1f}", (p, a), textcoords="offset points", xytext=(0, 6),
                     ha="center", fontsize=8)
        ax2.annotate(f"{b:+.1f}", (p, b), textcoords="offset points", xytext=(0, -13),
                     ha="center", fontsize=8)
    ax2.margins(y=0.15)
    ax2.set_xticks(ps)
    ax2.set_xlabel("observation window P (min)")
    ax2.set_ylabel("flow error Ep (%)")
    ax2.legend(loc="upper right", fontsize=8)
    ax2.grid(alpha=0.3)
    fig.suptitle(title or f"Trumpet curve (IEC 60601-2-24), set rate "
                 f"{tr.rate_nl_day / 1000:.3f} uL/day", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


# --- command line ------------------------------------------------------------------------------


