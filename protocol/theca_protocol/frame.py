"""Frames, COBS, command authentication and payload encode/decode.

These are the host's reference implementations: clear rather than fast, built on
the construct definitions. The host decoder's fast path and the firmware's
`codec.py` are tested against them through `vectors.json`.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
import zlib

from construct import Container, ListContainer

from .messages import (
    CRC_SIZE,
    HDR_SIZE,
    MAC_SIZE,
    MAX_FRAME,
    MESSAGES,
    T_REPLY,
    CommandHead,
    Header,
)
from .names import FRAME_VERSION, ROLES

_ROLE_IDS = {v: k for k, v in ROLES.items()}
_CRC = struct.Struct("<I")
#: CRC-32/ISO-HDLC of a frame *including* its little-endian CRC: a constant,
#: so a checker needs no separate compare of the stored value.
CRC_RESIDUE = 0x2144DF1C


class FrameError(ValueError):
    """A frame that is too short, too long, or fails its CRC."""


class CobsError(ValueError):
    """Bytes that are not a valid COBS encoding."""


def crc32(data) -> int:
    """CRC-32/ISO-HDLC (zlib/binascii crc32): check value 0xCBF43926 for b"123456789"."""
    return zlib.crc32(data) & 0xFFFFFFFF


def build_frame(type: int, seq: int, time: int, payload: bytes) -> bytes:
    """header | payload | crc32, little-endian; FrameError if over MAX_FRAME."""
    body = Header.build(dict(version=FRAME_VERSION, type=type, seq=seq & 0xFFFF, time=time))
    body += bytes(payload)
    if len(body) + CRC_SIZE > MAX_FRAME:
        raise FrameError(f"frame of {len(body) + CRC_SIZE} bytes exceeds {MAX_FRAME}")
    return body + _CRC.pack(crc32(body))


def parse_frame(frame) -> tuple[Container, bytes]:
    """Check a frame's length and CRC; return (header, payload). FrameError if bad.

    The header version is returned, not checked: a reader decides what to do
    with a frame of another version.
    """
    frame = bytes(frame)
    if len(frame) < HDR_SIZE + CRC_SIZE:
        raise FrameError(f"frame of {len(frame)} bytes is shorter than {HDR_SIZE + CRC_SIZE}")
    if len(frame) > MAX_FRAME:
        raise FrameError(f"frame of {len(frame)} bytes exceeds {MAX_FRAME}")
    want = _CRC.unpack_from(frame, len(frame) - CRC_SIZE)[0]
    got = crc32(frame[:-CRC_SIZE])
    if want != got:
        raise FrameError(f"CRC mismatch: frame says {want:08x}, computed {got:08x}")
    return Header.parse(frame[:HDR_SIZE]), frame[HDR_SIZE:-CRC_SIZE]


# --- COBS (Consistent Overhead Byte Stuffing), byte-for-byte as cobs.cobs ---------


def cobs_encode(data) -> bytes:
    """Standard COBS: no zero bytes in the output; the 0x00 delimiter is not added.

    A run of 254 non-zero bytes is a 0xFF block; when such a block ends the
    input, no further (empty) block follows, exactly as the `cobs` package.
    """
    data = bytes(data)
    out = bytearray()
    parts = data.split(b"\x00")
    last = len(parts) - 1
    for j, chunk in enumerate(parts):
        while len(chunk) >= 254:
            out.append(0xFF)
            out += chunk[:254]
            chunk = chunk[254:]
            if j == last and not chunk:
                return bytes(out)
        out.append(len(chunk) + 1)
        out += chunk
    return bytes(out)


def cobs_decode(data) -> bytes:
    """Inverse of cobs_encode (input without the delimiter); CobsError if invalid."""
    data = bytes(data)
    out = bytearray()
    i = 0
    n = len(data)
    while i < n:
        code = data[i]
        if code == 0:
            raise CobsError(f"zero byte at {i} inside a COBS frame")
        end = i + code
        if end > n:
            raise CobsError(f"code {code} at {i} runs past the end ({n} bytes)")
        block = data[i + 1 : end]
        if 0 in block:
            raise CobsError(f"zero byte inside the block at {i}")
        out += block
        i = end
        if code < 0xFF and i < n:
            out.append(0)
    return bytes(out)


# --- commands ------------------------------------------------------------------------


def role_id(role) -> int:
    """1 for "clinician", 2 for "patient"; ints pass through."""
    if isinstance(role, str):
        return _ROLE_IDS[role]
    return int(role)


def command_mac(key: bytes, signed: bytes) -> bytes:
    """HMAC-SHA256(key, header + payload-without-mac), truncated to 16 bytes."""
    return hmac.new(key, signed, hashlib.sha256).digest()[:MAC_SIZE]


def build_command(
    msg_type: int,
    body: bytes,
    role,
    key: bytes,
    cmd_id: int,
    counter: int,
    seq: int,
    time: int,
    challenge: int = 0,
) -> bytes:
    """A complete, authenticated command frame (before COBS). `challenge`: the role's
    CHALLENGE from the device (state-changing commands; a read may carry 0)."""
    hdr = Header.build(dict(version=FRAME_VERSION, type=msg_type, seq=seq & 0xFFFF, time=time))
    signed = hdr + CommandHead.build(dict(cmd_id=cmd_id, role=role_id(role), counter=counter,
                                          challenge=challenge))
    signed += bytes(body)
    return build_frame(msg_type, seq, time, signed[HDR_SIZE:] + command_mac(key, signed))


def verify_command(frame, key: bytes) -> bool:
    """True if a (CRC-checked) command frame's MAC is right for `key`."""
    frame = bytes(frame)
    end = len(frame) - CRC_SIZE
    if end - MAC_SIZE < HDR_SIZE + CommandHead.sizeof():
        return False
    mac = frame[end - MAC_SIZE : end]
    return hmac.compare_digest(mac, command_mac(key, frame[: end - MAC_SIZE]))


_BINDING = struct.Struct("<BI")


def reply_mac(key: bytes, signed: bytes, role, counter: int) -> bytes:
    """A reply's MAC: HMAC-SHA256(key, header + payload-without-mac + role u8 + counter
    u32)[:16], the role and counter being the command's (they are not in the reply, so
    a reply to one command cannot pass for the reply to another)."""
    msg = bytes(signed) + _BINDING.pack(role_id(role), counter)
    return hmac.new(key, msg, hashlib.sha256).digest()[:MAC_SIZE]


def build_reply(key: bytes | None, role, counter: int, cmd_id: int, cmd_type: int,
                result: int, detail: int, body: bytes, seq: int, time: int) -> bytes:
    """A complete REPLY frame, signed as the device signs it (key None: 16 zero bytes,
    as for a NACK the device cannot sign)."""
    from .messages import ReplyHead

    hdr = Header.build(dict(version=FRAME_VERSION, type=T_REPLY, seq=seq & 0xFFFF, time=time))
    signed = hdr + ReplyHead.build(dict(cmd_id=cmd_id, cmd_type=cmd_type, result=result,
                                        detail=detail)) + bytes(body)
    mac = reply_mac(key, signed, role, counter) if key is not None else bytes(MAC_SIZE)
    return build_frame(T_REPLY, seq, time, signed[HDR_SIZE:] + mac)


def verify_reply(frame, key: bytes, role, counter: int) -> bool:
    """True if a (CRC-checked) REPLY frame's MAC is right for the command signed with
    `key` as `role` with `counter`."""
    frame = bytes(frame)
    end = len(frame) - CRC_SIZE
    if end - MAC_SIZE < HDR_SIZE:
        return False
    mac = frame[end - MAC_SIZE : end]
    return hmac.compare_digest(mac, reply_mac(key, frame[: end - MAC_SIZE], role, counter))


def rx_hash(blob: bytes) -> bytes:
    """sha256 of an Rx blob: what READ_RX returns beside the blob."""
    return hashlib.sha256(bytes(blob)).digest()


# --- payloads as plain data --------------------------------------------------------------


def plain(obj):
    """A construct result as plain dicts/lists (no `_io` and friends)."""
    if isinstance(obj, Container):
        return {k: plain(v) for k, v in obj.items() if not k.startswith("_")}
    if isinstance(obj, ListContainer | list):
        return [plain(v) for v in obj]
    return obj


def encode_payload(msg_type: int, fields: dict) -> bytes:
    """Build a payload of `msg_type` from plain fields (commands: the whole envelope).

    For REPLY, `body` may be bytes or a dict for the command's reply body.
    """
    m = MESSAGES[msg_type]
    if msg_type == T_REPLY and isinstance(fields.get("body"), dict):
        cmd = MESSAGES[fields["cmd_type"]]
        fields = dict(fields, body=cmd.reply.build(fields["body"]))
    return m.payload.build(fields)


def decode_payload(msg_type: int, payload: bytes) -> dict:
    """Parse a payload of `msg_type` into plain data; a REPLY's ACK body is parsed too."""
    m = MESSAGES[msg_type]
    out = plain(m.payload.parse(bytes(payload)))
    if msg_type == T_REPLY:
        cmd = MESSAGES.get(out["cmd_type"])
        if out["result"] == 0 and cmd is not None and cmd.reply is not None and out["body"]:
            out["body"] = plain(cmd.reply.parse(out["body"]))
    return out
