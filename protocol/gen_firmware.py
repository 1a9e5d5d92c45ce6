"""Generate firmware/msgdefs.py from the construct definitions in theca_protocol.

    python protocol/gen_firmware.py          # rewrite firmware/msgdefs.py
    python protocol/gen_firmware.py --check  # exit 1 if it is stale

The firmware cannot import construct; it gets struct formats, sizes, type ids,
code names and the schema fingerprint as `const()` names instead. Output is a
pure function of the definitions, so tests can regenerate and compare bytes.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import theca_protocol as P  # noqa: E402
from theca_protocol import messages as M  # noqa: E402
from theca_protocol import names as N  # noqa: E402
from theca_protocol import storage as S  # noqa: E402
from theca_protocol.schema import field_names, fixed_format, is_fixed  # noqa: E402

OUT = HERE.parent / "firmware" / "msgdefs.py"
# field names of every layout: only tests need them, so they do not cost the device RAM
FIELDS_OUT = HERE.parent / "tests" / "mp" / "msgfields.py"

# (prefix in msgdefs, construct Struct, what it is): the frame and payload layouts, then
# every command's fixed body (NAME) and fixed reply body (NAME_REPLY) from the message
# table, then the heads of variable bodies and the files
_FRAME_LAYOUTS = [
    ("HDR", M.Header, "frame header"),
    ("DEVICE_INFO", M.DeviceInfo, "DEVICE_INFO payload (also GET_INFO reply body)"),
    ("STATUS", M.Status, "STATUS payload (also GET_STATUS reply body)"),
    ("EVENT", M.EventRecord, "EVENT payload: one EventRecord (also the event log's unit)"),
    ("REPLY_HEAD", M.ReplyHead, "REPLY payload head; the reply body follows"),
    ("CMD_HEAD", M.CommandHead, "command envelope head; body and 16-byte mac follow"),
    ("REPLY_BINDING", M.ReplyBinding, "what a reply MAC covers after the frame"),
    ("RX_HEAD", M.RxHead, "Rx blob head; n_steps RX_STEP then n_timed RX_TIMED follow"),
    ("RX_STEP", M.RxStep, "Rx blob basal step"),
    ("RX_TIMED", M.RxTimed, "Rx blob timed bolus"),
    ("RX_ZONE", M.RxZoneChange, "Rx blob local offset change (version 3 on)"),
    ("MIX", M.MixEntry, "one more drug of an admixture (Rx blob, REFILL, snapshot)"),
]
_OTHER_LAYOUTS = [
    ("LOG_READ_REPLY_HEAD", M.LogReadReplyHead, "LOG_READ reply head; count EVENT records follow"),
    ("TLOG_HDR", M.TlogHeader, ".tlog file header"),
    ("TLOG_REC", M.TlogRecordHead, ".tlog record head; the frame follows"),
    ("EVENT_SLOT", S.EventSlot, "events.bin slot: record, crc, padding"),
    ("JOURNAL", S.JournalRecord, "journal.bin record"),
    ("STATE_HDR", S.StateHeader, "state.bin header; the snapshot follows"),
    ("SNAP", S.SnapshotHead, "snapshot head; gate times, rolling buckets, Rx blob follow"),
    ("SNAP_BOLUS", S.SnapBolus, "a bolus running at the snapshot (after the held events)"),
    ("SNAP_PRIME", S.SnapPrime, "the priming exemption (after the running boluses)"),
    ("SNAP_EVENTS", S.SnapEvents, "the event log's next number (after the priming exemption)"),
    ("LINK_IN", S.LinkInRecord, "twin link input record; the frame follows"),
    ("TRUTH", S.TruthRecord, "twin truth stream record"),
    ("TRUTH_TIP", S.TruthTipRecord, "twin per-drug truth stream record"),
]


def _command_layouts():
    payloads = {id(m.payload) for m in M.MESSAGE_LIST if m.direction == "device"}
    out = []
    for m in sorted(M.COMMANDS.values(), key=lambda m: m.type):
        if m.body is not M.Empty and is_fixed(m.body):
            out.append((m.name, m.body, f"{m.name} body"))
        if (m.reply is not None and m.reply is not M.Empty and id(m.reply) not in payloads
                and is_fixed(m.reply)):
            out.append((f"{m.name}_REPLY", m.reply, f"{m.name} reply body"))
    return out


LAYOUTS = _FRAME_LAYOUTS + _command_layouts() + _OTHER_LAYOUTS

# layouts whose field names the firmware itself reads (named, not positional)
NAMED = {"SNAP"}

CODE_TABLES = [
    ("MODE", N.MODES, "pump modes (STATUS.mode)"),
    ("ALARM", N.ALARMS, "alarm bit numbers (STATUS.alarms has 1 << bit)"),
    ("WHO", N.WHO, "EventRecord.who"),
    ("ROLE", N.ROLES, "command roles"),
    ("BOOT", N.BOOT_CAUSES, "boot causes (boot event a)"),
    ("BOLUS", N.BOLUS_KINDS, "bolus kinds (bolus events b)"),
    ("DENY", N.DENY_REASONS, "patient bolus deny reasons (bolus_denied a, limit NACK detail)"),
    ("NACK", N.NACK_REASONS, "REPLY.result when not ACK"),
    ("STROKE", N.STROKE_FAILURES, "stroke_failed a"),
    ("FAULT", N.FAULT_CODES, "fault a: the concern that failed"),
    ("MRI", N.MRI_RESULTS, "mri_checked a: what the test stroke after a scan did"),
]

# bit tables generated as masks (1 << bit)
MASK_TABLES = [
    ("STATUS_FLAG", N.STATUS_FLAGS, "STATUS.flags bits, as masks"),
    ("LINK_IN", S.LINK_IN_FLAGS, "the twin's link input flags, as masks"),
    ("RX_FLAG", N.RX_FLAGS, "Rx blob flags bits, as masks"),
    ("DAMAGE", N.STORAGE_DAMAGE, "storage_damaged's detail bits, as masks"),
]

_SMALL = 1 << 30
_DIR = {"device": "device -> host", "host": "host -> device"}


def _const(name: str, value: int, comment: str = "") -> str:
    tail = f"  # {comment}" if comment else ""
    # const() of a value beyond a 32-bit board's small ints would be a boxed int anyway.
    if -_SMALL <= value < _SMALL:
        return f"{name} = const({value}){tail}"
    return f"{name} = {value}{tail}"


_ASSIGN = re.compile(r"^([A-Z][A-Z0-9_]*) = (.*)$")


def render() -> str:
    """The text of firmware/msgdefs.py: a function of the protocol definition alone
    (field names, which only tests read, are in msgfields.py)."""
    lines = []
    for line in _render_all().splitlines():
        m = _ASSIGN.match(line)
        if m and m.group(1).endswith("_FIELDS") and m.group(1)[:-7] not in NAMED:
            continue  # in msgfields.py
        lines.append(line)
    return "\n".join(lines) + "\n"


def render_fields() -> str:
    """tests/mp/msgfields.py: each layout's field names in wire order."""
    out = ["# GENERATED by protocol/gen_firmware.py: field names of msgdefs' layouts, for tests.",
           "# DO NOT EDIT."]
    for line in _render_all().splitlines():
        m = _ASSIGN.match(line)
        if m and m.group(1).endswith("_FIELDS"):
            out.append(line)
    return "\n".join(out) + "\n"


def _command_table() -> list[str]:
    """Commands, indexed by type - CMD_FIRST: body size (-1 variable: PROGRAM's Rx blob),
    body layout, allowed roles, whether the command only reads."""
    cmds = sorted(M.COMMANDS.values(), key=lambda m: m.type)
    first, last = cmds[0].type, cmds[-1].type
    sizes, fmts, roles, reads = [], [], [], []
    role_ids = {v: k for k, v in N.ROLES.items()}
    for t in range(first, last + 1):
        m = M.COMMANDS.get(t)
        if m is None:
            sizes.append(-2)
            fmts.append(None)
            roles.append(0)
            reads.append(0)
            continue
        if m.body is M.Empty:
            sizes.append(0)
            fmts.append("")
        elif is_fixed(m.body):
            sizes.append(m.body.sizeof())
            fmts.append(fixed_format(m.body))
        else:
            sizes.append(-1)
            fmts.append(None)
        roles.append(sum(1 << role_ids[r] for r in m.roles))
        reads.append(1 if m.reads else 0)
    return [
        "",
        "# Command table, indexed by type - CMD_FIRST: body size (-1 variable, -2 no such",
        "# command), body layout (None: variable, handed over as bytes), allowed roles as a",
        "# mask of 1 << role.",
        _const("CMD_FIRST", first),
        _const("CMD_LAST", last),
        f"CMD_BODY_SIZE = {tuple(sizes)!r}",
        f"CMD_BODY_FMT = {tuple(fmts)!r}",
        f"CMD_ROLES = {bytes(roles)!r}",
        "# 1: the command only reads (executing it again changes nothing)",
        f"CMD_READS = {bytes(reads)!r}",
    ]


def _head() -> list[str]:
    """msgdefs' header and its scalar constants."""
    return [
        "# GENERATED by protocol/gen_firmware.py from protocol/theca_protocol. DO NOT EDIT.",
        "# Change the construct definitions, then run `python protocol/gen_firmware.py`;",
        "# tests/test_protocol.py fails when this file is stale.",
        "from micropython import const",
        "",
        "# Schema fingerprint: DEVICE_INFO.schema and the .tlog header carry it.",
        _const("SCHEMA", P.SCHEMA, f"0x{P.SCHEMA:08x}"),
        _const("VERSION", N.FRAME_VERSION, "frame header version"),
        _const("MAX_FRAME", M.MAX_FRAME, "header + payload + crc, before COBS"),
        _const("CRC_SIZE", M.CRC_SIZE),
        _const("MAC_SIZE", M.MAC_SIZE),
        _const("RX_SHA256_SIZE", 32, "READ_RX reply: sha256 of the blob, then the blob"),
        _const("RUNTIME_MICROPYTHON", next(k for k, v in N.RUNTIMES.items() if v == "micropython"),
               "DEVICE_INFO.runtime"),
        _const("LOG_PAGE_MAX", M.LOG_PAGE_MAX, "records per LOG_READ reply"),
        _const("RX_VERSION", M.RX_VERSION),
        _const("RX_MAX_STEPS", M.RX_MAX_STEPS),
        _const("RX_MAX_TIMED", M.RX_MAX_TIMED),
        _const("RX_MAX_ZONE", M.RX_MAX_ZONE),
        _const("RX_MAX_MIX", M.RX_MAX_MIX),
        _const("MIX_BYTES", M.MIX_BYTES),
        _const("RX_MAX_PB_PER_DAY", M.RX_MAX_PB_PER_DAY),
        _const("RX_MAX_LOCKOUT_S", M.RX_MAX_LOCKOUT_S),
        _const("RX_LOW_RESERVOIR_MIN_UL", M.RX_LOW_RESERVOIR_UL[0]),
        _const("RX_LOW_RESERVOIR_MAX_UL", M.RX_LOW_RESERVOIR_UL[1]),
        f"EPOCH_UNIX = {N.EPOCH_UNIX}  # device time 0 in Unix seconds",
        _const("RESULT_ACK", 0),
        _const("UTC_MIN", N.UTC_MIN, "SET_TIME bounds (device seconds)"),
        _const("UTC_MAX", N.UTC_MAX, "2049-12-31T23:59:59Z"),
        _const("DEFAULT_MAX_RATE_NL_H", N.DEFAULT_MAX_RATE_NL_H, "1000 uL/h"),
        _const("DEFAULT_MIN_RATE_NL_DAY", N.DEFAULT_MIN_RATE_NL_DAY, "48 uL/day"),
        _const("MAX_RATE_BOUND_NL_H", N.MAX_RATE_BOUND_NL_H),
        _const("DEFAULT_STROKE_NL", N.DEFAULT_STROKE_NL),
        _const("MAX_STROKE_NL", N.MAX_STROKE_NL),
        _const("DEFAULT_CAPACITY_NL", N.DEFAULT_CAPACITY_NL),
        _const("MAX_CAPACITY_NL", N.MAX_CAPACITY_NL),
        _const("DEFAULT_CATHETER_NL", N.DEFAULT_CATHETER_NL),
        _const("MAX_CATHETER_NL", N.MAX_CATHETER_NL),
        _const("DEFAULT_LOW_RESERVOIR_NL", N.DEFAULT_LOW_RESERVOIR_NL),
        _const("MAX_LOCAL_OFFSET_S", N.MAX_LOCAL_OFFSET_S),
        _const("MAX_BOLUS_DURATION_S", N.MAX_BOLUS_DURATION_S),
        _const("DEFAULT_SUSPEND_MAX_S", N.DEFAULT_SUSPEND_MAX_S),
        _const("ALARM_PAUSE_S", N.ALARM_PAUSE_S),
        _const("TIMED_LATE_MAX_S", N.TIMED_LATE_MAX_S),
        _const("FRESH_S", N.FRESH_S, "a CHALLENGE's life"),
        _const("DENIAL_WINDOW_S", N.DENIAL_WINDOW_S, "identical bolus denials: one record"),
        _const("AUTH_FAILURE_WINDOW_S", N.AUTH_FAILURE_WINDOW_S, "bad MACs: one record"),
        _const("PROTECTED_S", N.PROTECTED_DAYS * 86400, "protected events' days, in s"),
        _const("STATE_VERSION", S.STATE_VERSION, "state.bin layout"),
        _const("EVENT_SLOTS", S.EVENT_SLOTS),
        _const("JOURNAL_SLOTS", S.JOURNAL_SLOTS),
        f"TLOG_MAGIC = {M.TLOG_MAGIC!r}",
        _const("TLOG_FORMAT", M.TLOG_FORMAT),
        _const("TLOG_MARK", M.TLOG_MARK),
    ]


def _render_all() -> str:
    """The full text of firmware/msgdefs.py."""
    out = _head() + ["", "# Message types."]
    for m in sorted(M.MESSAGE_LIST, key=lambda m: m.type):
        out.append(_const(f"T_{m.name}", m.type, f"0x{m.type:02x} {_DIR[m.direction]}"))
    out += ["", "# Layouts: struct format, size, field names (wire order)."]
    for prefix, st, what in LAYOUTS:
        fmt = fixed_format(st)
        out.append(f"# {what}")
        out.append(f'{prefix}_FMT = "{fmt}"')
        out.append(_const(f"{prefix}_SIZE", st.sizeof()))
        out.append(f"{prefix}_FIELDS = {field_names(st)!r}")
    out += _command_table()
    for prefix, table, what in CODE_TABLES:
        out += ["", f"# {what}"]
        for code, name in sorted(table.items()):
            out.append(_const(f"{prefix}_{name.upper()}", code))
    out += ["", "# the twin's exit statuses"]
    for code, name in sorted(S.TWIN_EXITS.items()):
        out.append(_const(f"TWIN_EXIT_{name.upper()}", code))
    for prefix, table, what in MASK_TABLES:
        out += ["", f"# {what}"]
        for bit, name in sorted(table.items()):
            out.append(_const(f"{prefix}_{name.upper()}", 1 << bit, f"bit {bit}"))
    out += ["", "# fields a NACK `invalid` names (REPLY.detail)"]
    for i, name in enumerate(N.INVALID_FIELDS):
        out.append(_const(f"FIELD_{name.upper().replace('.', '_')}", i + 1, name))
    out += ["", "# alarm bits an acknowledgement does not silence"]
    out.append(_const("ALARMS_UNSILENCEABLE", N.UNSILENCEABLE_MASK, f"0x{N.UNSILENCEABLE_MASK:04x}"))
    out += ["", "# alarm bits that are critical (two-tone, delivery stops)"]
    out.append(_const("ALARMS_CRITICAL", N.CRITICAL_MASK, f"0x{N.CRITICAL_MASK:04x}"))
    out += ["", "# alarm bits the clinician's acknowledgement clears (the patient's only silences)"]
    out.append(_const("ALARMS_CLINICIAN", N.CLINICIAN_ACK_MASK, f"0x{N.CLINICIAN_ACK_MASK:04x}"))
    out += ["", "# per event code (index): 1 if no patient or keyless frame may evict it "
            "(PROTECTED_EVENTS)"]
    top = max(N.EVENTS) + 1
    prot = bytes(1 if c in N.EVENTS and N.EVENTS[c].name in N.PROTECTED_EVENTS else 0
                 for c in range(top))
    out.append(f"EV_PROTECTED = {prot!r}")
    out += ["", "# event codes"]
    for code, ev in sorted(N.EVENTS.items()):
        args = ", ".join(
            f"{k}={a.wire_name}" for k, a in zip("abcd", ev.args, strict=True) if a
        )
        out.append(_const(f"EV_{ev.name.upper()}", code, args))
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if msgdefs.py is stale")
    args = ap.parse_args(argv)
    outputs = {OUT: render(), FIELDS_OUT: render_fields()}
    if args.check:
        for path, text in outputs.items():
            if not path.exists() or path.read_text() != text:
                print(f"{path} is stale: run python protocol/gen_firmware.py", file=sys.stderr)
                return 1
        return 0
    for path, text in outputs.items():
        path.write_text(text)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
