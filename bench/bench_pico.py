"""The firmware on the emulated Pico (official MicroPython rp2 v1.28.0 in rp2040js):
its heap on the RP2040 after boot, after hours of therapy and after a log pull; the .mpy
sizes; what a GET_STATUS frame costs the CPU at 125 MHz; a stroke's length; how fast the
emulated pump runs against real time. Part of `make bench` (bench/run.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "host_tools"))

from theca.board import build  # noqa: E402
from theca.emu import Emulator  # noqa: E402

THECA = [sys.executable, "-m", "theca.cli"]
RX = """drug = "morphine"
concentration = "10 mg/mL"
[[steps]]
start = "00:00"
rate = "2 mg/day"
[patient_bolus]
dose = "0.1 mg"
duration = "1 min"
lockout = "12 h"
max_per_day = 2
"""
THERAPY_S = 86400  # a day of device time (about 6 min of real time)


def _theca(home: Path, *args, timeout=300) -> subprocess.CompletedProcess:
    env = {**os.environ, "THECA_HOME": str(home)}
    env.pop("THECA_DEVICE", None)
    return subprocess.run(THECA + [str(a) for a in args], capture_output=True, text=True,
                          env=env, timeout=timeout, cwd=ROOT)


def _status(home: Path, dev: Path) -> dict:
    r = _theca(home, "--device", dev, "status", "--json")
    if r.returncode:
        raise RuntimeError(r.stderr.strip())
    return json.loads(r.stdout)


def run() -> dict:
    out: dict = {}
    mpy = build.compile_firmware("rp2_pico")
    sizes = {p.stem: p.stat().st_size for p in mpy.glob("*.mpy")}
    out["mpy_bytes"] = sum(sizes.values())
    out["mpy_largest"] = sorted(sizes.items(), key=lambda kv: -kv[1])[:3]
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        home, dev = d / "home", d / "dev"
        emu = Emulator(dev, flash_image=d / "flash.img").start()
        try:
            t0 = time.monotonic()
            r = _theca(home, "--device", dev, "flash", "--board", "rp2_pico")
            if r.returncode:
                raise RuntimeError(r.stderr.strip() or r.stdout.strip())
            out["flash_s"] = round(time.monotonic() - t0, 1)
            s = _status(home, dev)
            out["heap_total"] = s["heap_total"]
            out["heap_free_boot"] = s["heap_free"]
            (d / "rx.toml").write_text(RX)
            for args in (("set-time",), ("program", d / "rx.toml", "--yes"), ("bolus",)):
                r = _theca(home, "--device", dev, *args)
                if r.returncode:
                    raise RuntimeError(r.stderr.strip())
            _therapy(emu, home, dev, out)
            r = _theca(home, "--device", dev, "log", "pull", "-o", d / "p.tlog")
            if r.returncode:
                raise RuntimeError(r.stderr.strip())
            out["log_pull"] = r.stdout.strip()
            out["heap_free_after_pull"] = _status(home, dev)["heap_free"]
            # `theca status` ends with GET_STATUS: the last reply timed is its own
            out["status_cpu_us"] = round(emu.stats()["reply_ns"][-1] / 1000)
            replies = sorted(emu.stats()["reply_ns"])
            out["frame_cpu_us_median"] = round(replies[len(replies) // 2] / 1000) if replies else None
            # a stroke's length on the chip: the bench helper at the maintenance REPL
            _theca(home, "--device", dev, "maintenance")
            emu.wait_for(lambda e: e["ev"] == "reset", 30)
            from theca.board.flash import mpremote

            code = ("import board, time\nhw = board.bench()\nt = time.ticks_us()\n"
                    "r = hw.motor.stroke()\nprint(r, time.ticks_diff(time.ticks_us(), t))")
            for _ in range(3):
                p = subprocess.run([mpremote(), "connect", str(dev), "exec", code],
                                   capture_output=True, text=True, timeout=120)
                if p.returncode == 0:
                    break
                time.sleep(2)
            parts = p.stdout.split()
            out["stroke_us"] = int(parts[-1]) if p.returncode == 0 and parts else p.stderr.strip()[-200:]
        finally:
            emu.stop()
    return out


def _therapy(emu, home: Path, dev: Path, out: dict) -> None:
    # THERAPY_S of device time: the heap's low point, the speed, the strokes
    s0 = _status(home, dev)
    st0, w0 = emu.stats(), time.monotonic()
    t_start = s0["device_time"]
    lows = [s0["heap_free"]]
    while True:
        time.sleep(15)
        s = _status(home, dev)
        lows.append(s["heap_free"])
        if _seconds(s["device_time"]) - _seconds(t_start) >= THERAPY_S:
            break
    st1, w1 = emu.stats(), time.monotonic()
    out["therapy_device_s"] = _seconds(s["device_time"]) - _seconds(t_start)
    out["therapy_wall_s"] = round(w1 - w0, 1)
    out["x_real_time"] = round((st1["t"] - st0["t"]) / 1e9 / (w1 - w0), 1)
    out["strokes"] = st1["strokes"] - st0["strokes"]
    out["heap_free_therapy_min"] = min(lows)


def _seconds(iso: str) -> int:
    from datetime import datetime

    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp())


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
