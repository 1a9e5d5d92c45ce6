"""The log's own summary: frames by kind, damage, sequence gaps, the time span."""

from __future__ import annotations

import numpy as np
import theca_protocol as tp
from theca_protocol import names as N

from theca.log import layout as L
from theca.log.devtime import iso
from theca.log.layout import CMD_FIRST
from theca.log.tlog import Anomaly, Tlog

# --- summary ---------------------------------------------------------------------------------


class Summary:
    """Counts over a whole log, from frame batches, vectorised (no per-frame Python)."""

    def __init__(self, tlog: Tlog):
        self.name = str(tlog.path)
        self.size = tlog.size
        self.header = tlog.header
        self.data = tlog.data
        self.a = np.frombuffer(tlog.data, dtype=np.uint8)
        self.frames = 0
        self.type_counts = np.zeros(256, dtype=np.int64)
        self.event_counts = np.zeros(256, dtype=np.int64)
        self.bad_version = 0
        self.malformed = 0
        self.gaps = 0
        self.missing = 0
        self.restarts = 0
        self.prev_seq = -1
        self.first_time: int | None = None
        self.last_time: int | None = None
        self.info_schemas: set[int] = set()
        exp = np.full(256, -1, dtype=np.int64)
        for t, size in L.FIXED.items():
            exp[t] = size
        self._exp = exp
        mins = np.zeros(256, dtype=np.int64)
        mins[tp.T_REPLY] = L.REPLY.size
        for t in tp.COMMANDS:
            mins[t] = L.CMD_HEAD.size + tp.MAC_SIZE
        self._min = mins
        self.anomalies: list[Anomaly] = []

    def add(self, starts: np.ndarray, lens: np.ndarray, seq_starts: np.ndarray | None = None) -> None:
        """Account for a batch of good frames.

        `seq_starts` (default: `starts`) are the frames whose sequence numbers are
        checked for gaps: with a type filter, the frames of the time range, so that
        frames left out by the filter are not counted as missing.
        """
        if seq_starts is None:
            seq_starts = starts
        if len(starts):
            self._count(starts, lens)
        if len(seq_starts):
            self._gaps(seq_starts)

    def _count(self, starts: np.ndarray, lens: np.ndarray) -> None:
        a = self.a
        self.frames += len(starts)
        ver = a[starts]
        types = a[starts + 1].astype(np.int64)
        self.type_counts += np.bincount(types, minlength=256)
        self.bad_version += int(np.count_nonzero(ver != N.FRAME_VERSION))
        plen = lens - (L.HDR_SIZE + L.CRC_SIZE)
        exp = self._exp[types]
        self.malformed += int(
            np.count_nonzero(((exp >= 0) & (plen != exp)) | (plen < self._min[types]))
        )
        ev = starts[types == tp.T_EVENT]
        if len(ev):
            ev = ev[lens[types == tp.T_EVENT] == L.HDR_SIZE + L.EVENT.size + L.CRC_SIZE]
            self.event_counts += np.bincount(a[ev + L.HDR_SIZE + 8], minlength=256)
        for s in starts[types == tp.T_DEVICE_INFO].tolist():
            if s + L.HDR_SIZE + L.INFO.size <= len(a):
                self.info_schemas.add(L.INFO.unpack_from(self.data, s + L.HDR_SIZE)[5])
        dev = (types < CMD_FIRST) | (types >= tp.T_REPLY)
        ds = starts[dev]
        if not len(ds):
            return
        tm = L.u32_at(a, ds + 4)
        if self.first_time is None:
            self.first_time = int(tm[0])
        self.last_time = int(tm[-1])

    def _gaps(self, starts: np.ndarray) -> None:
        a = self.a
        types = a[starts + 1]
        ds = starts[(types < CMD_FIRST) | (types >= tp.T_REPLY)]
        if not len(ds):
            return
        seq = a[ds + 2].astype(np.int64) | (a[ds + 3].astype(np.int64) << 8)
        prev = np.empty_like(seq)
        prev[0] = self.prev_seq
        prev[1:] = seq[:-1]
        d = (seq - prev - 1) & 0xFFFF
        brk = d != 0
        if self.prev_seq < 0:
            brk[0] = False
        restart = brk & (seq == 0)
        gap = brk & ~restart
        self.restarts += int(np.count_nonzero(restart))
        self.gaps += int(np.count_nonzero(gap))
        self.missing += int(d[gap].sum())
        self.prev_seq = int(seq[-1])

    def _kinds(self) -> tuple[dict[str, int], dict[str, int]]:
        # frames by kind, and the unknown types by hex type
        kinds: dict[str, int] = {}
        unknown: dict[str, int] = {}
        for t in np.flatnonzero(self.type_counts).tolist():
            c = int(self.type_counts[t])
            if t in L.KIND:
                kinds[L.KIND[t]] = kinds.get(L.KIND[t], 0) + c
            elif t in tp.COMMANDS:
                kinds["command"] = kinds.get("command", 0) + c
            else:
                kinds["unknown"] = kinds.get("unknown", 0) + c
                unknown[f"0x{t:02x}"] = c
        return kinds, unknown

    def _problems(self, crc: int, garbage: list, trunc: int, unknown: dict,
                  mismatch: list[int]) -> list[str]:
        problems = []
        if crc:
            problems.append(f"{crc} CRC error(s) (corrupt records skipped)")
        if garbage:
            problems.append(
                f"{sum(x.length for x in garbage)} byte(s) of garbage in {len(garbage)} place(s)"
            )
        if self.gaps:
            problems.append(f"{self.gaps} sequence gap(s), {self.missing} frame(s) missing")
        if trunc:
            problems.append(f"truncated tail: last record incomplete ({trunc} byte(s))")
        if unknown:
            problems.append("unknown frame type(s): " + ", ".join(sorted(unknown)))
        if self.bad_version:
            problems.append(f"{self.bad_version} frame(s) of another frame version")
        if self.malformed:
            problems.append(f"{self.malformed} frame(s) with a payload of the wrong length")
        if mismatch:
            problems.append(
                "schema mismatch: log written with schema "
                + ", ".join(f"0x{s:08x}" for s in mismatch)
                + f", this decoder speaks 0x{tp.SCHEMA:08x}; fields may be misread "
                "(use the theca version that matches the firmware)"
            )
        return problems

    def result(self) -> dict:
        """The summary as a JSON-ready dict; `problems` lists what --strict fails on."""
        kinds, unknown = self._kinds()
        events = {}
        for code in np.flatnonzero(self.event_counts).tolist():
            ev = N.EVENTS.get(code)
            events[ev.name if ev else f"event_{code}"] = int(self.event_counts[code])
        crc = sum(1 for x in self.anomalies if x.kind in ("crc", "corrupt"))
        garbage = [x for x in self.anomalies if x.kind == "garbage"]
        trunc = sum(x.length for x in self.anomalies if x.kind == "truncated")
        schemas = {self.header.schema} | self.info_schemas
        mismatch = sorted(s for s in schemas if s != tp.SCHEMA)
        problems = self._problems(crc, garbage, trunc, unknown, mismatch)
        return {
            "file": self.name,
            "bytes": self.size,
            "format": self.header.format,
            "schema": f"0x{self.header.schema:08x}",
            "decoder_schema": f"0x{tp.SCHEMA:08x}",
            "schema_mismatch": bool(mismatch),
            "frames": self.frames,
            "kinds": kinds,
            "events": events,
            "first_time": iso(self.first_time) if self.first_time is not None else None,
            "last_time": iso(self.last_time) if self.last_time is not None else None,
            "crc_errors": crc,
            "garbage_bytes": sum(x.length for x in garbage),
            "garbage_regions": len(garbage),
            "sequence_gaps": self.gaps,
            "missing_frames": self.missing,
            "restarts": self.restarts,
            "truncated_tail": trunc,
            "unknown_types": unknown,
            "bad_version": self.bad_version,
            "malformed": self.malformed,
            "problems": problems,
            "clean": not problems,
        }


def summarize(path) -> dict:
    """The summary of a .tlog (see `Summary.result`); TlogError if not a .tlog."""
    with Tlog(path) as t:
        s = Summary(t)
        for b in t.batches():
            s.add(b.starts, b.lengths)
        s.anomalies = list(t.anomalies)
        res = s.result()
        del s
        return res


def format_summary(r: dict) -> str:
    """The summary as text for a person."""
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(r["kinds"].items())) or "none"
    lines = [
        f"file            {r['file']} ({r['bytes']} bytes, format {r['format']})",
        f"schema          {r['schema']}"
        + ("" if not r["schema_mismatch"] else f"  MISMATCH (decoder {r['decoder_schema']})"),
        f"frames          {r['frames']} ({kinds})",
    ]
    if r["events"]:
        lines.append(
            "events          " + ", ".join(f"{k} {v}" for k, v in sorted(r["events"].items()))
        )
    lines += [
        f"time            {r['first_time'] or '-'} .. {r['last_time'] or '-'}",
        f"crc errors      {r['crc_errors']}",
        f"garbage         {r['garbage_bytes']} bytes in {r['garbage_regions']} place(s)",
        f"sequence gaps   {r['sequence_gaps']} ({r['missing_frames']} frames missing),"
        f" restarts {r['restarts']}",
        f"truncated tail  {str(r['truncated_tail']) + ' bytes' if r['truncated_tail'] else 'no'}",
        "unknown types   "
        + (", ".join(f"{k} x{v}" for k, v in sorted(r["unknown_types"].items())) or "none"),
        f"malformed       {r['malformed']} (other frame version: {r['bad_version']})",
    ]
    if r.get("filter"):
        lines.append(f"filter          {r['filter']}")
    if r["problems"]:
        lines.append("problems:")
        lines += [f"  - {p}" for p in r["problems"]]
    else:
        lines.append("result          clean")
    return "\n".join(lines) + "\n"


