"""`--format csv`: the common fields as columns, the rest of each record as JSON in
`details`."""

from __future__ import annotations

import csv

from theca.log.frames import Selection
from theca.log.records import Renderer, to_json
from theca.log.stats import Summary
from theca.log.tlog import Tlog
from theca.log.writers.base import Out, Writer, batches

_CSV_COLS = [
    "kind",
    "t",
    "seq",
    "mode",
    "reservoir_ul",
    "delivered_ul",
    "rate_ul_per_day",
    "alarms",
    "low_reservoir_eta",
    "event_seq",
    "event",
    "details",
]
_CSV_SET = set(_CSV_COLS)


def _cell(v) -> str:
    if v is None:
        return ""
    if type(v) is float:
        return f"{v:.3f}"
    if type(v) is list:
        return "|".join(str(x) for x in v)
    return str(v)


class _Sink:
    def __init__(self, out: Out):
        self.out = out

    def write(self, s: str) -> None:
        self.out.line(s)


def write_csv(t: Tlog, stream, summary: Summary, sel: Selection | None = None) -> int:
    """Write every (selected) frame of `t` to `stream` as a CSV row, after a header row."""
    r = Renderer()
    data = t.data
    out = Out(stream)
    w = csv.writer(_Sink(out), lineterminator="")
    w.writerow(_CSV_COLS)
    n = 0
    for b in batches(t, summary, sel):
        for s, ln in zip(b.starts.tolist(), b.lens.tolist(), strict=True):
            rec = r.record(data[s : s + ln])
            row = [_cell(rec.get(c)) for c in _CSV_COLS[:-1]]
            rest = {k: v for k, v in rec.items() if k not in _CSV_SET}
            row.append(to_json(rest) if rest else "")
            w.writerow(row)
            n += 1
    out.flush()
    return n


WRITER = Writer("csv", "csv (every field)", False, write_csv)
