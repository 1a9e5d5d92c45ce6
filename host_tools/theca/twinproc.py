"""Start the firmware's own main.py on the MicroPython unix port, as the twin."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from . import paths


def twin_command(heapsize: str | None = None) -> list[str]:
    cmd = [paths.micropython()]
    if heapsize:
        cmd += ["-X", f"heapsize={heapsize}"]
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
        twin_command(heapsize), env=twin_env(config_path, mpy_dir), timeout=timeout,
        capture_output=True, **popen,
    )
