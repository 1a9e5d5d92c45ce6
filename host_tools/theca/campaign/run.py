"""Running a campaign: each run on the twin in its own temporary folder (run_one, the unit of
work a local process or a Dask worker does), the rows collected as they come (DIR/runs.jsonl,
so that --resume skips what is done), then DIR/runs.parquet, DIR/summary.md and a scenario
file for each failing run (DIR/failures/RUN.toml) that `theca simulate` reproduces."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from theca.campaign.judge import INVARIANTS, judge
from theca.campaign.spec import Campaign, runs


def run_one(job: dict) -> dict:
    """Run one campaign run and judge it: its row (the id, the parameters, each
    invariant's verdict, the figures). Never raises for what the run did: a run that
    could not even start is a failed `no_crash`."""
    from theca.inputs.druglib import load_druglib
    from theca.inputs.scenario import load_scenario
    from theca.twin.simulate import simulate
    from theca.twin.truthfile import truth_document

    t0 = time.perf_counter()
    row: dict = {"run": job["id"], **job["params"]}
    try:
        mpy = _firmware(job)
        sc = load_scenario(job["scenario"])
        with tempfile.TemporaryDirectory(prefix="theca-run-") as tmp:
            d = Path(tmp)
            stream = d / "truth.bin"
            res = simulate(sc, d / "run.tlog", tips=True, workdir=d, timeout=job["timeout"],
                           mpy_dir=mpy, extra={"truth_stream": str(stream)})
            lib = load_druglib()
            doc = truth_document(res["truth"], res["tips"], lib, res.get("fills")) \
                if res["truth"] else {}
            v = judge(sc, res, d / "run.tlog", stream.read_bytes() if stream.exists() else b"",
                      lib, doc)
    except Exception as e:  # noqa: BLE001 (a run that broke is a verdict, not a stop)
        v = {k: "fail" for k in INVARIANTS}
        v["why"] = f"no_crash: {type(e).__name__}: {e}"[:300]
    row.update(v)
    row["ok"] = all(row.get(k) == "pass" for k in INVARIANTS)
    row["seconds"] = round(time.perf_counter() - t0, 3)
    row["sim_days"] = round((job["scenario_days"]), 3)
    return row


def _firmware(job: dict) -> Path:
    # the compiled firmware the run uses (the job's, if this machine has it; a worker
    # elsewhere compiles its own), with the campaign's overlay in place of its modules
    from theca.board.build import compile_firmware, with_overlay

    if job.get("firmware"):
        return with_overlay(Path(job["firmware"]))
    mpy = job.get("mpy_dir")
    if mpy and Path(mpy).is_dir():
        return Path(mpy)
    return compile_firmware("unix")


def jobs(c: Campaign, firmware: str | None = None) -> list[dict]:
    from theca.inputs import units as u

    days = c.base.get("days", 1)
    d = u.parse_duration(days, "days") / 86400 if isinstance(days, str) else float(days)
    from theca.board.build import compile_firmware, with_overlay

    mpy = str(with_overlay(Path(firmware)) if firmware else compile_firmware("unix"))
    return [dict(r, firmware=firmware, mpy_dir=mpy, timeout=c.timeout_s, scenario_days=d)
            for r in runs(c)]


def local(jobs_: list[dict], workers: int) -> Iterator[dict]:
    """The rows of `jobs_` as they finish, on `workers` local processes."""
    if workers <= 1:
        for j in jobs_:
            yield run_one(j)
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as ex:
        futs = [ex.submit(run_one, j) for j in jobs_]
        for f in as_completed(futs):
            yield f.result()


def dask(jobs_: list[dict], address: str) -> Iterator[dict]:
    """The rows of `jobs_` as they finish, on the Dask distributed cluster at `address`."""
    try:
        from dask.distributed import Client, as_completed
    except ImportError:
        from theca.errors import BadInput

        raise BadInput("--scheduler: Dask is not installed (pip install 'theca[cluster]', "
                       "or dask[distributed])") from None
    with Client(address, timeout="30s") as client:
        futs = client.map(run_one, jobs_, pure=False)
        for f in as_completed(futs):
            yield f.result()


def campaign(c: Campaign, out: Path, rows_of: Callable[[list[dict]], Iterable[dict]],
             resume: bool = False, firmware: str | None = None,
             progress: Callable[[int, int], None] | None = None) -> list[dict]:
    """Run every run of `c` not done yet (with `resume`) through `rows_of`, writing each
    row to out/runs.jsonl as it comes; then the parquet table, the summary and the failing
    runs' scenarios. Returns every row, in run order."""
    out.mkdir(parents=True, exist_ok=True)
    log = out / "runs.jsonl"
    done: dict[str, dict] = {}
    if resume and log.exists():
        for line in log.read_text().splitlines():
            try:
                r = json.loads(line)
            except ValueError:
                continue  # (a line cut by a kill: that run is run again)
            done[r["run"]] = r
    elif log.exists():
        log.unlink()
    every = jobs(c, firmware)
    todo = [j for j in every if j["id"] not in done]
    by_id = {j["id"]: j for j in every}
    n_all = len(by_id)
    if progress:
        progress(len(done), n_all)
    with log.open("a") as f:
        for row in rows_of(todo):
            done[row["run"]] = row
            f.write(json.dumps(row, default=str) + "\n")
            f.flush()
            if progress:
                progress(len(done), n_all)
    rows = [done[k] for k in sorted(done)]
    write_outputs(c, out, rows, by_id)
    return rows


def write_outputs(c: Campaign, out: Path, rows: list[dict], by_id: dict[str, dict]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols = sorted({k for r in rows for k in r}, key=_column_order)
    table = pa.Table.from_pylist([{k: r.get(k) for k in cols} for r in rows])
    pq.write_table(table, out / ".runs.parquet.part")
    os.replace(out / ".runs.parquet.part", out / "runs.parquet")
    fails = out / "failures"
    if fails.exists():
        for p in fails.glob("*.toml"):
            p.unlink()
    bad = [r for r in rows if not r.get("ok")]
    if bad:
        fails.mkdir(exist_ok=True)
        for r in bad:
            _failure_file(fails / f"{r['run']}.toml", r, by_id[r["run"]], c)
    (out / "summary.md").write_text(summary(c, rows))


def _column_order(k: str) -> tuple:
    head = ["run", "seed"]
    if k in head:
        return (0, head.index(k), k)
    if k.startswith("s") and "_" in k and k[1].isdigit():
        return (1, 0, k)
    if k in INVARIANTS or k == "ok":
        return (2, (*INVARIANTS, "ok").index(k), k)
    return (3, 0, k)


def _failure_file(path: Path, row: dict, job: dict, c: Campaign) -> None:
    import tomli_w

    head = (f"# {row['run']} of the campaign {c.source}: failed "
            f"{', '.join(k for k in INVARIANTS if row.get(k) != 'pass')}\n"
            f"# {row.get('why', '')}\n"
            f"# reproduce: theca simulate {path.name} -o run.tlog --truth truth.json"
            + (f" --firmware {job['firmware']}" if job.get("firmware") else "") + "\n")
    path.write_text(head + tomli_w.dumps(_plain(job["scenario"])))


def _plain(x):
    # the scenario table as TOML writes it (tuples as lists)
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


def summary(c: Campaign, rows: list[dict]) -> str:
    """DIR/summary.md: the counts per invariant, the worst cases, the failing runs."""
    n = len(rows)
    lines = [f"# Campaign {c.source}", "",
             f"{n} runs ({c.seeds} seed(s) x {n // max(c.seeds, 1)} points), "
             f"{sum(1 for r in rows if r.get('ok'))} held every invariant.", "",
             "| invariant | pass | fail |", "|---|---:|---:|"]
    for k in INVARIANTS:
        p = sum(1 for r in rows if r.get(k) == "pass")
        lines.append(f"| {k} | {p} | {n - p} |")
    lines += ["", "## Worst cases", ""]
    for fig, what in (("worst_24h_pct", "most of a daily limit at the tip in 24 h, %"),
                      ("worst_1h_pct", "most of an hourly limit at the tip in 1 h, %"),
                      ("longest_unalarmed_stop_s", "longest stop of delivery with no alarm, s"),
                      ("reservoir_over_truth_nl", "most the pump believed above the truth, nL")):
        vals = [r for r in rows if isinstance(r.get(fig), (int, float))]
        if vals:
            top = max(vals, key=lambda r: r[fig])
            lines.append(f"- {what}: {top[fig]} ({top['run']})")
    bad = [r for r in rows if not r.get("ok")]
    if bad:
        lines += ["", "## Failing runs (each reproduced by failures/RUN.toml)", ""]
        for r in bad[:50]:
            lines.append(f"- {r['run']}: {r.get('why', '')}")
        if len(bad) > 50:
            lines.append(f"- ... and {len(bad) - 50} more (runs.parquet has them all)")
    secs = sum(r.get("seconds", 0) for r in rows)
    lines += ["", f"Twin time: {secs:.1f} s of run time in all, "
                  f"{secs / max(n, 1):.2f} s a run.", ""]
    return "\n".join(lines)


def bar(total_hint: int = 0):
    """A progress callback: a bar with runs/s and an ETA on a terminal, else nothing."""
    if not sys.stderr.isatty():
        return None, lambda: None
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    p = Progress(TextColumn("campaign"), BarColumn(), MofNCompleteColumn(),
                 TextColumn("{task.fields[rate]} runs/s"), TimeRemainingColumn(),
                 transient=False)
    task = p.add_task("runs", total=total_hint, rate="-")
    t0 = time.monotonic()
    first: list[int] = []
    p.start()

    def update(done: int, total: int) -> None:
        if not first:
            first.append(done)
        dt = time.monotonic() - t0
        rate = (done - first[0]) / dt if dt > 0 else 0
        p.update(task, completed=done, total=total, rate=f"{rate:.1f}")

    return update, p.stop
