"""`theca decode` extras: Parquet, filters by kind and time, the table for a person, the
vectorised column decoder checked against construct, and progress bars on `simulate`."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import theca_protocol as P
from hypothesis import given, settings
from hypothesis import strategies as st
from theca import progress
from theca.cli import main as cli_main
from theca.log.frames import KINDS, frame_kinds, frame_times, status_columns
from theca.log.records import Renderer, iso
from theca.log.tlog import Tlog, build_tlog
from theca.log.writers.parquet import _parquet_row, parquet_schema
from theca.twin.run import split_progress

ROOT = Path(__file__).resolve().parent.parent
T0 = 189388800  # 2026-01-01T00:00:00Z in device time
SERIAL = "TWIN00000042"


class Log:
    """Builds device frames with a running seq, as the firmware would."""

    def __init__(self):
        self.seq = 0
        self.frames: list[bytes] = []

    def add(self, t: int, payload: bytes, time: int) -> bytes:
        f = P.build_frame(t, self.seq, time, payload)
        self.seq = (self.seq + 1) & 0xFFFF
        self.frames.append(f)
        return f

    def status(self, time: int, **kw) -> bytes:
        f = dict(
            mode=1, step=0, flags=0, drug=1, alarms=0, reservoir_nl=20_000_000,
            delivered_ul=0, delivered_nl=0, battery_days=2555, rate_nl_day=200_000,
            low_eta=0, rolling_ng=0, conc_ng_ml=10_000_000, boluses_24h=0, acked=0, rx_crc=7,
            refill_due=0, heap_free=50_000, heap_total=131_072,
        )
        f.update(kw)
        return self.add(P.T_STATUS, P.Status.build(f), time)

    def event(self, time: int, name: str, a=0, b=0, c=0, who=0, eseq=1) -> bytes:
        rec = dict(t=time, event_seq=eseq, code=P.EVENT_CODES[name], who=who, a=a, b=b, c=c)
        return self.add(P.T_EVENT, P.EventRecord.build(rec), time)

    def info(self, time: int, serial: str = SERIAL) -> bytes:
        f = dict(
            serial=serial, fw_major=0, fw_minor=1, fw_patch=2, runtime=1, schema=P.SCHEMA,
            stroke_nl=250, capacity_nl=20_000_000, low_reservoir_nl=2_000_000, catheter_nl=150_000, max_rate_nl_h=1_000_000,
            min_rate_nl_day=48_000,
        )
        return self.add(P.T_DEVICE_INFO, P.DeviceInfo.build(f), time)

    def write(self, path: Path) -> Path:
        path.write_bytes(build_tlog(self.frames))
        return path


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    rc = cli_main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def mixed_log() -> Log:
    """boot, info, statuses, events of several kinds, a reply, a command, an unknown type."""
    lg = Log()
    lg.event(T0, "boot", a=0)
    lg.info(T0)
    for i in range(10):
        lg.status(T0 + 60 * (i + 1), reservoir_nl=20_000_000 - 250 * i, delivered_ul=i // 4,
                  delivered_nl=(i * 250) % 1000, alarms=1 if i > 7 else 0)
    lg.event(T0 + 300, "bolus_denied", a=1, b=1, c=10_000, who=2, eseq=2)
    lg.event(T0 + 400, "alarm_raised", a=0, b=1_999_000, eseq=3)
    lg.event(T0 + 450, "time_changed", a=T0, b=T0 + 10, c=(-3600) & 0xFFFFFFFF, eseq=4)
    lg.event(T0 + 460, "prescription_changed", a=0xDEADBEEF, b=1, c=40, who=1, eseq=5)
    lg.add(P.T_REPLY, P.encode_payload(P.T_REPLY, dict(cmd_id=9, cmd_type=0x44, result=6,
                                                       detail=1, body=b"")), T0 + 500)
    lg.add(0x43, P.encode_payload(0x43, dict(cmd_id=3, role=1, counter=3,
                                             body=dict(volume_nl=1000, conc_ng_ml=2, residual_nl=3, drug=0),
                                             mac=bytes(16))), T0 + 510)
    lg.add(0x33, b"\x01\x02", T0 + 520)
    return lg


# --- Parquet --------------------------------------------------------------------------------------


def test_parquet_round_trip(tmp_path, capsys):
    lg = mixed_log()
    p = lg.write(tmp_path / "run.tlog")
    out = tmp_path / "run.parquet"
    rc, _, err = run_cli(capsys, "decode", p, "--format", "parquet", "-o", out)
    assert rc == 0, err
    assert f"{len(lg.frames)} rows" in err
    t = pq.read_table(out)
    assert t.num_rows == len(lg.frames)
    want = parquet_schema()
    # (Parquet stores second timestamps as milliseconds: compare the kind of type)
    def kind(ty):
        return "timestamp" if pa.types.is_timestamp(ty) else ty

    assert [(f.name, kind(f.type)) for f in t.schema] == [(f.name, kind(f.type)) for f in want]
    assert t.schema.field("t").type.tz == "UTC"
    for col in ("serial", "kind", "t", "seq", "mode", "reservoir_ul", "delivered_ul",
                "rate_ul_per_day", "alarms", "event", "reason", "dose_ul", "cmd", "details"):
        assert col in t.column_names, col
    assert t.schema.field("reservoir_ul").type == pa.float64()
    rows = t.to_pylist()
    # the serial is on every row, also the boot event logged before DEVICE_INFO
    assert {r["serial"] for r in rows} == {SERIAL}
    # the same records, in the same order, as jsonl
    rc, text, _ = run_cli(capsys, "decode", p, "--format", "jsonl")
    recs = [json.loads(x) for x in text.splitlines()]
    assert [r["kind"] for r in rows] == [r["kind"] for r in recs]
    assert [r["seq"] for r in rows] == [r["seq"] for r in recs]
    for row, rec in zip(rows, recs, strict=True):
        assert row["t"].strftime("%Y-%m-%dT%H:%M:%SZ") == rec["t"]
        if rec["kind"] == "status":
            for k in ("mode", "reservoir_ul", "delivered_ul", "rate_ul_per_day", "alarms",
                      "drug", "conc_ng_ml", "battery_days", "step", "rx_crc"):
                assert row[k] == rec[k], k
            assert row["low_reservoir_eta"] is None and rec["low_reservoir_eta"] is None
    ev = {r["event"]: r for r in rows if r["kind"] == "event"}
    assert ev["bolus_denied"]["reason"] == "lockout" and ev["bolus_denied"]["dose_ul"] == 10.0
    assert ev["bolus_denied"]["who"] == "patient"
    assert ev["alarm_raised"]["alarm"] == "low_reservoir"
    assert ev["alarm_raised"]["reservoir_ul"] == 1999.0
    assert ev["time_changed"]["local_offset_s"] == -3600
    assert ev["time_changed"]["new_time"].strftime("%H:%M:%S") == "00:00:10"
    assert ev["prescription_changed"]["drug"] == "morphine"  # the id, shown as its name
    assert ev["prescription_changed"]["rx_crc32"] == 0xDEADBEEF
    reply = next(r for r in rows if r["kind"] == "reply")
    assert reply["cmd"] == "patient_bolus" and reply["result"] == "limit"
    assert reply["reason"] == "lockout"
    cmd = next(r for r in rows if r["kind"] == "command")
    assert cmd["role"] == "clinician" and json.loads(cmd["body"]) == {"volume_nl": 1000,
                                                                      "conc_ng_ml": 2,
                                                                      "residual_nl": 3, "drug": 0,
                                                                      "mix": "00" * 15}
    unk = next(r for r in rows if r["kind"] == "unknown")
    assert unk["type"] == 0x33 and unk["payload"] == "0102"
    assert t.schema.metadata[b"theca.source"] == str(p).encode()


def test_parquet_many_pumps_query_together(tmp_path, capsys):
    """Two pumps' logs, one table: the serial tells them apart."""
    paths = []
    for k, serial in enumerate(("PUMPA0000001", "PUMPB0000002")):
        lg = Log()
        lg.info(T0, serial)
        for i in range(5 + k):
            lg.status(T0 + 60 * (i + 1), delivered_ul=i)
        src = lg.write(tmp_path / f"{serial}.tlog")
        out = tmp_path / f"{serial}.parquet"
        assert run_cli(capsys, "decode", src, "--format", "parquet", "-o", out)[0] == 0
        paths.append(out)
    t = pa.concat_tables([pq.read_table(p) for p in paths])
    st_rows = [r for r in t.to_pylist() if r["kind"] == "status"]
    by = {}
    for r in st_rows:
        by[r["serial"]] = max(by.get(r["serial"], 0), r["delivered_ul"])
    assert by == {"PUMPA0000001": 4.0, "PUMPB0000002": 5.0}


def test_parquet_large_status_matches_generic(tmp_path, capsys):
    """The column-wise STATUS path equals the per-record path on many varied frames."""
    rng = np.random.default_rng(3)
    lg = Log()
    lg.info(T0)
    for i in range(3000):
        lg.status(T0 + 30 * i, mode=int(rng.integers(0, 5)), alarms=int(rng.integers(0, 1024)),
                  reservoir_nl=int(rng.integers(0, 2**32)), delivered_ul=i,
                  delivered_nl=int(rng.integers(0, 1000)), low_eta=int(rng.integers(0, 2)) * T0,
                  drug=int(rng.integers(0, 12)), flags=int(rng.integers(0, 8)))
        if i % 500 == 0:
            lg.event(T0 + 30 * i, "step_changed", a=1, b=123_000)
    p = lg.write(tmp_path / "big.tlog")
    out = tmp_path / "big.parquet"
    assert run_cli(capsys, "decode", p, "--format", "parquet", "-o", out)[0] == 0
    rows = pq.read_table(out).to_pylist()
    r = Renderer()
    schema = parquet_schema()
    with Tlog(p) as t:
        for row, (_, fr) in zip(rows, t.frames(), strict=True):
            rec = r.record(fr)
            if rec["kind"] != "status":
                continue
            want = _parquet_row(rec, 0, schema, r)
            for k, v in want.items():
                if k == "t":
                    continue
                got = row[k]
                if schema.field(k).type == schema.field("t").type:
                    got = int(got.timestamp()) if got is not None else None
                assert got == v, (k, got, v)


def test_parquet_needs_output(tmp_path, capsys):
    p = mixed_log().write(tmp_path / "run.tlog")
    rc, _, err = run_cli(capsys, "decode", p, "--format", "parquet")
    assert rc == 2 and "-o FILE.parquet" in err
    # a missing folder is made, as every command's output folder (issue 25)
    rc, _, err = run_cli(capsys, "decode", p, "--format", "parquet", "-o", tmp_path / "no" / "x.pq")
    assert rc == 0 and (tmp_path / "no" / "x.pq").stat().st_size > 0, err


# --- filters --------------------------------------------------------------------------------------


def _jsonl(capsys, *args) -> list[dict]:
    rc, out, err = run_cli(capsys, "decode", *args, "--format", "jsonl")
    assert rc == 0, err
    return [json.loads(x) for x in out.splitlines()]


def test_filter_by_kind_all_formats(tmp_path, capsys):
    lg = mixed_log()
    p = lg.write(tmp_path / "run.tlog")
    recs = _jsonl(capsys, p, "--type", "event,reply")
    assert {r["kind"] for r in recs} == {"event", "reply"}
    assert len(recs) == 5 + 1
    rc, out, _ = run_cli(capsys, "decode", p, "--format", "csv", "--type", "status")
    lines = out.splitlines()
    assert len(lines) == 1 + 10 and all(x.startswith("status,") for x in lines[1:])
    rc, out, _ = run_cli(capsys, "decode", p, "--type", "unknown,command")
    body = out.splitlines()[1:]
    assert [x.split()[3] for x in body] == ["command", "unknown"]
    pq_out = tmp_path / "f.parquet"
    assert run_cli(capsys, "decode", p, "--format", "parquet", "-o", pq_out,
                   "--type", "event")[0] == 0
    t = pq.read_table(pq_out)
    assert t.num_rows == 5 and set(t.column("kind").to_pylist()) == {"event"}
    assert set(t.column("serial").to_pylist()) == {SERIAL}  # from the DEVICE_INFO left out


def test_filter_by_time(tmp_path, capsys):
    lg = mixed_log()
    p = lg.write(tmp_path / "run.tlog")
    recs = _jsonl(capsys, p, "--from", "2026-01-01T00:05:00Z", "--to", "2026-01-01T00:08:00")
    assert recs and all("2026-01-01T00:05:00Z" <= r["t"] < "2026-01-01T00:08:00Z" for r in recs)
    assert [r["t"] for r in recs if r["kind"] == "status"] == [
        "2026-01-01T00:05:00Z", "2026-01-01T00:06:00Z", "2026-01-01T00:07:00Z"]
    # an event filters by its own time; a date alone is midnight UTC
    recs = _jsonl(capsys, p, "--from", "2026-01-01", "--to", "2026-01-01T00:00:01Z")
    assert [r["kind"] for r in recs] == ["event", "device_info"]
    recs = _jsonl(capsys, p, "--from", "2026-01-01T01:00:00+01:00", "--to", "2026-01-01T00:01:01Z")
    assert [r["t"] for r in recs] == ["2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z",
                                      "2026-01-01T00:01:00Z"]


def test_filter_with_summary(tmp_path, capsys):
    lg = mixed_log()
    p = lg.write(tmp_path / "run.tlog")
    rc, out, _ = run_cli(capsys, "decode", p, "--summary", "--format", "jsonl")
    whole = json.loads(out)
    rc, out, _ = run_cli(capsys, "decode", p, "--summary", "--format", "jsonl", "--type", "status")
    s = json.loads(out)
    assert s["frames"] == 10 and s["kinds"] == {"status": 10}
    # frames left out by --type are not "missing": the gaps are those of the whole log
    # (here one: the command frame took a seq number in this synthetic log)
    assert s["sequence_gaps"] == whole["sequence_gaps"] == 1
    assert s["filter"] == "kinds status"
    ordered = Log()  # frames in time order, as a pump writes them
    ordered.info(T0)
    for i in range(10):
        ordered.status(T0 + 60 * (i + 1))
        if i == 4:
            ordered.event(T0 + 60 * (i + 1) + 5, "suspended", who=1)
    p = ordered.write(tmp_path / "ordered.tlog")
    rc, out, _ = run_cli(capsys, "decode", p, "--summary", "--from", "2026-01-01T00:05:00Z",
                         "--to", "2026-01-01T00:07:00Z")
    assert "frames          3 (event 1, status 2)" in out
    assert "result          clean" in out
    assert "filter          from 2026-01-01T00:05:00Z; to 2026-01-01T00:07:00Z (excluded)" in out


def test_filter_bad_values_exit_2(tmp_path, capsys):
    p = mixed_log().write(tmp_path / "run.tlog")
    rc, _, err = run_cli(capsys, "decode", p, "--type", "status,bogus")
    assert rc == 2 and "'bogus'" in err and "device_info" in err
    rc, _, err = run_cli(capsys, "decode", p, "--from", "yesterday")
    assert rc == 2 and "--from" in err and "'yesterday'" in err
    rc, _, err = run_cli(capsys, "decode", p, "--from", "2026-01-02", "--to", "2026-01-01")
    assert rc == 2 and "--to" in err


# --- the fast paths against construct and the generic renderer --------------------------------

_u32 = st.integers(0, 2**32 - 1)
_status = st.fixed_dictionaries(dict(
    mode=st.integers(0, 255), step=st.integers(0, 255), flags=st.integers(0, 255),
    drug=st.integers(0, 255), alarms=_u32, reservoir_nl=_u32, delivered_ul=_u32,
    delivered_nl=st.integers(0, 65535), battery_days=st.integers(0, 65535), rate_nl_day=_u32,
    low_eta=_u32, rolling_ng=_u32, conc_ng_ml=_u32, boluses_24h=st.integers(0, 255),
    acked=st.integers(0, 255), rx_crc=_u32, refill_due=_u32, heap_free=_u32, heap_total=_u32,
))


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(_status, _u32), min_size=1, max_size=20))
def test_status_columns_equal_construct(items):
    lg = Log()
    for fields, time in items:
        lg.status(time, **fields)
    t = Tlog.from_bytes(build_tlog(lg.frames))
    a = np.frombuffer(t.data, dtype=np.uint8)
    b = next(t.batches())
    col = status_columns(a, b.starts)
    for k, fr in enumerate(lg.frames):
        hdr, payload = P.parse_frame(fr)
        want = P.plain(P.Status.parse(payload))
        assert col["time"][k] == hdr.time and col["seq"][k] == hdr.seq
        for name, v in want.items():
            assert int(col[name][k]) == v, name


def test_frame_kinds_match_renderer(tmp_path):
    lg = mixed_log()
    lg.add(P.T_STATUS, bytes(41), T0)  # wrong length: unknown
    lg.add(P.T_REPLY, bytes(3), T0)  # too short: unknown
    data = bytearray(build_tlog(lg.frames))
    t = Tlog.from_bytes(bytes(data))
    a = np.frombuffer(t.data, dtype=np.uint8)
    b = next(t.batches())
    kinds = frame_kinds(a, b.starts, b.lengths)
    times = frame_times(a, b.starts, kinds)
    r = Renderer()
    for k, tm, fr in zip(kinds.tolist(), times.tolist(), lg.frames, strict=True):
        rec = r.record(fr)
        assert KINDS[k] == rec["kind"]
        assert iso(tm) == rec["t"]


def test_table_is_aligned_and_readable(tmp_path, capsys):
    p = mixed_log().write(tmp_path / "run.tlog")
    rc, out, _ = run_cli(capsys, "decode", p)
    lines = out.splitlines()
    head = lines[0]
    status = [x for x in lines if x[28:34] == "status"]
    assert len(status) == 10
    col = head.index("reservoir_uL") + len("reservoir_uL")
    # right-aligned numbers end under their header
    assert all(x[col - 9 : col] == f"{20000 - 0.25 * i:9.3f}" for i, x in enumerate(status))
    assert status[0].startswith("2026-01-01 00:01:00")
    # the first status line shows its slowly changing fields, later ones only changes
    assert "drug=morphine" in status[0] and "drug=" not in status[1]
    assert "low_reservoir" in status[8]
    ev = next(x for x in lines if "bolus_denied" in x)
    assert "reason=lockout" in ev and "dose_ul=10.000" in ev and "(patient, event #2)" in ev
    assert any("prescription_changed" in x and "rx_crc32=0xdeadbeef" in x for x in lines)
    assert any("patient_bolus #9: limit" in x for x in lines)


def test_output_file_for_text_formats(tmp_path, capsys):
    p = mixed_log().write(tmp_path / "run.tlog")
    out = tmp_path / "run.jsonl"
    rc, text, _ = run_cli(capsys, "decode", p, "--format", "jsonl", "-o", out)
    assert rc == 0 and text == ""
    assert len(out.read_text().splitlines()) == len(mixed_log().frames)


# --- progress bars ------------------------------------------------------------------------------


def test_progress_bar_silent_when_not_a_terminal():
    s = io.StringIO()
    with progress.Bar(10, "simulating", "days", stream=s) as bar:
        bar.update(5)
        bar.update(99)
    assert s.getvalue() == "" and bar.done == 10.0


def test_progress_bar_draws_when_enabled():
    s = io.StringIO()
    with progress.Bar(10, "simulating", "days", stream=s, enabled=True) as bar:
        bar.update(4)
    assert bar.done == 4.0
    assert "simulating" in s.getvalue()


def test_split_progress():
    assert split_progress(b"@@progress 189388800\n") == 189388800
    assert split_progress(b"Traceback (most recent call last):\n") is None
    assert split_progress(b"@@progress x\n") is None


def _scenario(tmp_path: Path, days: float = 2, extra: str = "") -> Path:
    (tmp_path / "rx.toml").write_text((ROOT / "examples" / "rx_morphine.toml").read_text())
    sc = tmp_path / "s.toml"
    sc.write_text(f'start = 2026-01-01T00:00:00Z\ndays = {days}\nstatus_period_s = 600\n'
                  f'prescription = "rx.toml"\n{extra}')
    return sc


def test_simulate_streams_progress_and_stays_clean_when_piped(tmp_path):
    sc = _scenario(tmp_path, days=20)
    r = subprocess.run([sys.executable, "-m", "theca.cli", "simulate", sc, "-o",
                        tmp_path / "a.tlog", "--quiet"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert "@@progress" not in r.stdout + r.stderr and "\x1b[" not in r.stdout + r.stderr
    assert r.stderr == ""
    assert r.stdout.startswith("simulated 20 days in ") and "x real time" in r.stdout
    assert r.stdout.rstrip().endswith(str(tmp_path / "a.tlog"))


def test_simulate_progress_callback_reaches_the_end(tmp_path):
    from theca.inputs.scenario import load_scenario
    from theca.twin.simulate import simulate

    sc = load_scenario(_scenario(tmp_path, days=20))
    seen = []
    res = simulate(sc, tmp_path / "b.tlog", progress=seen.append)
    assert res["returncode"] == 0, res["stderr"]
    assert "@@progress" not in res["stderr"]
    assert len(seen) >= 50 and seen == sorted(seen)
    assert seen[0] <= 3600 and seen[-1] >= 19 * 86400


def test_simulate_out_of_memory_says_so_in_one_line(tmp_path):
    # (issue 13: a raw MemoryError traceback for a heap the user chose too small)
    sc = _scenario(tmp_path, days=1)
    r = subprocess.run([sys.executable, "-m", "theca.cli", "simulate", sc, "-o",
                        tmp_path / "c.tlog", "--heapsize", "16k"], capture_output=True, text=True,
                       cwd=ROOT)
    assert r.returncode == 1
    assert "out of memory with --heapsize 16k" in r.stderr and "Traceback" not in r.stderr
    assert "@@progress" not in r.stderr


@pytest.mark.parametrize("bad", ["", "not a tlog at all"])
def test_decode_bad_file_exit_2(tmp_path, capsys, bad):
    p = tmp_path / "x.tlog"
    p.write_text(bad)
    rc, _, err = run_cli(capsys, "decode", p, "--format", "parquet", "-o", tmp_path / "x.pq")
    assert rc == 2 and "x.tlog" in err
