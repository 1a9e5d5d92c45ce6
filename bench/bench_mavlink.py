"""Decoding speed side by side: Theca's decoder and pymavlink, frames of about the same size.

Theca's STATUS frame is 66 bytes (8 header + 54 payload + 4 CRC; it was 54 until STATUS
gained refill_due and the heap figures). The MAVLink 2 message RC_CHANNELS has a 42-byte
payload, so its frame is 54 bytes (10 header + 42 payload + 2 CRC): Theca decodes more
bytes and fields per frame than its peer. Both streams hold n such frames with changing
fields (sequence numbers, times, values), and both decoders check every frame's
CRC and unpack every field.

pymavlink is measured the ways its users parse logs, and the fastest counts as
its figure: `MAVLink.parse_buffer` fed 4 KiB at a time (faster here than one huge
buffer, or byte by byte with `parse_char`), the same plus `msg.to_json()` per
message (the counterpart of `theca decode --format jsonl`), and mavutil reading a
MAVLink .tlog with `recv_match()`. pymavlink computes its CRC with the `fastcrc`
extension when it is installed (it is: a dependency of pymavlink 2.4.50).

Theca is measured on a .tlog of n STATUS frames (bench_decode.status_log):
`decode --summary` (scan, CRC, counts), every field decoded into columns
(`read_log`, what `report` and `trumpet` use), jsonl and Parquet output.
"""

from __future__ import annotations

import io
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for p in (ROOT / "host_tools", ROOT / "protocol", ROOT / "bench"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import bench_decode  # noqa: E402
import theca_protocol as tp  # noqa: E402
from theca.log.data import read_log  # noqa: E402
from theca.log.stats import Summary, summarize  # noqa: E402
from theca.log.tlog import Tlog  # noqa: E402
from theca.log.writers.jsonl import write_jsonl  # noqa: E402
from theca.log.writers.parquet import write_parquet  # noqa: E402

CHUNK = 4096
THECA_FRAME = tp.HDR_SIZE + tp.Status.sizeof() + tp.CRC_SIZE


def _mavlink():
    os.environ.setdefault("MAVLINK20", "1")
    from pymavlink.dialects.v20 import common as mavlink2

    return mavlink2


def mavlink_stream(n: int) -> bytes:
    """n MAVLink 2 RC_CHANNELS frames (54 bytes each), fields changing frame to frame."""
    m = _mavlink()
    mav = m.MAVLink(None, srcSystem=1, srcComponent=1)
    out = []
    for i in range(n):
        ch = [1000 + (i + k) % 1000 for k in range(18)]
        out.append(m.MAVLink_rc_channels_message(i * 60_000 & 0xFFFFFFFF, 18, *ch,
                                                 1 + i % 254).pack(mav))
    return b"".join(out)


def _best(fn, repeat: int) -> tuple[float, object]:
    best, res = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        res = fn()
        best = min(best, time.perf_counter() - t)
    return best, res


def _parse(buf: bytes, chunk: int = CHUNK, to_json: bool = False) -> int:
    m = _mavlink()
    p = m.MAVLink(None)
    k = 0
    for i in range(0, len(buf), chunk):
        msgs = p.parse_buffer(buf[i : i + chunk])
        if msgs:
            k += len(msgs)
            if to_json:
                for msg in msgs:
                    msg.to_json()
    return k


def _mavutil_tlog(path: Path) -> int:
    from pymavlink import mavutil

    c = mavutil.mavlink_connection(str(path), dialect="common")
    k = 0
    while c.recv_match() is not None:
        k += 1
    c.close()
    return k


def pymavlink_figures(n: int = 200_000, repeat: int = 3) -> dict:
    """Frames/s of pymavlink's parse paths on n 54-byte RC_CHANNELS frames."""
    m = _mavlink()
    buf = mavlink_stream(n)
    size = len(buf) // n
    s, k = _best(lambda: _parse(buf), repeat)
    assert k == n, k
    nj = min(n, 100_000)
    sj, kj = _best(lambda: _parse(buf[: nj * size], to_json=True), 1)
    assert kj == nj, kj
    nt = min(n, 100_000)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "bench.tlog"
        with open(path, "wb") as f:
            for i in range(nt):
                f.write((1_700_000_000_000_000 + i * 60_000_000).to_bytes(8, "big"))
                f.write(buf[i * size : (i + 1) * size])
        st, kt = _best(lambda: _mavutil_tlog(path), 1)
    assert kt == nt, kt
    import pymavlink

    return {
        "pymavlink_version": getattr(pymavlink, "__version__", "?"),
        "mavlink_frame_bytes": size,
        "mavlink_message": m.MAVLink_rc_channels_message.msgname,
        "pymavlink_frames": n,
        "pymavlink_parse_frames_per_s": round(n / s),
        "pymavlink_parse_json_frames_per_s": round(nj / sj),
        "pymavlink_mavutil_tlog_frames_per_s": round(nt / st),
    }


def theca_figures(n: int = 200_000, repeat: int = 3) -> dict:
    """Frames/s of Theca's decoder on n STATUS frames (THECA_FRAME bytes: the same work as
    above and more)."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "bench.tlog"
        bench_decode.status_log(path, n)
        s_sum, r = _best(lambda: summarize(path), repeat)
        assert r["frames"] == n and r["clean"], r
        s_col, log = _best(lambda: read_log(path), repeat)
        assert len(log.status["time"]) == n

        def jsonl():
            out = io.StringIO()
            with Tlog(path) as t:
                s = Summary(t)
                write_jsonl(t, out, s)
                del s
            return out.getvalue().count("\n")

        s_js, lines = _best(jsonl, repeat)
        assert lines == n

        def parquet():
            with Tlog(path) as t:
                s = Summary(t)
                rows = write_parquet(t, Path(d) / "bench.parquet", s)
                del s
            return rows

        s_pq, rows = _best(parquet, 1)
        assert rows == n
    return {
        "theca_frame_bytes": THECA_FRAME,
        "theca_frames": n,
        "theca_summary_frames_per_s": round(n / s_sum),
        "theca_columns_frames_per_s": round(n / s_col),
        "theca_jsonl_frames_per_s": round(n / s_js),
        "theca_parquet_frames_per_s": round(n / s_pq),
    }


def run(n: int = 200_000, repeat: int = 3) -> dict:
    """Both sides; pymavlink's figures are absent (with `pymavlink_error`) if it is not installed."""
    out = theca_figures(n, repeat)
    try:
        out.update(pymavlink_figures(n, repeat))
    except ImportError as e:
        out["pymavlink_error"] = f"pymavlink not installed ({e})"
    return out


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=1))
