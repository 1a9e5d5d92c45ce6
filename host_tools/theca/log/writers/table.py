"""`--format table`: aligned columns for a person; a status line shows the slowly changing
fields only when they change; damage is shown inline where it is in the file."""

from __future__ import annotations

import numpy as np
from theca_protocol import names as N

from theca.log.frames import _FRAC, Selection, _iso_many, status_columns
from theca.log.records import Renderer, iso
from theca.log.stats import Summary
from theca.log.tlog import Tlog
from theca.log.writers.base import Out, Writer, anomaly_text, batches, fast_lines, table_value

#: Fields shown as hexadecimal in the table.
_HEX_FIELDS = frozenset({"rx_crc", "rx_crc32", "schema"})
TABLE_HEAD = (
    f"{'time (UTC)':<19}  {'seq':>5}  {'kind':<11}  {'mode':<9} {'step':>4} {'reservoir_uL':>12} "
    f"{'delivered_uL':>12} {'rate_uL/day':>11} {'24h_ng':>10}  alarms  (changes) | event and fields"
)


def _table_time(t: str) -> str:
    return t[:10] + " " + t[11:19] if len(t) == 20 else t


def _tv(k: str, v) -> str:
    if k in _HEX_FIELDS and type(v) is int:
        return f"0x{v:08x}"
    return table_value(v)


def _kv(d: dict, skip=()) -> str:
    return "  ".join(f"{k}={_tv(k, v)}" for k, v in d.items() if k not in skip)


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


# Status fields shown after the alarms when they differ from the previous status line.
_CHANGE_FIELDS = ("drug", "conc_ng_ml", "battery_days", "low_eta", "refill_due", "boluses_24h", "flags",
                  "acked", "rx_crc")


class _TableStatus:
    """Formats status lines column-wise; remembers the previous line's slow fields."""

    def __init__(self, r: Renderer):
        self.r = r
        self.prev: tuple | None = None

    def lines(self, a: np.ndarray, starts: np.ndarray) -> list[str]:
        col = status_columns(a, starts)
        times = [_table_time(x) for x in _iso_many(col["time"])]
        res = col["reservoir_nl"].astype(np.int64)
        rate = col["rate_nl_day"].astype(np.int64)
        dl = col["delivered_ul"].astype(np.int64) * 1000 + col["delivered_nl"]
        slow = zip(*(col[f].tolist() for f in _CHANGE_FIELDS), strict=True)
        rows = zip(
            times, col["seq"].tolist(), col["mode"].tolist(), col["step"].tolist(),
            (res // 1000).tolist(), (res % 1000).tolist(), (dl // 1000).tolist(),
            (dl % 1000).tolist(), (rate // 1000).tolist(), (rate % 1000).tolist(),
            col["rolling_ng"].tolist(), col["alarms"].tolist(), slow, strict=True,
        )
        out = []
        alarm_cache: dict[int, str] = {}
        for t, sq, mode, step, rq, rr, dq, dr, aq, ar, ng, alarms, sl in rows:
            al = alarm_cache.get(alarms)
            if al is None:
                al = alarm_cache[alarms] = ",".join(N.alarm_names(alarms)) or "-"
            line = (
                f"{t}  {sq:>5}  status       {N.MODES.get(mode, f'mode_{mode}'):<9} {step:>4} "
                f"{rq:>8}.{_FRAC[rr]} {dq:>8}.{_FRAC[dr]} {aq:>7}.{_FRAC[ar]} {ng:>10}  {al}"
            )
            if sl != self.prev:
                line += "  (" + self._changes(sl) + ")"
                self.prev = sl
            out.append(line)
        return out

    def _changes(self, sl: tuple) -> str:
        prev = self.prev
        parts = []
        for i, (name, v) in enumerate(zip(_CHANGE_FIELDS, sl, strict=True)):
            if prev is not None and prev[i] == v:
                continue
            if name == "drug":
                parts.append(f"drug={self.r._drug(v) or '-'}")
            elif name in ("low_eta", "refill_due"):
                label = "low_reservoir_eta" if name == "low_eta" else name
                parts.append(f"{label}={iso(v) if v else '-'}")
            elif name == "rx_crc":
                parts.append(f"rx_crc=0x{v:08x}")
            else:
                parts.append(f"{name}={v}")
        return " ".join(parts)



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
