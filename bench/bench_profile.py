"""Where the twin's time goes on the heavy scenario (issue 15), by ablation: 30 days of it
run inside MicroPython as they are, then with one concern at a time replaced by a stand-in
that does nothing (bench/mp_profile.py); the difference is what that concern costs. The
scheduler's share is timed apart: asyncio alone, with as many wake-ups as the run had.
Part of `make bench` (bench_heavy.run)."""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT / "host_tools", ROOT / "protocol", ROOT / "bench"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from bench_heavy import heavy  # noqa: E402
from theca import paths  # noqa: E402
from theca.board.build import compile_firmware  # noqa: E402
from theca.inputs.scenario import load_scenario  # noqa: E402
from theca.twin import proc as twinproc  # noqa: E402
from theca.twin.simulate import input_records, scenario_frames, twin_config  # noqa: E402
from theca_protocol import names as N  # noqa: E402

#: (stand-in, what it takes away)
ABLATIONS = (
    ("status_build", "building the STATUS frames (a cached frame sent instead)"),
    ("tlog_write", "writing telemetry to the .tlog"),
    ("mechanism", "the twin's mechanism model (reservoir, drug mass, catheter)"),
    ("sensing", "sensing each tick (battery, occlusion)"),
    ("accounting", "a stroke's accounting (reservoir, delivered, rolling 24 h)"),
    ("skip_to", "the twin's skip past the scheduler, `Clock.skip_to` (negative: with a STATUS "
                "frame a minute the therapy and telemetry tasks take turns, so it never skips "
                "and only costs its check)"),
)

_SCHED = """
import asyncio, time, asyncio.core as c
class V:
    ms = time.ticks_ms()
    def ticks(self): return self.ms
    def wait(self, dt):
        if dt > 0: self.ms += dt
v = V(); c.ticks = v.ticks; c._io_queue.wait_io_event = v.wait
async def t(period, n):
    for _ in range(n): await asyncio.sleep_ms(period)
async def m():
    await asyncio.gather(t(36000, {a}), t(60000, {b}))
t0 = time.ticks_us(); asyncio.run(m()); print("SCHED", time.ticks_diff(time.ticks_us(), t0))
"""


def _config(d: Path, days: int, status_period_s: int = 60) -> Path:
    sc = load_scenario(heavy(d, days, 2200, status_period_s))
    keys = {rid: secrets.token_bytes(32) for rid in N.ROLES}
    (d / "in.bin").write_bytes(input_records(scenario_frames(sc, keys)))
    cfg = twin_config(sc, keys, d / "in.bin", d / "p.tlog", d / "truth.json")
    return twinproc.write_config(d / f"profile_{days}_{status_period_s}.json", cfg)


def _run(cfg: Path, mpy: Path, ablate: str = "") -> int:
    env = twinproc.twin_env(cfg, mpy)
    env["MICROPYPATH"] = f"{ROOT / 'bench'}:{env['MICROPYPATH']}"
    env["ABLATE"] = ablate
    r = subprocess.run([paths.micropython(), "-m", "mp_profile"], env=env, capture_output=True,
                       text=True, cwd=ROOT)
    m = re.search(r"PROFILE (\d+)", r.stderr)
    if r.returncode or not m:
        raise RuntimeError(f"mp_profile {ablate or 'as is'}: {r.stderr[-400:]}")
    return int(m[1])


def _best(cfg: Path, mpy: Path, ablate: str = "", n: int = 3) -> int:
    return min(_run(cfg, mpy, ablate) for _ in range(n))


def run(d: Path, days: int = 30) -> dict:
    """The profile of `days` days of the heavy scenario: microseconds per concern."""
    d.mkdir(parents=True, exist_ok=True)
    mpy = compile_firmware("unix")
    cfg = _config(d, days)
    base = _best(cfg, mpy)
    truth = json.loads((d / "truth.json").read_text())
    strokes = truth["strokes"]
    status = days * 86400 // 60
    rows = {"as is": {"s": round(base / 1e6, 3), "us_per_stroke": round(base / strokes, 1)}}
    for name, what in ABLATIONS:
        us = _best(cfg, mpy, name)
        per = status if name in ("status_build", "tlog_write") else strokes
        rows[name] = {"what": what, "s": round((base - us) / 1e6, 3),
                      "us_each": round((base - us) / per, 2),
                      "each": "STATUS frame" if per == status else "stroke"}
    r = subprocess.run([paths.micropython(), "-c", _SCHED.format(a=strokes, b=status)],
                       capture_output=True, text=True)
    m = re.search(r"SCHED (\d+)", r.stdout)
    sched = int(m[1]) if m else None
    rows["scheduler"] = {"what": f"asyncio alone: {strokes + status:,} wake-ups of two tasks",
                         "s": round(sched / 1e6, 3) if sched else None,
                         "us_each": round(sched / (strokes + status), 2) if sched else None,
                         "each": "wake-up"}
    # the same run with a STATUS frame an hour: what the strokes cost without telemetry
    (d / "hourly").mkdir(exist_ok=True)
    hcfg = _config(d / "hourly", days, 3600)
    hourly = _best(hcfg, mpy)
    hourly_no_skip = _best(hcfg, mpy, "skip_to")
    return {"days": days, "strokes": strokes, "status_frames": status,
            "rows": rows, "hourly_status_s": round(hourly / 1e6, 3),
            "hourly_skip_to_s": round((hourly_no_skip - hourly) / 1e6, 3),
            "hourly_us_per_stroke": round(hourly / strokes, 1)}


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as t:
        print(json.dumps(run(Path(t)), indent=1))
