"""The pictures of `theca report`, drawn with matplotlib (Agg): the reservoir over time,
the drug delivered per day, the alarms and events on a timeline."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

import numpy as np

from theca.analysis.report_numbers import DAY, Report, drug_days, duration, unix_time


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
    t = [unix_time(x) for x in st["time"][order].tolist()]
    ml = st["reservoir_nl"][order] / 1e6
    fig, ax = plt.subplots(figsize=(10, 4.2))
    ax.plot(t, ml, color="tab:blue", lw=1.5, label="reservoir")
    ax.axhline(rep.low_ul / 1000, color="tab:red", ls="--", lw=1.2,
               label=f"low-reservoir alarm {rep.low_ul / 1000:g} mL")
    for i, e in enumerate(rep.refills):
        x = unix_time(e["time"])
        ax.axvline(x, color="tab:green", lw=1, alpha=0.7,
                   label="refill" if i == 0 else None)
        ax.annotate(f"refill {e.get('volume_ul', 0) / 1000:.2f} mL", (x, e.get("volume_ul", 0) / 1000),
                    textcoords="offset points", xytext=(5, -14), fontsize=8, color="tab:green")
    for sp in rep.spans:
        if sp.alarm in ("low_reservoir", "empty_reservoir"):
            ax.plot([unix_time(sp.raised)], [(sp.reservoir_ul or 0) / 1000], "v", color="tab:red")
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
        a = unix_time(sp.raised)
        b = unix_time(sp.cleared if sp.cleared is not None else t_hi)
        color = "tab:red" if sp.critical else "tab:orange"
        # at least a visible width: a 39-minute stall in 30 days is otherwise a hairline
        ax.barh(y[sp.alarm], max(b - a, _dt.timedelta(seconds=0.004 * span)), left=a,
                height=0.5, color=color, alpha=0.85)
        ax.plot([a], [y[sp.alarm]], "|", color="black", ms=12)
        end = sp.cleared if sp.cleared is not None else t_hi
        if (end - sp.raised) < 0.05 * span:  # too short to see: say how long
            ax.annotate(f" {duration(end - sp.raised)}", (a, y[sp.alarm]), xytext=(4, -3),
                        textcoords="offset points", fontsize=8, color=color)


def _mode_lane(ax, rep: Report, lane: int, span: int) -> None:
    for a, b, mode in rep.modes:
        color = _MODE_COLORS.get(mode, "tab:gray")
        ax.barh(lane, max(unix_time(b) - unix_time(a), _dt.timedelta(seconds=0.004 * span)),
                left=unix_time(a), height=0.5, color=color, alpha=0.8)
        ax.plot([unix_time(a)], [lane], "|", color=color, ms=12)
        if (b - a) < 0.05 * span:
            ax.annotate(f" {mode} {duration(b - a)}", (unix_time(a), lane), xytext=(4, -3),
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
    others: list[tuple[int, str]] = []
    for e in rep.log.events:
        ev = e["event"]
        key = (ev, e.get("bolus")) if ev == "bolus_started" else (ev, None)
        spec = _MARKS.get(key)
        if spec is None:
            if ev in ("step_changed", "bolus_completed", "alarm_raised", "alarm_cleared"):
                continue
            spec = ("other events", "o", "black", "other event")
        lane, m, c, label = spec
        ax.plot([unix_time(e["time"])], [y[lane]], m, color=c, ms=6 if m != "|" else 9,
                label=label if label not in seen else None, mfc="none" if m == "o" else c)
        if lane == "other events":
            others.append((e["time"], ev.replace("_", " ")))
        seen.add(label)
    _name_others(ax, others, y["other events"])
    return seen


def _name_others(ax, others: list[tuple[int, str]], lane: int) -> None:
    # each cluster of other events named once, its names stacked (a circle says nothing)
    if not others:
        return
    span = max(others[-1][0] - others[0][0], 1)
    groups: list[list[tuple[int, str]]] = []
    for t, name in others:
        if groups and t - groups[-1][-1][0] <= 0.02 * span + 3600:
            groups[-1].append((t, name))
        else:
            groups.append([(t, name)])
    for g in groups:
        names = list(dict.fromkeys(n for _, n in g))
        text = "\n".join(names[:4] + ([f"+{len(names) - 4} more"] if len(names) > 4 else []))
        ax.annotate(text, (unix_time(g[0][0]), lane), xytext=(4, 5), textcoords="offset points",
                    fontsize=6, color="dimgray", va="bottom")


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
    ax.set_xlim(unix_time(t_lo), unix_time(t_hi))
    _date_axis(ax, (t_hi - t_lo) / DAY)
    ax.grid(axis="x", alpha=0.3)
    if seen:
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.28), ncol=6, fontsize=8,
                  frameon=False)
    ax.set_title("Alarms and events (red: critical alarm, orange: other alarm)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
