"""Progress on long commands: a rich progress bar on a terminal, silence otherwise.

`Bar` draws on standard error only when it is a terminal, so piped or captured
output (CI, tests, `| tee`) never gets escape codes or half-drawn lines.
`run_twin` runs the twin like `twinproc.run_twin` but streams its standard error:
the board's "@@progress <device time>" lines (sent when the twin's configuration
has "progress": N seconds) go to a callback and are not kept; everything else the
firmware writes there (a traceback) is kept for the caller, as before.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from . import twinproc

#: Prefix of the twin's progress reports on its standard error.
PROGRESS_PREFIX = b"@@progress "
# Kept of the twin's standard error (a traceback is short; a runaway print is not).
_KEEP_STDERR = 1 << 20


class Bar:
    """A progress bar of `total` `unit`s on stderr, drawn only if stderr is a terminal.

    Use as a context manager; `update(done)` sets the amount done. `enabled`
    overrides the terminal check (tests).
    """

    def __init__(self, total: float, description: str, unit: str, stream=None,
                 enabled: bool | None = None):
        self.total = float(total)
        self.unit = unit
        self.description = description
        self.stream = sys.stderr if stream is None else stream
        if enabled is None:
            isatty = getattr(self.stream, "isatty", None)
            enabled = bool(isatty and isatty())
        self.enabled = enabled
        self.done = 0.0
        self._progress = None
        self._task = None

    def __enter__(self) -> Bar:
        if self.enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                Progress,
                TaskProgressColumn,
                TextColumn,
                TimeElapsedColumn,
            )

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TaskProgressColumn(),
                TextColumn("{task.completed:.1f}/{task.total:g} " + self.unit),
                TimeElapsedColumn(),
                console=Console(file=self.stream, force_terminal=True),
                transient=True,
            )
            self._progress.__enter__()
            self._task = self._progress.add_task(self.description, total=self.total)
        return self

    def update(self, done: float) -> None:
        """Set the amount done (clamped to [0, total])."""
        self.done = min(max(float(done), 0.0), self.total)
        if self._progress is not None:
            self._progress.update(self._task, completed=self.done)

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)
            self._progress = None


def split_progress(line: bytes) -> int | None:
    """The device time of a "@@progress <t>" line, or None for any other line."""
    if not line.startswith(PROGRESS_PREFIX):
        return None
    try:
        return int(line[len(PROGRESS_PREFIX):].strip())
    except ValueError:
        return None


def run_twin(config_path: Path, on_progress: Callable[[int], None], heapsize: str | None = None,
             mpy_dir: Path | None = None) -> subprocess.CompletedProcess:
    """Run the twin to completion, calling `on_progress(device_time)` as it reports.

    Returns a CompletedProcess with stdout and stderr (bytes) as `twinproc.run_twin`
    does, less the progress lines.
    """
    cmd = twinproc.twin_command(heapsize, mpy_dir is not None)
    env = twinproc.twin_env(config_path, mpy_dir)
    kept = bytearray()
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.PIPE)
        try:
            for line in proc.stderr:
                t = split_progress(line)
                if t is not None:
                    on_progress(t)
                    continue
                kept += line
                if len(kept) > _KEEP_STDERR:
                    del kept[: len(kept) - _KEEP_STDERR]
        except BaseException:
            proc.kill()
            raise
        finally:
            proc.stderr.close()
            rc = proc.wait()
        out.seek(0)
        stdout = out.read()
    return subprocess.CompletedProcess(cmd, rc, stdout, bytes(kept))

