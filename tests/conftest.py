"""pytest glue: collects MicroPython test modules (tests/mp/mptest_*.py).

Each such file runs once under `micropython`; every `test_*` function in it
becomes a pytest item whose failure shows the MicroPython traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from mphost import MPWorker, run_mp  # noqa: E402

_MARK = "@@MPTEST "


def pytest_collect_file(parent, file_path: Path):
    if file_path.suffix == ".py" and file_path.name.startswith("mptest_"):
        return MPFile.from_parent(parent, path=file_path)
    return None


class _NoPython(pytest.File):
    """Stands in for CPython's module collector on an mptest file named on the command
    line: MicroPython code is never imported by CPython."""

    def collect(self):
        return []


def pytest_pycollect_makemodule(module_path: Path, parent):
    if module_path.name.startswith("mptest_"):
        return _NoPython.from_parent(parent, path=module_path)
    return None


class MPFile(pytest.File):
    _results: dict | None = None

    def _test_names(self) -> list[str]:
        # Parse the names without running CPython on MicroPython code.
        import ast

        tree = ast.parse(self.path.read_text())
        return [
            n.name
            for n in tree.body
            if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")
        ]

    def collect(self):
        for name in self._test_names():
            yield MPItem.from_parent(self, name=name)

    def results(self) -> dict:
        if self._results is None:
            heap = None
            src = self.path.read_text()
            for line in src.splitlines()[:5]:
                if line.startswith("# heapsize:"):
                    heap = line.split(":", 1)[1].strip()
            proc = run_mp(
                [str(Path(__file__).parent / "mp" / "_runner.py"), self.path.stem],
                heapsize=heap,
                extra_path=[self.path.parent],
                timeout=600,
            )
            res = {}
            for line in proc.stdout.decode(errors="replace").splitlines():
                if line.startswith(_MARK):
                    r = json.loads(line[len(_MARK):])
                    res[r["name"]] = r
            self._results = res
            self._proc = proc
        return self._results


class MPFailure(Exception):
    pass


class MPItem(pytest.Item):
    def runtest(self):
        res = self.parent.results()
        r = res.get(self.name)
        if r is None:
            proc = self.parent._proc
            raise MPFailure(
                f"{self.name} did not report (micropython exit {proc.returncode})\n"
                + proc.stdout.decode(errors="replace")[-3000:]
                + proc.stderr.decode(errors="replace")[-3000:]
            )
        if not r["ok"]:
            raise MPFailure(r["tb"])

    def repr_failure(self, excinfo):
        if isinstance(excinfo.value, MPFailure):
            return f"MicroPython: {excinfo.value}"
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return self.path, 0, f"mp::{self.name}"


@pytest.fixture(scope="session")
def mpw():
    """A long-lived MicroPython worker shared by a session's property tests."""
    # a big heap: property cases return every stroke they made
    w = MPWorker(heapsize="256m")
    yield w
    w.close()
