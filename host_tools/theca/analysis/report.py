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

import time
from pathlib import Path

from theca.analysis import trumpet
from theca.analysis.report_numbers import (
    AlarmSpan,
    DayRow,
    Report,
    alarm_spans,
    analyse,
    daily,
    drug_days,
    mode_spans,
    notable_events,
)
from theca.analysis.report_page import render_html
from theca.analysis.report_plots import plot_daily, plot_reservoir, plot_timeline
from theca.log.data import LogData, read_log
from theca.outputs import atomic_open, atomic_path, output_folder

__all__ = ["AlarmSpan", "DayRow", "Report", "alarm_spans", "analyse", "daily", "drug_days",
           "make_report", "mode_spans", "notable_events"]


def make_report(path, out_dir, trumpet_start: int | None = None,
                log: LogData | None = None) -> tuple[Path, Report]:
    """Write DIR/index.html and its PNGs; returns (index path, report)."""
    t0 = time.perf_counter()
    if log is None:
        log = read_log(path)
    rep = analyse(log, trumpet_start)
    out = output_folder(out_dir)
    pics = {"reservoir": "reservoir.png", "daily": "daily.png", "timeline": "timeline.png"}
    # each file written beside its name and renamed over it: never through a link in DIR
    for name, plot in (("reservoir", plot_reservoir), ("daily", plot_daily),
                       ("timeline", plot_timeline)):
        with atomic_path(out / pics[name]) as tmp:
            plot(rep, tmp)
    if rep.trumpet is not None:
        pics["trumpet"] = "trumpet.png"
        with atomic_path(out / pics["trumpet"]) as tmp:
            trumpet.plot(rep.trumpet, tmp)
    else:
        (out / "trumpet.png").unlink(missing_ok=True)  # never leave a stale picture
    index = out / "index.html"
    with atomic_open(index, newline="") as f:
        f.write(render_html(rep, pics, time.perf_counter() - t0))
    return index, rep
