"""Decode throughput: `run()` -> dict of frames/s for `decode --summary` and jsonl.

Builds a synthetic 1,000,000-frame STATUS log (vectorised: a template record,
seq/time/reservoir columns filled with numpy, a zlib CRC per frame), then
times the summary path (scan + CRC + vectorised counts) and the jsonl path
(every frame rendered, output discarded).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
for p in (ROOT / "host_tools", ROOT / "protocol"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import theca_protocol as tp  # noqa: E402
from theca.log.stats import Summary  # noqa: E402
from theca.log.tlog import Tlog, header_bytes  # noqa: E402
from theca.log.writers.jsonl import write_jsonl  # noqa: E402


def status_log(path, n: int, t0: int = 189388800, period: int = 60) -> int:
    """Write a .tlog of n STATUS frames (seq 0.., one every `period` s); returns its size."""
    st = tp.compiled(tp.Status)
    flen = tp.HDR_SIZE + st.size + tp.CRC_SIZE
    rec = 3 + flen
    tmpl = bytearray(rec)
    tmpl[0] = tp.TLOG_MARK
    tmpl[1:3] = flen.to_bytes(2, "little")
    tmpl[3] = tp.FRAME_VERSION
    tmpl[4] = tp.T_STATUS
    fields = dict.fromkeys((sc.name for sc in tp.Status.subcons), 0)
    fields.update(mode=1, drug=1, battery_days=2555, rate_nl_day=200_000, conc_ng_ml=10_000_000,
                  heap_free=60_000, heap_total=131_072)
    tmpl[3 + tp.HDR_SIZE:3 + tp.HDR_SIZE + st.size] = tp.Status.build(fields)
    arr = np.empty((n, rec), dtype=np.uint8)
    arr[:] = np.frombuffer(bytes(tmpl), dtype=np.uint8)
    i = np.arange(n, dtype=np.int64)
    seq = i & 0xFFFF
    arr[:, 5] = seq & 0xFF
    arr[:, 6] = seq >> 8
    t = t0 + period * i
    res = 20_000_000 - (i % 100_000) * 150  # nL, stays positive
    for k in range(4):
        arr[:, 7 + k] = (t >> (8 * k)) & 0xFF
        arr[:, 3 + tp.HDR_SIZE + 8 + k] = (res >> (8 * k)) & 0xFF
    flat = memoryview(arr.reshape(-1))
    crc = zlib.crc32
    crcs = np.fromiter(
        (crc(flat[j * rec + 3 : j * rec + rec - 4]) for j in range(n)), dtype="<u4", count=n
    )
    arr[:, rec - 4 :] = crcs.view(np.uint8).reshape(n, 4)
    with open(path, "wb") as f:
        f.write(header_bytes())
        f.write(arr.tobytes())
    return os.path.getsize(path)


def _summary_once(path) -> dict:
    with Tlog(path) as t:
        s = Summary(t)
        for b in t.batches():
            s.add(b.starts, b.lengths)
        s.anomalies = list(t.anomalies)
        r = s.result()
        del s
    return r


class _Discard:
    """A stdout stand-in that counts lines and keeps nothing (as `> /dev/null`)."""

    def __init__(self):
        self.lines = 0

    def write(self, s: str) -> None:
        self.lines += s.count("\n")

    def flush(self) -> None:
        pass


def _jsonl_once(path) -> int:
    sink = _Discard()
    with Tlog(path) as t:
        s = Summary(t)
        write_jsonl(t, sink, s)
        del s
    return sink.lines


def run(n: int = 1_000_000, repeat: int = 3) -> dict:
    """Frames/s of the summary path (best of `repeat`) and of jsonl output (into memory)."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "bench.tlog"
        t = time.perf_counter()
        size = status_log(path, n)
        build_s = time.perf_counter() - t
        best = float("inf")
        for _ in range(repeat):
            t = time.perf_counter()
            r = _summary_once(path)
            best = min(best, time.perf_counter() - t)
        assert r["frames"] == n and r["clean"], r
        t = time.perf_counter()
        lines = _jsonl_once(path)
        js = time.perf_counter() - t
        assert lines == n
    return {
        "decode_frames": n,
        "decode_bytes": size,
        "decode_build_s": round(build_s, 3),
        "decode_summary_s": round(best, 4),
        "decode_summary_frames_per_s": round(n / best),
        "decode_jsonl_s": round(js, 3),
        "decode_jsonl_frames_per_s": round(n / js),
    }


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=1))
