"""`theca decode RUN.tlog [--format table|csv|jsonl] [--summary] [--strict]`.

Frames become records (dicts) with the field names of interface.md: volumes in
uL (from nL, shown with 3 decimals), times as ISO-8601 UTC, codes as names.
Every frame becomes a record: besides `device_info`, `status` and `event`
there are `reply`, `command` and `unknown` (an unknown type, another frame
version, or a payload of the wrong length), so nothing is dropped.

Bytes that are not good frames (bad CRC, garbage, a truncated tail) are not
records: they are counted in the summary, shown inline in the table, and
always mentioned on stderr.

`--summary` prints only the summary (text; one JSON object with
`--format jsonl`). `--strict` exits 1 when the log has CRC errors, garbage,
sequence gaps, a truncated tail, unknown types or versions, malformed
payloads, or a schema other than this decoder's. Exit 2: the file is missing
or not a .tlog.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import struct
import sys
from collections.abc import Iterator

import numpy as np
import theca_protocol as tp
from theca_protocol import names as N

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
        serial, fmaj, fmin, fpat, rt, schema, stroke, cap, low, cath = v
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

    def add(self, starts: np.ndarray, lens: np.ndarray) -> None:
        """Account for a batch of good frames."""
        if not len(starts):
            return
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
        seq = a[ds + 2].astype(np.int64) | (a[ds + 3].astype(np.int64) << 8)
        tm = (
            a[ds + 4].astype(np.int64)
            | (a[ds + 5].astype(np.int64) << 8)
            | (a[ds + 6].astype(np.int64) << 16)
            | (a[ds + 7].astype(np.int64) << 24)
        )
        if self.first_time is None:
            self.first_time = int(tm[0])
        self.last_time = int(tm[-1])
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


def _status_lines(r: Renderer, a: np.ndarray, starts: np.ndarray) -> list[str]:
    """jsonl lines of STATUS frames at `starts`, fields gathered column-wise with numpy.

    The common case on a long log; must equal to_json(r.record(frame)) exactly
    (a test checks), only faster.
    """
    rows = a[starts[:, None] + np.arange(_H + _STATUS.size)]
    seq = (rows[:, 2].astype(np.int64) | rows[:, 3].astype(np.int64) << 8).tolist()
    tm = rows[:, 4:8].copy().view("<u4")[:, 0]
    times = _iso_many(tm)
    st = rows[:, _H:].copy().view(_STATUS_DT)[:, 0]
    col = {name: st[f"f{k}"] for k, name in enumerate(_STATUS_COLS)}
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


def _emit(t: Tlog, fmt: str, out: _Out, summary: Summary) -> None:
    r = Renderer()
    data = t.data
    if fmt == "csv":
        w = csv.writer(_CsvSink(out), lineterminator="")
        w.writerow(_CSV_COLS)
    elif fmt == "table":
        out.line(f"{'time':<20}  {'seq':>5}  {'kind':<11}  details")
    shown = 0
    for b in t.batches():
        summary.add(b.starts, b.lengths)
        if fmt == "table":
            first = int(b.starts[0]) if len(b.starts) else 1 << 62
            while shown < len(t.anomalies) and t.anomalies[shown].offset < first:
                out.line(_anomaly_text(t.anomalies[shown]))
                shown += 1
        starts = b.starts.tolist()
        lens = b.lengths.tolist()
        if fmt == "jsonl":
            a = summary.a
            fast = (
                (a[b.starts + 1] == tp.T_STATUS)
                & (b.lengths == _H + _STATUS.size + _C)
                & (a[b.starts] == N.FRAME_VERSION)
            )
            if fast.all():
                out.lines(_status_lines(r, a, b.starts))
                continue
            sl = iter(_status_lines(r, a, b.starts[fast]) if fast.any() else ())
            for s, n, f in zip(starts, lens, fast.tolist(), strict=True):
                out.line(next(sl) if f else to_json(r.record(data[s : s + n])))
        elif fmt == "csv":
            for s, n in zip(starts, lens, strict=True):
                rec = r.record(data[s : s + n])
                row = [_cell(rec.get(c)) for c in _CSV_COLS[:-1]]
                rest = {k: v for k, v in rec.items() if k not in _CSV_SET}
                row.append(to_json(rest) if rest else "")
                w.writerow(row)
        else:
            for s, n in zip(starts, lens, strict=True):
                rec = r.record(data[s : s + n])
                det = "  ".join(
                    f"{k}={_table_val(v)}" for k, v in rec.items() if k not in ("kind", "t", "seq")
                )
                out.line(f"{rec['t']:<20}  {rec['seq']:>5}  {rec['kind']:<11}  {det}")
    if fmt == "table":
        for x in t.anomalies[shown:]:
            out.line(_anomaly_text(x))
    summary.anomalies = list(t.anomalies)


class _CsvSink:
    def __init__(self, out: _Out):
        self.out = out

    def write(self, s: str) -> None:
        self.out.line(s)


# --- command line --------------------------------------------------------------------------


def add_parser(subparsers) -> None:
    """Register `decode` on an argparse subparsers object."""
    p = subparsers.add_parser(
        "decode",
        help="decode a telemetry log (.tlog)",
        description="Decode a Theca telemetry log: one record per frame, or a summary.",
        epilog="Exit status: 0 ok; 1 with --strict when the log has problems "
        "(CRC errors, garbage, sequence gaps, truncated tail, unknown types, "
        "schema mismatch); 2 the file is missing or not a .tlog.",
    )
    p.add_argument("tlog", help="the .tlog file")
    p.add_argument(
        "--format",
        choices=["table", "csv", "jsonl"],
        default="table",
        help="table (default), csv, or jsonl (one JSON object per frame)",
    )
    p.add_argument(
        "--summary",
        action="store_true",
        help="print only a summary: frames, kinds, CRC errors, gaps, truncation, unknown types",
    )
    p.add_argument(
        "--strict", action="store_true", help="exit 1 if the log has any problem the summary lists"
    )
    p.set_defaults(func=run)


def run(args) -> int:
    """Run `theca decode`; returns the exit status."""
    try:
        t = Tlog(args.tlog)
    except TlogError as e:
        print(f"theca decode: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    fmt = getattr(args, "format", "table") or "table"
    with t:
        summary = Summary(t)
        if args.summary:
            for b in t.batches():
                summary.add(b.starts, b.lengths)
            summary.anomalies = list(t.anomalies)
            res = summary.result()
            if fmt == "jsonl":
                sys.stdout.write(to_json(res) + "\n")
            else:
                sys.stdout.write(format_summary(res))
            sys.stdout.flush()
        else:
            out = _Out(sys.stdout)
            _emit(t, fmt, out, summary)
            out.flush()
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
