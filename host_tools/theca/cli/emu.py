"""`theca emu --board rp2_pico --pty PATH ...`: an emulated Pico on a pseudo-terminal."""

from __future__ import annotations

import json
import signal
import sys
import threading
from pathlib import Path

from theca.errors import CHECK_FAILED, BadInput


def add_parser(sub) -> None:
    p = sub.add_parser("emu", help="an emulated Raspberry Pi Pico (official MicroPython, rp2040js) "
                                   "on a pseudo-terminal")
    p.add_argument("action", nargs="?", choices=["fetch-firmware"],
                   help="fetch-firmware: download the official MicroPython for the Pico and "
                        "the RP2040 boot ROM into the user cache, checked against the "
                        "SHA-256 values the repository lists (then nothing else is done)")
    p.add_argument("--board", default="rp2_pico", choices=["rp2_pico"],
                   help="the board emulated: a Raspberry Pi Pico (RP2040), the only one so far")
    p.add_argument("--pty", metavar="PATH",
                   help="where to make the board's USB serial port (a symlink to the pty; "
                        "required to run the board)")
    p.add_argument("--flash-image", metavar="FILE", type=Path,
                   help="the board's 2 MiB flash, kept across runs (new: a bare board at its REPL)")
    p.add_argument("--firmware", metavar="FILE.uf2", type=Path,
                   help="MicroPython for the Pico (default: $THECA_RP2_FIRMWARE, ../shared/rp2, "
                        "then the user cache that `theca emu fetch-firmware` fills); a file "
                        "given here whose hash is not listed is used as you ask, with a "
                        "warning")
    p.add_argument("--no-encoder", action="store_true",
                   help="the mechanism's feedback gives no edges: every stroke stalls")
    p.add_argument("--occlusion", action="store_true", help="the occlusion switch is closed")
    p.add_argument("--vbat-mv", type=int, default=4000, metavar="N",
                   help="the cell's voltage on the battery ADC, mV (default 4000)")
    p.add_argument("--truth", metavar="FILE", type=Path,
                   help="write the physical truth (strokes, tones, resets) here as JSON lines")
    p.set_defaults(func=run)


def fetch(args) -> int:
    """`theca emu fetch-firmware`: the firmware and the boot ROM into the user cache."""
    from theca.emu import cache_rp2, listed_sums
    from theca.emu.fetch import FetchError, fetch_all

    try:
        got = fetch_all(cache_rp2(), listed_sums())
    except FetchError as e:
        print(f"theca emu fetch-firmware: {e}", file=sys.stderr)
        return CHECK_FAILED
    print(f"the emulated Pico's firmware is in {got[0].parent}: `theca emu` and the "
          "emulator tests take it from there")
    return 0


def run(args) -> int:
    from theca.emu import Emulator, EmulatorError

    if args.action == "fetch-firmware":
        return fetch(args)
    if not args.pty:
        raise BadInput("--pty: required to run the emulated board (e.g. --pty /tmp/pico)")

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
            print(f"chip reset: {ev.get('why', ev['kind'])}, {span(ev['t'] / 1e9)} into the run",
                  file=sys.stderr)
        elif ev["ev"] == "usb" and not ready.is_set():
            ready.set()
            print(f"ready: the board's USB serial is up on {args.pty} (e.g. theca --device "
                  f"{args.pty} flash --board rp2_pico)", flush=True)

    ready = threading.Event()
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
        print(f"emulated {span(sim)} in {span(wall)} ({sim / max(wall, 1e-9):.1f}x real time), "
              f"{stats['strokes']} strokes, {stats['boots']} boot(s)")
    return 0


def span(s: float) -> str:
    """A duration for people: "40.2 s", "12 min 5 s", "2 h 25 min", "3 d 4 h"."""
    if s < 60:
        return f"{s:.1f} s"
    m = int(s // 60)
    if m < 60:
        return f"{m} min {int(s % 60)} s"
    h = m // 60
    if h < 48:
        return f"{h} h {m % 60} min"
    return f"{h // 24} d {h % 24} h"
