"""Progress on long commands: a rich progress bar on a terminal, silence otherwise.

`Bar` draws on standard error only when it is a terminal, so piped or captured
output (CI, tests, `| tee`) never gets escape codes or half-drawn lines.
`run_twin` runs the twin like `twinproc.run_twin` but streams its standard error:
the board's "@@progress <device time>" lines (sent when the twin's configuration
has "progress": N seconds) go to a callback and are not kept; everything else the
firmware writes there (a traceback) is kept for the caller, as before.
"""

from __future__ import annotations

import sys
from typing import Any


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
        self._progress: Any = None  # a rich Progress while shown
        self._task: Any = None

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


