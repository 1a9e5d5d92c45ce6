"""Running the twin as a child process and following its progress."""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from theca.twin import proc as twinproc

#: Prefix of the twin's progress reports on its standard error.
PROGRESS_PREFIX = b"@@progress "



# Kept of the twin's standard error (a traceback is short; a runaway print is not).
_KEEP_STDERR = 1 << 20



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
        assert proc.stderr is not None  # stderr=PIPE
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


def heap_ok(s: str) -> bool:
    """Whether `s` is a MicroPython heap size (`-X heapsize=`): digits, then k or m."""
    s = s.strip().lower()
    if s and s[-1] in "km":
        s = s[:-1]
    return s.isdigit() and int(s) > 0
