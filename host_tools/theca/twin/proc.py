"""Start the firmware's own main.py on the MicroPython unix port, as the twin."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from theca import paths


def twin_command(heapsize: str | None = None, compiled: bool = False) -> list[str]:
    """The command line of the twin. Compiled: `-m main`, so that the script's folder
    (firmware/, with the .py sources) does not come first on sys.path and shadow the
    .mpy files."""
    cmd = [paths.micropython()]
    if heapsize:
        cmd += ["-X", f"heapsize={heapsize}"]
    if compiled:
        cmd += ["-m", "main"]
    else:
        cmd.append(str(paths.FIRMWARE / "main.py"))
    return cmd


def twin_env(config_path: Path, mpy_dir: Path | None = None) -> dict:
    env = dict(os.environ)
    env["MICROPYPATH"] = paths.firmware_path("unix", mpy_dir)
    env["THECA_SIM"] = str(config_path)
    return env


def write_config(path: Path, cfg: dict) -> Path:
    path.write_text(json.dumps(cfg))
    return path


def run_twin(config_path: Path, heapsize: str | None = None, timeout: float | None = None,
             mpy_dir: Path | None = None, **popen) -> subprocess.CompletedProcess:
    """Run the twin to completion (a simulation); returns the finished process."""
    return subprocess.run(
        twin_command(heapsize, mpy_dir is not None), env=twin_env(config_path, mpy_dir),
        timeout=timeout,
        capture_output=True, **popen,
    )
