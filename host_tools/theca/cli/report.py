"""`theca report`: the clinician report of a log."""

from __future__ import annotations

import sys
import time

from theca.analysis import trumpet
from theca.analysis.report import (
    drug_days,
    make_report,
)
from theca.errors import BAD_INPUT, OK, BadInput
from theca.log.data import read_log
from theca.log.frames import parse_time
from theca.log.tlog import TlogError
from theca.outputs import output_folder


def add_parser(sub) -> None:
    """Register `report` on an argparse subparsers object."""
    p = sub.add_parser(
        "report",
        help="an HTML report with pictures of a telemetry log",
        description="Write DIR/index.html and PNG pictures: reservoir over time, drug "
        "delivered per day against the prescription, alarms and events on a timeline, the "
        "trumpet curve; the numbers under each picture.",
        epilog="Exit status: 0 ok; 2 bad input (not a .tlog, DIR is a file, a bad time).",
    )
    p.add_argument("tlog", help="the .tlog file")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="folder to write (created)")
    p.add_argument("--trumpet-start", metavar="ISO",
                   help="first sample of the trumpet curve's hour (default: the first steady "
                   "hour an hour or more after therapy start)")
    p.set_defaults(func=run)



def run(args) -> int:
    """Run `theca report`; returns the exit status."""
    start = parse_time(args.trumpet_start, "--trumpet-start") if args.trumpet_start else None
    out = output_folder(args.output, make=False)  # made once the log is read
    t0 = time.perf_counter()
    try:
        log = read_log(args.tlog)
    except TlogError as e:
        print(f"theca report: {e}", file=sys.stderr)
        return BAD_INPUT
    if start is not None:
        try:
            trumpet.compute(log, start)  # a chosen hour that does not work is bad input
        except BadInput as e:
            raise BadInput([f"--trumpet-start: {m}" for m in e.messages]) from None
    index, rep = make_report(args.tlog, out, start, log=log)
    n = 3 + (rep.trumpet is not None)
    print(f"report: {index} ({n} pictures, {len(drug_days(rep.days))} days) in "
          f"{time.perf_counter() - t0:.1f} s")
    return OK
