"""What every writer shares: buffered output, the selection of frames, and the fast
STATUS path (STATUS frames, nearly all of a log, are formatted column-wise)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import NamedTuple

import numpy as np
import theca_protocol as tp
from theca_protocol import names as N

from theca.log import layout as L
from theca.log.frames import Selection
from theca.log.records import Renderer, to_json
from theca.log.stats import Summary
from theca.log.tlog import Anomaly, Tlog


class Writer(NamedTuple):
    """One `--format`: its name, its help text, whether it writes a file of its own (it
    needs -o), and `write(tlog, target, summary, selection)` where target is a text
    stream, or a path when `to_file`; returns the number of records written."""

    name: str
    help: str
    to_file: bool
    write: Callable[[Tlog, object, Summary, Selection | None], int]


class Out:
    """Buffered text output: one write per few thousand lines."""

    def __init__(self, stream):
        self.stream = stream
        self.buf: list[str] = []

    def line(self, s: str) -> None:
        self.buf.append(s)
        if len(self.buf) >= 4096:
            self.flush()

    def lines(self, ls: list[str]) -> None:
        self.buf.extend(ls)
        if len(self.buf) >= 4096:
            self.flush()

    def text(self, s: str) -> None:
        """Whole lines, each ended by a newline, written after the buffered ones."""
        self.flush(final=False)
        self.stream.write(s)

    def flush(self, final: bool = True) -> None:
        if self.buf:
            self.buf.append("")
            self.stream.write("\n".join(self.buf))
            self.buf = []
        if final:
            self.stream.flush()


def table_value(v) -> str:
    if type(v) is float:
        return f"{v:.3f}"
    if v is None:
        return "-"
    if type(v) is list:
        return ",".join(str(x) for x in v) or "-"
    if type(v) is dict:
        return to_json(v)
    return str(v)


def anomaly_text(x: Anomaly) -> str:
    what = {
        "crc": "corrupt record (CRC error)",
        "corrupt": "corrupt record (bad length)",
        "garbage": "garbage",
        "truncated": "truncated tail",
    }[x.kind]
    return f"!! {what}: {x.length} bytes at offset {x.offset}"



class Batch(NamedTuple):
    """The selected frames of one batch of the log: their offsets and lengths."""

    first: int  # offset of the batch's first frame (selected or not)
    starts: np.ndarray
    lens: np.ndarray


def batches(t: Tlog, summary: Summary, sel: Selection | None) -> Iterator[Batch]:
    """The log's batches, each cut down to the selected frames (every frame, without a
    selection), each accounted for in `summary` as it passes."""
    a = summary.a
    for b in t.batches():
        starts, lens = b.starts, b.lengths
        first = int(starts[0]) if len(starts) else 1 << 62
        if sel is not None and sel.active:
            m, in_time, _ = sel.apply(a, starts, lens)
            summary.add(starts[m], lens[m], starts[in_time])
            starts, lens = starts[m], lens[m]
        else:
            summary.add(starts, lens)
        yield Batch(first, starts, lens)
    summary.anomalies = list(t.anomalies)


def fast_lines(t: Tlog, a: np.ndarray, b: Batch, status_lines: Callable[[np.ndarray], list[str]],
               one: Callable[[dict], str], r: Renderer, out: Out,
               status_text: Callable[[np.ndarray], str] | None = None) -> int:
    """Write a batch's lines: well-formed STATUS frames through `status_lines` (all at
    once), every other frame through `one(record)`, in log order. Returns the count.
    `status_text`, if given, formats a batch of STATUS frames only as one text (each
    line ended by a newline), in place of `status_lines`."""
    starts, lens = b.starts, b.lens
    if not len(starts):
        return 0
    fast = (
        (a[starts + 1] == tp.T_STATUS)
        & (lens == L.HDR_SIZE + L.STATUS.size + L.CRC_SIZE)
        & (a[starts] == N.FRAME_VERSION)
    )
    if fast.all():
        if status_text is not None:
            out.text(status_text(starts))
        else:
            out.lines(status_lines(starts))
        return len(starts)
    data = t.data
    if status_text is not None:
        # the STATUS lines between two other frames go out as slices of one formatting
        lines = status_text(starts[fast]).split("\n") if fast.any() else []
        k = prev = 0
        st, ln = starts.tolist(), lens.tolist()
        for i in np.flatnonzero(~fast).tolist():
            if i > prev:
                out.lines(lines[k : k + i - prev])
                k += i - prev
            out.line(one(r.record(data[st[i] : st[i] + ln[i]])))
            prev = i + 1
        if prev < len(st):
            out.lines(lines[k : k + len(st) - prev])
        return len(starts)
    sl = iter(status_lines(starts[fast]) if fast.any() else ())
    for s, n, f in zip(starts.tolist(), lens.tolist(), fast.tolist(), strict=True):
        out.line(next(sl) if f else one(r.record(data[s : s + n])))
    return len(starts)
