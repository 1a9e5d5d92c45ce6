"""The live link's figures, measured on a real twin (`theca twin --pty`) with pyserial.

- status round trip: 200 GET_STATUS commands, each a new signed frame (a new counter:
  the device checks the MAC and the counter and executes it), timed from the first
  byte written to the reply's last byte read; median and 95th percentile. Also the
  whole `Client.request` cost per command (signing, the counter written to disk first).
- log download efficiency: a twin on a flash image with thousands of events in its
  log, pulled page by page with LOG_READ (LOG_PAGE_MAX EventRecords of 26 bytes a page). The
  payload is the record bytes; the line bytes are every byte of those exchanges in
  both directions (the request, COBS, delimiters, headers, MACs, CRCs), as they go
  over a 115200-baud UART; the time such a pull needs on that line follows from them.

`run()` returns the figures for bench/run.py; `python bench/bench_link.py` prints them.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

RTT_REQUESTS = 200
EVENTS = 3000
for _p in (ROOT / "protocol", ROOT / "host_tools"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))
import theca_protocol as tp  # noqa: E402
from theca_protocol import messages as M  # noqa: E402

PAGE = tp.LOG_PAGE_MAX
REC = tp.EventRecord.sizeof()  # from the definition: it grew from 22 to 26 bytes once
BAUD = 115200
BITS_PER_BYTE = 10  # 8N1: start, 8 data, stop


def _env(home: Path) -> dict:
    e = dict(os.environ)
    e["THECA_HOME"] = str(home)
    return e


def round_trip(c, n: int = RTT_REQUESTS) -> dict:
    """Milliseconds per GET_STATUS exchange on the link (pre-signed frames)."""
    frames = [c.sign(0x40, b"", "patient")[0] for _ in range(n)]
    times = []
    for f in frames:
        t = time.perf_counter()
        rep = c.transact(f)
        times.append((time.perf_counter() - t) * 1000)
        assert rep.result == 0 and rep.attempts == 1
    t = time.perf_counter()
    for _ in range(50):
        c.request("GET_STATUS", b"", "patient")
    whole = (time.perf_counter() - t) * 1000 / 50
    times.sort()
    return {"median_ms": statistics.median(times), "p95_ms": times[int(0.95 * len(times)) - 1],
            "max_ms": times[-1], "request_ms": whole}


def log_pull(c) -> dict:
    """Pull the whole log with LOG_READ; bytes on the line and payload bytes."""
    tx0, rx0 = c.link.tx_bytes, c.link.rx_bytes
    frm, records, pages = 1, 0, 0
    t = time.perf_counter()
    while True:
        rep = c.request("LOG_READ", M.LogRead.build({"from_seq": frm, "max_count": PAGE}),
                        "clinician")
        head = M.LogReadReplyHead.parse(rep.body)
        nxt, first, count = head.next_seq, head.first_seq, head.count
        records += count
        pages += 1
        frm = first + count
        if count == 0 or frm >= nxt:
            break
    secs = time.perf_counter() - t
    line = (c.link.tx_bytes - tx0) + (c.link.rx_bytes - rx0)
    payload = records * REC
    return {"records": records, "pages": pages, "payload_bytes": payload, "line_bytes": line,
            "efficiency": payload / line, "pty_seconds": secs,
            "uart_seconds": line * BITS_PER_BYTE / BAUD}


def run() -> dict:
    sys.path.insert(0, str(ROOT / "host_tools"))
    from theca.link.client import Client
    from theca.twin.live import LiveTwin

    with tempfile.TemporaryDirectory(prefix="bench-link-") as d:
        d = Path(d)
        home = d / "home"
        dev = d / "pump"
        old = os.environ.get("THECA_HOME")
        os.environ["THECA_HOME"] = str(home)
        try:
            with LiveTwin(dev, speed=1, env=_env(home), args=["--flash-image", d / "flash.img"]):
                with Client(str(dev)) as c:
                    c.identify("clinician")
                    t = time.perf_counter()
                    for i in range(EVENTS):  # each catheter record is an event in the log
                        c.request("CATHETER", M.Catheter.build({"volume_nl": 100_000 + i % 1000}),
                                  "clinician")
                    fill_s = time.perf_counter() - t
                with Client(str(dev)) as c:
                    c.identify("clinician")
                    rtt = round_trip(c)
                with Client(str(dev)) as c:
                    c.identify("clinician")
                    pull = log_pull(c)
        finally:
            if old is None:
                os.environ.pop("THECA_HOME", None)
            else:
                os.environ["THECA_HOME"] = old
    return {
        "status round trip, median": {
            "value": round(rtt["median_ms"], 2), "unit": "ms", "requirement": "< 20 ms",
            "note": f"p95 {rtt['p95_ms']:.2f} ms, max {rtt['max_ms']:.2f} ms, {RTT_REQUESTS} "
                    "GET_STATUS on the twin's pty, each a new signed command"},
        "status round trip, p95": {"value": round(rtt["p95_ms"], 2), "unit": "ms"},
        "status command, whole": {
            "value": round(rtt["request_ms"], 2), "unit": "ms",
            "note": "Client.request: signing, the counter fsync'd to disk, the exchange"},
        "log download efficiency": {
            "value": round(100 * pull["efficiency"], 1), "unit": "%", "requirement": ">= 93 %",
            "note": f"{pull['records']} events of {REC} bytes in {pull['pages']} LOG_READ pages; "
                    f"{pull['payload_bytes']} payload bytes over {pull['line_bytes']} line bytes "
                    "both ways (requests, COBS, delimiters, headers, MACs, CRCs)"},
        "log download at 115200 baud": {
            "value": round(pull["uart_seconds"], 2), "unit": "s",
            "note": f"{pull['records']} events, line-limited "
                    f"({pull['payload_bytes'] / pull['uart_seconds'] / 1000:.1f} kB/s of events); "
                    f"on the twin's pty {pull['pty_seconds']:.2f} s"},
        "state-changing commands per second (CATHETER, flash image)": {
            "value": round(EVENTS / fill_s), "unit": "/s",
            "note": "each with its CHALLENGE round trip first, signed replies both checked, "
                    "its snapshot saved to the twin's littlefs2 image before its reply"},
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=1))
