"""`theca decode RUN.tlog [--format table|csv|jsonl|parquet] [-o FILE] [--type KINDS]
[--from ISO] [--to ISO] [--summary] [--strict]`.

Frames become records (dicts) with the field names of interface.md: volumes in
uL (from nL, shown with 3 decimals), times as ISO-8601 UTC, codes as names.
Every frame becomes a record: besides `device_info`, `status` and `event`
there are `reply`, `command` and `unknown` (an unknown type, another frame
version, or a payload of the wrong length), so nothing is dropped.

Formats: `table` is for a person (aligned columns; a status line shows the
slowly changing fields only when they change); `csv` and `jsonl` carry every
field; `parquet` writes one typed row per frame with the device serial on each
row, so that many pumps' logs can be queried together (`parquet_schema`).

Filters: `--type` keeps only the given kinds; `--from`/`--to` keep records
whose time `t` is in [from, to). With filters, `--summary` counts the selected
frames; sequence gaps are checked over all frames of the time range (frames
left out by `--type` are not "missing"); damage (CRC errors, garbage, a
truncated tail) is always that of the whole file.

Bytes that are not good frames (bad CRC, garbage, a truncated tail) are not
records: they are counted in the summary, shown inline in the table, and
always mentioned on stderr.

`--summary` prints only the summary (text; one JSON object with
`--format jsonl`). `--strict` exits 1 when the log has CRC errors, garbage,
sequence gaps, a truncated tail, unknown types or versions, malformed
payloads, or a schema other than this decoder's. Exit 2: the file is missing
or not a .tlog, or an option has a bad value.

Speed: the scanner (tlog.py) and the summary are vectorised with numpy; the
jsonl, table and parquet writers gather STATUS fields column-wise, using the
struct format derived from the construct definition (tests check the fast
paths against construct and against the generic per-frame `Renderer`).
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import struct
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
import theca_protocol as tp
from theca_protocol import names as N

from .errors import BadInput
from .tlog import Anomaly, Tlog, TlogError

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_BAD_INPUT = 2

_HDR = struct.Struct("<BBHI")
_H = tp.HDR_SIZE
_C = tp.CRC_SIZE
_STATUS = tp.compiled(tp.Status)
_INFO = tp.compiled(tp.DeviceInfo)
_EVENT = tp.compiled(tp.EventRecord)
_REPLY = tp.compiled(tp.ReplyHead)
_CMDH = tp.compiled(tp.CommandHead)
_LOGH = tp.compiled(tp.LogReadReplyHead)
_I32 = struct.Struct("<i")
_EPOCH = N.EPOCH_UNIX
_FIXED = {tp.T_STATUS: _STATUS.size, tp.T_EVENT: _EVENT.size, tp.T_DEVICE_INFO: _INFO.size}
_RUNTIMES = {1: "micropython"}
_KIND = {
    tp.T_DEVICE_INFO: "device_info",
    tp.T_STATUS: "status",
    tp.T_EVENT: "event",
    tp.T_REPLY: "reply",
}


def is_command(t: int) -> bool:
    """Types 0x40..0x7F travel host -> device (they carry the host's seq)."""
    return 0x40 <= t < 0x80


# --- values ---------------------------------------------------------------------------

_day_cache: dict[int, str] = {}


def iso(t: int) -> str:
    """Device time (s since 2020-01-01Z) as ISO-8601 UTC, e.g. 2026-01-01T00:01:00Z."""
    d, s = divmod(t + _EPOCH, 86400)
    p = _day_cache.get(d)
    if p is None:
        p = (_dt.date(1970, 1, 1) + _dt.timedelta(days=d)).isoformat()
        if len(_day_cache) < 100_000:
            _day_cache[d] = p
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    return f"{p}T{h:02d}:{m:02d}:{s:02d}Z"


def ul(nl: int) -> float:
    """nL -> uL (a float that the writers print with exactly 3 decimals)."""
    return nl / 1000


def _drug_names() -> dict[int, str]:
    try:
        from .druglib import load_druglib

        return {d.id: d.name for d in load_druglib().drugs}
    except Exception:  # noqa: BLE001 (a broken library must not stop decoding)
        return {}


# --- frame -> record ----------------------------------------------------------------------


class Renderer:
    """Turns frames into records (dicts, JSON-ready, keys in a stable order)."""

    def __init__(self, drug_names: dict[int, str] | None = None):
        self.drugs = _drug_names() if drug_names is None else drug_names

    def _drug(self, d: int):
        if d == 0:
            return None
        return self.drugs.get(d, f"drug_{d}")

    def status_fields(self, v: tuple) -> dict:
        """The named fields of a STATUS payload (from the struct tuple)."""
        (mode, step, flags, drug, alarms, res, dul, dnl, batt, rate, eta, rolling, conc, nb,
         acked, rxcrc) = v
        return {
            "mode": N.MODES.get(mode, f"mode_{mode}"),
            "reservoir_ul": res / 1000,
            "delivered_ul": dul + dnl / 1000,
            "rate_ul_per_day": rate / 1000,
            "alarms": N.alarm_names(alarms) if alarms else [],
            "low_reservoir_eta": iso(eta) if eta else None,
            "step": step,
            "drug": self._drug(drug),
            "conc_ng_ml": conc,
            "battery_days": batt,
            "rolling_24h_ng": rolling,
            "boluses_24h": nb,
            "flags": flags,
            "acked": acked,
            "rx_crc": rxcrc,
        }

    def info_fields(self, v: tuple) -> dict:
        """The named fields of a DEVICE_INFO payload."""
        serial, fmaj, fmin, fpat, rt, schema, stroke, cap, low, cath, max_rate = v
        return {
            "runtime": _RUNTIMES.get(rt, f"runtime_{rt}"),
            "serial": serial.rstrip(b"\x00").decode("ascii", "replace"),
            "firmware": f"{fmaj}.{fmin}.{fpat}",
            "schema": schema,
            "schema_ok": schema == tp.SCHEMA,
            "stroke_nl": stroke,
            "capacity_ul": cap / 1000,
            "low_reservoir_ul": low / 1000,
            "catheter_ul": cath / 1000,
            "max_rate_ul_h": max_rate / 1000,
        }

    def event_fields(self, v: tuple) -> dict:
        """The named fields of an EventRecord (t, event_seq, event, who, a/b/c by name)."""
        t, eseq, code, who, a, b, c = v
        ev = N.EVENTS.get(code)
        out = {
            "t": iso(t),
            "event_seq": eseq,
            "event": ev.name if ev else f"event_{code}",
            "who": N.WHO.get(who, f"who_{who}"),
        }
        if ev is None:
            out.update(a=a, b=b, c=c)
            return out
        for slot, arg, raw in (("a", ev.a, a), ("b", ev.b, b), ("c", ev.c, c)):
            if arg is None:
                if raw:  # not in the table, but never hide a value the device sent
                    out[slot] = raw
                continue
            k = arg.kind
            if k == "int":
                out[arg.name] = raw
            elif k == "nl":
                out[arg.name] = raw / 1000
            elif k == "time":
                out[arg.name] = iso(raw)
            elif k == "i32":
                out[arg.name] = raw - (1 << 32) if raw & 0x80000000 else raw
            elif k == "mask":
                out[arg.name] = N.alarm_names(raw)
            else:
                out[arg.name] = N.name_of(N.TABLES[k], raw, arg.name)
        return out

    def _reply_body(self, cmd_type: int, body: bytes):
        if cmd_type == 0x40 and len(body) == _STATUS.size:
            return self.status_fields(_STATUS.unpack(body))
        if cmd_type == 0x4B and len(body) == _INFO.size:
            return self.info_fields(_INFO.unpack(body))
        if cmd_type == 0x4A and len(body) >= _LOGH.size:
            nxt, first, count = _LOGH.unpack_from(body)
            if len(body) == _LOGH.size + count * _EVENT.size:
                evs = [
                    self.event_fields(_EVENT.unpack_from(body, _LOGH.size + i * _EVENT.size))
                    for i in range(count)
                ]
                return {"next_seq": nxt, "first_seq": first, "events": evs}
        try:
            m = tp.MESSAGES[cmd_type]
            return _jsonable(tp.plain(m.reply.parse(body)))
        except Exception:  # noqa: BLE001 (undecodable body: keep the bytes)
            return body.hex()

    def record(self, fr) -> dict:
        """The record for one CRC-checked frame (a bytes-like object)."""
        fr = bytes(fr)
        ver, t, seq, time = _HDR.unpack_from(fr)
        payload = fr[_H:-_C]
        head = {"t": iso(time), "seq": seq}
        if ver != N.FRAME_VERSION:
            return self._unknown(head, t, ver, payload, f"frame version {ver}")
        exp = _FIXED.get(t)
        if exp is not None and len(payload) != exp:
            return self._unknown(
                head, t, ver, payload, f"{tp.MESSAGES[t].name} payload of {len(payload)} bytes, expected {exp}"
            )
        if t == tp.T_STATUS:
            return {"kind": "status", **head, **self.status_fields(_STATUS.unpack(payload))}
        if t == tp.T_EVENT:
            f = self.event_fields(_EVENT.unpack(payload))
            return {"kind": "event", "t": f.pop("t"), "seq": seq, **f}
        if t == tp.T_DEVICE_INFO:
            return {"kind": "device_info", **head, **self.info_fields(_INFO.unpack(payload))}
        if t == tp.T_REPLY and len(payload) >= _REPLY.size:
            cmd_id, ctype, result, detail = _REPLY.unpack_from(payload)
            body = payload[_REPLY.size :]
            cm = tp.MESSAGES.get(ctype)
            out = {
                "kind": "reply",
                **head,
                "cmd_id": cmd_id,
                "cmd": cm.name.lower() if cm else f"cmd_{ctype}",
                "result": N.name_of(N.RESULTS, result, "result"),
                "detail": detail,
            }
            if result == 6 and ctype == 0x44:
                out["reason"] = N.name_of(N.DENY_REASONS, detail, "reason")
            if body:
                out["body"] = self._reply_body(ctype, body) if result == 0 else body.hex()
            return out
        if is_command(t) and t in tp.COMMANDS and len(payload) >= _CMDH.size + tp.MAC_SIZE:
            cm = tp.COMMANDS[t]
            cmd_id, role, counter = _CMDH.unpack_from(payload)
            body = payload[_CMDH.size : -tp.MAC_SIZE]
            try:
                b = _jsonable(tp.plain(cm.body.parse(body)))
                if len(cm.body.build(cm.body.parse(body))) != len(body):
                    raise ValueError("trailing bytes")
            except Exception:  # noqa: BLE001 (keep what we cannot parse)
                b = body.hex()
            return {
                "kind": "command",
                **head,
                "cmd": cm.name.lower(),
                "cmd_id": cmd_id,
                "role": N.name_of(N.ROLES, role, "role"),
                "counter": counter,
                "body": b,
                "mac": payload[-tp.MAC_SIZE :].hex(),
            }
        why = "unknown type" if t not in tp.MESSAGES else "payload too short"
        return self._unknown(head, t, ver, payload, why)

    @staticmethod
    def _unknown(head, t, ver, payload, why) -> dict:
        return {
            "kind": "unknown",
            **head,
            "type": t,
            "version": ver,
            "reason": why,
            "payload": payload.hex(),
        }


def _jsonable(v):
    if isinstance(v, bytes):
        return v.hex()
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_jsonable(x) for x in v]
    return v


def records(path) -> Iterator[dict]:
    """Every frame of a .tlog as a record, in file order (TlogError if not a .tlog)."""
    r = Renderer()
    with Tlog(path) as t:
        for _, fr in t.frames():
            yield r.record(fr)


# --- JSON with uL at exactly 3 decimals ----------------------------------------------------

_dumps_str = json.JSONEncoder(ensure_ascii=True).encode


def to_json(v) -> str:
    """Compact JSON; floats (uL values) with exactly 3 decimals."""
    t = type(v)
    if t is str:
        return _dumps_str(v)
    if t is int:
        return str(v)
    if t is float:
        return f"{v:.3f}"
    if v is None:
        return "null"
    if t is bool:
        return "true" if v else "false"
    if t is dict:
        return "{" + ",".join(f"{_dumps_str(k)}:{to_json(x)}" for k, x in v.items()) + "}"
    if t is list or t is tuple:
        return "[" + ",".join(to_json(x) for x in v) + "]"
    return _dumps_str(str(v))


# --- summary ---------------------------------------------------------------------------------


def _u32_at(a: np.ndarray, offs: np.ndarray) -> np.ndarray:
    """Little-endian u32 values at byte offsets `offs` of `a`, as int64 (vectorised)."""
    return (
        a[offs].astype(np.int64)
        | (a[offs + 1].astype(np.int64) << 8)
        | (a[offs + 2].astype(np.int64) << 16)
        | (a[offs + 3].astype(np.int64) << 24)
    )


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
        for t, size in _FIXED.items():
            exp[t] = size
        self._exp = exp
        mins = np.zeros(256, dtype=np.int64)
        mins[tp.T_REPLY] = _REPLY.size
        for t in tp.COMMANDS:
            mins[t] = _CMDH.size + tp.MAC_SIZE
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
        plen = lens - (_H + _C)
        exp = self._exp[types]
        self.malformed += int(
            np.count_nonzero(((exp >= 0) & (plen != exp)) | (plen < self._min[types]))
        )
        ev = starts[types == tp.T_EVENT]
        if len(ev):
            ev = ev[lens[types == tp.T_EVENT] == _H + _EVENT.size + _C]
            self.event_counts += np.bincount(a[ev + _H + 8], minlength=256)
        for s in starts[types == tp.T_DEVICE_INFO].tolist():
            if s + _H + _INFO.size <= len(a):
                self.info_schemas.add(_INFO.unpack_from(self.data, s + _H)[5])
        dev = (types < 0x40) | (types >= 0x80)
        ds = starts[dev]
        if not len(ds):
            return
        tm = _u32_at(a, ds + 4)
        if self.first_time is None:
            self.first_time = int(tm[0])
        self.last_time = int(tm[-1])

    def _gaps(self, starts: np.ndarray) -> None:
        a = self.a
        types = a[starts + 1]
        ds = starts[(types < 0x40) | (types >= 0x80)]
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

    def result(self) -> dict:
        """The summary as a JSON-ready dict; `problems` lists what --strict fails on."""
        kinds: dict[str, int] = {}
        unknown: dict[str, int] = {}
        for t in np.flatnonzero(self.type_counts).tolist():
            c = int(self.type_counts[t])
            if t in _KIND:
                kinds[_KIND[t]] = kinds.get(_KIND[t], 0) + c
            elif t in tp.COMMANDS:
                kinds["command"] = kinds.get("command", 0) + c
            else:
                kinds["unknown"] = kinds.get("unknown", 0) + c
                unknown[f"0x{t:02x}"] = c
        events = {}
        for code in np.flatnonzero(self.event_counts).tolist():
            ev = N.EVENTS.get(code)
            events[ev.name if ev else f"event_{code}"] = int(self.event_counts[code])
        crc = sum(1 for x in self.anomalies if x.kind in ("crc", "corrupt"))
        garbage = [x for x in self.anomalies if x.kind == "garbage"]
        trunc = sum(x.length for x in self.anomalies if x.kind == "truncated")
        schemas = {self.header.schema} | self.info_schemas
        mismatch = sorted(s for s in schemas if s != tp.SCHEMA)
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


# --- output formats ------------------------------------------------------------------------

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


def _table_val(v) -> str:
    if type(v) is float:
        return f"{v:.3f}"
    if v is None:
        return "-"
    if type(v) is list:
        return ",".join(str(x) for x in v) or "-"
    if type(v) is dict:
        return to_json(v)
    return str(v)


class _Out:
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

    def flush(self) -> None:
        if self.buf:
            self.buf.append("")
            self.stream.write("\n".join(self.buf))
            self.buf = []
        self.stream.flush()


def _anomaly_text(x: Anomaly) -> str:
    what = {
        "crc": "corrupt record (CRC error)",
        "corrupt": "corrupt record (bad length)",
        "garbage": "garbage",
        "truncated": "truncated tail",
    }[x.kind]
    return f"!! {what}: {x.length} bytes at offset {x.offset}"


def _np_dtype(fmt: str) -> np.dtype:
    # The struct format (itself derived from construct) as a packed numpy record.
    codes = {"B": "u1", "b": "i1", "H": "<u2", "h": "<i2", "I": "<u4", "i": "<i4"}
    out, k = [], 0
    num = ""
    for ch in fmt[1:]:
        if ch.isdigit():
            num += ch
            continue
        out.append((f"f{k}", f"S{num}" if ch == "s" else codes[ch]))
        num = ""
        k += 1
    return np.dtype(out)


_STATUS_DT = _np_dtype(_STATUS.format)
_STATUS_COLS = tp.field_names(tp.Status)
assert _STATUS_DT.itemsize == _STATUS.size
_FRAC = [f"{i:03d}" for i in range(1000)]
_EPOCH64 = np.datetime64("1970-01-01T00:00:00", "s")


def _iso_many(t: np.ndarray) -> list[str]:
    """ISO-8601 UTC strings for an array of device times (vectorised)."""
    d = _EPOCH64 + (t.astype(np.int64) + _EPOCH).astype("timedelta64[s]")
    return [x + "Z" for x in np.datetime_as_string(d, unit="s").tolist()]


# --- frame kinds, columns and filters (vectorised) ------------------------------------------

#: The kinds of record a frame becomes (`kind` in every output format).
KINDS = ("device_info", "status", "event", "reply", "command", "unknown")
K_INFO, K_STATUS, K_EVENT, K_REPLY, K_COMMAND, K_UNKNOWN = range(len(KINDS))
_KIND_LUT = np.full(256, K_UNKNOWN, dtype=np.int8)
_KIND_LUT[tp.T_DEVICE_INFO] = K_INFO
_KIND_LUT[tp.T_STATUS] = K_STATUS
_KIND_LUT[tp.T_EVENT] = K_EVENT
_KIND_LUT[tp.T_REPLY] = K_REPLY
for _t in tp.COMMANDS:
    _KIND_LUT[_t] = K_COMMAND
_EXP_LEN = np.full(256, -1, dtype=np.int64)
for _t, _n in _FIXED.items():
    _EXP_LEN[_t] = _n
_MIN_LEN = np.zeros(256, dtype=np.int64)
_MIN_LEN[tp.T_REPLY] = _REPLY.size
for _t in tp.COMMANDS:
    _MIN_LEN[_t] = _CMDH.size + tp.MAC_SIZE


def frame_kinds(a: np.ndarray, starts: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """The kind (index into KINDS) of each frame, exactly as `Renderer.record` decides it.

    A frame of another version, a fixed-size payload of the wrong length or a
    payload too short for its type is `unknown`, as is an unknown type.
    """
    types = a[starts + 1]
    k = _KIND_LUT[types]
    plen = lens - (_H + _C)
    exp = _EXP_LEN[types]
    bad = (a[starts] != N.FRAME_VERSION) | ((exp >= 0) & (plen != exp)) | (plen < _MIN_LEN[types])
    k[bad] = K_UNKNOWN
    return k


def frame_times(a: np.ndarray, starts: np.ndarray, kinds: np.ndarray) -> np.ndarray:
    """The device time each record shows as `t`: an event's own time, else the header's."""
    tm = _u32_at(a, starts + 4)
    ev = kinds == K_EVENT
    if ev.any():
        tm[ev] = _u32_at(a, starts[ev] + _H)
    return tm


def status_columns(a: np.ndarray, starts: np.ndarray) -> dict[str, np.ndarray]:
    """STATUS frames at `starts` as columns in wire units: `time`, `seq` and every field.

    The field names and widths come from the construct definition (via the
    struct format); the arrays are copies, independent of the mapped file.
    """
    if not len(starts):
        out = {"time": np.zeros(0, np.int64), "seq": np.zeros(0, np.int64)}
        for k, name in enumerate(_STATUS_COLS):
            out[name] = np.zeros(0, _STATUS_DT[f"f{k}"])
        return out
    rows = a[starts[:, None] + np.arange(_H + _STATUS.size)]
    out = {
        "time": rows[:, 4:8].copy().view("<u4")[:, 0].astype(np.int64),
        "seq": rows[:, 2].astype(np.int64) | rows[:, 3].astype(np.int64) << 8,
    }
    st = rows[:, _H:].copy().view(_STATUS_DT)[:, 0]
    for k, name in enumerate(_STATUS_COLS):
        out[name] = np.ascontiguousarray(st[f"f{k}"])
    return out


def parse_time(text: str, what: str) -> int:
    """An ISO-8601 time or date (UTC unless it says otherwise) as device time.

    BadInput naming `what` when it is not one.
    """
    s = text.strip()
    try:
        d = _dt.datetime.fromisoformat(s[:-1] + "+00:00" if s.endswith(("Z", "z")) else s)
    except ValueError:
        raise BadInput(
            f"{what}: {text!r} is not an ISO-8601 time such as 2026-01-03T10:00:00Z or 2026-01-03"
        ) from None
    if d.tzinfo is None:
        d = d.replace(tzinfo=_dt.UTC)
    return int(d.timestamp()) - _EPOCH


class Selection:
    """Which frames to output: kinds (None: all) and a time range [t_from, t_to).

    Times are device times and compare with the time each record shows (`t`).
    """

    def __init__(self, kinds=None, t_from: int | None = None, t_to: int | None = None):
        self.kinds = None if kinds is None else frozenset(kinds)
        self.t_from = t_from
        self.t_to = t_to
        mask = np.ones(len(KINDS), dtype=bool)
        if self.kinds is not None:
            mask[:] = False
            for k in self.kinds:
                mask[KINDS.index(k)] = True
        self._kind_ok = mask

    @classmethod
    def from_args(cls, types: str | None, t_from: str | None, t_to: str | None) -> Selection:
        """From the command line's --type, --from and --to (BadInput on a bad value)."""
        kinds = None
        if types:
            kinds = [x.strip() for x in types.split(",") if x.strip()]
            bad = [k for k in kinds if k not in KINDS]
            if bad or not kinds:
                raise BadInput(
                    f"--type: unknown kind {', '.join(map(repr, bad)) or repr(types)}; "
                    f"choose from {', '.join(KINDS)} (comma-separated)"
                )
        f = parse_time(t_from, "--from") if t_from else None
        t = parse_time(t_to, "--to") if t_to else None
        if f is not None and t is not None and t <= f:
            raise BadInput(f"--to: {t_to} is not after --from {t_from}")
        return cls(kinds, f, t)

    @property
    def active(self) -> bool:
        """True when anything is filtered out."""
        return self.kinds is not None or self.t_from is not None or self.t_to is not None

    def apply(self, a: np.ndarray, starts: np.ndarray, lens: np.ndarray):
        """(selected, in_time_range, kinds) boolean/int arrays for a batch of frames."""
        kinds = frame_kinds(a, starts, lens)
        in_time = np.ones(len(starts), dtype=bool)
        if self.t_from is not None or self.t_to is not None:
            tm = frame_times(a, starts, kinds)
            if self.t_from is not None:
                in_time &= tm >= self.t_from
            if self.t_to is not None:
                in_time &= tm < self.t_to
        return in_time & self._kind_ok[kinds], in_time, kinds

    def describe(self) -> str:
        """The filter in words, for the summary."""
        parts = []
        if self.kinds is not None:
            parts.append("kinds " + ",".join(k for k in KINDS if k in self.kinds))
        if self.t_from is not None:
            parts.append("from " + iso(self.t_from))
        if self.t_to is not None:
            parts.append("to " + iso(self.t_to) + " (excluded)")
        return "; ".join(parts)


# --- jsonl fast path --------------------------------------------------------------------------


def _status_lines(r: Renderer, a: np.ndarray, starts: np.ndarray) -> list[str]:
    """jsonl lines of STATUS frames at `starts`, fields gathered column-wise with numpy.

    The common case on a long log; must equal to_json(r.record(frame)) exactly
    (a test checks), only faster.
    """
    col = status_columns(a, starts)
    seq = col["seq"].tolist()
    times = _iso_many(col["time"])
    eta = col["low_eta"]
    eta_s = _iso_many(eta)
    eta_s = [f'"{x}"' if e else "null" for x, e in zip(eta_s, eta.tolist(), strict=True)]
    res = col["reservoir_nl"].astype(np.int64)
    rate = col["rate_nl_day"].astype(np.int64)
    head = zip(
        times, seq, col["mode"].tolist(), (res // 1000).tolist(), (res % 1000).tolist(),
        (col["delivered_ul"].astype(np.int64) + col["delivered_nl"] // 1000).tolist(),
        (col["delivered_nl"] % 1000).tolist(), (rate // 1000).tolist(),
        (rate % 1000).tolist(), col["alarms"].tolist(), eta_s, strict=True,
    )
    # The tail fields change rarely: format each distinct combination once.
    tails = list(zip(
        col["step"].tolist(), col["drug"].tolist(), col["conc_ng_ml"].tolist(),
        col["battery_days"].tolist(), col["rolling_ng"].tolist(), col["boluses_24h"].tolist(),
        col["flags"].tolist(), col["acked"].tolist(), col["rx_crc"].tolist(), strict=True,
    ))
    tail_cache: dict[tuple, str] = {}
    mode_cache: dict[int, str] = {}
    alarm_cache: dict[int, str] = {}
    out = []
    for (t, sq, mode, rq, rr, dul, dnl, aq, ar, alarms, es), tl in zip(head, tails, strict=True):
        ts = tail_cache.get(tl)
        if ts is None:
            step, drug, conc, batt, rolling, nb, flags, acked, rxcrc = tl
            dn = r._drug(drug)
            ts = (
                f'"step":{step},"drug":{"null" if dn is None else _dumps_str(dn)},'
                f'"conc_ng_ml":{conc},"battery_days":{batt},"rolling_24h_ng":{rolling},'
                f'"boluses_24h":{nb},"flags":{flags},"acked":{acked},"rx_crc":{rxcrc}}}'
            )
            if len(tail_cache) < 4096:
                tail_cache[tl] = ts
        ms = mode_cache.get(mode)
        if ms is None:
            ms = mode_cache[mode] = N.MODES.get(mode, f"mode_{mode}")
        al = alarm_cache.get(alarms)
        if al is None:
            al = alarm_cache[alarms] = to_json(N.alarm_names(alarms))
        out.append(
            f'{{"kind":"status","t":"{t}","seq":{sq},"mode":"{ms}",'
            f'"reservoir_ul":{rq}.{_FRAC[rr]},"delivered_ul":{dul}.{_FRAC[dnl]},'
            f'"rate_ul_per_day":{aq}.{_FRAC[ar]},"alarms":{al},"low_reservoir_eta":{es},{ts}'
        )
    return out


# --- the table: for a person ------------------------------------------------------------------

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
    return _table_val(v)


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
_CHANGE_FIELDS = ("drug", "conc_ng_ml", "battery_days", "low_eta", "boluses_24h", "flags",
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
            elif name == "low_eta":
                parts.append(f"low_reservoir_eta={iso(v) if v else '-'}")
            elif name == "rx_crc":
                parts.append(f"rx_crc=0x{v:08x}")
            else:
                parts.append(f"{name}={v}")
        return " ".join(parts)


# --- emitting text formats --------------------------------------------------------------------


def _emit(t: Tlog, fmt: str, out: _Out, summary: Summary, sel: Selection | None = None) -> None:
    """Write every (selected) frame of `t` to `out` as `fmt`; account for it in `summary`."""
    r = Renderer()
    data = t.data
    a = summary.a
    filtering = sel is not None and sel.active
    if fmt == "csv":
        w = csv.writer(_CsvSink(out), lineterminator="")
        w.writerow(_CSV_COLS)
    elif fmt == "table":
        out.line(TABLE_HEAD)
        tst = _TableStatus(r)
    shown = 0
    for b in t.batches():
        starts, lens = b.starts, b.lengths
        if filtering:
            m, in_time, _ = sel.apply(a, starts, lens)
            summary.add(starts[m], lens[m], starts[in_time])
            starts, lens = starts[m], lens[m]
        else:
            summary.add(starts, lens)
        if fmt == "table":
            first = int(b.starts[0]) if len(b.starts) else 1 << 62
            while shown < len(t.anomalies) and t.anomalies[shown].offset < first:
                out.line(_anomaly_text(t.anomalies[shown]))
                shown += 1
        if not len(starts):
            continue
        if fmt in ("jsonl", "table"):
            fast = (
                (a[starts + 1] == tp.T_STATUS)
                & (lens == _H + _STATUS.size + _C)
                & (a[starts] == N.FRAME_VERSION)
            )
            if fmt == "jsonl":
                def make(st):
                    return _status_lines(r, a, st)
            else:
                def make(st):
                    return tst.lines(a, st)
            if fast.all():
                out.lines(make(starts))
                continue
            sl = iter(make(starts[fast]) if fast.any() else ())
            for s, n, f in zip(starts.tolist(), lens.tolist(), fast.tolist(), strict=True):
                if f:
                    out.line(next(sl))
                    continue
                rec = r.record(data[s : s + n])
                if fmt == "jsonl":
                    out.line(to_json(rec))
                else:
                    out.line(f"{_table_time(rec['t'])}  {rec['seq']:>5}  {rec['kind']:<11}  "
                             + _table_text(rec))
        else:
            for s, n in zip(starts.tolist(), lens.tolist(), strict=True):
                rec = r.record(data[s : s + n])
                row = [_cell(rec.get(c)) for c in _CSV_COLS[:-1]]
                rest = {k: v for k, v in rec.items() if k not in _CSV_SET}
                row.append(to_json(rest) if rest else "")
                w.writerow(row)
    if fmt == "table":
        for x in t.anomalies[shown:]:
            out.line(_anomaly_text(x))
    summary.anomalies = list(t.anomalies)


class _CsvSink:
    def __init__(self, out: _Out):
        self.out = out

    def write(self, s: str) -> None:
        self.out.line(s)


# --- Parquet: one typed row per frame, for DuckDB / pandas over many pumps --------------------


def parquet_schema():
    """The Arrow schema of `--format parquet` (one column per field of any record kind).

    `serial` (from the log's DEVICE_INFO) is on every row so that many pumps'
    logs can be queried together; `t` and other times are UTC timestamps;
    volumes are uL (float64); codes are their names. Event fields become
    columns of their own (typed by the event table); what fits no column
    (a reply's body, a command's body) is JSON text in `body` or `details`.
    """
    import pyarrow as pa

    ts = pa.timestamp("s", tz="UTC")
    s, u8, u16, u32, f64 = pa.string(), pa.uint8(), pa.uint16(), pa.uint32(), pa.float64()
    cols: list[tuple[str, object]] = [
        ("serial", s), ("kind", s), ("t", ts), ("seq", u16), ("type", u8), ("version", u8),
        # status
        ("mode", s), ("step", u32), ("flags", u8), ("drug", s), ("alarms", pa.list_(s)),
        ("reservoir_ul", f64), ("delivered_ul", f64), ("rate_ul_per_day", f64),
        ("low_reservoir_eta", ts), ("battery_days", u16), ("rolling_24h_ng", u32),
        ("conc_ng_ml", u32), ("boluses_24h", u8), ("acked", u8), ("rx_crc", u32),
        # event
        ("event_seq", u32), ("event", s), ("who", s),
    ]
    by_kind = {"int": u32, "nl": f64, "time": ts, "i32": pa.int32(), "mask": pa.list_(s)}
    names = {n for n, _ in cols}
    for ev in N.EVENTS.values():
        for arg in (ev.a, ev.b, ev.c):
            if arg is not None and arg.name not in names:
                cols.append((arg.name, by_kind.get(arg.kind, s)))
                names.add(arg.name)
    for n, ty in [
        ("a", u32), ("b", u32), ("c", u32),
        # reply and command
        ("cmd", s), ("cmd_id", u32), ("result", s), ("detail", u32), ("role", s),
        ("counter", u32), ("body", s), ("mac", s),
        # device_info
        ("runtime", s), ("firmware", s), ("schema", u32), ("schema_ok", pa.bool_()),
        ("stroke_nl", u32), ("capacity_ul", f64), ("low_reservoir_ul", f64),
        ("catheter_ul", f64), ("max_rate_ul_h", f64),
        # unknown
        ("reason", s), ("payload", s),
        ("details", s),
    ]:
        if n not in names:
            cols.append((n, ty))
            names.add(n)
    return pa.schema(cols)


def _fits(ty, v) -> bool:
    import pyarrow as pa

    if pa.types.is_boolean(ty):
        return type(v) is bool
    if pa.types.is_integer(ty) or pa.types.is_timestamp(ty):
        if type(v) is not int:
            return False
        if pa.types.is_timestamp(ty):
            return True
        lo, hi = (0, (1 << ty.bit_width) - 1) if pa.types.is_unsigned_integer(ty) else (
            -(1 << (ty.bit_width - 1)), (1 << (ty.bit_width - 1)) - 1)
        return lo <= v <= hi
    if pa.types.is_floating(ty):
        return type(v) in (int, float)
    if pa.types.is_list(ty):
        return type(v) is list and all(type(x) is str for x in v)
    return type(v) is str


def _unix(iso_text: str) -> int:
    return int(_dt.datetime.fromisoformat(iso_text.replace("Z", "+00:00")).timestamp())


def _parquet_row(rec: dict, t_unix: int, schema, r: Renderer) -> dict:
    """A record as a row of the Parquet schema; what fits no column goes to `details`."""
    import pyarrow as pa

    row: dict = {"t": t_unix}
    extra = {}
    for k, v in rec.items():
        if k == "t" or v is None:
            continue
        if k == "drug" and rec.get("kind") == "event" and type(v) is int:
            v = r._drug(v)  # prescription_changed carries the drug's id: show its name
            if v is None:
                continue
        if k == "body" and type(v) is not str:
            v = to_json(v)
        idx = schema.get_field_index(k)
        if idx < 0:
            extra[k] = v
            continue
        ty = schema.field(idx).type
        if pa.types.is_timestamp(ty) and type(v) is str:
            try:
                v = _unix(v)
            except ValueError:
                extra[k] = v
                continue
        if _fits(ty, v):
            row[k] = v
        else:
            extra[k] = v
    if extra:
        row["details"] = to_json(extra)
    return row


def _alarm_list_array(masks: np.ndarray):
    """list<string> of alarm names per mask, built from the distinct masks only."""
    import pyarrow as pa

    uniq, inv = np.unique(masks, return_inverse=True)
    lists = [N.alarm_names(int(m)) for m in uniq.tolist()]
    lens_u = np.array([len(x) for x in lists], dtype=np.int64)
    flat = np.array([n for x in lists for n in x] or [""], dtype=object)
    start_u = np.concatenate(([0], np.cumsum(lens_u)[:-1]))
    row_len = lens_u[inv]
    offsets = np.concatenate(([0], np.cumsum(row_len))).astype(np.int32)
    total = int(offsets[-1])
    if total:
        idx = np.repeat(start_u[inv], row_len) + (
            np.arange(total) - np.repeat(offsets[:-1].astype(np.int64), row_len))
        values = pa.array(flat[idx], type=pa.string())
    else:
        values = pa.array([], type=pa.string())
    return pa.ListArray.from_arrays(pa.array(offsets, type=pa.int32()), values)


def _status_table(col: dict, serial, schema, r: Renderer):
    """The STATUS rows as an Arrow table of `schema`, built column-wise."""
    import pyarrow as pa

    n = len(col["time"])
    modes = np.array([N.MODES.get(i, f"mode_{i}") for i in range(256)], dtype=object)
    drugs = np.array([r._drug(i) for i in range(256)], dtype=object)
    eta = col["low_eta"].astype(np.int64)
    vals = {
        "serial": pa.array(serial, type=pa.string()),
        "kind": pa.array(np.full(n, "status", dtype=object), type=pa.string()),
        "t": pa.array(col["time"] + _EPOCH, type=schema.field("t").type),
        "seq": pa.array(col["seq"].astype(np.uint16)),
        "type": pa.array(np.full(n, tp.T_STATUS, dtype=np.uint8)),
        "version": pa.array(np.full(n, N.FRAME_VERSION, dtype=np.uint8)),
        "mode": pa.array(modes[col["mode"]], type=pa.string()),
        "step": pa.array(col["step"].astype(np.uint32)),
        "flags": pa.array(col["flags"]),
        "drug": pa.array(drugs[col["drug"]], type=pa.string()),
        "alarms": _alarm_list_array(col["alarms"]),
        "reservoir_ul": pa.array(col["reservoir_nl"] / 1000),
        "delivered_ul": pa.array(col["delivered_ul"].astype(np.float64)
                                 + col["delivered_nl"] / 1000),
        "rate_ul_per_day": pa.array(col["rate_nl_day"] / 1000),
        "low_reservoir_eta": pa.array(eta + _EPOCH, type=schema.field("t").type, mask=eta == 0),
        "battery_days": pa.array(col["battery_days"]),
        "rolling_24h_ng": pa.array(col["rolling_ng"]),
        "conc_ng_ml": pa.array(col["conc_ng_ml"]),
        "boluses_24h": pa.array(col["boluses_24h"]),
        "acked": pa.array(col["acked"]),
        "rx_crc": pa.array(col["rx_crc"]),
    }
    arrays = []
    for f in schema:
        v = vals.get(f.name)
        arrays.append(pa.nulls(n, f.type) if v is None else v.cast(f.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def write_parquet(t: Tlog, path, summary: Summary, sel: Selection | None = None) -> int:
    """Write every (selected) frame of `t` as one Parquet row; returns the number of rows.

    STATUS frames (nearly all of a log) are converted column-wise; other frames
    through `Renderer.record`. `serial` comes from the DEVICE_INFO in force at
    each frame (the first one for frames before it), whatever the filter.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    r = Renderer()
    a = summary.a
    data = t.data
    schema = parquet_schema()
    filtering = sel is not None and sel.active
    st_cols: list[dict] = []
    st_pos: list[np.ndarray] = []
    rows: list[dict] = []
    row_pos: list[int] = []
    info_pos: list[int] = []
    info_serial: list[str] = []
    base = 0
    for b in t.batches():
        starts, lens = b.starts, b.lengths
        kinds = frame_kinds(a, starts, lens)
        for i in np.flatnonzero(kinds == K_INFO).tolist():
            s = int(starts[i])
            info_pos.append(base + i)
            info_serial.append(r.info_fields(_INFO.unpack_from(data, s + _H))["serial"])
        if filtering:
            m, in_time, _ = sel.apply(a, starts, lens)
            summary.add(starts[m], lens[m], starts[in_time])
        else:
            m = np.ones(len(starts), dtype=bool)
            summary.add(starts, lens)
        stm = m & (kinds == K_STATUS)
        if stm.any():
            st_cols.append(status_columns(a, starts[stm]))
            st_pos.append(np.flatnonzero(stm) + base)
        other = np.flatnonzero(m & (kinds != K_STATUS))
        if len(other):
            tm = frame_times(a, starts[other], kinds[other]).tolist()
            for i, tt in zip(other.tolist(), tm, strict=True):
                s, n = int(starts[i]), int(lens[i])
                rows.append(_parquet_row(r.record(data[s : s + n]), tt + _EPOCH, schema, r))
                row_pos.append(base + i)
        base += len(starts)
    summary.anomalies = list(t.anomalies)

    ipos = np.asarray(info_pos, dtype=np.int64)
    iser = np.array(info_serial or [None], dtype=object)

    def serial_at(pos: np.ndarray) -> np.ndarray:
        if not len(ipos):
            return np.full(len(pos), None, dtype=object)
        return iser[np.maximum(np.searchsorted(ipos, pos, side="right") - 1, 0)]

    tables, order = [], []
    if st_cols:
        col = {k: np.concatenate([c[k] for c in st_cols]) for k in st_cols[0]}
        pos = np.concatenate(st_pos)
        tables.append(_status_table(col, serial_at(pos), schema, r))
        order.append(pos)
    if rows:
        pos = np.asarray(row_pos, dtype=np.int64)
        for row, sv in zip(rows, serial_at(pos).tolist(), strict=True):
            if sv is not None:
                row["serial"] = sv
        tables.append(pa.Table.from_pylist(rows, schema=schema))
        order.append(pos)
    if tables:
        table = pa.concat_tables(tables)
        table = table.take(pa.array(np.argsort(np.concatenate(order), kind="stable")))
    else:
        table = schema.empty_table()
    meta = {
        b"theca.source": str(t.path).encode(),
        b"theca.log_schema": f"0x{t.header.schema:08x}".encode(),
        b"theca.decoder_schema": f"0x{tp.SCHEMA:08x}".encode(),
    }
    if filtering:
        meta[b"theca.filter"] = sel.describe().encode()
    table = table.replace_schema_metadata(meta)
    pq.write_table(table, path, compression="zstd")
    return table.num_rows


# --- a whole log in memory, for report and trumpet ---------------------------------------------


class LogData(NamedTuple):
    """A decoded log: STATUS frames as columns, events and device infos as records.

    `status` holds numpy arrays in file order (see `status_columns`, plus
    `delivered_total_nl`); each event record has `time` (device time) beside
    its ISO `t`; `summary` is `Summary.result()`.
    """

    path: str
    status: dict
    events: list
    infos: list
    summary: dict


def read_log(path) -> LogData:
    """Read a whole .tlog for analysis (TlogError if it is not one)."""
    r = Renderer()
    with Tlog(path) as t:
        s = Summary(t)
        a = s.a
        data = t.data
        parts, events, infos = [], [], []
        for b in t.batches():
            s.add(b.starts, b.lengths)
            kinds = frame_kinds(a, b.starts, b.lengths)
            st = b.starts[kinds == K_STATUS]
            if len(st):
                parts.append(status_columns(a, st))
            for i in np.flatnonzero((kinds == K_EVENT) | (kinds == K_INFO)).tolist():
                off, n = int(b.starts[i]), int(b.lengths[i])
                rec = r.record(data[off : off + n])
                if kinds[i] == K_EVENT:
                    rec["time"] = _EVENT.unpack_from(data, off + _H)[0]
                    events.append(rec)
                else:
                    infos.append(rec)
        s.anomalies = list(t.anomalies)
        summary = s.result()
        del s, a, data
    if parts:
        col = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    else:
        col = status_columns(np.zeros(0, np.uint8), np.zeros(0, np.int64))
    col["delivered_total_nl"] = col["delivered_ul"].astype(np.int64) * 1000 + col["delivered_nl"]
    return LogData(str(path), col, events, infos, summary)


# --- command line --------------------------------------------------------------------------


def add_parser(subparsers) -> None:
    """Register `decode` on an argparse subparsers object."""
    p = subparsers.add_parser(
        "decode",
        help="decode a telemetry log (.tlog)",
        description="Decode a Theca telemetry log: one record per frame, or a summary.",
        epilog="Exit status: 0 ok; 1 with --strict when the log has problems "
        "(CRC errors, garbage, sequence gaps, truncated tail, unknown types, "
        "schema mismatch); 2 the file is missing or not a .tlog, or a bad option value.",
    )
    p.add_argument("tlog", help="the .tlog file")
    p.add_argument(
        "--format",
        choices=["table", "csv", "jsonl", "parquet"],
        default="table",
        help="table (default, for a person), csv, jsonl (one JSON object per frame) or "
        "parquet (one typed row per frame, with the device serial; needs -o)",
    )
    p.add_argument("-o", "--output", help="write to this file instead of standard output")
    p.add_argument(
        "--type",
        metavar="KINDS",
        help="only these kinds, comma-separated: " + ",".join(KINDS),
    )
    p.add_argument("--from", dest="from_", metavar="ISO",
                   help="only records at or after this UTC time (e.g. 2026-01-03T10:00:00Z)")
    p.add_argument("--to", metavar="ISO", help="only records before this UTC time")
    p.add_argument(
        "--summary",
        action="store_true",
        help="print only a summary: frames, kinds, CRC errors, gaps, truncation, unknown types",
    )
    p.add_argument(
        "--strict", action="store_true", help="exit 1 if the log has any problem the summary lists"
    )
    p.set_defaults(func=run)


def _open_output(path: str | None):
    if path is None:
        return sys.stdout
    try:
        return open(path, "w", newline="")  # noqa: SIM115 (closed by run)
    except OSError as e:
        raise BadInput(f"-o: cannot write {path}: {e.strerror}") from None


def run(args) -> int:
    """Run `theca decode`; returns the exit status."""
    fmt = getattr(args, "format", "table") or "table"
    sel = Selection.from_args(getattr(args, "type", None), getattr(args, "from_", None),
                              getattr(args, "to", None))
    output = getattr(args, "output", None)
    if fmt == "parquet" and not args.summary and not output:
        raise BadInput("--format parquet writes a file: give -o FILE.parquet")
    if fmt == "parquet" and output and not args.summary:
        parent = Path(output).resolve().parent
        if not parent.is_dir():
            raise BadInput(f"-o: folder {parent} does not exist")
    try:
        t = Tlog(args.tlog)
    except TlogError as e:
        print(f"theca decode: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    with t:
        summary = Summary(t)
        if args.summary:
            a = summary.a
            for b in t.batches():
                if sel.active:
                    m, in_time, _ = sel.apply(a, b.starts, b.lengths)
                    summary.add(b.starts[m], b.lengths[m], b.starts[in_time])
                else:
                    summary.add(b.starts, b.lengths)
            summary.anomalies = list(t.anomalies)
            res = summary.result()
            if sel.active:
                res["filter"] = sel.describe()
            stream = _open_output(output)
            try:
                if fmt == "jsonl":
                    stream.write(to_json(res) + "\n")
                else:
                    stream.write(format_summary(res))
                stream.flush()
            finally:
                if stream is not sys.stdout:
                    stream.close()
        else:
            if fmt == "parquet":
                rows = write_parquet(t, output, summary, sel)
                res = summary.result()
                print(f"theca decode: {rows} rows -> {output}", file=sys.stderr)
            else:
                stream = _open_output(output)
                try:
                    out = _Out(stream)
                    _emit(t, fmt, out, summary, sel)
                    out.flush()
                finally:
                    if stream is not sys.stdout:
                        stream.close()
                res = summary.result()
            if res["problems"]:
                print(
                    f"theca decode: {args.tlog}: " + "; ".join(res["problems"]), file=sys.stderr
                )
        del summary
    if args.strict and res["problems"]:
        if args.summary:
            print(f"theca decode: {args.tlog}: problems found (--strict)", file=sys.stderr)
        return EXIT_PROBLEMS
    return EXIT_OK
