"""`--format table`: aligned columns for a person; a status line shows the slowly changing
fields only when they change; damage is shown inline where it is in the file."""

from __future__ import annotations

import numpy as np
from theca_protocol import names as N

from theca.log import fields as F
from theca.log.devtime import FRAC, iso_many
from theca.log.frames import Selection, status_columns
from theca.log.records import Renderer
from theca.log.stats import Summary
from theca.log.tlog import Tlog
from theca.log.writers.base import Out, Writer, anomaly_text, batches, fast_lines, table_value

#: Fields shown as hexadecimal in the table.
_HEX_FIELDS = frozenset({"rx_crc32", "schema", *(f.name for f in F.STATUS_FIELDS if f.hex)})


def _col(text: str, w: int) -> str:
    # a table cell: width |w|, left-aligned when w < 0, as it is when 0
    return f"{text:<{-w}}" if w < 0 else f"{text:>{w}}" if w else text


TABLE_HEAD = (
    f"{'time (UTC)':<19}  {'seq':>5}  {'kind':<11}  "
    + " ".join(_col(label, w) for _, label, w in F.TABLE_COLUMNS[:-1])
    + f"  {F.TABLE_COLUMNS[-1][1]}  (changes) | event and fields"
)


def _table_time(t: str) -> str:
    return t[:10] + " " + t[11:19] if len(t) == 20 else t


#: The field whose drug a dose is of (the status's drug).
_DRUG = next(f.name for f in F.STATUS_FIELDS if f.kind == "drug_id")
#: Event arguments named as a STATUS field with a person's form take that form too.
_PERSON = {f.name: f.person for f in F.STATUS_FIELDS if f.person}


def _tv(k: str, v) -> str:
    if k in _HEX_FIELDS and type(v) is int:
        return f"0x{v:08x}"
    how = _PERSON.get(k)
    if how == "index1" and type(v) is int:
        return str(v + 1)  # (1-based, as the status numbers it)
    if how == "conc" and type(v) is int and v:
        from theca.inputs import units as U

        return U.fmt_conc(v)
    return table_value(v)


_LABEL = F.TABLE_LABELS


def _kv(d: dict, skip=()) -> str:
    return "  ".join(f"{_LABEL.get(k, k) if type(v) is int else k}={_tv(k, v)}"
                     for k, v in d.items() if k not in skip)


def _table_text(rec: dict) -> str:
    """What follows time, seq and kind in a table line of a non-status record."""
    k = rec["kind"]
    if k == "event":
        fields = _kv(rec, ("kind", "t", "seq", "event_seq", "event", "who"))
        return f"{rec['event']}  {fields}{'  ' if fields else ''}({rec['who']}, event #{rec['event_seq']})"
    if k == "reply":
        s = f"{rec['cmd']} #{rec['cmd_id']}: {rec['result']}"
        rest = _kv(rec, ("kind", "t", "seq", "cmd", "cmd_id", "result", "body"))
        if "body" in rec:
            b = rec["body"]
            rest += "  " + (_kv(b) if isinstance(b, dict) else f"body={_tv('body', b)}")
        return s + "  " + rest
    if k == "command":
        return f"{rec['cmd']} #{rec['cmd_id']} by {rec['role']}  " + _kv(
            rec, ("kind", "t", "seq", "cmd", "cmd_id", "role")
        )
    return _kv(rec, ("kind", "t", "seq"))


def _for_people(f: F.Field, col: dict) -> list[str] | None:
    # the fields a person reads in their own units (the raw integers stay in jsonl, csv
    # and parquet): the step 1-based as `theca status` numbers it, the drug of the last
    # 24 h in its drug's unit, the concentration as mg/mL or mcg/mL
    from theca.inputs import units as U

    x = col[f.raw[0]].tolist()
    if f.person == "index1":
        return [str(v + 1) for v in x]
    if f.person == "conc":
        return [U.fmt_conc(v) if v else "-" for v in x]
    if f.person == "dose":
        units = _dose_units()
        drug = col[F.BY_NAME[_DRUG].raw[0]].tolist()
        return [U.fmt_reading(v, units.get(d, "mg")) if v else "0"
                for v, d in zip(x, drug, strict=True)]
    return None


def _dose_units() -> dict[int, str]:
    from theca.inputs.druglib import dose_unit, load_druglib

    return {d.id: dose_unit(d) for d in load_druglib().drugs}


def _display(r: Renderer, f: F.Field, col: dict) -> list[str]:
    """Field `f` of every line as a person reads it in the table ("-": none)."""
    mine = _for_people(f, col)
    if mine is not None:
        return mine
    x = col[f.raw[0]]
    if f.kind in ("milli", "milli2"):
        v = x.astype(np.int64)
        if f.kind == "milli2":
            nl = col[f.raw[1]].astype(np.int64)
            q, rr = v + nl // 1000, nl % 1000
        else:
            q, rr = v // 1000, v % 1000
        return [f"{a}.{FRAC[b]}" for a, b in zip(q.tolist(), rr.tolist(), strict=True)]
    if f.kind == "time":
        return [s if t else "-" for s, t in zip(iso_many(x), x.tolist(), strict=True)]
    if f.kind == "int":
        if f.hex:
            return [f"0x{v:08x}" for v in x.tolist()]
        return list(map(str, x.tolist()))
    u, inv = np.unique(x, return_inverse=True)
    if f.kind == "code":
        names = [F.code_name(f, c) for c in u.tolist()]
    elif f.kind == "alarm_mask":
        names = [",".join(N.alarm_names(m)) or "-" for m in u.tolist()]
    else:
        names = [r.drug_name(d) or "-" for d in u.tolist()]
    return [names[i] for i in inv.tolist()]


class _TableStatus:
    """Formats status lines column-wise (the field model's TABLE_COLUMNS); remembers the
    previous line's slow fields (TABLE_CHANGES) and shows them when they change."""

    def __init__(self, r: Renderer):
        self.r = r
        self.prev: tuple | None = None

    def lines(self, a: np.ndarray, starts: np.ndarray) -> list[str]:
        col = status_columns(a, starts)
        times = [_table_time(x) for x in iso_many(col["time"])]
        cols = []
        for name, _, w in F.TABLE_COLUMNS:
            cols.append([_col(x, w) for x in _display(self.r, F.BY_NAME[name], col)])
        slow = zip(*(_display(self.r, F.BY_NAME[n], col) for n in F.TABLE_CHANGES), strict=True)
        out = []
        for t, sq, row, sl in zip(times, col["seq"].tolist(), zip(*cols, strict=True), slow,
                                  strict=True):
            line = f"{t}  {sq:>5}  status       " + " ".join(row[:-1]) + "  " + row[-1]
            if sl != self.prev:
                line += "  (" + self._changes(sl) + ")"
                self.prev = sl
            out.append(line)
        return out

    def _changes(self, sl: tuple) -> str:
        prev = self.prev
        return " ".join(f"{_LABEL.get(name, name)}={v}"
                        for i, (name, v) in enumerate(zip(F.TABLE_CHANGES, sl, strict=True))
                        if prev is None or prev[i] != v)


def _line(rec: dict) -> str:
    return f"{_table_time(rec['t'])}  {rec['seq']:>5}  {rec['kind']:<11}  " + _table_text(rec)


def write_table(t: Tlog, stream, summary: Summary, sel: Selection | None = None) -> int:
    """Write every (selected) frame of `t` to `stream` as a table line, and every damaged
    stretch of the file as a `!!` line where it is."""
    r = Renderer()
    a = summary.a
    out = Out(stream)
    out.line(TABLE_HEAD)
    tst = _TableStatus(r)
    shown = n = 0
    for b in batches(t, summary, sel):
        # t.anomalies grows as the scan goes: damage before this batch is known now
        while shown < len(t.anomalies) and t.anomalies[shown].offset < b.first:
            out.line(anomaly_text(t.anomalies[shown]))
            shown += 1
        n += fast_lines(t, a, b, lambda st: tst.lines(a, st), _line, r, out)
    for x in t.anomalies[shown:]:
        out.line(anomaly_text(x))
    out.flush()
    return n


WRITER = Writer("table", "table (default, for a person)", False, write_table)
