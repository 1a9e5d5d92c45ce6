"""`theca emu --board rp2_pico --pty PATH ...`: an emulated Pico on a pseudo-terminal."""

from __future__ import annotations

import json
import signal
import sys
import threading
from pathlib import Path

from theca.errors import BadInput


def add_parser(sub) -> None:
    p = sub.add_parser("emu", help="an emulated Raspberry Pi Pico (official MicroPython, rp2040js) "
                                   "on a pseudo-terminal")
    p.add_argument("--board", default="rp2_pico", choices=["rp2_pico"])
    p.add_argument("--pty", required=True, metavar="PATH",
                   help="where to make the board's USB serial port (a symlink to the pty)")
    p.add_argument("--flash-image", metavar="FILE", type=Path,
                   help="the board's 2 MiB flash, kept across runs (new: a bare board at its REPL)")
    p.add_argument("--firmware", metavar="FILE.uf2", type=Path,
                   help="MicroPython for the Pico (default: $THECA_RP2_FIRMWARE or ../shared/rp2); "
                        "checked against the SHA256SUMS beside it")
    p.add_argument("--no-encoder", action="store_true",
                   help="the mechanism's feedback gives no edges: every stroke stalls")
    p.add_argument("--occlusion", action="store_true", help="the occlusion switch is closed")
    p.add_argument("--vbat-mv", type=int, default=4000, metavar="N",
                   help="the cell's voltage on the battery ADC, mV (default 4000)")
    p.add_argument("--truth", metavar="FILE", type=Path,
                   help="write the physical truth (strokes, tones, resets) here as JSON lines")
    p.set_defaults(func=run)


def run(args) -> int:
    from theca.emu import Emulator, EmulatorError

    out = None
    if args.truth is not None:
        try:
            out = args.truth.open("w")
        except OSError as e:
            raise BadInput(f"--truth {args.truth}: {e.strerror}") from None

    def on_event(ev: dict) -> None:
        if out is not None:
            out.write(json.dumps(ev) + "\n")
            out.flush()
        if ev["ev"] == "reset":
            print(f"chip reset ({ev['kind']}) at {ev['t'] / 1e9:.1f} s", file=sys.stderr)

    emu = Emulator(Path(args.pty), flash_image=args.flash_image, firmware=args.firmware,
                   encoder=not args.no_encoder, occlusion=args.occlusion, vbat_mv=args.vbat_mv,
                   on_event=on_event)
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    try:
        emu.start()
    except EmulatorError as e:
        print(f"theca emu: {e}", file=sys.stderr)
        return 1
    image = args.flash_image or "none (a bare board each run)"
    print(f"emulated Pico on {args.pty}: MicroPython {emu.uf2.name}, flash image {image}; "
          "Ctrl-C stops it", flush=True)
    while not done.wait(0.5):
        if not emu.alive:
            print("theca emu: the emulator stopped by itself", file=sys.stderr)
            break
    stats = emu.stop()
    if out is not None:
        out.close()
    if stats:
        sim = stats["t"] / 1e9
        wall = stats["wall_ns"] / 1e9
        print(f"emulated {sim:.1f} s in {wall:.1f} s ({sim / wall:.1f}x real time), "
              f"{stats['strokes']} strokes, {stats['boots']} boot(s)")
    return 0
