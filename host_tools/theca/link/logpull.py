"""`log pull`: the pump's event log, page by page, into a .tlog that a later pull resumes.

Every page is on disk (fsync) before the next is asked for, so an interrupted pull keeps
what it had; a resumed one checks that the file is this pump's and of this schema, drops
a torn tail, and goes on from the last event the file holds.

A pump whose log went back (an old flash image put back: its newest event is before the
file's last one, or that event's number now holds another event) is a rollback: the file
is left as it is, the device's whole log goes to a new file beside it named for the
rollback, and the pull says so (SR-ROLL-01). Nothing is dropped silently.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import theca_protocol as tp

from theca.errors import BadInput
from theca.link import requests as R
from theca.link.client import Client, Refused
from theca.log.tlog import Tlog, TlogError, header_bytes, record_bytes

#: Records per LOG_READ page.
LOG_PAGE = tp.LOG_PAGE_MAX
_LOG_HEAD = tp.compiled(tp.LogReadReplyHead)
_EVENT = tp.compiled(tp.EventRecord)
_INFO = tp.compiled(tp.DeviceInfo)
_HDR = tp.compiled(tp.Header)


class Resume:
    """What an existing .tlog holds: whose log, the last event, where good data ends."""

    def __init__(self, path: Path):
        self.serial: str | None = None
        self.last_event = 0
        self.last_seq = -1
        self.end = 0
        self.events = 0
        self.last_record = b""  # the last event's record, to compare with the device's
        try:
            t = Tlog(path)
        except TlogError as e:
            raise BadInput(f"{path} exists and is not a telemetry log ({e}); not touching it: "
                           "give another -o") from None
        with t:
            self.schema = t.header.schema
            self.end = tp.TlogHeader.sizeof()
            for off, fr in t.frames():
                typ = fr[1]
                payload = fr[tp.HDR_SIZE : len(fr) - tp.CRC_SIZE]
                if typ == tp.T_DEVICE_INFO and len(payload) == _INFO.size:
                    self.serial = _INFO.unpack(payload)[0].rstrip(b"\0").decode("ascii", "replace")
                elif typ == tp.T_EVENT and len(payload) == _EVENT.size:
                    n = _EVENT.unpack(payload)[1]
                    if n >= self.last_event:
                        self.last_event, self.last_record = n, bytes(payload)
                    self.events += 1
                self.last_seq = _HDR.unpack_from(fr)[2]
                self.end = off + len(fr)
            self.size = t.size


@dataclass
class Pulled:
    """What a pull did."""

    first_wanted: int
    next_from: int = 0  # the event the next pull starts at
    pulled: int = 0
    pages: int = 0
    left: int = 0  # events still on the device
    lost: list[tuple[int, int]] = field(default_factory=list)  # overwritten before read
    rollback: str | None = None  # how the device's log went back behind the file
    out: Path | None = None  # the file pulled into (after a rollback: the new one)
    event_next: int = 0  # the number the device gives its next event
    seconds: float = 0.0
    line_bytes: int = 0
    resumed_after: int | None = None


def _sync(f) -> None:
    f.flush()
    os.fsync(f.fileno())


def _start(c: Client, out: Path, from_seq: int | None) -> tuple[Resume | None, int, int]:
    # (what the file already holds, the first event wanted, the next frame seq)
    info = c.info or {}
    if not c.schema_ok():
        raise Refused(f"schema mismatch: {info['serial']} speaks schema 0x{info['schema']:08x}, "
                      f"these host tools 0x{tp.SCHEMA:08x}: its log would be misread; update "
                      "the host tools or the firmware", "schema", info["schema"])
    if not (out.exists() and out.stat().st_size):
        return None, from_seq or 1, 0
    if from_seq:
        raise BadInput(f"{out} exists: --from starts a new log; give another -o")
    resumed = Resume(out)
    if resumed.serial is not None and resumed.serial != info["serial"]:
        raise BadInput(f"{out} holds the log of {resumed.serial}, this is "
                       f"{info['serial']}: give another -o")
    if resumed.schema != tp.SCHEMA:
        raise BadInput(f"{out} was written with schema 0x{resumed.schema:08x}, this pull "
                       f"is schema 0x{tp.SCHEMA:08x}: give another -o")
    return resumed, resumed.last_event + 1, (resumed.last_seq + 1) & 0xFFFF


def pull(c: Client, role: str, out: Path, from_seq: int | None = None,
         max_pages: int | None = None,
         progress: Callable[[int, int], None] | None = None) -> Pulled:
    """Pull the log of the pump `c` (identified) into `out`; `progress(pulled, total)`
    after each page."""
    resumed, frm, seq = _start(c, out, from_seq)
    rollback = _went_back(c, role, out, resumed)
    if rollback is not None:
        # both histories kept: the file as it was, the device's log in a file of its own
        out = _rollback_file(out)
        resumed, frm, seq = None, 1, 0
    ir = c.info_reply
    assert ir is not None  # identify() keeps it
    res = Pulled(first_wanted=frm, next_from=frm,
                 resumed_after=resumed.last_event if resumed else None, rollback=rollback,
                 out=out)
    with open(out, "r+b" if resumed else "wb") as f:
        head = b""
        if resumed:
            if resumed.end < resumed.size:
                c.warn(f"note: {out}: {resumed.size - resumed.end} bytes after the last good "
                       "record (an interrupted pull) were dropped")
            f.truncate(resumed.end)
            f.seek(resumed.end)
        else:
            head = header_bytes(tp.SCHEMA)
        # the device info again: who this part of the file came from, and when
        f.write(head + record_bytes(tp.build_frame(tp.T_DEVICE_INFO, seq, ir.time, ir.body)))
        seq = (seq + 1) & 0xFFFF
        _sync(f)
        t0 = time.monotonic()
        seq = _pages(c, role, f, seq, res, max_pages, progress)
        st = c.request("GET_STATUS", b"", role)
        f.write(record_bytes(tp.build_frame(tp.T_STATUS, seq, st.time, st.body)))
        _sync(f)
    res.seconds = time.monotonic() - t0
    res.line_bytes = c.link.rx_bytes + c.link.tx_bytes
    return res


def _went_back(c: Client, role: str, out: Path, resumed: Resume | None) -> str | None:
    # how the device's log is behind the file's (None: it is not)
    if resumed is None or not resumed.last_event:
        return None
    n = resumed.last_event
    rep = c.request("LOG_READ", R.log_read(n, 1), role)
    nxt, first, count = _LOG_HEAD.unpack_from(rep.body)
    if nxt <= n:
        return (f"the device's newest event is #{nxt - 1}, {out} already holds #{n}: "
                "the pump's log went back")
    if count and first == n:
        rec = bytes(rep.body[_LOG_HEAD.size : _LOG_HEAD.size + _EVENT.size])
        if rec != resumed.last_record:
            return (f"event #{n} on the device is not the event #{n} in {out}: the pump "
                    "numbers events again, with other content")
    return None


def _rollback_file(out: Path) -> Path:
    # beside the file, named for the rollback and the time it was found (never an existing one)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    for k in range(100):
        p = out.with_name(f"{out.stem}.rollback-{stamp}{f'-{k}' if k else ''}{out.suffix}")
        if not p.exists():
            return p
    raise BadInput(f"{out}: too many rollback files beside it; move them away")


def _pages(c: Client, role: str, f, seq: int, res: Pulled, max_pages: int | None,
           progress: Callable[[int, int], None] | None) -> int:
    # LOG_READ pages until the device has no more (or max_pages); returns the next seq
    frm = res.next_from
    total = None
    while True:
        rep = c.request("LOG_READ", R.log_read(frm, LOG_PAGE), role)
        nxt, first, count = _LOG_HEAD.unpack_from(rep.body)
        if first > frm:
            res.lost.append((frm, first - 1))
        if total is None:
            total = max(nxt - first, 0)
        recs = rep.body[_LOG_HEAD.size : _LOG_HEAD.size + count * _EVENT.size]
        chunk = bytearray()
        for i in range(count):
            r = recs[i * _EVENT.size : (i + 1) * _EVENT.size]
            t_ev, ev_seq = _EVENT.unpack(r)[:2]
            if ev_seq != first + i:
                raise Refused(f"the device sent event #{ev_seq} where #{first + i} "
                              "belongs; stopped (the file holds every event before it)", "log")
            chunk += record_bytes(tp.build_frame(tp.T_EVENT, seq, t_ev, r))
            seq = (seq + 1) & 0xFFFF
        f.write(chunk)
        _sync(f)  # a page is on disk before the next is asked for
        res.pulled += count
        res.pages += 1
        res.event_next = nxt
        frm = first + count
        res.next_from = frm
        res.left = max(nxt - frm, 0)
        if progress is not None:
            progress(res.pulled, total)
        if count == 0 or frm >= nxt or (max_pages and res.pages >= max_pages):
            return seq
