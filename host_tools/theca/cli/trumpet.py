"""`theca trumpet`: the trumpet curve of a log."""

from __future__ import annotations

import json
import sys

from theca.analysis.trumpet import (
    compute,
    default_start,
    plot,
    text,
)
from theca.errors import BAD_INPUT, OK, BadInput
from theca.log.data import read_log
from theca.log.devtime import iso
from theca.log.frames import parse_time
from theca.log.tlog import TlogError
from theca.outputs import output_file


def add_parser(sub) -> None:
    """Register `trumpet` on an argparse subparsers object."""
    p = sub.add_parser(
        "trumpet",
        help="IEC 60601-2-24 trumpet curve of one hour of a telemetry log",
        description="The IEC 60601-2-24 trumpet curve for the hour from --start, from 30 s "
        "samples of the delivered volume: Ep(max) and Ep(min) for windows of 2, 5, 11, 19 "
        "and 31 min, and the mean error over the hour.",
        epilog="Exit status: 0 ok; 2 bad input: not a .tlog, no 30 s samples, or an hour whose "
        "set rate is not steady (the message names what changed).",
    )
    p.add_argument("tlog", help="the .tlog file")
    p.add_argument("--start", metavar="ISO",
                   help="first sample of the hour (UTC), e.g. 2026-01-02T03:00:00Z; default: the "
                   "first steady hour beginning an hour or more after therapy start")
    p.add_argument("--json", action="store_true",
                   help='print only {"2": [max, min], "5": [...], ...} (percent)')
    p.add_argument("--png", metavar="FILE", help="also draw the curve to this PNG file")
    p.set_defaults(func=run)



def run(args) -> int:
    """Run `theca trumpet`; returns the exit status."""
    start = parse_time(args.start, "--start") if args.start else None
    if args.png:
        output_file(args.png, (args.tlog,), "--png")  # (its folder made, as every output's)
    try:
        log = read_log(args.tlog)
    except TlogError as e:
        print(f"theca trumpet: {e}", file=sys.stderr)
        return BAD_INPUT
    if start is None:
        start = default_start(log)
        if start is None:
            raise BadInput("the log has no hour of steady delivery with 30 s samples; "
                           "give --start (the message then says what is missing)")
        print(f"theca trumpet: --start {iso(start)} (first steady hour)", file=sys.stderr)
    tr = compute(log, start)
    if args.png:
        plot(tr, args.png)
    if args.json:
        sys.stdout.write(json.dumps(tr.as_json()) + "\n")
    else:
        sys.stdout.write(text(tr, args.tlog))
        if args.png:
            sys.stdout.write(f"picture: {args.png}\n")
    return OK
