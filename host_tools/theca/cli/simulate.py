"""`theca simulate`: a scenario on the twin, a .tlog and a summary."""

from __future__ import annotations

import sys
from pathlib import Path

from theca import progress as progress_mod
from theca.board.build import compile_firmware
from theca.errors import CHECK_FAILED, DEVICE_REFUSED, OK, BadInput
from theca.inputs.scenario import load_scenario
from theca.outputs import atomic_path, output_file
from theca.twin.run import heap_ok
from theca.twin.simulate import (
    TWIN_FAILED,
    simulate,
)


def add_parser(sub) -> None:
    p = sub.add_parser("simulate", help="run a scenario on the twin at full virtual speed")
    p.add_argument("scenario", help="scenario TOML file")
    p.add_argument("-o", "--output", required=True, help="telemetry log to write (.tlog)")
    p.add_argument("--heapsize", help="MicroPython heap, as for `micropython -X heapsize=` (e.g. 64k)")
    p.add_argument("--override-soft-limit", action="store_true",
                   help="accept prescriptions above the drug library's soft limits")
    p.add_argument("--quiet", action="store_true", help="print only the one-line result")
    p.add_argument("--source", action="store_true",
                   help="run the firmware from .py source instead of compiled .mpy")
    p.add_argument("--firmware", metavar="DIR", type=Path,
                   help="firmware modules in DIR (.py) take the place of the project's own: a "
                        "modified build to try (as `theca campaign --firmware`)")
    p.add_argument("--invariants", action="store_true",
                   help="judge the run by the invariants of `theca campaign` (from the physical "
                        "truth) and exit 1 if one fails")
    p.add_argument("--flash-image", type=Path,
                   help="keep the twin's flash (a littlefs2 image) in this file")
    p.add_argument("--truth", metavar="FILE.json", type=Path,
                   help="write the physical truth here: what the mechanism really pumped and "
                        "holds, and per drug what reached the catheter tip (total, most in any "
                        "24 h and 1 h of true time)")
    p.set_defaults(func=run)



def _write_truth(path: Path, res: dict) -> None:
    # the physical truth, whole or not at all (a failed run's too: it is what happened)
    import json

    from theca.inputs.druglib import load_druglib
    from theca.twin.truthfile import truth_document

    doc = truth_document(res["truth"], res["tips"], load_druglib(), res.get("fills"))
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(doc, indent=2) + "\n")


def _outputs(args) -> tuple[Path, Path | None]:
    # the telemetry log and the truth file, checked before anything runs (BadInput)
    if args.heapsize and not heap_ok(args.heapsize):
        raise BadInput(f"--heapsize: {args.heapsize!r} is not a size like 64k, 128k or 1m")
    if args.flash_image is not None and args.flash_image.exists():
        # a scenario starts a new pump at its start; an image holds a pump that already
        # lived (its clock, reservoir and log further on): the run would mean nothing
        raise BadInput(f"--flash-image: {args.flash_image} exists (a pump from an earlier "
                       "run); a scenario starts a new pump: give a new file name or delete it")
    out = output_file(args.output, (args.scenario,))
    truth_out = None
    if args.truth is not None:
        truth_out = output_file(args.truth, (args.scenario, out), what="--truth")
        if truth_out.resolve() == out.resolve():
            raise BadInput(f"--truth: {truth_out} is the telemetry log (-o): name another file")
    return out, truth_out


def _judged(args, sc, out: Path, truth_out: Path | None, mpy) -> int:
    # the run judged as a campaign judges it (a failing run's file reproduced)
    import tempfile

    from theca.campaign.judge import INVARIANTS, judge
    from theca.inputs.druglib import load_druglib
    from theca.twin.truthfile import truth_document

    with tempfile.TemporaryDirectory(prefix="theca-sim-") as tmp, atomic_path(out) as tlog:
        stream = Path(tmp) / "truth.bin"
        res = simulate(sc, tlog, args.heapsize, mpy_dir=mpy, flash_image=args.flash_image,
                       tips=True, extra={"truth_stream": str(stream)})
        lib = load_druglib()
        doc = truth_document(res["truth"], res["tips"], lib, res.get("fills")) if res["truth"] else {}
        v = judge(sc, res, tlog, stream.read_bytes() if stream.exists() else b"", lib, doc)
    if truth_out is not None and res["truth"] is not None:
        _write_truth(truth_out, res)
    for k in INVARIANTS:
        print(f"{k:16} {v[k]}")
    if v["why"]:
        print(f"theca simulate: {v['why']}", file=sys.stderr)
    return OK if all(v[k] == "pass" for k in INVARIANTS) else CHECK_FAILED


def run(args) -> int:
    sc = load_scenario(args.scenario, override_soft=args.override_soft_limit)
    out, truth_out = _outputs(args)
    mpy = None if args.source else compile_firmware("unix")
    if args.firmware is not None:
        from theca.board.build import with_overlay

        if not args.firmware.is_dir():
            raise BadInput(f"--firmware: {args.firmware} is not a folder")
        mpy = with_overlay(args.firmware)
    if args.invariants:
        return _judged(args, sc, out, truth_out, mpy)
    days = sc.duration_s / 86400
    # the log appears whole when the run ends (one that failed too: it is its record)
    with progress_mod.Bar(days, "simulating", "days") as bar, atomic_path(out) as tmp:
        res = simulate(sc, tmp, args.heapsize, mpy_dir=mpy, flash_image=args.flash_image,
                       progress=lambda s: bar.update(s / 86400), tips=truth_out is not None)
    if truth_out is not None and res["truth"] is not None:
        _write_truth(truth_out, res)
    if res["returncode"] != 0:
        if "MemoryError" in res["stderr"] + res["stdout"]:
            # no traceback: the cause is the heap the user chose, and it has one fix
            heap = f"--heapsize {args.heapsize}" if args.heapsize else "the default heap"
            print(f"theca simulate: the firmware ran out of memory with {heap} (status "
                  f"{res['returncode']}): raise --heapsize (the twin needs about 160k for "
                  "30 days; `make bench` measures it)", file=sys.stderr)
            return TWIN_FAILED
        sys.stderr.write(res["stdout"][-4000:])
        sys.stderr.write(res["stderr"][-4000:])
        print(f"theca simulate: the firmware stopped with status {res['returncode']}",
              file=sys.stderr)
        return TWIN_FAILED
    from theca.analysis.summary import print_summary, summarize

    summ = summarize(out)
    if not args.quiet:
        print_summary(summ, out, seconds=res["seconds"], truth=res["truth"])
    from theca.twin.outcomes import describe, outcomes

    oc = outcomes(sc, out)
    failed = [o for o in oc if o.fails]
    if oc and not args.quiet:
        print("Scenario commands the pump refused or did not answer:")
        for o in oc:
            print("  " + describe(o))
    speed = sc.duration_s / max(res["seconds"], 1e-9)
    print(f"simulated {days:g} days in {res['seconds']:.2f} s ({speed:,.0f}x real time): "
          f"{summ.frames} frames -> {out}")
    if failed:
        for o in failed:
            print(f"theca simulate: refused: {describe(o)}", file=sys.stderr)
        print(f"theca simulate: {len(failed)} scenario command(s) not carried out (give the "
              'event expect = "refused" if that is the point)', file=sys.stderr)
        return DEVICE_REFUSED
    return OK


