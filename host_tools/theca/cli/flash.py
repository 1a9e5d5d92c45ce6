"""`theca flash`: put the firmware on a board."""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

from theca.board import build
from theca.board.flash import (
    Flasher,
)
from theca.errors import DEVICE_REFUSED, LINK_FAILURE, OK, BadInput
from theca.link.client import LinkFailure, Refused
from theca.progress import Bar


def run_flash(args) -> int:
    """`theca flash`: compile, copy, provision, start, check."""
    if not args.device:
        raise BadInput("no device: give --device DEV (or PORT=... to make flash) or set THECA_DEVICE")
    if args.board not in build.ARCH:
        raise BadInput(f"--board: unknown board {args.board!r} (known: {', '.join(build.ARCH)})")
    t0 = time.monotonic()
    f = Flasher(args.device, args.board, args.new_keys)
    work = Path(tempfile.mkdtemp(prefix="theca-flash-"))
    try:
        stopped = f.take_repl()
        prov = f.provision()
        f.stage(prov, work)
        steps = len(f.files) + 2
        with Bar(steps, f"flash {args.board} {f.serial}", "steps") as bar:
            bar.update(1)
            f.copy(bar, 1)
            f.start()
            info = f.verify()
            bar.update(steps)
    except LinkFailure as e:
        print(f"theca flash: link failure: {e}", file=sys.stderr)
        return LINK_FAILURE
    except Refused as e:
        print(f"theca flash: {e}", file=sys.stderr)
        return DEVICE_REFUSED
    finally:
        shutil.rmtree(work, ignore_errors=True)
    secs = time.monotonic() - t0
    keys = "new keys" if f.fresh else "its keys kept"
    print(f"flashed {f.serial} ({args.board}, {len(f.files)} files, {f.bytes / 1024:.1f} KiB, "
          f"{keys}; {stopped}) in {secs:.1f} s: firmware {info['fw_major']}.{info['fw_minor']}."
          f"{info['fw_patch']} answers on {args.device}")
    if f.clock_was is not None:
        from theca.inputs.timezone import now_device
        from theca.log.devtime import iso

        print(f"its clock set from this host's to {iso(now_device())} UTC "
              f"(it read {iso(f.clock_was)})")
    return OK



def add_parser(sub) -> None:
    p = sub.add_parser("flash", help="flash and provision a board (or the unix port's REPL)")
    p.add_argument("--board", required=True, choices=sorted(build.ARCH),
                   help="which board's modules to install")
    p.add_argument("--new-keys", action="store_true",
                   help="provision a new serial and new keys even if this host knows the board")
    p.set_defaults(func=run_flash)
