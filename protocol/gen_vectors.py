"""Generate protocol/vectors.json: named test vectors built with construct.

    python protocol/gen_vectors.py          # rewrite protocol/vectors.json
    python protocol/gen_vectors.py --check  # exit 1 if it is stale

Every implementation (host fast path, firmware codec, third-party tools) must
reproduce these bytes. Commands are signed with the fixed TEST keys below;
they are public and must never be a device's real key.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import theca_protocol as P  # noqa: E402
from theca_protocol import names as N  # noqa: E402

OUT = HERE / "vectors.json"
SPEC = HERE / "PROTOCOL.md"

#: Public test keys (32 bytes each). Never use them on a device.
TEST_KEYS = {
    "clinician": bytes(range(0x00, 0x20)),
    "patient": bytes(range(0x20, 0x40)),
}

T0 = 189388800  # 2026-01-01T00:00:00Z in device time (Theca epoch 2020-01-01)

DEVICE_INFO = dict(
    machine="Raspberry Pi Pico with RP2040",
    serial="TWIN00000001",
    fw_major=0,
    fw_minor=1,
    fw_patch=0,
    runtime=1,
    schema=P.SCHEMA,
    stroke_nl=250,
    capacity_nl=20_000_000,
    low_reservoir_nl=2_000_000,
    catheter_nl=150_000,
    max_rate_nl_h=1_000_000,
    min_rate_nl_day=48_000,
)
STATUS_RUNNING = dict(
    mode=1,
    step=1,
    flags=0,
    drug=1,
    alarms=1,  # low_reservoir
    reservoir_nl=1_999_750,
    delivered_ul=18_000,
    delivered_nl=250,
    battery_days=2500,
    rate_nl_day=200_000,
    low_eta=0,
    rolling_ng=1_750_000,
    conc_ng_ml=10_000_000,
    boluses_24h=2,
    acked=0,
    rx_crc=0xDEADBEEF,
    refill_due=T0 + 86400 * 10,
    heap_free=40_000,
    heap_total=131_072,
)
STATUS_STOPPED = dict(
    mode=0,
    step=0,
    flags=0,
    drug=0,
    alarms=0,
    reservoir_nl=20_000_000,
    delivered_ul=0,
    delivered_nl=0,
    battery_days=2555,
    rate_nl_day=0,
    low_eta=T0 + 86400 * 90,
    rolling_ng=0,
    conc_ng_ml=0,
    boluses_24h=0,
    acked=0,
    rx_crc=0,
    refill_due=0,
    heap_free=60_000,
    heap_total=131_072,
)
#: A trial prescription with a patient bolus running and the low-reservoir alarm
#: acknowledged: STATUS.flags bolus_running | trial, acked bit 0 (what a pump sends).
STATUS_BOLUS_TRIAL_ACKED = dict(
    STATUS_RUNNING,
    flags=(N.mask_of(N.STATUS_FLAGS, "bolus_running") | N.mask_of(N.STATUS_FLAGS, "trial")),
    acked=1 << next(b for b, n in N.ALARMS.items() if n == "low_reservoir"),
)
#: After a refill with a new concentration: the catheter still holds the old one.
STATUS_BRIDGE = dict(STATUS_RUNNING, alarms=0, flags=N.mask_of(N.STATUS_FLAGS, "bridge"))
RX = dict(
    version=P.RX_VERSION,
    drug=1,
    flags=0,
    pb_max_per_day=4,
    pb_duration_s=600,
    conc_ng_ml=10_000_000,
    pb_dose_ng=100_000,
    pb_lockout_s=3600,
    low_reservoir_ul=3000,
    steps=[
        dict(start_min=0, rate_ng_day=1_500_000),
        dict(start_min=480, rate_ng_day=2_000_000),
    ],
    timed=[dict(start_min=720, duration_s=1800, dose_ng=200_000)],
    # Europe/Berlin from 2026-01-01: CET, then summer time at 2026-03-29T01:00Z
    zone=[dict(utc=189_388_800, offset_s=3600), dict(utc=196_909_200, offset_s=7200)],
    # an admixture: morphine 10 mg/mL + clonidine 0.5 mg/mL (drug 6), the other slots unused
    mix=P.compiled(P.MixEntry).pack(6, 500_000) + bytes(P.MIX_BYTES - P.MixEntry.sizeof()),
)


def _ev(t, seq, code, who=0, a=0, b=0, c=0, d=0):
    return dict(t=t, event_seq=seq, code=code, who=who, a=a, b=b, c=c, d=d)


def _jsonable(v):
    if isinstance(v, bytes):
        return v.hex()
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_jsonable(x) for x in v]
    return v


def _vector(name, msg_type, seq, time, fields, frame, extra=None):
    cobs = P.cobs_encode(frame)
    v = {
        "name": name,
        "type": msg_type,
        "type_name": P.MESSAGES[msg_type].name,
        "seq": seq,
        "time": time,
        "fields": _jsonable(fields),
        "payload_hex": frame[P.HDR_SIZE : -P.CRC_SIZE].hex(),
        "frame_hex": frame.hex(),
        "cobs_hex": cobs.hex(),
        "wire_hex": (cobs + b"\x00").hex(),
    }
    v.update(extra or {})
    return v


def device_vector(name, msg_type, seq, time, fields):
    """A device-to-host frame from plain fields."""
    frame = P.build_frame(msg_type, seq, time, P.encode_payload(msg_type, fields))
    return _vector(name, msg_type, seq, time, fields, frame)


def reply_vector(name, seq, time, role, counter, fields):
    """A REPLY signed as the device signs it: under `role`'s test key, bound to the
    command's role and counter (`key` and `counter` in the vector; role None: the 16
    zero bytes of a NACK the device cannot sign)."""
    body = fields["body"]
    if isinstance(body, dict):
        body = P.MESSAGES[fields["cmd_type"]].reply.build(body)
    key = TEST_KEYS[role] if role else None
    frame = P.build_reply(key, role or 0, counter, fields["cmd_id"], fields["cmd_type"],
                          fields["result"], fields["detail"], body, seq, time)
    mac = frame[-P.CRC_SIZE - P.MAC_SIZE : -P.CRC_SIZE]
    assert P.encode_payload(P.T_REPLY, dict(fields, mac=mac)) == frame[P.HDR_SIZE : -P.CRC_SIZE]
    return _vector(name, P.T_REPLY, seq, time, dict(fields, mac=mac), frame,
                   {"key": role, "counter": counter} if role else {"key": None})


def command_vector(name, msg_type, seq, time, role, cmd_id, counter, body_fields,
                   challenge=0):
    """A signed command frame; `fields` carry the envelope with the computed mac."""
    m = P.COMMANDS[msg_type]
    body = m.body.build(body_fields)
    key = TEST_KEYS[role]
    frame = P.build_command(msg_type, body, role, key, cmd_id, counter, seq, time, challenge)
    mac = frame[-P.CRC_SIZE - P.MAC_SIZE : -P.CRC_SIZE]
    parsed = P.decode_payload(msg_type, frame[P.HDR_SIZE : -P.CRC_SIZE])
    assert parsed["mac"] == mac
    fields = dict(
        cmd_id=cmd_id,
        role=P.role_id(role),
        counter=counter,
        challenge=challenge,
        body=P.plain(m.body.parse(body)),
        mac=mac,
    )
    return _vector(name, msg_type, seq, time, fields, frame, {"key": role})


def vectors() -> list[dict]:
    """Every named frame vector: the device's frames, its replies, then the commands."""
    return _device_vectors() + _reply_vectors() + _command_vectors()


def _device_vectors() -> list[dict]:
    return [
        device_vector("device_info", 0x01, 0, T0, DEVICE_INFO),
        device_vector("status_running_low_reservoir", 0x02, 1, T0 + 60, STATUS_RUNNING),
        device_vector("status_stopped", 0x02, 65535, T0 + 120, STATUS_STOPPED),
        device_vector("status_bolus_trial_acked", 0x02, 13, T0 + 180, STATUS_BOLUS_TRIAL_ACKED),
        device_vector("status_bridge", 0x02, 14, T0 + 240, STATUS_BRIDGE),
        device_vector("event_boot", 0x03, 2, T0, _ev(T0, 1, 1, a=0)),
        device_vector("event_bolus_completed", 0x03, 3, T0 + 700, _ev(T0 + 700, 7, 6, who=2, a=10000, b=1)),
        device_vector("event_alarm_raised", 0x03, 4, T0 + 800, _ev(T0 + 800, 8, 8, a=0, b=1999750)),
        device_vector("event_refilled", 0x03, 5, T0 + 900,
            _ev(T0 + 900, 9, 10, who=1, a=18000000, b=1950000, c=10000000, d=1)),
        device_vector("event_time_changed", 0x03, 6, T0 + 1000,
            _ev(T0 + 1000, 10, 13, who=1, a=T0 + 990, b=T0 + 1000, c=-3600 & 4294967295)),
    ]


def _reply_vectors() -> list[dict]:
    return [
        reply_vector("reply_ack_program", 7, T0 + 1100, "clinician", 1,
            dict(cmd_id=1001, cmd_type=0x41, result=0, detail=0, body=b"")),
        reply_vector("reply_nack_limit_lockout", 8, T0 + 1200, "patient", 2,
            dict(cmd_id=1002, cmd_type=0x44, result=6, detail=1, body=b"")),
        reply_vector("reply_nack_schema_rx_version", 15, T0 + 1250, "clinician", 7,
            dict(cmd_id=1007, cmd_type=0x41, result=8, detail=P.RX_VERSION, body=b"")),
        reply_vector("reply_get_status", 9, T0 + 1300, "patient", 1,
            dict(cmd_id=1003, cmd_type=0x40, result=0, detail=0, body=STATUS_RUNNING)),
        reply_vector("reply_get_info", 10, T0 + 1400, "clinician", 8,
            dict(cmd_id=1004, cmd_type=0x4B, result=0, detail=0, body=DEVICE_INFO)),
        reply_vector("reply_log_read", 11, T0 + 1500, "clinician", 9,
            dict(cmd_id=1005, cmd_type=0x4A, result=0, detail=0,
                 body=dict(next_seq=3, first_seq=1, records=[_ev(T0, 1, 1), _ev(T0 + 10, 2, 2, who=1)]))),
        reply_vector("reply_read_rx", 12, T0 + 1600, "clinician", 2,
            dict(cmd_id=1006, cmd_type=0x42, result=0, detail=0,
                 body=dict(rx_sha256=P.rx_hash(P.RxBlob.build(RX)), rx=RX))),
    ]


def _command_vectors() -> list[dict]:
    return [
        command_vector("cmd_get_status", 0x40, 100, T0 + 2000, "patient", 2001, 1, {}),
        command_vector("cmd_program", 0x41, 101, T0 + 2010, "clinician", 2002, 1, RX),
        command_vector("cmd_read_rx", 0x42, 102, T0 + 2020, "clinician", 2003, 2, {}),
        command_vector("cmd_refill", 0x43, 103, T0 + 2030, "clinician", 2004, 3,
            dict(volume_nl=18000000, conc_ng_ml=10000000, residual_nl=1950000, drug=1)),
        command_vector("cmd_patient_bolus", 0x44, 104, T0 + 2040, "patient", 2005, 2, {}),
        command_vector("cmd_clinician_bolus", 0x45, 105, T0 + 2050, "clinician", 2006, 4,
            dict(dose_ng=200000, duration_s=600)),
        command_vector("cmd_suspend", 0x46, 106, T0 + 2060, "clinician", 2007, 5, dict(max_s=7200)),
        command_vector("cmd_resume", 0x47, 107, T0 + 2070, "clinician", 2008, 6, {}),
        command_vector("cmd_ack_alarm", 0x48, 108, T0 + 2080, "patient", 2009, 3, dict(mask=1)),
        command_vector("cmd_set_time", 0x49, 109, T0 + 2090, "clinician", 2010, 7,
            dict(utc=T0 + 2090, local_offset_s=-3600)),
        command_vector("cmd_log_read", 0x4A, 110, T0 + 2100, "clinician", 2011, 8,
            dict(from_seq=1, max_count=40)),
        command_vector("cmd_get_info", 0x4B, 111, T0 + 2110, "patient", 2012, 4, {}),
        command_vector("cmd_maintenance", 0x4C, 112, T0 + 2120, "clinician", 2013, 9, {}),
        command_vector("cmd_catheter", 0x4D, 113, T0 + 2130, "clinician", 2014, 10,
            dict(volume_nl=150000)),
        command_vector("cmd_prime", 0x4E, 114, T0 + 2140, "clinician", 2015, 11, {}, challenge=CHALLENGE),
        command_vector("cmd_challenge", 0x4F, 115, T0 + 2150, "clinician", 2016, 12, {}),
        reply_vector("reply_challenge", 16, T0 + 2150, "clinician", 12,
            dict(cmd_id=2016, cmd_type=0x4F, result=0, detail=0,
                 body=dict(challenge=CHALLENGE, valid_s=N.FRESH_S))),
        command_vector("cmd_patient_bolus_fresh", 0x44, 116, T0 + 2160, "patient", 2017, 5,
            {}, challenge=CHALLENGE),
        reply_vector("reply_nack_stale", 17, T0 + 2230, "patient", 5,
            dict(cmd_id=2017, cmd_type=0x44, result=11, detail=70, body=b"")),
        reply_vector("reply_nack_bad_mac_unsigned", 18, T0 + 2240, None, 0,
            dict(cmd_id=2018, cmd_type=0x46, result=2, detail=0, body=b"")),
        command_vector("cmd_mri_prepare", 0x50, 117, T0 + 2250, "clinician", 2019, 13, {},
                       challenge=CHALLENGE),
        command_vector("cmd_mri_check", 0x51, 118, T0 + 2260, "clinician", 2020, 14, {},
                       challenge=CHALLENGE),
    ]


#: The challenge the freshness vectors carry.
CHALLENGE = 0x5EED1234


def cobs_examples() -> list[dict]:
    """COBS examples: Wikipedia's eleven, plus edge runs around 254/255 bytes."""
    raws = [
        b"\x00",
        b"\x00\x00",
        b"\x00\x11\x00",
        b"\x11\x22\x00\x33",
        b"\x11\x22\x33\x44",
        b"\x11\x00\x00\x00",
        bytes(range(1, 255)),  # 254 non-zero bytes
        bytes(range(0, 255)),  # 00 then 254 non-zero
        bytes(range(1, 256)),  # 255 non-zero bytes
        bytes(range(2, 256)) + b"\x00",
        bytes(range(3, 256)) + b"\x00\x01",
        b"",
        b"\x01" * 253,
        b"\x01" * 508,
        b"\x01" * 254 + b"\x00",
        b"\x00" + b"\x01" * 600 + b"\x00",
    ]
    return [{"raw_hex": r.hex(), "cobs_hex": P.cobs_encode(r).hex()} for r in raws]


def tlog_example() -> dict:
    """A tiny .tlog: header, one DEVICE_INFO, one STATUS, one EVENT."""
    frames = [
        P.build_frame(0x01, 0, T0, P.encode_payload(0x01, DEVICE_INFO)),
        P.build_frame(0x02, 1, T0 + 60, P.encode_payload(0x02, STATUS_RUNNING)),
        P.build_frame(0x03, 2, T0 + 60, P.encode_payload(0x03, _ev(T0 + 60, 1, 1))),
    ]
    out = P.TlogHeader.build(dict(format=P.TLOG_FORMAT, flags=0, schema=P.SCHEMA))
    for f in frames:
        out += bytes([P.TLOG_MARK]) + len(f).to_bytes(2, "little") + f
    return {"frames": [f.hex() for f in frames], "tlog_hex": out.hex()}


def document() -> dict:
    """The whole vectors.json document."""
    import hashlib
    import hmac

    hkey = b"\x0b" * 20
    return {
        "comment": "Generated by protocol/gen_vectors.py from theca_protocol; do not edit.",
        "schema": P.SCHEMA,
        "keys": {k: v.hex() for k, v in TEST_KEYS.items()},
        "crc32": {"input_hex": b"123456789".hex(), "crc32": 0xCBF43926},
        "hmac_sha256": [
            {
                "source": "RFC 4231 test case 1",
                "key_hex": hkey.hex(),
                "msg_hex": b"Hi There".hex(),
                "mac_hex": hmac.new(hkey, b"Hi There", hashlib.sha256).hexdigest(),
            },
            {
                "source": "RFC 4231 test case 6 (key longer than a block)",
                "key_hex": (b"\xaa" * 131).hex(),
                "msg_hex": b"Test Using Larger Than Block-Size Key - Hash Key First".hex(),
                "mac_hex": hmac.new(
                    b"\xaa" * 131,
                    b"Test Using Larger Than Block-Size Key - Hash Key First",
                    hashlib.sha256,
                ).hexdigest(),
            },
        ],
        "vectors": vectors(),
        "cobs": cobs_examples(),
        "tlog": tlog_example(),
    }


def render() -> str:
    """vectors.json text (stable: sorted keys are not used, order is meaningful)."""
    return json.dumps(document(), indent=1) + "\n"


def _hexlines(h: str, width: int = 64) -> str:
    return "\n".join(h[i : i + width] for i in range(0, len(h), width))


SPEC_VECTORS = [
    "device_info",
    "status_running_low_reservoir",
    "event_bolus_completed",
    "event_time_changed",
    "reply_nack_limit_lockout",
    "reply_nack_schema_rx_version",
    "status_bolus_trial_acked",
    "reply_get_status",
    "cmd_program",
    "cmd_patient_bolus",
    "cmd_challenge",
    "reply_challenge",
    "cmd_patient_bolus_fresh",
    "reply_nack_stale",
    "reply_nack_bad_mac_unsigned",
]


def spec_vectors_markdown(doc: dict) -> str:
    """The test-vector section of PROTOCOL.md."""
    by_name = {v["name"]: v for v in doc["vectors"]}
    out = [
        "Keys (public test keys, never a device's): clinician `"
        + doc["keys"]["clinician"]
        + "`, patient `"
        + doc["keys"]["patient"]
        + "`.",
        "",
    ]
    for name in SPEC_VECTORS:
        v = by_name[name]
        out.append(f"#### `{name}`: {v['type_name']} (0x{v['type']:02x}), seq {v['seq']}, "
                   f"time {v['time']}")
        out.append("")
        if "key" in v:
            out.append(f"Signed with the {v['key']} test key.")
            out.append("")
        out.append("Fields:")
        out.append("")
        out.append("```json")
        out.append(json.dumps(v["fields"], separators=(", ", ": ")))
        out.append("```")
        out.append("")
        out.append("Frame (header | payload | crc32):")
        out.append("")
        out.append("```")
        out.append(_hexlines(v["frame_hex"]))
        out.append("```")
        out.append("")
        out.append("On the wire (COBS, then the 0x00 delimiter):")
        out.append("")
        out.append("```")
        out.append(_hexlines(v["wire_hex"]))
        out.append("```")
        out.append("")
    out.append("#### COBS")
    out.append("")
    out.append("| raw | COBS (no delimiter) |")
    out.append("|---|---|")
    for ex in doc["cobs"]:
        raw, enc = ex["raw_hex"], ex["cobs_hex"]
        if len(raw) > 24:
            r = bytes.fromhex(raw)
            raw = f"{len(r)} bytes: {raw[:8]}…{raw[-8:]}"
            enc = f"{len(enc) // 2} bytes: {enc[:10]}…{enc[-10:]}"
        out.append(f"| `{raw or '(empty)'}` | `{enc}` |")
    out.append("")
    out.append("#### .tlog")
    out.append("")
    out.append("A log with one DEVICE_INFO, one STATUS and one EVENT:")
    out.append("")
    out.append("```")
    out.append(_hexlines(doc["tlog"]["tlog_hex"]))
    out.append("```")
    return "\n".join(out) + "\n"


def _replace(text: str, name: str, body: str) -> str:
    begin = f"<!-- BEGIN GENERATED: {name} (protocol/gen_vectors.py) -->"
    end = f"<!-- END GENERATED: {name} -->"
    i = text.index(begin) + len(begin)
    j = text.index(end)
    return text[:i] + "\n\n" + body.rstrip("\n") + "\n\n" + text[j:]


def render_spec(text: str, doc: dict | None = None) -> str:
    """PROTOCOL.md with its generated sections brought up to date."""
    from theca_protocol import doc as D

    doc = document() if doc is None else doc
    text = _replace(text, "layouts", D.layouts_markdown())
    text = _replace(text, "commands", D.commands_markdown())
    text = _replace(text, "events", events_markdown())
    text = _replace(text, "vectors", spec_vectors_markdown(doc))
    text = _replace(text, "schema", f"`SCHEMA = 0x{P.SCHEMA:08x}`; its canonical text:\n\n"
                    "```\n" + P.canonical_text() + "```")
    return text


def events_markdown() -> str:
    """The event code table."""
    from theca_protocol import names as N

    out = ["| code | name | a | b | c |", "|---|---|---|---|---|"]

    def arg(a):
        if a is None:
            return "-"
        kind = {"int": "", "nl": " (nL)", "time": " (device time)", "i32": " (signed)",
                "mask": " (alarm mask)"}.get(a.kind, f" ({a.kind})")
        return f"{a.wire_name}{kind}"

    for code, ev in sorted(N.EVENTS.items()):
        out.append(f"| {code} | {ev.name} | {arg(ev.a)} | {arg(ev.b)} | {arg(ev.c)} |")
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if vectors.json is stale")
    args = ap.parse_args(argv)
    text = render()
    spec_old = SPEC.read_text()
    spec = render_spec(spec_old, json.loads(text))
    if args.check:
        stale = [p for p, new, old in ((OUT, text, OUT.read_text() if OUT.exists() else ""),
                                       (SPEC, spec, spec_old)) if new != old]
        for p in stale:
            print(f"{p} is stale: run python protocol/gen_vectors.py", file=sys.stderr)
        return 1 if stale else 0
    OUT.write_text(text)
    SPEC.write_text(spec)
    print(f"wrote {OUT} and the generated sections of {SPEC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
