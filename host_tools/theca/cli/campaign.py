"""`theca campaign CAMPAIGN.toml -o DIR [--workers N] [--scheduler ADDRESS] [--resume]`."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from theca.errors import CHECK_FAILED, OK, BadInput


def add_parser(sub) -> None:
    p = sub.add_parser("campaign", help="many runs of the twin (a fault or an event at every "
                                        "moment), each judged from the physical truth")
    p.add_argument("campaign", help="the campaign file (TOML): a base scenario and sweeps")
    p.add_argument("-o", "--output", required=True, metavar="DIR",
                   help="folder for runs.parquet, summary.md and failures/ (made if missing)")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="local processes (default: every core)")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="run on this Dask distributed cluster instead, e.g. tcp://HOST:8786 "
                        "(its workers need theca installed)")
    p.add_argument("--resume", action="store_true",
                   help="skip the runs DIR/runs.jsonl already holds")
    p.add_argument("--firmware", metavar="DIR", type=Path,
                   help="firmware modules in DIR take the place of the project's own (a "
                        "modified build to try); failures/RUN.toml then names it")
    p.set_defaults(func=run)


def run(args) -> int:
    from theca.campaign import run as R
    from theca.campaign.spec import load_campaign, runs
    from theca.outputs import output_folder

    c = load_campaign(args.campaign)
    out = output_folder(args.output)
    if args.workers is not None and args.workers < 1:
        raise BadInput(f"--workers: {args.workers}: at least 1")
    if args.firmware is not None and not args.firmware.is_dir():
        raise BadInput(f"--firmware: {args.firmware} is not a folder")
    fw = str(args.firmware.resolve()) if args.firmware else None
    first = runs(c)[:1]
    if first:  # the first run's scenario, checked here: a bad base fails at once (exit 2)
        from theca.inputs.scenario import load_scenario

        load_scenario(first[0]["scenario"])
    workers = args.workers or os.cpu_count() or 1
    if args.scheduler:
        def rows_of(jobs):
            return R.dask(jobs, args.scheduler)
        where = f"the Dask cluster at {args.scheduler}"
    else:
        def rows_of(jobs):
            return R.local(jobs, workers)
        where = f"{workers} local process(es)"
    update, stop = R.bar(c.n_runs())
    t0 = time.monotonic()
    try:
        rows = R.campaign(c, out, rows_of, args.resume, fw, update)
    finally:
        stop()
    secs = time.monotonic() - t0
    bad = [r for r in rows if not r.get("ok")]
    print(f"campaign {args.campaign}: {len(rows)} runs on {where} in {secs:.1f} s "
          f"({len(rows) / max(secs, 1e-9):.2f} runs/s); {len(rows) - len(bad)} held every "
          f"invariant, {len(bad)} did not -> {out}/summary.md")
    if bad:
        for r in bad[:5]:
            print(f"  {r['run']}: {r.get('why', '')}", file=sys.stderr)
        print(f"theca campaign: {len(bad)} run(s) failed an invariant: each is "
              f"{out}/failures/RUN.toml (theca simulate reproduces it)", file=sys.stderr)
        return CHECK_FAILED
    return OK
