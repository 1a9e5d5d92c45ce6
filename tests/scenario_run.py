"""Run a scenario on the twin from a test: the decoded log and the physical truth
(`theca simulate --truth`), for tests judged from what really reached the patient."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def simulate(tmp_path: Path, rx: str, body: str = "", days: float = 1, reservoir_ml: float = 20.0,
             ok=(0,)) -> tuple[list[dict], dict, subprocess.CompletedProcess]:
    """(decoded jsonl objects, truth document, the simulate process) of a scenario from
    2026-01-01T00:00Z whose prescription is `rx` (TOML text) and whose further TOML is
    `body`; the run's exit status must be in `ok`."""
    (tmp_path / "rx.toml").write_text(rx)
    sc = tmp_path / "s.toml"
    sc.write_text(f'start = 2026-01-01T00:00:00Z\nstatus_period_s = 600\nreservoir_ml = {reservoir_ml}\n'
                  f'prescription = "rx.toml"\ndays = {days}\n' + body)
    out, truth = tmp_path / "r.tlog", tmp_path / "truth.json"
    r = subprocess.run([sys.executable, "-m", "theca.cli", "simulate", str(sc), "-o", str(out),
                        "--truth", str(truth), "--quiet"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode in ok, r.stdout + r.stderr
    d = subprocess.run([sys.executable, "-m", "theca.cli", "decode", str(out), "--format", "jsonl"],
                       capture_output=True, text=True, cwd=ROOT, check=True)
    return [json.loads(x) for x in d.stdout.splitlines()], json.loads(truth.read_text()), r


def events(objs: list[dict], name: str, **match) -> list[dict]:
    """The events called `name` whose fields equal `match`."""
    return [o for o in objs if o["kind"] == "event" and o["event"] == name
            and all(o.get(k) == v for k, v in match.items())]


def statuses(objs: list[dict]) -> list[dict]:
    return [o for o in objs if o["kind"] == "status"]
