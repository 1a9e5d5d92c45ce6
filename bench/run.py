"""`make bench`: the project's speed and memory figures, measured here and now.

Twin speed (180 days, 1-minute status frames), the smallest MicroPython heap that
runs 30 days, and telemetry decoding speed. Run from the repository root.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from theca.build import compile_firmware  # noqa: E402
from theca.scenario import load_scenario  # noqa: E402
from theca.simulate import simulate  # noqa: E402

SCENARIO = """
start = 2026-01-01T00:00:00Z
days = {days}
status_period_s = 60
reservoir_ml = 20.0
prescription = "{rx}"
[[events]]
at = 2026-01-03T10:00:00Z
action = "patient_bolus"
[[events]]
at = 2026-01-20T09:00:00Z
action = "refill"
volume = "3 mL"
concentration = "10 mg/mL"
"""


def scenario(days: int, d: Path):
    p = d / f"bench_{days}.toml"
    p.write_text(SCENARIO.format(days=days, rx=ROOT / "examples" / "rx_morphine.toml"))
    return load_scenario(p)


def twin_speed(d: Path, days: int = 180, runs: int = 3) -> dict:
    sc = scenario(days, d)
    mpy = compile_firmware("unix")
    best = None
    for _ in range(runs):
        res = simulate(sc, d / "speed.tlog", mpy_dir=mpy)
        if res["returncode"]:
            raise RuntimeError(res["stdout"] + res["stderr"])
        best = res["seconds"] if best is None else min(best, res["seconds"])
    frames = (d / "speed.tlog").stat().st_size
    return {
        "days": days,
        "seconds": round(best, 3),
        "x_real_time": round(days * 86400 / best),
        "tlog_bytes": frames,
    }


def min_heap(d: Path, days: int = 30) -> dict:
    """Smallest -X heapsize (KiB, 4 KiB steps) that runs `days` from .mpy files."""
    sc = scenario(days, d)
    mpy = compile_firmware("unix")

    def ok(kib: int) -> bool:
        return simulate(sc, d / "heap.tlog", heapsize=f"{kib}k", mpy_dir=mpy)["returncode"] == 0

    lo, hi = 16, 512
    if not ok(hi):
        return {"days": days, "min_heap_kib": None}
    while hi - lo > 4:
        mid = (lo + hi) // 2 // 4 * 4
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return {"days": days, "min_heap_kib": hi}


def main() -> int:
    results: dict = {}
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        t0 = time.perf_counter()
        results["twin"] = twin_speed(d)
        results["heap"] = min_heap(d)
        try:
            import bench_decode

            results["decode"] = bench_decode.run()
        except ImportError as e:  # the decode benchmark is part of the tree; say so loudly
            results["decode"] = {"error": str(e)}
        results["bench_seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(results, indent=2))
    tw, hp = results["twin"], results["heap"]
    print(f"\ntwin: {tw['days']} days with 1-minute status in {tw['seconds']} s "
          f"({tw['x_real_time']:,}x real time; requirement < 15 s)")
    print(f"heap: smallest -X heapsize for {hp['days']} days: {hp['min_heap_kib']} KiB "
          "(requirement <= 128 KiB)")
    (ROOT / "build").mkdir(exist_ok=True)
    (ROOT / "build" / "bench.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
