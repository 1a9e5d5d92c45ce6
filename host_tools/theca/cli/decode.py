"""`theca decode`: a telemetry log as a table, csv, jsonl or parquet, or its summary."""

from __future__ import annotations

import sys

from theca.errors import BadInput
from theca.log.frames import KINDS, Selection
from theca.log.records import EXIT_BAD_INPUT, EXIT_OK, EXIT_PROBLEMS, to_json
from theca.log.stats import Summary, format_summary
from theca.log.tlog import Tlog, TlogError
from theca.log.writers import DEFAULT, WRITERS
from theca.log.writers.base import Writer, batches
from theca.outputs import atomic_open, atomic_path, output_file


def add_parser(subparsers) -> None:
    """Register `decode` on an argparse subparsers object."""
    p = subparsers.add_parser(
        "decode",
        help="decode a telemetry log (.tlog)",
        description="Decode a Theca telemetry log: one record per frame, or a summary.",
        epilog="Exit status: 0 ok; 1 with --strict when the log has problems "
        "(CRC errors, garbage, sequence gaps, truncated tail, unknown types, "
        "schema mismatch); 2 the file is missing or not a .tlog, or a bad option value.",
    )
    p.add_argument("tlog", help="the .tlog file")
    p.add_argument(
        "--format",
        choices=list(WRITERS),
        default=DEFAULT,
        help="; ".join(w.help for w in WRITERS.values()),
    )
    p.add_argument("-o", "--output", help="write to this file instead of standard output")
    p.add_argument(
        "--type",
        metavar="KINDS",
        help="only these kinds, comma-separated: " + ",".join(KINDS),
    )
    p.add_argument("--from", dest="from_", metavar="ISO",
                   help="only records at or after this UTC time (e.g. 2026-01-03T10:00:00Z)")
    p.add_argument("--to", metavar="ISO", help="only records before this UTC time")
    p.add_argument(
        "--summary",
        action="store_true",
        help="print only a summary: frames, kinds, CRC errors, gaps, truncation, unknown types",
    )
    p.add_argument(
        "--strict", action="store_true", help="exit 1 if the log has any problem the summary lists"
    )
    p.set_defaults(func=run)



def run(args) -> int:
    """Run `theca decode`; returns the exit status."""
    fmt = getattr(args, "format", DEFAULT) or DEFAULT
    writer = WRITERS[fmt]
    sel = Selection.from_args(getattr(args, "type", None), getattr(args, "from_", None),
                              getattr(args, "to", None))
    output = getattr(args, "output", None)
    if writer.to_file and not args.summary and not output:
        raise BadInput(f"--format {fmt} writes a file: give -o FILE.{fmt}")
    if output:
        output = output_file(output, (args.tlog,))
    try:
        t = Tlog(args.tlog)
    except TlogError as e:
        print(f"theca decode: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    with t:
        summary = Summary(t)
        if args.summary:
            res = _summary_only(t, summary, sel, fmt, output)
        else:
            res = _write(t, writer, summary, sel, output)
            if res["problems"]:
                print(
                    f"theca decode: {args.tlog}: " + "; ".join(res["problems"]), file=sys.stderr
                )
        del summary
    if args.strict and res["problems"]:
        if args.summary:
            print(f"theca decode: {args.tlog}: problems found (--strict)", file=sys.stderr)
        return EXIT_PROBLEMS
    return EXIT_OK


def _summary_only(t: Tlog, summary: Summary, sel: Selection, fmt: str, output) -> dict:
    for _ in batches(t, summary, sel):
        pass
    res = summary.result()
    if sel.active:
        res["filter"] = sel.describe()
    text = to_json(res) + "\n" if fmt == "jsonl" else format_summary(res)
    if output is None:
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        with atomic_open(output, newline="") as f:
            f.write(text)
    return res


def _write(t: Tlog, writer: Writer, summary: Summary, sel: Selection, output) -> dict:
    if writer.to_file:
        with atomic_path(output) as tmp:
            rows = writer.write(t, tmp, summary, sel)
        print(f"theca decode: {rows} rows -> {output}", file=sys.stderr)
        return summary.result()
    if output is None:
        writer.write(t, sys.stdout, summary, sel)
    else:
        with atomic_open(output, newline="") as f:
            writer.write(t, f, summary, sel)
    return summary.result()
