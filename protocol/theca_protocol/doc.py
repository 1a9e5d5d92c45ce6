"""Markdown for PROTOCOL.md, generated from the construct definitions.

protocol/gen_vectors.py writes these between the GENERATED markers of
PROTOCOL.md, and a test checks they are current, so the written spec and the
code cannot disagree about a layout.
"""

from __future__ import annotations

from construct import Array, GreedyBytes, Renamed, Struct

from . import messages as M
from . import storage as S
from .schema import describe


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
                         (sc.docs or "")))
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
                     (sc.docs or "")))
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
        M.command_payload(GreedyBytes),
    ),
    ("Rx blob (PROGRAM body, READ_RX reply)", M.RxBlob),
    ("REFILL body", M.Refill),
    ("CLINICIAN_BOLUS body", M.ClinicianBolus),
    ("SUSPEND body", M.Suspend),
    ("CATHETER body", M.Catheter),
    ("ACK_ALARM body", M.AckAlarm),
    ("SET_TIME body", M.SetTime),
    ("LOG_READ body", M.LogRead),
    ("LOG_READ reply body", M.LogReadReply),
    ("READ_RX reply body", M.ReadRxReply),
    ("CHALLENGE reply body", M.ChallengeReply),
    ("Reply MAC binding (what the reply MAC covers after the frame; not on the wire)",
     M.ReplyBinding),
    (".tlog file header", M.TlogHeader),
    (".tlog record head (the frame follows)", M.TlogRecordHead),
    ("Flash: events.bin slot (event n in slot n % EVENT_SLOTS)", S.EventSlot),
    ("Flash: journal.bin record", S.JournalRecord),
    ("Flash: state.bin header (the snapshot follows)", S.StateHeader),
    ("Flash: snapshot head (gate times, rolling buckets and the Rx blob follow)", S.SnapshotHead),
    ("Twin: scheduled link input record (the frame follows)", S.LinkInRecord),
    ("Twin: truth stream record", S.TruthRecord),
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
