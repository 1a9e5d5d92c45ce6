"""`make bench` builds its inputs from the protocol: a change of a layout must break here,
in `make test`, not first in `make bench` (a STATUS that grew once did)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import bench_decode  # noqa: E402
from theca.log.stats import summarize  # noqa: E402


def test_the_synthetic_status_log_decodes_clean(tmp_path):
    path = tmp_path / "b.tlog"
    bench_decode.status_log(path, 500)
    r = summarize(path)
    assert r["frames"] == 500 and r["clean"], r
