"""The smallest MicroPython heap a run needs, by bisection (bench/run.py, bench_heavy.py)."""

from __future__ import annotations

from collections.abc import Callable


def smallest_heap_kib(ok: Callable[[int], bool], lo: int = 16, hi: int = 512,
                      step: int = 4) -> int | None:
    """The smallest heap in KiB, to `step` KiB, for which ok(kib) holds (None: not even `hi`)."""
    if not ok(hi):
        return None
    while hi - lo > step:
        mid = (lo + hi) // 2 // step * step
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return hi
