"""The wire layouts, defined once with construct (2.10.70).

Everything else is derived from these objects: the struct formats of the host
fast path (`fixed_format`), `firmware/msgdefs.py`, the schema fingerprint, the
test vectors and PROTOCOL.md's tables. Field order here *is* the byte order
on the wire; all integers are little-endian.
"""

from __future__ import annotations

from typing import NamedTuple

from construct import (
    Array,
    Bytes,
    Const,
    GreedyBytes,
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

u8, u16, u32, i32 = Int8ul, Int16ul, Int32ul, Int32sl

#: Largest frame (header + payload + crc) before COBS.
MAX_FRAME = 1280
#: Bytes of the truncated HMAC-SHA256 that ends every command payload.
MAC_SIZE = 16
#: Bytes of the CRC-32 that ends every frame.
CRC_SIZE = 4

# --- frame -----------------------------------------------------------------

Header = Struct(
    "version" / u8,
    "type" / u8,
    "seq" / u16,
    "time" / u32,
)
#: Bytes of the frame header.
HDR_SIZE = Header.sizeof()

# --- device to host ----------------------------------------------------------

DeviceInfo = Struct(
    "serial" / PaddedString(12, "ascii"),
    "fw_major" / u8,
    "fw_minor" / u8,
    "fw_patch" / u8,
    "runtime" / u8,
    "schema" / u32,
    "stroke_nl" / u16,
    "capacity_nl" / u32,
    "low_reservoir_nl" / u32,
    "catheter_nl" / u32,
    "max_rate_nl_h" / u32,
)

Status = Struct(
    "mode" / u8,
    "step" / u8,
    "flags" / u8,
    "drug" / u8,
    "alarms" / u32,
    "reservoir_nl" / u32,
    "delivered_ul" / u32,
    "delivered_nl" / u16,
    "battery_days" / u16,
    "rate_nl_day" / u32,
    "low_eta" / u32,
    "rolling_ng" / u32,
    "conc_ng_ml" / u32,
    "boluses_24h" / u8,
    "acked" / u8,
    "rx_crc" / u32,
)

EventRecord = Struct(
    "t" / u32,
    "event_seq" / u32,
    "code" / u8,
    "who" / u8,
    "a" / u32,
    "b" / u32,
    "c" / u32,
)

ReplyHead = Struct(
    "cmd_id" / u32,
    "cmd_type" / u8,
    "result" / u8,
    "detail" / u32,
)
#: REPLY payload: the head, then the command's reply body (ACK only; a NACK has none).
Reply = Struct(*ReplyHead.subcons, "body" / GreedyBytes)

# --- host to device ------------------------------------------------------------

CommandHead = Struct(
    "cmd_id" / u32,
    "role" / u8,
    "counter" / u32,
)


def command_payload(body):
    """The command envelope around `body`: cmd_id, role, counter, body, mac."""
    return Struct(*CommandHead.subcons, "body" / body, "mac" / Bytes(MAC_SIZE))


Empty = Struct()

RxStep = Struct(
    "start_min" / u16,
    "rate_ng_day" / u32,
)
RxTimed = Struct(
    "start_min" / u16,
    "duration_s" / u16,
    "dose_ng" / u32,
)


def _rx_head_fields(counted: bool):
    # n_steps/n_timed rebuild from the lists when a whole blob is built;
    # the fixed head alone (firmware fast path) carries them as plain bytes.
    n_steps = Rebuild(u8, len_(this.steps)) if counted else u8
    n_timed = Rebuild(u8, len_(this.timed)) if counted else u8
    return (
        "version" / u8,
        "drug" / u8,
        "n_steps" / n_steps,
        "n_timed" / n_timed,
        "flags" / u8,
        "pb_max_per_day" / u8,
        "pb_duration_s" / u16,
        "conc_ng_ml" / u32,
        "pb_dose_ng" / u32,
        "pb_lockout_s" / u32,
    )


RxHead = Struct(*_rx_head_fields(False))
RxBlob = Struct(
    *_rx_head_fields(True),
    "steps" / Array(this.n_steps, RxStep),
    "timed" / Array(this.n_timed, RxTimed),
)
RX_VERSION = 1
RX_MAX_STEPS = 24
RX_MAX_TIMED = 8

Refill = Struct("added_nl" / u32, "conc_ng_ml" / u32)
ClinicianBolus = Struct("dose_ng" / u32, "duration_s" / u32)
AckAlarm = Struct("mask" / u32)
SetTime = Struct("utc" / u32, "local_offset_s" / i32)
LogRead = Struct("from_seq" / u32, "max_count" / u8)

ReadRxReply = Struct("rx_sha256" / Bytes(32), "rx" / RxBlob)
LogReadReplyHead = Struct(
    "next_seq" / u32,
    "first_seq" / u32,
    "count" / u8,
)
LogReadReply = Struct(
    "next_seq" / u32,
    "first_seq" / u32,
    "count" / Rebuild(u8, len_(this.records)),
    "records" / Array(this.count, EventRecord),
)

# --- telemetry log file -----------------------------------------------------------

TLOG_MAGIC = b"THECALOG"
TLOG_FORMAT = 1
TLOG_MARK = 0xA5
TlogHeader = Struct(
    "magic" / Const(TLOG_MAGIC),
    "format" / u16,
    "flags" / u16,
    "schema" / u32,
)
TlogRecordHead = Struct(
    "mark" / Const(TLOG_MARK, u8),
    "length" / u16,
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
    payload: object
    body: object = None
    roles: tuple[str, ...] = ()
    reply: object = None


_EITHER = ("clinician", "patient")
_CLIN = ("clinician",)


def _cmd(t, name, roles, body, reply):
    return Message(t, name, "host", command_payload(body), body, roles, reply)


MESSAGE_LIST = [
    Message(0x01, "DEVICE_INFO", "device", DeviceInfo),
    Message(0x02, "STATUS", "device", Status),
    Message(0x03, "EVENT", "device", EventRecord),
    Message(0x80, "REPLY", "device", Reply),
    _cmd(0x40, "GET_STATUS", _EITHER, Empty, Status),
    _cmd(0x41, "PROGRAM", _CLIN, RxBlob, Empty),
    _cmd(0x42, "READ_RX", _EITHER, Empty, ReadRxReply),
    _cmd(0x43, "REFILL", _CLIN, Refill, Empty),
    _cmd(0x44, "PATIENT_BOLUS", _EITHER, Empty, Empty),
    _cmd(0x45, "CLINICIAN_BOLUS", _CLIN, ClinicianBolus, Empty),
    _cmd(0x46, "SUSPEND", _CLIN, Empty, Empty),
    _cmd(0x47, "RESUME", _CLIN, Empty, Empty),
    _cmd(0x48, "ACK_ALARM", _EITHER, AckAlarm, Empty),
    _cmd(0x49, "SET_TIME", _CLIN, SetTime, Empty),
    _cmd(0x4A, "LOG_READ", _EITHER, LogRead, LogReadReply),
    _cmd(0x4B, "GET_INFO", _EITHER, Empty, DeviceInfo),
    _cmd(0x4C, "MAINTENANCE", _CLIN, Empty, Empty),
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
    "RxTimed": RxTimed,
    "RxBlob": RxBlob,
    "LogReadReplyHead": LogReadReplyHead,
    "TlogHeader": TlogHeader,
    "TlogRecordHead": TlogRecordHead,
}
