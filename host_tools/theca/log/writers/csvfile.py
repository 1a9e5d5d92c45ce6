"""`--format csv`: one column per field (the columns of `--format parquet`, from the field
model and the protocol's event table, but the frame's type and version);
what fits no column (a reply's or a command's body) as JSON in `details`."""

from __future__ import annotations

import csv

from theca.log.frames import Selection
from theca.log.records import Renderer, to_json
from theca.log.stats import Summary
from theca.log.tlog import Tlog
from theca.log.writers.base import Out, Writer, batches

_SKIP = {"type", "version", "details"}


def csv_columns() -> list[str]:
    """The header: every field a record of any kind may have, then `details`."""
    from theca.log.writers.parquet import parquet_schema

    head = ["kind", "t", "seq"]
    rest = [n for n in parquet_schema().names if n not in _SKIP and n not in head]
    return head + rest + ["details"]




def _cell(v) -> str:
    if v is None or type(v) is dict:  # (a dict goes to details)
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
    cols = csv_columns()
    known = set(cols)
    w.writerow(cols)
    n = 0
    for b in batches(t, summary, sel):
        for s, ln in zip(b.starts.tolist(), b.lens.tolist(), strict=True):
            rec = r.record(data[s : s + ln])
            row = [_cell(rec.get(c)) for c in cols[:-1]]
            rest = {k: v for k, v in rec.items()
                    if k not in known or (type(v) is dict and k != "details")}
            row.append(to_json(rest) if rest else "")
            w.writerow(row)
            n += 1
    out.flush()
    return n


WRITER = Writer("csv", "csv (every field)", False, write_csv)
