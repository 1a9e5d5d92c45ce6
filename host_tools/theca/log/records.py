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

import json
from collections.abc import Callable, Iterator

import theca_protocol as tp
from theca_protocol import names as N

from theca.log import fields as F
from theca.log import layout as L
from theca.log.devtime import iso
from theca.log.layout import CMD_FIRST
from theca.log.tlog import Tlog

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_BAD_INPUT = 2

_RUNTIMES = N.RUNTIMES


def is_command(t: int) -> bool:
    """Types from the first command's to the REPLY's travel host -> device (they carry the
    host's seq)."""
    return CMD_FIRST <= t < tp.T_REPLY


# --- values ---------------------------------------------------------------------------

def ul(nl: int) -> float:
    """nL -> uL (a float that the writers print with exactly 3 decimals)."""
    return nl / 1000


def _drug_names() -> dict[int, str]:
    try:
        from theca.inputs.druglib import load_druglib

        return {d.id: d.name for d in load_druglib().drugs}
    except Exception:  # noqa: BLE001 (a broken library must not stop decoding)
        return {}


# --- frame -> record ----------------------------------------------------------------------


class Renderer:
    """Turns frames into records (dicts, JSON-ready, keys in a stable order)."""

    def __init__(self, drug_names: dict[int, str] | None = None):
        self.drugs = _drug_names() if drug_names is None else drug_names

    def drug_name(self, d: int):
        """A drug library id's name (None: no drug; an unknown id as drug_N)."""
        if d == 0:
            return None
        return self.drugs.get(d, f"drug_{d}")

    def status_fields(self, v: tuple) -> dict:
        """The named fields of a STATUS payload (from the struct tuple), by the field
        model (fields.py)."""
        raw = dict(zip(F.STATUS_RAW, v, strict=True))
        return {f.name: self.status_value(f, raw) for f in F.STATUS_FIELDS}

    def status_value(self, f: F.Field, raw: dict):
        """Field `f` of a STATUS frame whose raw fields are `raw`."""
        k = f.kind
        x = raw[f.raw[0]]
        if k == "int":
            return x
        if k == "milli":
            return x / 1000
        if k == "milli2":
            return x + raw[f.raw[1]] / 1000
        if k == "code":
            return F.code_name(f, x)
        if k == "time":
            return iso(x) if x else None
        if k == "alarm_mask":
            return N.alarm_names(x) if x else []
        if k == "drug_id":
            return self.drug_name(x)
        raise ValueError(f"field {f.name}: no kind {k!r}")

    def info_fields(self, v: tuple) -> dict:
        """The named fields of a DEVICE_INFO payload."""
        (serial, fmaj, fmin, fpat, rt, schema, stroke, cap, low, cath, max_rate, min_rate,
         machine) = v
        return {
            "runtime": _RUNTIMES.get(rt, f"runtime_{rt}"),
            "machine": machine.rstrip(b"\x00").decode("ascii", "replace"),
            "serial": serial.rstrip(b"\x00").decode("ascii", "replace"),
            "firmware": f"{fmaj}.{fmin}.{fpat}",
            "schema": schema,
            "schema_ok": schema == tp.SCHEMA,
            "stroke_nl": stroke,
            "capacity_ul": cap / 1000,
            "low_reservoir_ul": low / 1000,
            "catheter_ul": cath / 1000,
            "max_rate_ul_h": max_rate / 1000,
            "min_rate_ul_day": min_rate / 1000,
        }

    def event_fields(self, v: tuple) -> dict:
        """The named fields of an EventRecord (t, event_seq, event, who, a/b/c/d by name)."""
        t, eseq, code, who, a, b, c, d = v
        ev = N.EVENTS.get(code)
        out = {
            "t": iso(t),
            "event_seq": eseq,
            "event": ev.name if ev else f"event_{code}",
            "who": N.WHO.get(who, f"who_{who}"),
        }
        if ev is None:
            out.update(a=a, b=b, c=c, d=d)
            return out
        for slot, arg, raw in zip("abcd", ev.args, (a, b, c, d), strict=True):
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
            elif k == "SOFT_LIMITS_MASK":
                out[arg.name] = N.flag_names(N.SOFT_LIMITS, raw)
            elif k == "drug_id":
                out[arg.name] = self.drug_name(raw)
            else:
                out[arg.name] = N.name_of(N.TABLES[k], raw, arg.name)
        dm = N.ALARM_DETAIL_MASKS.get(out.get("alarm", ""))
        if dm is not None and "detail" in out:
            out[dm[0]] = N.flag_names(N.TABLES[dm[1]], out["detail"])
        return out

    def _reply_body(self, cmd_type: int, body: bytes):
        if cmd_type == tp.TYPES["GET_STATUS"] and len(body) == L.STATUS.size:
            return self.status_fields(L.STATUS.unpack(body))
        if cmd_type == tp.TYPES["GET_INFO"] and len(body) == L.INFO.size:
            return self.info_fields(L.INFO.unpack(body))
        if cmd_type == tp.TYPES["LOG_READ"] and len(body) >= L.LOG_HEAD.size:
            nxt, first, count = L.LOG_HEAD.unpack_from(body)
            if len(body) == L.LOG_HEAD.size + count * L.EVENT.size:
                evs = [
                    self.event_fields(L.EVENT.unpack_from(body, L.LOG_HEAD.size + i * L.EVENT.size))
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
        ver, t, seq, time = L.HDR.unpack_from(fr)
        payload = fr[L.HDR_SIZE:-L.CRC_SIZE]
        head = {"t": iso(time), "seq": seq}
        if ver != N.FRAME_VERSION:
            return self._unknown(head, t, ver, payload, f"frame version {ver}")
        exp = L.FIXED.get(t)
        if exp is not None and len(payload) != exp:
            return self._unknown(
                head, t, ver, payload, f"{tp.MESSAGES[t].name} payload of {len(payload)} bytes, expected {exp}"
            )
        if t == tp.T_STATUS:
            return {"kind": "status", **head, **self.status_fields(L.STATUS.unpack(payload))}
        if t == tp.T_EVENT:
            f = self.event_fields(L.EVENT.unpack(payload))
            return {"kind": "event", "t": f.pop("t"), "seq": seq, **f}
        if t == tp.T_DEVICE_INFO:
            return {"kind": "device_info", **head, **self.info_fields(L.INFO.unpack(payload))}
        if t == tp.T_REPLY and len(payload) >= L.REPLY.size + tp.MAC_SIZE:
            return self._reply(head, payload)
        if is_command(t) and t in tp.COMMANDS and len(payload) >= L.CMD_HEAD.size + tp.MAC_SIZE:
            return _command(head, tp.COMMANDS[t], payload)
        why = "unknown type" if t not in tp.MESSAGES else "payload too short"
        return self._unknown(head, t, ver, payload, why)

    def _reply(self, head: dict, payload: bytes) -> dict:
        cmd_id, ctype, result, detail = L.REPLY.unpack_from(payload)
        body = payload[L.REPLY.size : -tp.MAC_SIZE]
        cm = tp.MESSAGES.get(ctype)
        rname = N.name_of(N.RESULTS, result, "result")
        out = {
            "kind": "reply",
            **head,
            "cmd_id": cmd_id,
            "cmd": cm.name.lower() if cm else f"cmd_{ctype}",
            "result": rname,
            "detail": detail,
        }
        # the detail by what the protocol definition says it is for this command and result
        kind = cm.detail_kind(rname) if cm else "none"
        if kind in _DETAIL_NAMES and detail:
            key, name = _DETAIL_NAMES[kind]
            out[key] = name(detail)
        if body:
            out["body"] = self._reply_body(ctype, body) if result == 0 else body.hex()
        out["mac"] = payload[-tp.MAC_SIZE :].hex()
        return out

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


def _field_name(detail: int) -> str:
    return N.INVALID_FIELDS[detail - 1] if 1 <= detail <= len(N.INVALID_FIELDS) else f"field_{detail}"


#: A reply's detail named by its kind (messages.Message.detail_kind): the record's key and
#: what names it.
_DETAIL_NAMES: dict[str, tuple[str, Callable[[int], object]]] = {
    "deny": ("reason", lambda d: N.name_of(N.DENY_REASONS, d, "reason")),
    "field": ("field", _field_name),
    "mode": ("mode", lambda d: N.name_of(N.MODES, d, "mode")),
    "role": ("role", lambda d: N.name_of(N.ROLES, d, "role")),
    "alarms": ("alarms", N.alarm_names),
}


def _command(head: dict, cm, payload: bytes) -> dict:
    cmd_id, role, counter, challenge = L.CMD_HEAD.unpack_from(payload)
    body = payload[L.CMD_HEAD.size : -tp.MAC_SIZE]
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
        "challenge": challenge,
        "body": b,
        "mac": payload[-tp.MAC_SIZE :].hex(),
    }


def records(path, types: frozenset[int] | None = None) -> Iterator[dict]:
    """Every frame of a .tlog as a record, in file order (TlogError if not a .tlog); with
    `types`, only frames of those message types (the others are not decoded at all)."""
    r = Renderer()
    with Tlog(path) as t:
        for _, fr in t.frames():
            if types is None or (len(fr) > 1 and fr[1] in types):
                yield r.record(fr)


# --- JSON with uL at exactly 3 decimals ----------------------------------------------------

dumps_str = json.JSONEncoder(ensure_ascii=True).encode


def to_json(v) -> str:
    """Compact JSON; floats (uL values) with exactly 3 decimals."""
    t = type(v)
    if t is str:
        return dumps_str(v)
    if t is int:
        return str(v)
    if t is float:
        return f"{v:.3f}"
    if v is None:
        return "null"
    if t is bool:
        return "true" if v else "false"
    if t is dict:
        return "{" + ",".join(f"{dumps_str(k)}:{to_json(x)}" for k, x in v.items()) + "}"
    if t is list or t is tuple:
        return "[" + ",".join(to_json(x) for x in v) + "]"
    return dumps_str(str(v))


