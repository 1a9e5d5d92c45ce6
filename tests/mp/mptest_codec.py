# The firmware codec against protocol/vectors.json (built on the host with construct).
import binascii
import io
import json
import struct

import micropython

import codec
import msgdefs as M
import msgfields as F

with open("protocol/vectors.json") as _f:
    DOC = json.load(_f)
VECTORS = DOC["vectors"]
TMP_TLOG = "/tmp/theca_mptest_codec.tlog"
KEYS = {k: binascii.unhexlify(v) for k, v in DOC["keys"].items()}


def unhex(s):
    return binascii.unhexlify(s)


def args_of(fields, names):
    out = []
    for n in names:
        v = fields[n]
        if n == "mix":
            v = unhex(v)  # (bytes travel as hex in the vectors)
        elif isinstance(v, str):
            v = v.encode()
        out.append(v)
    return out


def pack_fixed(prefix, fields, buf, off):
    fmt = getattr(M, prefix + "_FMT")
    struct.pack_into(fmt, buf, off, *args_of(fields, getattr(F, prefix + "_FIELDS")))
    return off + getattr(M, prefix + "_SIZE")


def pack_rx(rx, buf, off):
    h = dict(rx)
    h["n_steps"] = len(rx["steps"])
    h["n_timed"] = len(rx["timed"])
    off = pack_fixed("RX_HEAD", h, buf, off)
    for s in rx["steps"]:
        off = pack_fixed("RX_STEP", s, buf, off)
    for t in rx["timed"]:
        off = pack_fixed("RX_TIMED", t, buf, off)
    if rx["version"] >= 3:
        zone = rx.get("zone") or []
        buf[off] = len(zone)
        off += 1
        for z in zone:
            off = pack_fixed("RX_ZONE", z, buf, off)
    if rx["version"] >= 4:
        mix = unhex(rx["mix"]) if rx.get("mix") else bytes(M.MIX_BYTES)
        buf[off:off + M.MIX_BYTES] = mix
        off += M.MIX_BYTES
    return off


def pack_reply_body(cmd_type, body, buf, off):
    if cmd_type == M.T_GET_STATUS:
        return pack_fixed("STATUS", body, buf, off)
    if cmd_type == M.T_GET_INFO:
        return pack_fixed("DEVICE_INFO", body, buf, off)
    if cmd_type == M.T_CHALLENGE:
        return pack_fixed("CHALLENGE_REPLY", body, buf, off)
    if cmd_type == M.T_LOG_READ:
        h = dict(body)
        h["count"] = len(body["records"])
        off = pack_fixed("LOG_READ_REPLY_HEAD", h, buf, off)
        for r in body["records"]:
            off = pack_fixed("EVENT", r, buf, off)
        return off
    if cmd_type == M.T_READ_RX:
        d = unhex(body["rx_sha256"])
        buf[off : off + M.RX_SHA256_SIZE] = d
        return pack_rx(body["rx"], buf, off + M.RX_SHA256_SIZE)
    assert body == "" or body == {}, body
    return off


_CMD_BODY = {
    M.T_REFILL: "REFILL",
    M.T_SUSPEND: "SUSPEND",
    M.T_CLINICIAN_BOLUS: "CLINICIAN_BOLUS",
    M.T_ACK_ALARM: "ACK_ALARM",
    M.T_SET_TIME: "SET_TIME",
    M.T_LOG_READ: "LOG_READ",
    M.T_CATHETER: "CATHETER",
}


def build(w, v):
    """Pack vector v's fields the way firmware does; returns the frame view."""
    t = v["type"]
    f = v["fields"]
    H = M.HDR_SIZE
    if t == M.T_DEVICE_INFO:
        end = pack_fixed("DEVICE_INFO", f, w.buf, H)
    elif t == M.T_STATUS:
        end = pack_fixed("STATUS", f, w.buf, H)
    elif t == M.T_EVENT:
        end = pack_fixed("EVENT", f, w.buf, H)
    elif t == M.T_REPLY:
        end = pack_fixed("REPLY_HEAD", f, w.buf, H)
        if f["result"] == 0:
            end = pack_reply_body(f["cmd_type"], f["body"], w.buf, end)
        # the device's reply MAC: the command's key, bound to its role and counter
        key = None
        bind = bytearray(5)
        if v["key"]:
            key = codec.MacKey(KEYS[v["key"]])
            role = M.ROLE_CLINICIAN if v["key"] == "clinician" else M.ROLE_PATIENT
            struct.pack_into("<BI", bind, 0, role, v["counter"])
        return w.finish_reply(t, v["seq"], v["time"], end - H, key, bind)
    else:
        end = pack_fixed("CMD_HEAD", f, w.buf, H)
        body = f["body"]
        if t == M.T_PROGRAM:
            end = pack_rx(body, w.buf, end)
        elif t in _CMD_BODY:
            end = pack_fixed(_CMD_BODY[t], body, w.buf, end)
        else:
            assert M.CMD_BODY_SIZE[t - M.CMD_FIRST] == 0
        key = codec.MacKey(KEYS[v["key"]])
        return w.finish_signed(t, v["seq"], v["time"], end - H, key)
    return w.finish(t, v["seq"], v["time"], end - H)


def test_crc_check_value():
    b = bytearray(b"123456789\x00\x00\x00\x00")
    codec.crc_put(b, 9)
    assert struct.unpack_from("<I", b, 9)[0] == 0xCBF43926 == DOC["crc32"]["crc32"]
    assert codec.crc_ok(b, 13)
    b[3] ^= 1
    assert not codec.crc_ok(b, 13)


def test_crc_matches_binascii():
    for n in (0, 1, 2, 7, 54, 255, 1276):
        b = bytearray(n + 4)
        for i in range(n):
            b[i] = (i * 37 + n) & 0xFF
        codec.crc_put(b, n)
        assert struct.unpack_from("<I", b, n)[0] == binascii.crc32(b[:n]) & 0xFFFFFFFF
        assert codec.crc_ok(b, n + 4)


def test_vectors_build_identical():
    w = codec.FrameWriter()
    assert len(VECTORS) >= 20
    for v in VECTORS:
        got = binascii.hexlify(bytes(build(w, v))).decode()
        assert got == v["frame_hex"], v["name"] + ": " + got


def test_vectors_parse_back():
    for v in VECTORS:
        fr = unhex(v["frame_hex"])
        assert codec.crc_ok(fr, len(fr)), v["name"]
        ver, t, seq, time = codec.parse_header(fr)
        assert (ver, t, seq, time) == (M.VERSION, v["type"], v["seq"], v["time"]), v["name"]
        assert codec.frame_type(fr) == v["type"]
        f = v["fields"]
        if t in (M.T_STATUS, M.T_EVENT, M.T_DEVICE_INFO):
            pre = {M.T_STATUS: "STATUS", M.T_EVENT: "EVENT", M.T_DEVICE_INFO: "DEVICE_INFO"}[t]
            vals = struct.unpack_from(getattr(M, pre + "_FMT"), fr, M.HDR_SIZE)
            assert len(fr) == M.HDR_SIZE + getattr(M, pre + "_SIZE") + M.CRC_SIZE
            got = [x.rstrip(b"\x00") if isinstance(x, bytes) else x for x in vals]  # NUL-padded
            assert got == args_of(f, getattr(F, pre + "_FIELDS")), v["name"]
        elif t == M.T_REPLY:
            vals = struct.unpack_from(M.REPLY_HEAD_FMT, fr, M.HDR_SIZE)
            assert list(vals) == args_of(f, F.REPLY_HEAD_FIELDS)
            end = len(fr) - M.CRC_SIZE
            assert binascii.hexlify(fr[end - M.MAC_SIZE : end]).decode() == f["mac"]
        else:
            vals = struct.unpack_from(M.CMD_HEAD_FMT, fr, M.HDR_SIZE)
            assert list(vals) == args_of(f, F.CMD_HEAD_FIELDS)
            end = len(fr) - M.CRC_SIZE
            assert binascii.hexlify(fr[end - M.MAC_SIZE : end]).decode() == f["mac"]


def test_cobs_examples():
    dst = bytearray(1400)
    for e in DOC["cobs"]:
        raw = unhex(e["raw_hex"])
        n = codec.cobs_encode_into(raw, len(raw), dst)
        assert binascii.hexlify(dst[:n]).decode() == e["cobs_hex"], e["raw_hex"][:40]
        for i in range(n):
            assert dst[i] != 0
        m = codec.cobs_decode_inplace(dst, n)
        assert bytes(dst[:m]) == raw


def test_cobs_of_vectors():
    dst = bytearray(1400)
    for v in VECTORS:
        fr = unhex(v["frame_hex"])
        n = codec.cobs_frame_into(fr, len(fr), dst)
        assert binascii.hexlify(dst[:n]).decode() == v["wire_hex"], v["name"]


def test_cobs_bounds_checked():
    try:
        codec.cobs_encode_into(bytes(300), 300, bytearray(300))
    except ValueError:
        pass
    else:
        raise AssertionError("short dst accepted")
    assert codec.cobs_decode_inplace(bytearray(b"\x05\x01"), 2) == -1


def _wire_all():
    return b"".join(unhex(v["wire_hex"]) for v in VECTORS)


def _frames_expected():
    return [unhex(v["frame_hex"]) for v in VECTORS]


def test_deframer_merged():
    d = codec.Deframer()
    wire = _wire_all()
    got = [bytes(f) for f in d.frames(wire, len(wire))]
    assert got == _frames_expected()
    assert d.good == len(VECTORS) and d.errors() == 0


def test_deframer_split_chunks():
    wire = _wire_all()
    for step in (1, 2, 3, 7, 64, 1000):
        d = codec.Deframer()
        got = []
        for i in range(0, len(wire), step):
            chunk = wire[i : i + step]
            pos = 0
            while pos < len(chunk):
                pos = d.feed(chunk, pos, len(chunk))
                if d.frame is not None:
                    got.append(bytes(d.frame))
        assert got == _frames_expected(), step


def test_deframer_garbage_and_resync():
    # REQ: SR-LINK-01
    d = codec.Deframer()
    good = unhex(VECTORS[1]["wire_hex"])
    bad = bytearray(good)
    bad[10] ^= 0x40  # still COBS-valid unless it made a zero; CRC must catch it
    if bad[10] == 0:
        bad[10] = 0x55
    noise = bytes((i * 73 + 11) & 0xFF for i in range(500))  # has zeros: many junk frames
    stream = b"\x00\x00" + noise + b"\x00" + bytes(bad) + good + b"\x03\xff\x00" + good
    got = [bytes(f) for f in d.frames(stream, len(stream))]
    assert got == [unhex(VECTORS[1]["frame_hex"])] * 2
    assert d.bad_crc + d.bad_cobs >= 2
    assert d.short >= 1 or d.bad_cobs >= 1


def test_deframer_oversize_never_grows():
    # REQ: SR-LINK-01
    d = codec.Deframer()
    cap = len(d.buf)
    junk = b"\x01" * 5000 + b"\x00"
    got = [bytes(f) for f in d.frames(junk, len(junk))]
    assert got == [] and d.oversize == 1 and len(d.buf) == cap
    good = unhex(VECTORS[0]["wire_hex"])
    got = [bytes(f) for f in d.frames(good, len(good))]
    assert got == [unhex(VECTORS[0]["frame_hex"])]


def test_hmac_rfc4231():
    for h in DOC["hmac_sha256"]:
        out = bytearray(32)
        codec.hmac_sha256_into(unhex(h["key_hex"]), unhex(h["msg_hex"]), out)
        assert binascii.hexlify(out).decode() == h["mac_hex"], h["source"]


def test_verify_mac_vectors():
    n = 0
    for v in VECTORS:
        if v["type"] < M.CMD_FIRST or v["type"] > M.CMD_LAST:
            continue
        fr = bytearray(unhex(v["frame_hex"]))
        key = codec.MacKey(KEYS[v["key"]])
        other = KEYS["patient" if v["key"] == "clinician" else "clinician"]
        assert codec.verify_mac(key, fr, len(fr)), v["name"]
        assert codec.verify_mac(KEYS[v["key"]], fr, len(fr))
        assert not codec.verify_mac(other, fr, len(fr)), v["name"]
        fr[M.HDR_SIZE] ^= 1
        assert not codec.verify_mac(key, fr, len(fr)), v["name"]
        n |= 1 << (v["type"] - M.CMD_FIRST)
    assert n == (1 << (M.CMD_LAST - M.CMD_FIRST + 1)) - 1  # every command has a vector


def test_tlog_writer_matches_vector():
    out = io.BytesIO()
    tw = codec.TlogWriter(out, bufsize=40)  # small: records straddle flushes
    for h in DOC["tlog"]["frames"]:
        fr = unhex(h)
        tw.write_record(fr)
    tw.flush()
    assert binascii.hexlify(out.getvalue()).decode() == DOC["tlog"]["tlog_hex"]
    assert tw.records == 3


def _status_args(i):
    return (1, 0, 0, 1, 0, 20000000 - i, i, 0, 2555, 200000, 0, 0, 10000000, 0, 0, 0)


def test_no_allocation_in_hot_paths():
    # REQ: SR-HEAP-01
    w = codec.FrameWriter()
    dst = bytearray(codec.cobs_max(M.MAX_FRAME) + 1)
    # A real file: BytesIO itself allocates as it grows, a file does not.
    out = open(TMP_TLOG, "wb")
    tw = codec.TlogWriter(out, bufsize=256)
    d = codec.Deframer()
    junk = b"\x11\x22\x00" + b"\x05\x01\x00" + b"\x01" * (M.MAX_FRAME + 120) + b"\x00"
    args = _status_args(1)
    # Warm up: the first frame of a length caches its view.
    struct.pack_into(M.STATUS_FMT, w.buf, M.HDR_SIZE, *args)
    w.finish(M.T_STATUS, 0, 0, M.STATUS_SIZE)
    micropython.heap_lock()
    try:
        for i in range(200):
            struct.pack_into(
                M.STATUS_FMT, w.buf, M.HDR_SIZE, 1, 0, 0, 1, 0, 20000000 - i, i, 0,
                2555, 200000, 0, 0, 10000000, 0, 0, 0,
            )
            fr = w.finish(M.T_STATUS, i, 189388800 + 60 * i, M.STATUS_SIZE)
            n = codec.cobs_encode_into(fr, len(fr), dst)
            tw.write_record(fr, len(fr))
            ok = codec.crc_ok(fr, len(fr))
            pos = 0
            while pos < len(junk):
                pos = d.feed(junk, pos, len(junk))
    finally:
        micropython.heap_unlock()
    tw.close()
    assert ok and n > len(fr) and tw.records == 200
    with open(TMP_TLOG, "rb") as f:
        data = f.read()
    import os

    os.remove(TMP_TLOG)
    assert len(data) == M.TLOG_HDR_SIZE + 200 * (3 + len(fr))
    assert data[:8] == M.TLOG_MAGIC
    assert d.oversize == 200 and d.frame is None


def test_encode_speed_report():
    # Not a pass/fail budget: prints per-frame cost for the record.
    import time

    w = codec.FrameWriter()
    dst = bytearray(codec.cobs_max(M.MAX_FRAME) + 1)
    n = 2000
    t0 = time.ticks_us()
    for i in range(n):
        struct.pack_into(
            M.STATUS_FMT, w.buf, M.HDR_SIZE, 1, 0, 0, 1, 0, 20000000 - i, i, 0,
            2555, 200000, 0, 0, 10000000, 0, 0, 0,
        )
        fr = w.finish(M.T_STATUS, i, i, M.STATUS_SIZE)
        codec.cobs_frame_into(fr, len(fr), dst)
    us = time.ticks_diff(time.ticks_us(), t0)
    print("status pack+finish+cobs us/frame", us / n)
    assert us / n < 1000
