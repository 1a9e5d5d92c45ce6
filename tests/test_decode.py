"""`theca decode` and the .tlog reader: output per interface.md, damage, resync, exit codes."""

from __future__ import annotations

import csv
import io
import json
import random
import zlib
from pathlib import Path

import numpy as np
import pytest
import theca_protocol as P
from hypothesis import given, settings
from hypothesis import strategies as st
from theca.cli import main as cli_main
from theca.log.records import Renderer, to_json
from theca.log.stats import Summary
from theca.log.tlog import Tlog, TlogError, build_tlog, header_bytes, read_frames, record_bytes
from theca.log.writers.jsonl import _status_text, write_jsonl

ROOT = Path(__file__).resolve().parent.parent
T0 = 189388800  # 2026-01-01T00:00:00Z in device time


# --- a tiny log builder ------------------------------------------------------------------------


class Log:
    """Builds device frames with a running seq, as the firmware would."""

    def __init__(self, seq: int = 0):
        self.seq = seq
        self.frames: list[bytes] = []

    def add(self, t: int, payload: bytes, time: int, seq: int | None = None) -> bytes:
        s = self.seq if seq is None else seq
        f = P.build_frame(t, s, time, payload)
        self.seq = (s + 1) & 0xFFFF
        self.frames.append(f)
        return f

    def status(self, time: int, **kw) -> bytes:
        f = dict(
            mode=1, step=0, flags=0, drug=1, alarms=0, reservoir_nl=20_000_000,
            delivered_ul=0, delivered_nl=0, battery_days=2555, rate_nl_day=200_000,
            low_eta=0, rolling_ng=0, conc_ng_ml=10_000_000, boluses_24h=0, acked=0, rx_crc=0,
            refill_due=0, heap_free=50_000, heap_total=131_072,
        )
        f.update(kw)
        return self.add(P.T_STATUS, P.Status.build(f), time)

    def event(self, time: int, code: int, a=0, b=0, c=0, who=0, eseq=1, d=0) -> bytes:
        rec = dict(t=time, event_seq=eseq, code=code, who=who, a=a, b=b, c=c, d=d)
        return self.add(P.T_EVENT, P.EventRecord.build(rec), time)

    def info(self, time: int, schema: int = P.SCHEMA) -> bytes:
        f = dict(
            serial="TWIN00000001", fw_major=0, fw_minor=1, fw_patch=2, runtime=1, schema=schema,
            stroke_nl=250, capacity_nl=20_000_000, low_reservoir_nl=2_000_000, catheter_nl=150_000, max_rate_nl_h=1_000_000,
            min_rate_nl_day=48_000,
        )
        return self.add(P.T_DEVICE_INFO, P.DeviceInfo.build(f), time)

    def tlog(self, schema: int = P.SCHEMA) -> bytes:
        return build_tlog(self.frames, schema=schema)


def write(tmp_path: Path, data: bytes, name: str = "run.tlog") -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    rc = cli_main(["decode", *map(str, argv)])
    out, err = capsys.readouterr()
    return rc, out, err


def jsonl(capsys, path) -> list[dict]:
    rc, out, _ = run_cli(capsys, path, "--format", "jsonl")
    assert rc == 0
    return [json.loads(line) for line in out.splitlines()]


def summary(capsys, path) -> dict:
    rc, out, _ = run_cli(capsys, path, "--summary", "--format", "jsonl")
    assert rc == 0
    return json.loads(out)


def simple_log(n: int = 50) -> Log:
    lg = Log()
    lg.info(T0)
    lg.event(T0, 1, a=0)
    for i in range(n):
        lg.status(T0 + 60 * (i + 1), reservoir_nl=20_000_000 - 250 * i)
    return lg


# --- output per interface.md -----------------------------------------------------------------


def test_jsonl_status_fields(tmp_path, capsys):
    lg = Log()
    lg.status(T0 + 60, reservoir_nl=1_999_750, delivered_ul=18_000, delivered_nl=250,
              rate_nl_day=200_000, alarms=1, low_eta=0)
    lg.status(T0 + 120, mode=0, alarms=0, low_eta=T0 + 86400)
    p = write(tmp_path, lg.tlog())
    rc, out, _ = run_cli(capsys, p, "--format", "jsonl")
    assert rc == 0
    lines = out.splitlines()
    # uL values carry exactly three decimals in the text itself.
    assert '"reservoir_ul":1999.750' in lines[0]
    assert '"delivered_ul":18000.250' in lines[0]
    assert '"rate_ul_per_day":200.000' in lines[0]
    s0, s1 = (json.loads(x) for x in lines)
    assert s0["kind"] == "status" and s0["t"] == "2026-01-01T00:01:00Z" and s0["seq"] == 0
    assert s0["mode"] == "running" and s0["alarms"] == ["low_reservoir"]
    assert s0["low_reservoir_eta"] is None
    assert s0["reservoir_ul"] == 1999.75 and s0["delivered_ul"] == 18000.25
    assert s0["drug"] == "morphine"
    assert s1["mode"] == "stopped" and s1["alarms"] == []
    assert s1["low_reservoir_eta"] == "2026-01-02T00:00:00Z"
    # The fast status path and the generic renderer agree exactly.
    r = Renderer()
    assert json.loads(to_json(r.record(lg.frames[0]))) == s0


_u32 = st.integers(0, 2**32 - 1)
_status_fields = st.fixed_dictionaries(dict(
    mode=st.integers(0, 6), step=st.integers(0, 255), flags=st.integers(0, 255),
    drug=st.integers(0, 12), alarms=_u32, reservoir_nl=_u32, delivered_ul=_u32,
    delivered_nl=st.integers(0, 65535), battery_days=st.integers(0, 65535), rate_nl_day=_u32,
    low_eta=st.one_of(st.just(0), st.integers(0, 2**31)), rolling_ng=_u32, conc_ng_ml=_u32,
    boluses_24h=st.integers(0, 255), acked=st.integers(0, 255), rx_crc=_u32,
    refill_due=st.one_of(st.just(0), st.integers(0, 2**31)), heap_free=_u32, heap_total=_u32,
))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(_status_fields, st.integers(0, 2**31), st.booleans()), min_size=1,
                max_size=30))
def test_fast_status_lines_equal_generic(items):
    lg = Log()
    for fields, time, with_event in items:
        lg.status(time, **fields)
        if with_event:
            lg.event(time, 6, a=1234)
    t = Tlog.from_bytes(lg.tlog())
    out = io.StringIO()
    write_jsonl(t, out, Summary(t))
    r = Renderer()
    want = [to_json(r.record(f)) for f in lg.frames]
    assert out.getvalue().splitlines() == want
    # the matrix path too, on every run however short (a long log takes it for its runs)
    s = Summary(t)
    (b,) = list(t.batches())
    st_ = b.starts[s.a[b.starts + 1] == P.T_STATUS]
    got = _status_text(r, s.a, st_, min_run=1).splitlines()
    assert got == [w for w in want if w.startswith('{"kind":"status"')]


def test_status_matrix_runs_equal_the_per_line_formatter():
    # a long run of same-shaped lines and runs cut by digit counts, names and nulls
    lg = Log()
    base = dict(mode=1, step=0, flags=0, drug=1, alarms=0, delivered_ul=0, delivered_nl=0,
                battery_days=2000, rate_nl_day=600_000, low_eta=0, rolling_ng=0,
                conc_ng_ml=10_000_000, boluses_24h=0, acked=0, rx_crc=7, refill_due=0,
                heap_free=1000, heap_total=2000)
    for i in range(3000):
        f = dict(base, reservoir_nl=20_000_000 - 250 * i, delivered_ul=i // 4,
                 delivered_nl=250 * (i % 4), rolling_ng=2500 * min(i, 40),
                 alarms=4 if 1000 <= i < 1100 else 0, low_eta=T0 + 99 if i > 2000 else 0,
                 mode=3 if 2500 <= i < 2600 else 1)
        lg.status(T0 + 60 * i, **f)
    t = Tlog.from_bytes(lg.tlog())
    r = Renderer()
    want = [to_json(r.record(f)) for f in lg.frames]
    s = Summary(t)
    starts = np.concatenate([b.starts for b in t.batches()])
    for min_run in (1, 64, 10_000):
        assert _status_text(r, s.a, starts, min_run=min_run).splitlines() == want


def test_jsonl_device_info(tmp_path, capsys):
    lg = Log()
    lg.info(T0)
    (d,) = jsonl(capsys, write(tmp_path, lg.tlog()))
    assert d["kind"] == "device_info" and d["runtime"] == "micropython"
    assert d["serial"] == "TWIN00000001" and d["firmware"] == "0.1.2"
    assert d["schema"] == P.SCHEMA and d["stroke_nl"] == 250
    assert d["capacity_ul"] == 20000.0 and d["low_reservoir_ul"] == 2000


def test_jsonl_events_named_fields(tmp_path, capsys):
    lg = Log()
    lg.event(T0, 1, a=1, eseq=1)
    lg.event(T0 + 1, 6, a=100_250, b=1, who=2, eseq=2)
    lg.event(T0 + 2, 7, a=1, b=1, who=2, eseq=3)
    lg.event(T0 + 3, 8, a=0, b=1_999_750, eseq=4)
    lg.event(T0 + 4, 9, a=2, b=5_000, eseq=5)
    lg.event(T0 + 5, 10, a=18_000_000, b=1_950_000, c=10_000_000, d=1, who=1, eseq=6)
    lg.event(T0 + 6, 13, a=T0, b=T0 + 3600, c=(-3600) & 0xFFFFFFFF, who=1, eseq=7)
    lg.event(T0 + 7, 14, a=0b1001, eseq=8)
    lg.event(T0 + 8, 99, a=1, b=2, c=3, eseq=9)
    lg.event(T0 + 9, 12, a=7, eseq=10)  # a not in the table: kept raw
    ev = jsonl(capsys, write(tmp_path, lg.tlog()))
    assert all(e["kind"] == "event" for e in ev)
    assert ev[0] == {"kind": "event", "t": "2026-01-01T00:00:00Z", "seq": 0, "event_seq": 1,
                     "event": "boot", "who": "device", "cause": "watchdog"}
    assert ev[1]["event"] == "bolus_completed" and ev[1]["volume_ul"] == 100.25
    assert ev[1]["bolus"] == "patient" and ev[1]["who"] == "patient"
    assert ev[2]["event"] == "bolus_denied" and ev[2]["reason"] == "lockout"
    assert ev[3]["event"] == "alarm_raised" and ev[3]["alarm"] == "low_reservoir"
    assert ev[3]["reservoir_ul"] == 1999.75
    assert ev[4]["event"] == "alarm_cleared" and ev[4]["alarm"] == "motor_stall"
    assert ev[5]["event"] == "refilled" and ev[5]["volume_ul"] == 18000.0
    assert ev[5]["residual_ul"] == 1950.0 and ev[5]["conc_ng_ml"] == 10_000_000
    assert ev[5]["drug"] == "morphine"  # (a drug library id is shown as its name)
    assert ev[6]["event"] == "time_changed" and ev[6]["local_offset_s"] == -3600
    assert ev[6]["old_time"] == "2026-01-01T00:00:00Z"
    assert ev[6]["new_time"] == "2026-01-01T01:00:00Z"
    assert ev[7]["alarms"] == ["low_reservoir", "occlusion"]
    assert ev[8]["event"] == "event_99" and (ev[8]["a"], ev[8]["b"], ev[8]["c"]) == (1, 2, 3)
    assert ev[9]["event"] == "resumed" and ev[9]["a"] == 7


def test_jsonl_reply_command_unknown(tmp_path, capsys):
    lg = Log()
    lg.add(0x80, P.encode_payload(0x80, dict(cmd_id=5, cmd_type=0x44, result=6, detail=1,
                                             body=b"")), T0)
    st_body = P.Status.build(dict(
        mode=1, step=0, flags=0, drug=1, alarms=0, reservoir_nl=5_000, delivered_ul=1,
        delivered_nl=0, battery_days=1, rate_nl_day=0, low_eta=0, rolling_ng=0, conc_ng_ml=0,
        boluses_24h=0, acked=0, rx_crc=0, refill_due=0, heap_free=1, heap_total=2))
    lg.add(0x80, P.Reply.build(dict(cmd_id=6, cmd_type=0x40, result=0, detail=0,
                                    body=st_body)), T0 + 1)
    cmd = P.build_command(0x43, P.Refill.build(dict(volume_nl=1000, conc_ng_ml=2, residual_nl=3, drug=0)), "clinician",
                          bytes(32), 7, 3, 900, T0 + 2)
    lg.frames.append(cmd)
    lg.add(0x33, b"\x01\x02", T0 + 3)
    lg.add(P.T_STATUS, b"\x00" * 5, T0 + 4)  # a STATUS of the wrong length
    recs = jsonl(capsys, write(tmp_path, lg.tlog()))
    assert [r["kind"] for r in recs] == ["reply", "reply", "command", "unknown", "unknown"]
    assert recs[0]["cmd"] == "patient_bolus" and recs[0]["result"] == "limit"
    assert recs[0]["reason"] == "lockout"
    assert recs[1]["result"] == "ack" and recs[1]["body"]["reservoir_ul"] == 5.0
    assert recs[2]["cmd"] == "refill" and recs[2]["role"] == "clinician"
    assert recs[2]["body"] == {"volume_nl": 1000, "conc_ng_ml": 2, "residual_nl": 3, "drug": 0,
                               "mix": "00" * 15}
    assert recs[2]["counter"] == 3
    assert recs[3]["type"] == 0x33 and recs[3]["payload"] == "0102"
    assert f"expected {P.Status.sizeof()}" in recs[4]["reason"]
    s = summary(capsys, write(tmp_path, lg.tlog()))
    assert s["unknown_types"] == {"0x33": 1} and s["malformed"] == 1
    assert s["kinds"] == {"reply": 2, "command": 1, "unknown": 1, "status": 1}


def test_csv_and_table(tmp_path, capsys):
    p = write(tmp_path, simple_log(3).tlog())
    rc, out, _ = run_cli(capsys, p, "--format", "csv")
    assert rc == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["kind"] for r in rows] == ["device_info", "event", "status", "status", "status"]
    assert rows[2]["reservoir_ul"] == "20000.000" and rows[2]["mode"] == "running"
    assert rows[1]["event"] == "boot"
    assert rows[0]["serial"] == "TWIN00000001" and rows[0]["firmware"] == "0.1.2"
    # one column per field (issue 22): every status field is a column of its own
    assert rows[2]["heap_total"] == "131072" and rows[2]["details"] == ""
    rc, out, _ = run_cli(capsys, p)
    assert rc == 0
    lines = out.splitlines()
    assert lines[0].split()[:8] == ["time", "(UTC)", "seq", "kind", "mode", "step",
                                    "reservoir_uL", "delivered_uL"]
    assert len(lines) == 6 and lines[3].split()[3:7] == ["status", "running", "1", "20000.000"]  # (step 1: the first)


def test_summary_text(tmp_path, capsys):
    p = write(tmp_path, simple_log(10).tlog())
    rc, out, _ = run_cli(capsys, p, "--summary")
    assert rc == 0
    assert "frames          12 (device_info 1, event 1, status 10)" in out
    assert "result          clean" in out
    assert "events          boot 1" in out


# --- damage: nothing dropped silently --------------------------------------------------------


def _offsets(frames: list[bytes]) -> list[int]:
    out, off = [], 16
    for f in frames:
        out.append(off)
        off += 3 + len(f)
    return out


def test_flipped_bytes_counted_rest_decoded(tmp_path, capsys):
    # REQ: SR-LOG-03
    lg = simple_log(100)
    data = bytearray(lg.tlog())
    offs = _offsets(lg.frames)
    for k in (10, 50, 51):
        data[offs[k] + 3 + 20] ^= 0x5A  # inside the payload
    p = write(tmp_path, bytes(data))
    s = summary(capsys, p)
    assert s["crc_errors"] == 3 and s["frames"] == len(lg.frames) - 3
    assert s["sequence_gaps"] == 2 and s["missing_frames"] == 3
    assert not s["clean"] and s["truncated_tail"] == 0
    recs = jsonl(capsys, p)
    assert len(recs) == len(lg.frames) - 3
    assert [r["seq"] for r in recs] == [i for i in range(len(lg.frames)) if i not in (10, 50, 51)]


def test_flipped_length_and_mark(tmp_path, capsys):
    lg = simple_log(30)
    data = bytearray(lg.tlog())
    offs = _offsets(lg.frames)
    data[offs[5] + 1] ^= 0x01  # length field
    data[offs[20]] = 0x00  # record mark
    frames, anomalies, _ = read_frames(write(tmp_path, bytes(data)))
    good = [f for i, f in enumerate(lg.frames) if i not in (5, 20)]
    assert frames == good
    assert {a.offset for a in anomalies} == {offs[5], offs[20]}
    assert sum(a.length for a in anomalies) == 3 + len(lg.frames[5]) + 3 + len(lg.frames[20])


def test_cut_tail_reported(tmp_path, capsys):
    # REQ: SR-LOG-03
    lg = simple_log(20)
    data = lg.tlog()
    for cut in (1, 2, 3, 10, len(lg.frames[-1]) + 2):
        p = write(tmp_path, data[:-cut], f"cut{cut}.tlog")
        s = summary(capsys, p)
        assert s["truncated_tail"] == 3 + len(lg.frames[-1]) - cut, cut
        assert s["frames"] == len(lg.frames) - 1 and s["crc_errors"] == 0
        rc, out, err = run_cli(capsys, p, "--summary")
        assert "truncated tail  " in out and "truncated tail: last record incomplete" in out
        rc, out, err = run_cli(capsys, p, "--format", "jsonl")
        assert rc == 0 and "truncated tail" in err  # mentioned even without --summary


def test_inserted_garbage_resync(tmp_path, capsys):
    # REQ: SR-LOG-03
    lg = simple_log(60)
    data = lg.tlog()
    offs = _offsets(lg.frames)
    rng = random.Random(7)
    junk = bytes([0xA5, 0x30, 0x00]) + bytes(rng.randrange(256) for _ in range(300)) + b"\xa5"
    k = offs[30]
    damaged = data[:k] + junk + data[k:]
    p = write(tmp_path, damaged)
    s = summary(capsys, p)
    assert s["frames"] == len(lg.frames)
    assert s["sequence_gaps"] == 0 and not s["clean"]
    # The junk's fake record head (length 48) counts as a corrupt record, the rest as garbage.
    assert s["crc_errors"] == 1 and s["garbage_regions"] == 1
    assert s["garbage_bytes"] == len(junk) - (3 + 0x30)
    with Tlog(p) as t:
        list(t.batches())
        assert sum(a.length for a in t.anomalies) == len(junk) and t.anomalies[0].offset == k
    rc, out, _ = run_cli(capsys, p)
    assert "!! " in out and f"at offset {k}" in out


def test_garbage_at_start_and_between_windows(tmp_path):
    lg = simple_log(400)
    data = bytearray(lg.tlog())
    data[16:16] = b"\x11\x22\xa5\x99\x99"
    rng = random.Random(3)
    for _ in range(8):
        i = rng.randrange(20, len(data))
        data[i] ^= 0xFF
    p = write(tmp_path, bytes(data))
    ref_frames, ref_bad = reference_scan(bytes(data))
    for window in (64, 257, 1000, 1 << 22):
        with Tlog(p) as t:
            got = [bytes(f) for b in t.batches(window) for f in
                   (t.data[s : s + n] for s, n in zip(b.starts.tolist(), b.lengths.tolist(),
                                                    strict=True))]
            assert got == ref_frames, window
            assert merged(t.anomalies) == ref_bad, window


def test_seq_gaps_wrap_and_restart(tmp_path, capsys):
    lg = Log(seq=65530)
    for i in range(10):  # wraps 65535 -> 0: not a gap
        lg.status(T0 + i)
    s = summary(capsys, write(tmp_path, lg.tlog(), "wrap.tlog"))
    assert s["sequence_gaps"] == 0 and s["clean"]
    lg = Log()
    for i in range(5):
        lg.status(T0 + i)
    lg.seq = 9  # 4 frames missing
    lg.status(T0 + 10)
    lg.seq = 0  # the device restarted: seq starts again at 0
    lg.info(T0 + 20)
    lg.status(T0 + 21)
    s = summary(capsys, write(tmp_path, lg.tlog(), "gap.tlog"))
    assert s["sequence_gaps"] == 1 and s["missing_frames"] == 4 and s["restarts"] == 1
    assert s["problems"] == ["1 sequence gap(s), 4 frame(s) missing"]


def test_commands_do_not_count_as_gaps(tmp_path, capsys):
    lg = simple_log(3)
    lg.frames.insert(2, P.build_command(0x40, b"", 2, bytes(32), 1, 1, 500, T0))
    s = summary(capsys, write(tmp_path, lg.tlog()))
    assert s["sequence_gaps"] == 0 and s["kinds"]["command"] == 1


# --- strict, schema, bad input ------------------------------------------------------------------


def test_strict_exit_codes(tmp_path, capsys):
    # REQ: SR-LOG-03
    good = write(tmp_path, simple_log(5).tlog(), "good.tlog")
    assert run_cli(capsys, good, "--strict")[0] == 0
    assert run_cli(capsys, good, "--strict", "--summary")[0] == 0
    data = bytearray(simple_log(5).tlog())
    data[-10] ^= 1
    bad = write(tmp_path, bytes(data), "bad.tlog")
    assert run_cli(capsys, bad)[0] == 0  # reported, but only --strict fails
    rc, out, err = run_cli(capsys, bad, "--strict", "--summary")
    assert rc == 1 and "crc errors      1" in out and "--strict" in err
    rc, out, err = run_cli(capsys, bad, "--strict", "--format", "jsonl")
    assert rc == 1 and "CRC error" in err
    cut = write(tmp_path, simple_log(5).tlog()[:-4], "cut.tlog")
    assert run_cli(capsys, cut, "--strict")[0] == 1
    lg = simple_log(2)
    lg.add(0x77, b"", T0)
    assert run_cli(capsys, write(tmp_path, lg.tlog(), "unk.tlog"), "--strict")[0] == 1


def test_schema_mismatch(tmp_path, capsys):
    other = P.SCHEMA ^ 0x1234
    p = write(tmp_path, simple_log(3).tlog(schema=other), "hdr.tlog")
    rc, out, _ = run_cli(capsys, p, "--summary")
    assert rc == 0 and "MISMATCH" in out and f"0x{other:08x}" in out
    assert "schema mismatch: log written with schema" in out
    assert run_cli(capsys, p, "--summary", "--strict")[0] == 1
    lg = Log()
    lg.info(T0, schema=other)
    p = write(tmp_path, lg.tlog(), "info.tlog")
    s = summary(capsys, p)
    assert s["schema_mismatch"] and not s["clean"]
    (d,) = jsonl(capsys, p)
    assert d["schema"] == other and d["schema_ok"] is False


@pytest.mark.parametrize(
    "content,msg",
    [
        (None, "no such file"),
        (b"", "not a Theca telemetry log"),
        (b"THECALO", "truncated header"),
        (b"NOTATLOG" + bytes(8) + b"\xa5", "magic"),
        (b"THECALOG\x02\x00" + bytes(6), "unsupported .tlog format 2"),
        (b"hello world, this is text\n", "not a Theca telemetry log"),
    ],
)
def test_bad_input_exit_2(tmp_path, capsys, content, msg):
    p = tmp_path / "x.tlog"
    if content is not None:
        p.write_bytes(content)
    rc, out, err = run_cli(capsys, p)
    assert rc == 2 and msg in err and str(p) in err and out == ""


def test_directory_is_bad_input(tmp_path, capsys):
    rc, _, err = run_cli(capsys, tmp_path)
    assert rc == 2 and "not a regular file" in err


def test_empty_log_is_clean(tmp_path, capsys):
    p = write(tmp_path, header_bytes())
    s = summary(capsys, p)
    assert s["frames"] == 0 and s["clean"]
    assert jsonl(capsys, p) == []


def test_vectors_tlog_decodes(tmp_path, capsys):
    doc = json.loads((ROOT / "protocol" / "vectors.json").read_text())
    p = write(tmp_path, bytes.fromhex(doc["tlog"]["tlog_hex"]))
    kinds = [r["kind"] for r in jsonl(capsys, p)]
    assert kinds == ["device_info", "status", "event"]


# --- reference scanner: the fast one must agree on any damage -------------------------------


def reference_scan(data: bytes) -> tuple[list[bytes], list[tuple[int, int]]]:
    """Byte-by-byte: a record is good if its mark, length and CRC check."""
    n, pos = len(data), 16
    frames, bad, start = [], [], None
    while pos < n:
        ok = False
        if data[pos] == 0xA5 and pos + 3 <= n:
            ln = data[pos + 1] | data[pos + 2] << 8
            if 12 <= ln <= P.MAX_FRAME and pos + 3 + ln <= n:
                ok = zlib.crc32(data[pos + 3 : pos + 3 + ln]) == P.CRC_RESIDUE
        if ok:
            if start is not None:
                bad.append((start, pos))
                start = None
            frames.append(data[pos + 3 : pos + 3 + ln])
            pos += 3 + ln
        else:
            if start is None:
                start = pos
            pos += 1
    if start is not None:
        bad.append((start, n))
    return frames, bad


def merged(anoms) -> list[tuple[int, int]]:
    out: list[list[int]] = []
    for a in sorted(anoms):
        if out and out[-1][1] == a.offset:
            out[-1][1] = a.offset + a.length
        else:
            out.append([a.offset, a.offset + a.length])
    return [tuple(x) for x in out]


_damage = st.lists(
    st.tuples(st.sampled_from(["flip", "insert", "delete", "a5"]), st.integers(0, 10**6),
              st.binary(min_size=1, max_size=40)),
    max_size=6,
)


@settings(max_examples=120, deadline=None)
@given(st.integers(1, 80), _damage, st.integers(0, 60), st.sampled_from([40, 200, 1 << 22]))
def test_scanner_matches_reference(nframes, damage, cut, window):
    lg = Log()
    for i in range(nframes):
        if i % 7 == 3:
            lg.event(T0 + i, 8, a=0xA5A5A5A5, b=0x0C00A5, eseq=i)  # marks inside payloads
        else:
            lg.status(T0 + i, reservoir_nl=0xA50C00 + i)
    data = bytearray(lg.tlog())
    for op, where, blob in damage:
        i = 16 + where % max(1, len(data) - 16)
        if op == "flip":
            data[i] ^= blob[0] or 1
        elif op == "insert":
            data[i:i] = blob
        elif op == "delete":
            del data[i : i + len(blob)]
        else:
            data[i:i] = b"\xa5" + blob[:2]
    if cut:
        data = data[: max(16, len(data) - cut)]
    data = bytes(data)
    ref_frames, ref_bad = reference_scan(data)
    t = Tlog.from_bytes(data)
    got = []
    for b in t.batches(window):
        for s, n in zip(b.starts.tolist(), b.lengths.tolist(), strict=True):
            got.append(bytes(t.data[s : s + n]))
    assert got == ref_frames
    assert merged(t.anomalies) == ref_bad
    # Every byte is accounted for: header + records + anomalies.
    assert 16 + sum(3 + len(f) for f in got) + sum(a.length for a in t.anomalies) == len(data)


# --- speed ---------------------------------------------------------------------------------------


def test_writer_roundtrip(tmp_path):
    from theca.log.tlog import TlogWriter, write_tlog

    lg = simple_log(5)
    p = tmp_path / "w.tlog"
    assert write_tlog(p, lg.frames, flags=3) == len(lg.frames)
    frames, anomalies, hdr = read_frames(p)
    assert frames == lg.frames and anomalies == [] and hdr.flags == 3 and hdr.schema == P.SCHEMA
    with TlogWriter(tmp_path / "x.tlog") as w:
        w.write_frame(lg.frames[0])
    assert (tmp_path / "x.tlog").read_bytes() == build_tlog(lg.frames[:1])


def test_record_bytes_layout():
    f = P.build_frame(2, 1, 2, bytes(42))
    r = record_bytes(f)
    assert r[0] == 0xA5 and int.from_bytes(r[1:3], "little") == len(f) and r[3:] == f
    with pytest.raises(TlogError):
        Tlog.from_bytes(b"THECALOGxx")
