"""Compile the firmware and a board's modules to .mpy with mpy-cross.

Compiled code needs far less RAM than compiling source on the device (a Pico or the
twin under `-X heapsize=`); viper and native functions need the board's architecture.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from theca import paths
from theca.board import inline
from theca.errors import BadInput

# mpy-cross -march per board; the unix twin runs on x86-64
ARCH = {"unix": "x64", "rp2_pico": "armv6m", "esp32": "xtensawin"}
# On a board main.py and boot.py stay source (the board executes them by name); the
# twin imports a compiled main with `micropython -m main`.
KEEP_SOURCE: set[str] = set()


def mpy_cross() -> str:
    cand = Path(sys.executable).parent / "mpy-cross"
    return str(cand) if cand.exists() else "mpy-cross"


# Real boards share boards/common (hal.py: provisioning, clock, battery, watchdog,
# link...) besides their own directory; the twin (unix) is self-contained.
SHARED = {"rp2_pico": ("common",), "esp32": ("common",)}


def sources(board: str) -> list[Path]:
    """The .py files a board runs: the firmware, the board's own modules, then the
    shared board modules it uses (manifest.py, for freezing, is not one of them)."""
    out = sorted(p for p in paths.FIRMWARE.glob("*.py"))
    for d in (board, *SHARED.get(board, ())):
        out += sorted(p for p in (paths.BOARDS / d).glob("*.py") if p.name != "manifest.py")
    return out


def prepared(board: str, overlay: Path | None = None) -> dict[Path, str]:
    """The text each source is compiled from: the protocol's integers inlined
    (inline.py), msgdefs cut down to what is still looked up. `overlay`: a folder whose
    .py modules take the place of the sources of the same name (a modified build)."""
    srcs = sources(board)
    if overlay is not None:
        mine = {p.name: p for p in sorted(Path(overlay).glob("*.py"))}
        srcs = [mine.pop(s.name, s) for s in srcs] + list(mine.values())
    msgdefs = paths.FIRMWARE / "msgdefs.py"
    consts = inline.constants(msgdefs.read_text())
    still: set[str] = set()
    out = {s: inline.inline_module(s.read_text(), consts, still)
           for s in srcs if s != msgdefs}
    out[msgdefs] = inline.slim_msgdefs(msgdefs.read_text(), still)
    return out


def compile_firmware(board: str = "unix", out: Path | None = None,
                     overlay: Path | None = None) -> Path:
    """Compile into `out` (default build/mpy/BOARD); only changed files are rebuilt.
    Returns the directory holding the .mpy files. `overlay`: see prepared()."""
    out = out or paths.build_dir() / "mpy" / board
    out.mkdir(parents=True, exist_ok=True)
    arch = ARCH[board]
    with tempfile.TemporaryDirectory() as tmp:
        for src, text in prepared(board, overlay).items():
            if src.name in KEEP_SOURCE:
                continue
            dst = out / (src.stem + ".mpy")
            stamp = out / (src.stem + ".sha")
            digest = hashlib.sha256(text.encode() + arch.encode()).hexdigest()
            if dst.exists() and stamp.exists() and stamp.read_text() == digest:
                continue
            staged = Path(tmp) / src.name
            staged.write_text(text)
            r = subprocess.run(
                [mpy_cross(), f"-march={arch}", "-o", str(dst), "-s", src.name, str(staged)],
                capture_output=True, text=True,
            )
            if r.returncode != 0:
                raise RuntimeError(f"mpy-cross {src.name}: {r.stderr.strip()}")
            stamp.write_text(digest)
    return out


def with_overlay(overlay: Path, board: str = "unix") -> Path:
    """The firmware compiled with the modules of `overlay` (.py files) in place of its own:
    a modified build to try (`theca campaign --firmware`, `theca simulate --firmware`).
    Compiled once per overlay content, under the build folder."""
    srcs = sorted(Path(overlay).glob("*.py"))
    if not srcs:
        raise BadInput(f"--firmware: {overlay} holds no .py module")
    h = hashlib.sha256(board.encode())
    for s in srcs:
        h.update(s.name.encode() + b"\0" + s.read_bytes())
    out = paths.build_dir() / "overlay" / h.hexdigest()[:16]
    if (out / ".done").exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():
        shutil.rmtree(out, ignore_errors=True)  # (one left unfinished)
    tmp = Path(tempfile.mkdtemp(dir=out.parent))
    compile_firmware(board, tmp, overlay)
    (tmp / ".done").write_text("")
    try:
        tmp.rename(out)
    except OSError:  # (another process made it meanwhile)
        shutil.rmtree(tmp, ignore_errors=True)
    return out
