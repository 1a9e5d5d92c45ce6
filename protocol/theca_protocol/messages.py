"""The wire layouts, defined once with construct (2.10.70).

Everything else is derived from these objects: the struct formats of the host
fast path (`fixed_format`), `firmware/msgdefs.py`, the schema fingerprint, the
test vectors and PROTOCOL.md's tables. Field order here *is* the byte order
on the wire; all integers are little-endian.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from construct import (
    Array,
    Bytes,
    Const,
    Construct,
    Default,
    If,
    Int8ul,
    Int16ul,
    Int32sl,
    Int32ul,
    PaddedString,
    Rebuild,
    Struct,
    len_,
    this,
)
from construct.core import stream_read_entire, stream_write

from . import names as N

u8, u16, u32, i32 = Int8ul, Int16ul, Int32ul, Int32sl


def _bits(table: dict[int, str]) -> str:
    return "; ".join(f"bit {b}: {n}" for b, n in sorted(table.items()))

#: Largest frame (header + payload + crc) before COBS. 1536: a LOG_READ page of 57
#: events is 93 % of the line's bytes, both ways, with the reply MAC (1280 held 47: 92 %);
#: it still fits a board's 2048-byte UART buffers, COBS and all.
MAX_FRAME = 1536
#: Bytes of the truncated HMAC-SHA256 that ends every command payload.
MAC_SIZE = 16
#: Bytes of the CRC-32 that ends every frame.
CRC_SIZE = 4

# --- frame -----------------------------------------------------------------

Header = Struct(
    "version" / u8 * "1",
    "type" / u8 * "message type",
    "seq" / u16 * "sender's frame counter, wraps at 65535",
    "time" / u32 * "sender's device time (s since 2020-01-01T00:00:00Z)",
)
#: Bytes of the frame header.
HDR_SIZE = Header.sizeof()

# --- device to host ----------------------------------------------------------

DeviceInfo = Struct(
    "serial" / PaddedString(12, "ascii") * "ASCII, NUL-padded",
    "fw_major" / u8 * "firmware version",
    "fw_minor" / u8,
    "fw_patch" / u8,
    "runtime" / u8 * "1 = micropython",
    "schema" / u32 * "schema fingerprint (SCHEMA)",
    "stroke_nl" / u16 * "nL per pump stroke",
    "capacity_nl" / u32 * "reservoir capacity, nL",
    "low_reservoir_nl" / u32 * "low-reservoir alarm threshold, nL",
    "catheter_nl" / u32 * "catheter dead volume, nL",
    "max_rate_nl_h" / u32 * "fastest rate the mechanism delivers (basal or bolus), nL/h",
    "min_rate_nl_day" / u32 * "slowest basal rate the mechanism delivers, nL/day",
    "machine" / Default(PaddedString(32, "ascii"), "") * (
        "the board as its MicroPython names it (sys.implementation._machine), ASCII, "
        "NUL-padded, cut at 32"),
)

Status = Struct(
    "mode" / u8 * "MODES",
    "step" / u8 * "index of the basal step in force",
    "flags" / u8 * f"STATUS_FLAGS: {_bits(N.STATUS_FLAGS)}",
    "drug" / u8 * "drug library id (0 = none)",
    "alarms" / u32 * "mask of 1 << alarm bit",
    "reservoir_nl" / u32 * "nL left",
    "delivered_ul" / u32 * "uL delivered since therapy start (whole uL)",
    "delivered_nl" / u16 * "0..999: the nL part of the above",
    "battery_days" / u16 * "days of battery left",
    "rate_nl_day" / u32 * "current volume rate, nL/day",
    "low_eta" / u32 * "device time the low-reservoir alarm is expected (0 = none)",
    "rolling_ng" / u32 * "drug delivered in the last 24 h, ng",
    "conc_ng_ml" / u32 * "ng/mL",
    "boluses_24h" / u8 * "patient boluses in the last 24 h",
    "acked" / u8 * ("alarm bits 0..7 raised and acknowledged (tone silenced by ACK_ALARM); "
                           "a bit leaves when its alarm clears or is raised again"),
    "rx_crc" / u32 * "CRC-32 of the Rx blob in force (0 = none)",
    "refill_due" / u32 * ("device time to refill by (0 = none): the earliest of the reservoir "
                          "reaching the low threshold with every allowed patient bolus taken, "
                          "and the fill's stability limit (flags refill_due_stability)"),
    "heap_free" / u32 * "bytes of the MicroPython heap free (gc.mem_free)",
    "heap_total" / u32 * "bytes of the MicroPython heap (free + allocated)",
)

EventRecord = Struct(
    "t" / u32 * "device time of the event",
    "event_seq" / u32 * "event number, from 1, never reused",
    "code" / u8 * "event code (table below)",
    "who" / u8 * "0 device, 1 clinician, 2 patient",
    "a" / u32 * "per event code",
    "b" / u32 * "per event code",
    "c" / u32 * "per event code",
    "d" / Default(u32, 0) * "per event code",
)

class AllButLast(Construct):
    """Bytes up to the last `n` of the payload (what a trailer such as a MAC follows)."""

    def __init__(self, n: int):
        super().__init__()
        self.n = n

    def _parse(self, stream, context, path):
        data = stream_read_entire(stream, path)
        if len(data) < self.n:
            from construct import StreamError

            raise StreamError(f"fewer than {self.n} bytes for the trailer", path=path)
        stream.seek(-self.n, 1)
        return data[: len(data) - self.n]

    def _build(self, obj, stream, context, path):
        data = bytes(obj)
        stream_write(stream, data, len(data), path)
        return data

    def _sizeof(self, context, path):
        from construct import SizeofError

        raise SizeofError("variable", path=path)


ReplyHead = Struct(
    "cmd_id" / u32 * "host's id for the command (echoed in REPLY)",
    "cmd_type" / u8 * "type of the command replied to",
    "result" / u8 * "0 ACK, else the NACK reason",
    "detail" / u32 * "per command and result",
)
#: REPLY payload: the head, the command's reply body (ACK only; a NACK has none), the MAC.
#: What a reply's MAC covers beyond the frame: the command's role and counter, so that a
#: reply cannot pass for the reply to another command.
ReplyBinding = Struct("role" / u8 * "the command's role", "counter" / u32 * "the command's counter")
Reply = Struct(
    *ReplyHead.subcons,
    "body" / AllButLast(MAC_SIZE) * "per type",
    "mac" / Default(Bytes(MAC_SIZE), bytes(MAC_SIZE)) * (
        "HMAC-SHA256(key, header + payload-without-mac + role u8 + counter u32)[:16] under "
        "the command's key, role and counter: a reply is bound to its command; 16 zero "
        "bytes on a NACK the device cannot sign (UNSIGNED_RESULTS)"),
)

# --- host to device ------------------------------------------------------------

CommandHead = Struct(
    "cmd_id" / u32 * "host's id for the command (echoed in REPLY)",
    "role" / u8 * "1 clinician, 2 patient",
    "counter" / u32 * "per-key counter, strictly increasing",
    "challenge" / Default(u32, 0) * ("the role's CHALLENGE, issued by the device less than FRESH_S ago "
                         "(state-changing commands; a read may carry 0)"),
)


def command_payload(body):
    """The command envelope around `body`: cmd_id, role, counter, body, mac."""
    return Struct(
        *CommandHead.subcons,
        "body" / body * "per type",
        "mac" / Bytes(MAC_SIZE) * "HMAC-SHA256(key, header + payload-without-mac)[:16]",
    )


Empty = Struct()

RxStep = Struct(
    "start_min" / u16 * "minutes after local midnight",
    "rate_ng_day" / u32 * "ng/day",
)
RxTimed = Struct(
    "start_min" / u16 * "minutes after local midnight",
    "duration_s" / u16 * "s",
    "dose_ng" / u32 * "ng",
)


#: The range of a prescription's low-reservoir threshold, uL (1 to 5 mL).
RX_LOW_RESERVOIR_UL = (1000, 5000)


def _rx_head_fields(counted: bool):
    # n_steps/n_timed rebuild from the lists when a whole blob is built;
    # the fixed head alone (firmware fast path) carries them as plain bytes.
    n_steps = Rebuild(u8, len_(this.steps)) if counted else u8
    n_timed = Rebuild(u8, len_(this.timed)) if counted else u8
    return (
        "version" / u8 * "the blob format, RX_VERSION",
        "drug" / u8 * "drug library id (0 = none)",
        "n_steps" / n_steps * "1..24",
        "n_timed" / n_timed * "0..8",
        "flags" / u8 * f"RX_FLAGS: {_bits(N.RX_FLAGS)}",
        "pb_max_per_day" / u8 * "0 = no patient bolus",
        "pb_duration_s" / u16 * "patient bolus duration, s",
        "conc_ng_ml" / u32 * "ng/mL",
        "pb_dose_ng" / u32 * "patient bolus dose, ng",
        "pb_lockout_s" / u32 * "s from one patient bolus start to the next",
        "low_reservoir_ul" / Default(u16, 0) * (
            "the low-reservoir alarm threshold while this prescription is in force, uL "
            f"({RX_LOW_RESERVOIR_UL[0]}..{RX_LOW_RESERVOIR_UL[1]}; 0: the device's)"),
    )


#: A change of the local offset at a UTC instant (a prescription's `timezone`: the host
#: computes the next 24 months' changes from the zone data; the pump needs none).
RxZoneChange = Struct(
    "utc" / u32 * "the instant, device time (UTC seconds since 2020-01-01)",
    "offset_s" / i32 * "the local offset from then on, s",
)
#: One more drug of an admixture: the fill's primary drug is the Rx's `drug`; up to
#: RX_MAX_MIX more ride in the same volume, each at its own concentration.
MixEntry = Struct(
    "drug" / u8 * "drug library id (0: this slot unused; used slots come first)",
    "conc_ng_ml" / u32 * "its ng/mL in the fill",
)
#: Drugs of an admixture beside the primary one (four drugs in all).
RX_MAX_MIX = 3
#: The admixture's other drugs as they travel (Rx blob, REFILL, the snapshot): RX_MAX_MIX
#: MixEntry slots, the unused ones zero; the same bytes name the same fill.
MIX_BYTES = RX_MAX_MIX * MixEntry.sizeof()
RxHead = Struct(*_rx_head_fields(False))
RxBlob = Struct(
    *_rx_head_fields(True),
    "steps" / Array(this.n_steps, RxStep),
    "timed" / Array(this.n_timed, RxTimed),
    "n_zone" / If(this.version >= 3, Rebuild(u8, lambda c: len(c.get("zone") or [])))
    * "0..RX_MAX_ZONE (version 3 on)",
    "zone" / If(this.version >= 3, Default(Array(this.n_zone, RxZoneChange), []))
    * "the local offset's changes, in time order (version 3 on)",
    "mix" / If(this.version >= 4, Default(Bytes(MIX_BYTES), bytes(MIX_BYTES)))
    * "the admixture's other drugs, RX_MAX_MIX MixEntry slots (version 4 on); doses are of `drug`",
)
RX_VERSION = 4
#: Offset changes a prescription carries at most (the first: the offset now).
RX_MAX_ZONE = 8
RX_MAX_STEPS = 24
RX_MAX_TIMED = 8
#: Patient boluses a prescription may allow per day at most.
RX_MAX_PB_PER_DAY = 24
#: The longest patient-bolus lockout, s.
RX_MAX_LOCKOUT_S = 86_400

Refill = Struct(
    "volume_nl" / u32 * "the fill after emptying, nL",
    "conc_ng_ml" / u32 * "ng/mL of the fill",
    "residual_nl" / u32 * "what was aspirated (measured) before filling, nL",
    "drug" / u8 * "drug library id of the fill (0: the reservoir's drug)",
    "mix" / Default(Bytes(MIX_BYTES), bytes(MIX_BYTES))
    * "the fill's other drugs (an admixture), RX_MAX_MIX MixEntry slots; zeros: one drug",
)
Catheter = Struct("volume_nl" / u32 * f"the catheter's volume, nL (1..{N.MAX_CATHETER_NL})")
ClinicianBolus = Struct("dose_ng" / u32 * "ng", "duration_s" / u32 * "s")
AckAlarm = Struct("mask" / u32 * "alarm mask")
Suspend = Struct("max_s" / u32 * "the alarm suspended_too_long after this long suspended (0: none)")
SetTime = Struct("utc" / u32 * "new device time", "local_offset_s" / i32 * "signed: local time = device time + this")
LogRead = Struct("from_seq" / u32 * "first event_seq wanted", "max_count" / u8 * "at most this many records")

ChallengeReply = Struct(
    "challenge" / u32 * "the role's challenge; replaces the one before it",
    "valid_s" / u16 * "seconds it stays valid (FRESH_S)",
)
ReadRxReply = Struct("rx_sha256" / Bytes(32) * "sha256 of the Rx blob", "rx" / RxBlob * "the Rx blob in force")
LogReadReplyHead = Struct(
    "next_seq" / u32 * "event_seq to ask for next",
    "first_seq" / u32 * "oldest event_seq the device still has",
    "count" / u8 * "records that follow",
)
LogReadReply = Struct(
    "next_seq" / u32 * "event_seq to ask for next",
    "first_seq" / u32 * "oldest event_seq the device still has",
    "count" / Rebuild(u8, len_(this.records)) * "records that follow",
    "records" / Array(this.count, EventRecord),
)

#: Records in one LOG_READ reply at most: as many as a reply frame holds, with its head
#: and its MAC.
LOG_PAGE_MAX = (MAX_FRAME - Header.sizeof() - ReplyHead.sizeof() - LogReadReplyHead.sizeof()
                - MAC_SIZE - CRC_SIZE) // EventRecord.sizeof()

# --- telemetry log file -----------------------------------------------------------

TLOG_MAGIC = b"THECALOG"
TLOG_FORMAT = 1
TLOG_MARK = 0xA5
TlogHeader = Struct(
    "magic" / Const(TLOG_MAGIC) * "`THECALOG`",
    "format" / u16 * "1",
    "flags" / u16 * "0 (none defined)",
    "schema" / u32 * "schema fingerprint (SCHEMA)",
)
TlogRecordHead = Struct(
    "mark" / Const(TLOG_MARK, u8) * "0xA5",
    "length" / u16 * "frame length in bytes",
)

# --- the message table ---------------------------------------------------------------


class Message(NamedTuple):
    """One message type.

    `payload` is the whole payload's construct (for commands: the envelope with
    the body). Commands also have `body`, `roles` (role names allowed) and
    `reply` (the REPLY body on ACK).
    """

    type: int
    name: str
    direction: str  # "device" (device to host) or "host"
    payload: Any  # construct objects are not typed
    body: Any = None
    roles: tuple[str, ...] = ()
    reply: Any = None
    reads: bool = False  # only reads: executing it again changes nothing (a retry may)
    #: what REPLY.detail means for the results this command gives beyond every command's
    #: (names.RESULT_DETAILS): result name -> detail kind (names.DETAIL_KINDS)
    details: dict[str, str] = {}  # (never mutated)

    def detail_kind(self, result: str) -> str:
        """The kind of REPLY.detail for `result` in reply to this command."""
        return self.details.get(result) or N.RESULT_DETAILS.get(result, "none")


_EITHER = ("clinician", "patient")
_CLIN = ("clinician",)


def _cmd(t, name, roles, body, reply, reads=False, **details):
    return Message(t, name, "host", command_payload(body), body, roles, reply, reads, details)


_FIELD_DENY = {"invalid": "field", "limit": "deny"}


MESSAGE_LIST = [
    Message(0x01, "DEVICE_INFO", "device", DeviceInfo),
    Message(0x02, "STATUS", "device", Status),
    Message(0x03, "EVENT", "device", EventRecord),
    Message(0x80, "REPLY", "device", Reply),
    _cmd(0x40, "GET_STATUS", _EITHER, Empty, Status, reads=True),
    _cmd(0x41, "PROGRAM", _CLIN, RxBlob, Empty, **_FIELD_DENY, schema="rx_version"),
    _cmd(0x42, "READ_RX", _EITHER, Empty, ReadRxReply, reads=True, invalid="none"),
    _cmd(0x43, "REFILL", _CLIN, Refill, Empty, **_FIELD_DENY),
    _cmd(0x44, "PATIENT_BOLUS", _EITHER, Empty, Empty, limit="deny"),
    _cmd(0x45, "CLINICIAN_BOLUS", _CLIN, ClinicianBolus, Empty, **_FIELD_DENY, busy="deny"),
    _cmd(0x46, "SUSPEND", _CLIN, Suspend, Empty, invalid="mode"),
    _cmd(0x47, "RESUME", _CLIN, Empty, Empty, invalid="mode", limit="deny"),
    _cmd(0x48, "ACK_ALARM", _EITHER, AckAlarm, Empty, ack="alarms"),
    _cmd(0x49, "SET_TIME", _CLIN, SetTime, Empty, **_FIELD_DENY),
    _cmd(0x4A, "LOG_READ", _EITHER, LogRead, LogReadReply, reads=True),
    _cmd(0x4B, "GET_INFO", _EITHER, Empty, DeviceInfo, reads=True),
    _cmd(0x4C, "MAINTENANCE", _CLIN, Empty, Empty),
    _cmd(0x4D, "CATHETER", _CLIN, Catheter, Empty, invalid="field", busy="deny"),
    _cmd(0x4E, "PRIME", _CLIN, Empty, Empty, **_FIELD_DENY, busy="deny"),
    _cmd(0x4F, "CHALLENGE", _EITHER, Empty, ChallengeReply, reads=True),
    _cmd(0x50, "MRI_PREPARE", _CLIN, Empty, Empty, invalid="mode"),
    _cmd(0x51, "MRI_CHECK", _CLIN, Empty, Empty, invalid="mode", limit="deny"),
]

#: type id -> Message.
MESSAGES: dict[int, Message] = {m.type: m for m in MESSAGE_LIST}
#: name -> type id.
TYPES: dict[str, int] = {m.name: m.type for m in MESSAGE_LIST}
#: The command types.
COMMANDS: dict[int, Message] = {m.type: m for m in MESSAGE_LIST if m.direction == "host"}

T_DEVICE_INFO = TYPES["DEVICE_INFO"]
T_STATUS = TYPES["STATUS"]
T_EVENT = TYPES["EVENT"]
T_REPLY = TYPES["REPLY"]

#: Structures that are not message payloads but are part of the contract.
AUX_STRUCTS = {
    "Header": Header,
    "EventRecord": EventRecord,
    "ReplyHead": ReplyHead,
    "CommandHead": CommandHead,
    "RxHead": RxHead,
    "RxStep": RxStep,
    "MixEntry": MixEntry,
    "RxTimed": RxTimed,
    "RxZoneChange": RxZoneChange,
    "RxBlob": RxBlob,
    "LogReadReplyHead": LogReadReplyHead,
    "ChallengeReply": ChallengeReply,
    "ReplyBinding": ReplyBinding,
    "TlogHeader": TlogHeader,
    "TlogRecordHead": TlogRecordHead,
}
