"""Run firmware code under the real MicroPython unix port from pytest.

Two ways in:
- `run_mp(...)`: one process per call (a script, a module's test file).
- `MPWorker`: one long-lived process answering JSON-line calls, for property
  tests that make thousands of calls (each process start costs tens of ms).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MP_DIR = ROOT / "tests" / "mp"


def micropython_exe() -> str:
    """The unix port installed in the venv beside this interpreter."""
    from theca.paths import micropython

    return micropython()


def mp_path(board: str = "unix", extra: list[Path] | None = None) -> str:
    # ".frozen": MICROPYPATH replaces the default path, which holds frozen asyncio
    parts = [".frozen", ROOT / "firmware", ROOT / "boards" / board, MP_DIR]
    parts += extra or []
    return ":".join(str(p) for p in parts)


def mp_env(board: str = "unix", extra_path=None, **env) -> dict:
    e = dict(os.environ)
    e["MICROPYPATH"] = mp_path(board, extra_path)
    e.update({k: str(v) for k, v in env.items()})
    return e


def run_mp(
    args: list[str],
    *,
    heapsize: str | None = None,
    board: str = "unix",
    extra_path=None,
    timeout: float = 120,
    input: bytes | None = None,
    env: dict | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess:
    """Run `micropython [-X heapsize=H] ARGS` with the firmware on its path."""
    cmd = [micropython_exe()]
    if heapsize:
        cmd += ["-X", f"heapsize={heapsize}"]
    cmd += list(args)
    return subprocess.run(
        cmd,
        env=mp_env(board, extra_path, **(env or {})),
        capture_output=True,
        timeout=timeout,
        input=input,
        cwd=cwd or ROOT,
    )


class MPError(AssertionError):
    """A call into MicroPython raised; carries the MicroPython traceback."""


class MPWorker:
    """A long-lived MicroPython process: `call("engine_api.fn", *args)`.

    Arguments and results travel as JSON, so pass ints, strings, lists and
    dicts. The worker imports modules from firmware/, boards/unix and tests/mp.
    """

    def __init__(self, heapsize: str | None = None):
        cmd = [micropython_exe()]
        if heapsize:
            cmd += ["-X", f"heapsize={heapsize}"]
        cmd.append(str(MP_DIR / "_rpc.py"))
        self.proc = subprocess.Popen(
            cmd,
            env=mp_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=ROOT,
        )

    def call(self, target: str, *args):
        mod, _, fn = target.rpartition(".")
        line = json.dumps({"mod": mod, "fn": fn, "args": list(args)}) + "\n"
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(line.encode())
        self.proc.stdin.flush()
        out = self.proc.stdout.readline()
        if not out:
            err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
            raise RuntimeError(f"micropython worker died: {err}")
        reply = json.loads(out)
        if "error" in reply:
            raise MPError(reply["error"])
        return reply["result"]

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
