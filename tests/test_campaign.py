"""`theca campaign` (issue 26): sweeps of faults and events over a base scenario, each run
judged from the twin's physical truth; the same verdicts on one process, on two and on a
Dask cluster; a firmware with a limit removed is caught, its failing run written as a
scenario that reproduces the failure."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from theca.campaign.judge import INVARIANTS
from theca.campaign.spec import load_campaign, runs
from theca.errors import BadInput

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

BASE = """start = 2026-01-01T00:00:00Z
days = 1
status_period_s = 600
reservoir_ml = 20.0
prescription = "{rx}"
[[events]]
at = 2026-01-01T10:00:00Z
action = "patient_bolus"
[[events]]
at = 2026-01-01T13:00:00Z
action = "refill"
volume = "18 mL"
concentration = "10 mg/mL"
"""
# 3 power cuts x 2 durations x 2 stalls = 12 runs, x 2 seeds = 24
CAMPAIGN = """scenario = "base.toml"
seeds = 2
jitter = "10 min"
[[sweep]]
fault = "power_loss"
at = ["9 h 59 min", "13 h", "13 h 1 min"]
duration = ["2 s", "20 min"]
[[sweep]]
fault = "motor_stall"
at = ["600 min", "14 h"]
duration = "30 min"
"""
# the patient presses every 25 min: only the lockout (1 h) keeps the boluses apart
PRESSES = """scenario = "base.toml"
[[sweep]]
event = "patient_bolus"
every = "25 min"
"""


def _write(d: Path, text: str, name: str = "c.toml") -> Path:
    (d / "base.toml").write_text(BASE.format(rx=ROOT / "examples" / "rx_morphine.toml"))
    (d / name).write_text(text)
    return d / name


def theca(*args, env=None, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "theca.cli", *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT, timeout=timeout, env=env)


def _rows(out: Path) -> dict[str, dict]:
    return {r["run"]: r for r in map(json.loads, (out / "runs.jsonl").read_text().splitlines())}


def _verdicts(rows: dict) -> dict:
    return {k: tuple(r[v] for v in (*INVARIANTS, "worst_24h_pct", "worst_1h_pct", "pumped_ul"))
            for k, r in rows.items()}


def test_sweeps_multiply_and_seeds_jitter_the_times_the_same_way_every_time(tmp_path):
    c = load_campaign(_write(tmp_path, CAMPAIGN))
    a, b = runs(c), runs(c)
    assert len(a) == c.n_runs() == 24
    assert [r["params"] for r in a] == [r["params"] for r in b]  # reproducible
    first = [r for r in a if r["params"]["seed"] == 0][0]["params"]
    assert first["s1_at"] == "2026-01-01T09:59:00Z" and first["s1_duration"] == "2 s"
    jittered = [r for r in a if r["params"]["seed"] == 1]
    assert any(r["params"]["s1_at"] not in ("2026-01-01T09:59:00Z", "2026-01-01T13:00:00Z",
                                            "2026-01-01T13:01:00Z") for r in jittered)
    sc = a[0]["scenario"]
    assert isinstance(sc["prescription"], dict)  # taken in: the run stands on its own
    assert [f["kind"] for f in sc["faults"]] == ["power_loss", "motor_stall"]


@pytest.mark.parametrize("text, words", [
    ('scenario = "base.toml"\n[[sweep]]\nfault = "earthquake"\nevery = "1 h"\n', "unknown fault"),
    ('scenario = "base.toml"\n[[sweep]]\nfault = "power_loss"\nduration = "1 s"\n',
     "every = DURATION or at"),
    ('scenario = "base.toml"\n[[sweep]]\nfault = "power_loss"\nevery = "1 h"\nduration = []\n',
     "empty list"),
    ('scenario = "nowhere.toml"\n[[sweep]]\nfault = "power_loss"\nevery = "1 h"\n', "nowhere.toml"),
    ('scenario = "base.toml"\nseeds = 0\n[[sweep]]\nevent = "patient_bolus"\nevery = "1 h"\n',
     "seeds"),
])
def test_a_campaign_written_wrong_is_refused_naming_the_field(tmp_path, text, words):
    with pytest.raises(BadInput) as e:
        load_campaign(_write(tmp_path, text))
    assert words in str(e.value), str(e.value)
    r = theca("campaign", tmp_path / "c.toml", "-o", tmp_path / "out")
    assert r.returncode == 2 and words in r.stderr, r.stderr


def test_one_process_and_two_give_the_same_verdicts_and_resume_runs_nothing_twice(tmp_path):
    # REQ: SR-CAMP-01
    c = _write(tmp_path, CAMPAIGN)
    r1 = theca("campaign", c, "-o", tmp_path / "one", "--workers", "1")
    r2 = theca("campaign", c, "-o", tmp_path / "two", "--workers", "2")
    assert r1.returncode in (0, 1) and r2.returncode == r1.returncode, r1.stderr + r2.stderr
    one, two = _rows(tmp_path / "one"), _rows(tmp_path / "two")
    assert len(one) == 24 and _verdicts(one) == _verdicts(two)
    # every run judged: the power cut at the refill makes the pump miss it (unanswered)
    assert any(r["commands_unanswered"] for r in one.values())
    assert all(r["no_crash"] == "pass" for r in one.values()), [r["why"] for r in one.values()]
    # the outputs: parquet (DuckDB reads it), the summary, a scenario per failing run
    import duckdb

    n, held = duckdb.sql(f"SELECT count(*), count(*) FILTER (WHERE ok) FROM "
                         f"'{tmp_path / 'two' / 'runs.parquet'}'").fetchall()[0]
    assert n == 24 and held == sum(1 for r in two.values() if r["ok"])
    text = (tmp_path / "two" / "summary.md").read_text()
    assert "| tip_limits |" in text and "24 runs" in text
    # docs/cli.md's example reads it as written (in the folder holding `camp`)
    import re

    doc = (ROOT / "docs" / "cli.md").read_text()
    ex = re.search(r"```sh\n(python -c \"import duckdb.*?camp/runs.parquet.*?)```", doc, re.S)
    assert ex, "docs/cli.md has no DuckDB example for runs.parquet"
    (tmp_path / "camp").symlink_to(tmp_path / "two")
    r = subprocess.run(["bash", "-c", ex.group(1).replace("python ", f"{sys.executable} ", 1)],
                       cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "failed" in r.stdout, r.stdout + r.stderr
    # --resume: what runs.jsonl holds is not run again
    t0 = time.monotonic()
    r3 = theca("campaign", c, "-o", tmp_path / "two", "--resume")
    assert r3.returncode == r2.returncode and "24 runs" in r3.stdout, r3.stdout + r3.stderr
    assert time.monotonic() - t0 < 0.5 * sum(r["seconds"] for r in two.values()) + 10


def test_a_firmware_without_the_lockout_is_caught_and_its_failing_run_reproduces(tmp_path):
    # REQ: SR-CAMP-01
    # the guard broken on purpose: a patient bolus is no longer held to its lockout
    planted = tmp_path / "planted"
    planted.mkdir()
    src = (ROOT / "firmware" / "gate.py").read_text()
    broken = src.replace("if last is not None and now - last < lockout_s:",
                         "if False and last is not None and now - last < lockout_s:")
    assert broken != src
    (planted / "gate.py").write_text(broken)
    c = _write(tmp_path, PRESSES)
    good = theca("campaign", c, "-o", tmp_path / "good", "--workers", "2")
    assert good.returncode == 0, good.stdout + good.stderr
    bad = theca("campaign", c, "-o", tmp_path / "bad", "--workers", "2", "--firmware", planted)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    rows = _rows(tmp_path / "bad")
    failed = [r for r in rows.values() if not r["ok"]]
    assert failed and all(r["patient_boluses"] == "fail" for r in failed)
    assert all(r[k] == "pass" for r in failed for k in INVARIANTS if k != "patient_boluses")
    # its scenario reproduces it, on the same firmware; the project's own holds it
    f = tmp_path / "bad" / "failures" / f"{failed[0]['run']}.toml"
    assert "--firmware" in f.read_text().splitlines()[2]
    again = theca("simulate", f, "-o", tmp_path / "again.tlog", "--invariants", "--firmware", planted)
    assert again.returncode == 1 and "patient_boluses  fail" in again.stdout, again.stdout + again.stderr
    ok = theca("simulate", f, "-o", tmp_path / "ok.tlog", "--invariants")
    assert ok.returncode == 0 and "patient_boluses  pass" in ok.stdout, ok.stdout + ok.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_dask_cluster_on_localhost_gives_the_local_verdicts(tmp_path):
    # REQ: SR-CAMP-01
    c = _write(tmp_path, CAMPAIGN)
    port = _free_port()
    addr = f"tcp://127.0.0.1:{port}"
    # (their scratch in the test's folder, not /tmp/dask-scratch-space)
    env = dict(os.environ, DASK_DISTRIBUTED__WORKER__DAEMON="False",
               DASK_TEMPORARY_DIRECTORY=str(tmp_path / "dask"))
    procs = [subprocess.Popen([str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port",
                               str(port), "--no-dashboard"], env=env, cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        time.sleep(2)
        for _ in range(2):
            procs.append(subprocess.Popen([str(BIN / "dask"), "worker", addr, "--nthreads", "1",
                                           "--no-dashboard", "--local-directory",
                                           str(tmp_path / "dask")], env=env, cwd=tmp_path,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        r = theca("campaign", c, "-o", tmp_path / "dask", "--scheduler", addr)
        assert r.returncode in (0, 1), r.stdout + r.stderr
        assert "Dask cluster" in r.stdout
        local = theca("campaign", c, "-o", tmp_path / "local", "--workers", "2")
        assert local.returncode == r.returncode, local.stderr
        assert _verdicts(_rows(tmp_path / "dask")) == _verdicts(_rows(tmp_path / "local"))
    finally:
        for p in procs[::-1]:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


def test_the_example_campaign_is_well_formed():
    c = load_campaign(ROOT / "examples" / "campaign.toml")
    assert c.n_runs() == 384
    from theca.inputs.scenario import load_scenario

    first = runs(c)[0]
    sc = load_scenario(first["scenario"])
    assert [f.kind for f in sc.faults] == ["power_loss", "motor_stall"]
