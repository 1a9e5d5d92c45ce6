"""Markdown for PROTOCOL.md, generated from the construct definitions.

protocol/gen_vectors.py writes these between the GENERATED markers of
PROTOCOL.md, and a test checks they are current, so the written spec and the
code cannot disagree about a layout.
"""

from __future__ import annotations

from construct import Array, Bytes, GreedyBytes, Renamed, Struct

from . import messages as M
from .schema import describe

#: What a field means, where the name alone does not say (units, encodings).
NOTES = {
    "version": "1",
    "type": "message type",
    "seq": "sender's frame counter, wraps at 65535",
    "time": "sender's device time (s since 2020-01-01T00:00:00Z)",
    "serial": "ASCII, NUL-padded",
    "runtime": "1 = micropython",
    "schema": "schema fingerprint (SCHEMA)",
    "stroke_nl": "nL per pump stroke",
    "capacity_nl": "reservoir capacity, nL",
    "low_reservoir_nl": "low-reservoir alarm threshold, nL",
    "catheter_nl": "catheter dead volume, nL",
    "max_rate_nl_h": "fastest rate the mechanism delivers (basal or bolus), nL/h",
    "mode": "MODES",
    "step": "index of the basal step in force",
    "flags": "bit 0: trial phase",
    "drug": "drug library id (0 = none)",
    "alarms": "mask of 1 << alarm bit",
    "reservoir_nl": "nL left",
    "delivered_ul": "uL delivered since therapy start (whole uL)",
    "delivered_nl": "0..999: the nL part of the above",
    "battery_days": "days of battery left",
    "rate_nl_day": "current volume rate, nL/day",
    "low_eta": "device time the low-reservoir alarm is expected (0 = none)",
    "rolling_ng": "drug delivered in the last 24 h, ng",
    "conc_ng_ml": "ng/mL",
    "boluses_24h": "patient boluses in the last 24 h",
    "acked": "unused, 0",
    "rx_crc": "CRC-32 of the Rx blob in force (0 = none)",
    "t": "device time of the event",
    "event_seq": "event number, from 1, never reused",
    "code": "event code (table below)",
    "who": "0 device, 1 clinician, 2 patient",
    "a": "per event code",
    "b": "per event code",
    "c": "per event code",
    "cmd_id": "host's id for the command (echoed in REPLY)",
    "cmd_type": "type of the command replied to",
    "result": "0 ACK, else the NACK reason",
    "detail": "per command and result",
    "role": "1 clinician, 2 patient",
    "counter": "per-key counter, strictly increasing",
    "mac": "HMAC-SHA256(key, header + payload-without-mac)[:16]",
    "body": "per type",
    "pb_max_per_day": "0 = no patient bolus",
    "start_min": "minutes after local midnight",
    "rate_ng_day": "ng/day",
    "magic": "`THECALOG`",
    "format": "1",
    "mark": "0xA5",
    "length": "frame length in bytes",
    "utc": "new device time",
    "local_offset_s": "signed: local time = device time + this",
    "mask": "alarm mask",
    "added_nl": "nL added",
    "rx_sha256": "sha256 of the Rx blob",
    "rx": "the Rx blob in force",
    "n_steps": "1..24",
    "n_timed": "0..8",
    "pb_duration_s": "patient bolus duration, s",
    "pb_dose_ng": "patient bolus dose, ng",
    "pb_lockout_s": "s from one patient bolus start to the next",
    "dose_ng": "ng",
    "duration_s": "s",
    "from_seq": "first event_seq wanted",
    "max_count": "at most this many records",
    "next_seq": "event_seq to ask for next",
    "first_seq": "oldest event_seq the device still has",
    "count": "records that follow",
    "fw_major": "firmware version",
}


def _rows(con, base, prefix=""):
    rows = []
    off = base
    var = False
    for sc in con.subcons:
        name = prefix + sc.name
        sub = sc.subcon
        while isinstance(sub, Renamed):
            sub = sub.subcon
        if isinstance(sub, Array):
            count = describe(sub).split("]")[0].split("[")[1]
            size = sub.subcon.sizeof()
            where = str(off) if not var else "…"
            inner = ", ".join(f"{s.name} {describe(s.subcon)}" for s in sub.subcon.subcons)
            rows.append((where, f"{size} × {count}", name, f"({inner})", "repeated"))
            var = True
            continue
        if isinstance(sub, Struct) and sub.subcons:
            try:
                size = sub.sizeof()
            except Exception:
                size = None
            where = str(off) if not var else "…"
            what = "Rx blob" if sub is M.RxBlob else "struct"
            rows.append((where, "var" if size is None else str(size), name, what,
                         NOTES.get(sc.name, "")))
            if size is None:
                var = True
            else:
                off += size
            continue
        try:
            size = sc.sizeof()
        except Exception:
            size = None
        typ = describe(sub)
        where = str(off) if not var else "…"
        rows.append((where, "var" if size is None else str(size), name, typ,
                     NOTES.get(sc.name, "")))
        if size is None:
            var = True
        else:
            off += size
    return rows


def layout_table(con) -> str:
    """A markdown table: offset | size | field | type | notes (offsets within the struct)."""
    out = ["| offset | size | field | type | notes |", "|---|---|---|---|---|"]
    for r in _rows(con, 0):
        out.append("| " + " | ".join(r) + " |")
    try:
        total = f"{con.sizeof()} bytes"
    except Exception:
        total = "variable size"
    return "\n".join(out) + f"\n\nSize: {total}.\n"


LAYOUT_SECTIONS = [
    ("Frame header", M.Header),
    ("DEVICE_INFO (0x01) payload", M.DeviceInfo),
    ("STATUS (0x02) payload", M.Status),
    ("EVENT (0x03) payload: EventRecord", M.EventRecord),
    ("REPLY (0x80) payload", M.Reply),
    (
        "Command envelope (every command's payload; the mac is its last 16 bytes)",
        Struct(*M.CommandHead.subcons, "body" / GreedyBytes, "mac" / Bytes(M.MAC_SIZE)),
    ),
    ("Rx blob (PROGRAM body, READ_RX reply)", M.RxBlob),
    ("REFILL body", M.Refill),
    ("CLINICIAN_BOLUS body", M.ClinicianBolus),
    ("ACK_ALARM body", M.AckAlarm),
    ("SET_TIME body", M.SetTime),
    ("LOG_READ body", M.LogRead),
    ("LOG_READ reply body", M.LogReadReply),
    ("READ_RX reply body", M.ReadRxReply),
    (".tlog file header", M.TlogHeader),
    (".tlog record head (the frame follows)", M.TlogRecordHead),
]


def layouts_markdown() -> str:
    """Every layout as a titled table."""
    parts = []
    for title, con in LAYOUT_SECTIONS:
        parts.append(f"#### {title}\n\n{layout_table(con)}")
    return "\n".join(parts)


def commands_markdown() -> str:
    """The command table: type, name, roles, body, reply body."""
    out = ["| type | name | roles | body | reply body (ACK) |", "|---|---|---|---|---|"]

    def short(con):
        if con is M.Empty:
            return "-"
        for title, c in LAYOUT_SECTIONS:
            if c is con:
                return title.split(" (")[0].replace(" payload", "")
        return {"Status": "STATUS payload", "DeviceInfo": "DEVICE_INFO payload"}.get(
            next((k for k, v in vars(M).items() if v is con), "?"), "?")

    for t, m in sorted(M.COMMANDS.items()):
        out.append(f"| 0x{t:02X} | {m.name} | {' or '.join(m.roles)} | {short(m.body)} | "
                   f"{short(m.reply)} |")
    return "\n".join(out) + "\n"
