"""`theca twin`: the firmware live on a pseudo-terminal."""

from __future__ import annotations

from theca.twin.live import (
    run_live,
)


def add_parser(sub) -> None:
    p = sub.add_parser("twin", help="a live twin on a pseudo-terminal, as a USB-serial board")
    p.add_argument("--pty", required=True, metavar="PATH",
                   help="where to make the link (a symlink to the pty); host tools use it as --device")
    p.add_argument("--speed", type=int, default=1,
                   help="device seconds per real second (default 1: real time)")
    p.add_argument("--heapsize", help="MicroPython heap, as for `micropython -X heapsize=` (e.g. 128k)")
    p.add_argument("--flash-image", metavar="FILE",
                   help="the twin's flash (littlefs2 image): state survives restarts; made if new")
    p.add_argument("--reservoir-ml", type=float, default=20.0, metavar="X",
                   help="fill of a new pump, mL (default 20)")
    p.add_argument("--source", action="store_true",
                   help="run the firmware from .py source instead of compiled .mpy")
    p.set_defaults(func=run_live)
