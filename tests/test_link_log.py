"""`theca log pull`: the event log into a .tlog, page by page, resumable: an interrupted
pull (a page cap, a torn last write, a killed process) continues from the last event
in the file, with no event duplicated or skipped."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest
import theca_protocol as tp
from test_link import ROOT, THECA, device_events, env_for, in_home, run_theca
from theca.link.client import Client
from theca.log.tlog import build_tlog
from theca.twin.live import LiveTwin

ACK_ALL = tp.compiled(tp.AckAlarm).pack(0xFFFFFFFF)


def add_events(home, dev, n: int) -> None:
    """n more events on the device: each catheter record is logged (an acknowledgement
    of nothing raised is not: it changes nothing)."""
    with in_home(home), Client(str(dev)) as c:
        for i in range(n):
            c.request("CATHETER", tp.compiled(tp.Catheter).pack(100_000 + i), "clinician")


def pulled(home, path) -> list[dict]:
    r = run_theca(home, "decode", path, "--format", "jsonl")
    assert r.returncode == 0, r.stderr
    return [json.loads(x) for x in r.stdout.splitlines()]


def check_log(home, dev, path) -> list[int]:
    """The file holds exactly the device's events, each once, in order; returns seqs."""
    objs = pulled(home, path)
    seqs = [o["event_seq"] for o in objs if o["kind"] == "event"]
    assert seqs == sorted(set(seqs)), "an event twice or out of order"
    dev_ev = device_events(home, dev)
    want = [e[1] for e in dev_ev if e[1] <= seqs[-1]]
    assert seqs == want, f"missing {sorted(set(want) - set(seqs))[:10]}"
    # byte-identical content: times and a/b/c as the device holds them
    with open(path, "rb") as f:
        data = f.read()
    for e in dev_ev[:5] + dev_ev[-5:]:
        if e[1] <= seqs[-1]:
            assert tp.compiled(tp.EventRecord).pack(*e) in data
    r = run_theca(home, "decode", path, "--summary", "--strict")
    assert r.returncode == 0, r.stdout + r.stderr
    return seqs


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    d = tmp_path_factory.mktemp("logtwin")
    home = d / "home"
    dev = d / "pump"
    with LiveTwin(dev, speed=600, env=env_for(home), args=["--flash-image", d / "flash.img"]) as t:
        add_events(home, dev, 1000)
        yield {"home": home, "dev": dev, "serial": t.serial, "dir": d}


def test_pull_in_pages_and_resume(twin, tmp_path):
    home, dev = twin["home"], twin["dev"]
    out = tmp_path / "log.tlog"
    r = run_theca(home, "--device", dev, "log", "pull", "-o", out, "--pages", "2")
    assert r.returncode == 0, r.stderr
    k = 2 * tp.LOG_PAGE_MAX
    assert f"pulled {k} events (#1-#{k})" in r.stdout and "more on the device" in r.stdout
    assert check_log(home, dev, out) == list(range(1, k + 1))
    # the process dies in the middle of writing a page: the last record is torn
    size = out.stat().st_size
    with open(out, "r+b") as f:
        f.truncate(size - 7)
    r = run_theca(home, "--device", dev, "log", "pull", "-o", out, "--pages", "1")
    assert r.returncode == 0, r.stderr
    assert "bytes after the last good record" in r.stderr
    # the torn record was the STATUS after event k: the pull goes on from #k+1
    assert f"resumed after #{k}" in r.stdout and f"(#{k + 1}-#{k + tp.LOG_PAGE_MAX})" in r.stdout
    add_events(home, dev, 30)  # the device goes on logging meanwhile
    r = run_theca(home, "--device", dev, "log", "pull", "-o", out)
    assert r.returncode == 0, r.stderr
    seqs = check_log(home, dev, out)
    assert seqs[0] == 1 and seqs[-1] >= 1030
    # nothing new: a pull adds no event, only who and when (device info, status)
    r = run_theca(home, "--device", dev, "log", "pull", "-o", out)
    assert r.returncode == 0 and "pulled 0 events" in r.stdout
    assert check_log(home, dev, out) == seqs
    kinds = [o["kind"] for o in pulled(home, out)]
    assert kinds[0] == "device_info" and kinds[-1] == "status"


def test_pull_killed_mid_way_resumes_exactly(twin, tmp_path):
    home, dev = twin["home"], twin["dev"]
    total = len(device_events(home, dev))
    killed_mid_way = 0
    for attempt in range(4):
        out = tmp_path / f"killed{attempt}.tlog"
        p = subprocess.Popen(THECA + ["--device", str(dev), "log", "pull", "-o", str(out)],
                             env=env_for(home), cwd=ROOT, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        # SIGKILL once a few pages are on disk: between two pages, or inside one
        threshold = 16 + 3 * 48 * 25 + attempt * 700
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and p.poll() is None:
            if out.exists() and out.stat().st_size >= threshold:
                break
            time.sleep(0.0005)
        p.send_signal(signal.SIGKILL)
        p.wait()
        n = _events_in(out)
        if n >= total:
            continue  # it finished first: no interruption to test this time
        killed_mid_way += 1
        r = run_theca(home, "--device", dev, "log", "pull", "-o", out)
        assert r.returncode == 0, r.stderr
        seqs = check_log(home, dev, out)
        assert seqs[0] == 1 and len(seqs) >= total
    assert killed_mid_way >= 2, "the pull always finished before it could be killed"


def _events_in(path) -> int:
    from theca.log.tlog import Tlog

    if not path.exists() or path.stat().st_size < 16:
        return 0
    with Tlog(path) as t:
        return sum(1 for _, fr in t.frames() if fr[1] == tp.T_EVENT)


def test_pull_refuses_another_devices_file_and_non_logs(twin, tmp_path):
    home, dev = twin["home"], twin["dev"]
    info = tp.encode_payload(tp.T_DEVICE_INFO, dict(
        serial="TWIN99999999", fw_major=0, fw_minor=1, fw_patch=0, runtime=1, schema=tp.SCHEMA,
        stroke_nl=250, capacity_nl=20_000_000, low_reservoir_nl=2_000_000, catheter_nl=150_000, max_rate_nl_h=1_000_000,
        min_rate_nl_day=48_000))
    other = tmp_path / "other.tlog"
    other.write_bytes(build_tlog([tp.build_frame(tp.T_DEVICE_INFO, 0, 0, info)]))
    before = other.read_bytes()
    r = run_theca(home, "--device", dev, "log", "pull", "-o", other)
    assert r.returncode == 2 and "TWIN99999999" in r.stderr and twin["serial"] in r.stderr
    assert other.read_bytes() == before
    text = tmp_path / "notes.txt"
    text.write_text("my notes\n")
    r = run_theca(home, "--device", dev, "log", "pull", "-o", text)
    assert r.returncode == 2 and "not a telemetry log" in r.stderr
    assert text.read_text() == "my notes\n"


def test_overwritten_events_are_reported_not_hidden(tmp_path):
    # a twin without a flash image keeps its newest 128 events in RAM
    home = tmp_path / "home"
    dev = tmp_path / "pump"
    with LiveTwin(dev, speed=600, env=env_for(home)):
        add_events(home, dev, 150)
        out = tmp_path / "ram.tlog"
        r = run_theca(home, "--device", dev, "log", "pull", "-o", out)
        assert r.returncode == 0, r.stderr
        assert "were overwritten on the device before they were read" in r.stderr
        seqs = [o["event_seq"] for o in pulled(home, out) if o["kind"] == "event"]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))) and seqs[0] > 1
        assert f"#1-#{seqs[0] - 1}" in r.stderr
