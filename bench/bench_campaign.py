"""Campaigns (issue 26): runs per second on 1 and 2 local processes and on a local Dask
cluster (2 workers), the same verdicts each way, and one run's cost against its scenario's
days; from them, on paper, what 1,000,000 runs take on N machines."""

from __future__ import annotations

import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# the shipped example's base (a refill visit and a clock change on day 2) with fewer points:
# 6 power cuts x 2 durations x 2 stalls x 2 durations = 48 runs
CAMPAIGN = """scenario = "{base}"
[[sweep]]
fault = "power_loss"
at = ["1960 min", "2040 min", "2041 min", "2360 min", "2400 min", "2401 min"]
duration = ["2 s", "15 min"]
[[sweep]]
fault = "motor_stall"
at = ["2050 min", "2410 min"]
duration = ["10 min", "2 h"]
"""

DAYS = """start = 2026-01-01T00:00:00Z
days = {days}
status_period_s = 600
reservoir_ml = 20.0
prescription = "{rx}"
"""


def _verdicts(rows) -> dict:
    from theca.campaign.judge import INVARIANTS

    return {r["run"]: tuple(r[k] for k in INVARIANTS) for r in rows}


def _timed(it) -> tuple[list, float]:
    t = time.perf_counter()
    rows = list(it)
    return rows, time.perf_counter() - t


def run(d: Path) -> dict:
    from theca.campaign import run as R
    from theca.campaign.spec import load_campaign

    p = d / "bench_campaign.toml"
    p.write_text(CAMPAIGN.format(base=ROOT / "examples" / "campaign_base.toml"))
    c = load_campaign(p)
    jobs = R.jobs(c)
    one, t1 = _timed(R.local(jobs, 1))
    two, t2 = _timed(R.local(jobs, 2))
    out = {"runs": len(jobs), "one_s": round(t1, 2), "two_s": round(t2, 2),
           "one_rps": round(len(jobs) / t1, 2), "two_rps": round(len(jobs) / t2, 2),
           "speedup": round(t1 / t2, 2),
           "same_verdicts": _verdicts(one) == _verdicts(two),
           "failed": sum(1 for r in one if not r["ok"])}
    try:
        from dask.distributed import LocalCluster

        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                          dashboard_address=None, local_directory=str(d / "dask")) as cl:
            dk, td = _timed(R.dask(jobs, cl.scheduler_address))
        out.update(dask_s=round(td, 2), dask_rps=round(len(jobs) / td, 2),
                   dask_same=_verdicts(dk) == _verdicts(one))
    except Exception as e:  # noqa: BLE001 (say why, keep the other figures)
        out["dask_error"] = f"{type(e).__name__}: {e}"
    # one run's cost against its days (no fault: the twin, the judge, the process)
    cost = {}
    for days in (1, 7, 30):
        s = d / f"days{days}.toml"
        s.write_text(DAYS.format(days=days, rx=ROOT / "examples" / "rx_morphine.toml"))
        from theca.campaign.spec import load_campaign as _lc

        cf = d / f"c{days}.toml"
        cf.write_text(f'scenario = "{s}"\n[[sweep]]\nevent = "patient_bolus"\nat = ["10 h"]\n')
        rows, t = _timed(R.local(R.jobs(_lc(cf)), 1))
        cost[days] = round(t, 3)
    out["run_s_by_days"] = cost
    return out


def rows(cp: dict) -> list[str]:
    """BENCHMARKS.md lines."""
    if not cp:
        return []
    if "runs" not in cp:
        return [f"| campaign | not measured: {cp.get('error', '?')} | - | - |"]
    out = [
        f"| campaign, {cp['runs']} runs (the example's refill and clock change, power cuts x "
        f"stalls), 1 process | {cp['one_s']} s ({cp['one_rps']} runs/s) | - | - |",
        f"| the same, 2 processes | {cp['two_s']} s ({cp['two_rps']} runs/s), "
        f"{cp['speedup']}x; verdicts {'identical' if cp['same_verdicts'] else 'DIFFERENT'} | - | "
        f">= 1.6x on 2 cores{'' if cp['speedup'] >= 1.6 else ': NOT MET'} |",
    ]
    if "dask_s" in cp:
        out.append(f"| the same, local Dask cluster (2 worker processes) | {cp['dask_s']} s "
                   f"({cp['dask_rps']} runs/s); verdicts "
                   f"{'identical' if cp['dask_same'] else 'DIFFERENT'} | - | - |")
    else:
        out.append(f"| the same on Dask | not measured: {cp.get('dask_error')} | - | - |")
    by = cp["run_s_by_days"]
    out.append("| one run (1 process, no fault) by its scenario's days | "
               + ", ".join(f"{d} d: {s} s" for d, s in by.items()) + " | - | - |")
    return out


def paper(cp: dict) -> list[str]:
    """What 1,000,000 runs of the bench campaign's kind would take, on paper."""
    if "two_rps" not in cp:
        return []
    per_core = cp["two_rps"] / 2
    lines = ["", "## 1,000,000 campaign runs, on paper", "",
             f"From the 2-process figure ({cp['two_rps']} runs/s on 2 cores: "
             f"{per_core:.2f} runs/s a core) and assuming runs scale with cores (they share "
             "nothing: each is its own twin process and folder; the Dask scheduler's "
             "overhead per task is milliseconds against a run's ~second):", "",
             "| machines | cores each | time |", "|---:|---:|---:|"]
    for n, cores in ((1, 2), (10, 2), (1, 32), (10, 32), (100, 32)):
        hours = 1_000_000 / (per_core * n * cores) / 3600
        when = f"{hours:,.1f} h" if hours >= 1 else f"{hours * 60:.0f} min"
        lines.append(f"| {n} | {cores} | {when} |")
    lines.append("")
    return lines
