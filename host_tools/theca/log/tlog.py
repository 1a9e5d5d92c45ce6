"""Reading and writing .tlog telemetry logs (protocol/PROTOCOL.md, "Telemetry log").

A .tlog is a 16-byte header (magic ``THECALOG``, format u16, flags u16, schema
u32) and then records ``0xA5 | length u16 | frame``; each frame carries its own
CRC-32. The reader never drops anything silently: every byte that is not part
of a good record is reported as an `Anomaly` (a corrupt record, garbage, or a
truncated tail), and reading resynchronises on the next ``0xA5`` whose record
checks.

Reading is fast (over 10 million frames/s): the file is memory-mapped,
candidate record starts are found with numpy, the chain of records is derived
from precomputed links in a vectorised check, and the CRCs of a whole run of
records are verified with two zlib passes (see `_Scanner._first_bad_crc`);
only a run that fails is checked frame by frame.
"""

from __future__ import annotations

import mmap
import os
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
import theca_protocol as tp

HEADER = tp.compiled(tp.TlogHeader)
HEADER_SIZE = HEADER.size
MARK = tp.TLOG_MARK
MIN_FRAME = tp.HDR_SIZE + tp.CRC_SIZE
MAX_FRAME = tp.MAX_FRAME
_REC_HEAD = 3
_RESIDUE = tp.CRC_RESIDUE
# Scanning window: bounds the numpy temporaries whatever the file size.
WINDOW = 1 << 22

assert HEADER_SIZE == tp.TlogHeader.sizeof()


class TlogError(Exception):
    """The file is not a readable .tlog (missing, too short, wrong magic or format)."""


class TlogHeader(NamedTuple):
    """The parsed file header."""

    format: int
    flags: int
    schema: int


class Anomaly(NamedTuple):
    """Bytes that are not a good record.

    kind: "crc" (a record whose CRC fails), "corrupt" (a record mark with an
    impossible length), "garbage" (bytes that are no record at all) or
    "truncated" (an incomplete last record). `offset` and `length` are in
    file bytes.
    """

    offset: int
    length: int
    kind: str


class Batch(NamedTuple):
    """Good frames found by one scanning step: where they start and how long they are."""

    starts: np.ndarray  # int64 file offsets of frames (after the record head)
    lengths: np.ndarray  # int64 frame lengths (header + payload + crc)


# --- writing -------------------------------------------------------------------------


def header_bytes(schema: int = tp.SCHEMA, flags: int = 0, fmt: int = tp.TLOG_FORMAT) -> bytes:
    """The 16-byte file header."""
    return HEADER.pack(tp.TLOG_MAGIC, fmt, flags, schema)


def record_bytes(frame: bytes) -> bytes:
    """One record: 0xA5, u16 length, the frame."""
    if len(frame) > 0xFFFF:
        raise ValueError("frame too long for a record")
    return bytes([MARK]) + len(frame).to_bytes(2, "little") + bytes(frame)


def build_tlog(frames: Iterable[bytes], schema: int = tp.SCHEMA, flags: int = 0) -> bytes:
    """A whole .tlog in memory (tests, small tools)."""
    return header_bytes(schema, flags) + b"".join(record_bytes(f) for f in frames)


class TlogWriter:
    """Writes a .tlog file: `write_frame(frame)` per frame; use as a context manager."""

    def __init__(self, path, schema: int = tp.SCHEMA, flags: int = 0):
        self.path = Path(path)
        self.f = open(self.path, "wb")  # noqa: SIM115 (closed in close())
        self.f.write(header_bytes(schema, flags))
        self.frames = 0

    def write_frame(self, frame: bytes) -> None:
        """Append one frame as a record."""
        self.f.write(record_bytes(frame))
        self.frames += 1

    def close(self) -> None:
        """Close the file."""
        self.f.close()

    def __enter__(self) -> TlogWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_tlog(path, frames: Iterable[bytes], schema: int = tp.SCHEMA, flags: int = 0) -> int:
    """Write `frames` to a new .tlog at `path`; returns the number written."""
    with TlogWriter(path, schema, flags) as w:
        for f in frames:
            w.write_frame(f)
        return w.frames


# --- reading --------------------------------------------------------------------------


def parse_header(buf, name: str = "file") -> TlogHeader:
    """Check and parse the file header; TlogError naming the problem."""
    if len(buf) < HEADER_SIZE:
        if bytes(buf[:8]) == tp.TLOG_MAGIC[: len(buf[:8])] and len(buf):
            raise TlogError(f"{name}: truncated header ({len(buf)} of {HEADER_SIZE} bytes)")
        raise TlogError(f"{name}: not a Theca telemetry log (only {len(buf)} bytes)")
    magic, fmt, flags, schema = HEADER.unpack_from(buf, 0)
    if magic != tp.TLOG_MAGIC:
        raise TlogError(
            f"{name}: not a Theca telemetry log (magic {magic!r}, expected {tp.TLOG_MAGIC!r})"
        )
    if fmt != tp.TLOG_FORMAT:
        raise TlogError(f"{name}: unsupported .tlog format {fmt} (this reader knows {tp.TLOG_FORMAT})")
    return TlogHeader(fmt, flags, schema)


class Tlog:
    """An open .tlog: `header`, `data` (the mapped bytes) and scanning.

    `batches()` yields `Batch`es of good frames in file order and collects
    `anomalies` as it goes; `frames()` yields (offset, memoryview) per frame.
    """

    def __init__(self, path):
        self.path = Path(path)
        name = str(path)
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            raise TlogError(f"{name}: no such file") from None
        except OSError as e:
            raise TlogError(f"{name}: {e.strerror}") from None
        if not self.path.is_file():
            raise TlogError(f"{name}: not a regular file")
        try:
            self._f = open(self.path, "rb")  # noqa: SIM115 (closed in close())
        except OSError as e:
            raise TlogError(f"{name}: {e.strerror}") from None
        self._mm = None
        if st.st_size >= HEADER_SIZE:
            self._mm = mmap.mmap(self._f.fileno(), 0, access=mmap.ACCESS_READ)
            self.data = memoryview(self._mm)
        else:
            self.data = memoryview(self._f.read())
        try:
            self.header = parse_header(self.data, name)
        except TlogError:
            self.close()
            raise
        self.anomalies: list[Anomaly] = []

    @classmethod
    def from_bytes(cls, data: bytes, name: str = "<bytes>") -> Tlog:
        """A Tlog over bytes in memory."""
        self = cls.__new__(cls)
        self.path = Path(name)
        self._f = None
        self._mm = None
        self.data = memoryview(bytes(data))
        self.header = parse_header(self.data, name)
        self.anomalies = []
        return self

    def close(self) -> None:
        """Release the mapping and the file."""
        # A caller may still hold numpy arrays or views over the map; then the
        # release is left to the garbage collector instead of failing.
        if getattr(self, "data", None) is not None:
            try:
                self.data.release()
            except BufferError:
                pass
            self.data = None
        if self._mm is not None:
            try:
                self._mm.close()
            except BufferError:
                pass
            self._mm = None
        if self._f is not None:
            self._f.close()
            self._f = None

    def __enter__(self) -> Tlog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def size(self) -> int:
        """File size in bytes."""
        return len(self.data)

    def batches(self, window: int = WINDOW) -> Iterator[Batch]:
        """Good frames in file order; anomalies are appended to `self.anomalies`."""
        self.anomalies = []
        yield from _Scanner(self.data, HEADER_SIZE, self.anomalies, window).run()

    def frames(self) -> Iterator[tuple[int, memoryview]]:
        """(file offset, frame view) for each good frame, in order."""
        d = self.data
        for b in self.batches():
            for s, n in zip(b.starts.tolist(), b.lengths.tolist(), strict=True):
                yield s, d[s : s + n]


def read_frames(path) -> tuple[list[bytes], list[Anomaly], TlogHeader]:
    """Every good frame (as bytes), the anomalies and the header of a small log."""
    with Tlog(path) as t:
        frames = [bytes(f) for _, f in t.frames()]
        return frames, list(t.anomalies), t.header


def _crc_of_zeros() -> np.ndarray:
    # CRC field of a frame whose other bytes are all zero, per frame length.
    out = np.zeros(MAX_FRAME + 1, dtype="<u4")
    for L in range(MIN_FRAME, MAX_FRAME + 1):
        out[L] = zlib.crc32(bytes(L - tp.CRC_SIZE))
    return out.view(np.uint8).reshape(-1, 4)


_CRCZ = _crc_of_zeros()


class _Scanner:
    """Finds good records in data[start:], window by window (see module doc)."""

    # After this many spurious links in one window, follow the chain one by one.
    MAX_SPLICES = 32

    def __init__(self, data: memoryview, start: int, anomalies: list[Anomaly], window: int):
        self.mv = data
        self.a = np.frombuffer(data, dtype=np.uint8)
        self.n = len(self.a)
        self.pos = start
        self.pending: int | None = None  # start of a bad region still being skipped
        self.anomalies = anomalies
        self.window = window

    # A record at candidate k is "ok" when its length is plausible and it fits
    # in the file; `link[k]` is the candidate index of the next record, or
    # -1 (no record follows), -2 (it ends the file), -3 (next window).
    def _prepare(self, p: int):
        n, a = self.n, self.a
        wend = min(n, p + self.window)
        rend = min(n, wend + _REC_HEAD + MAX_FRAME)
        cand = np.flatnonzero(a[p:rend] == MARK).astype(np.int64)
        cand += p
        last = n - 1
        ln = a[np.minimum(cand + 1, last)].astype(np.int64)
        ln |= a[np.minimum(cand + 2, last)].astype(np.int64) << 8
        nxt = cand + _REC_HEAD + ln
        ok = (cand + _REC_HEAD <= n) & (ln >= MIN_FRAME) & (ln <= MAX_FRAME) & (nxt <= n)
        idx = np.searchsorted(cand, nxt)
        if len(cand):
            idxc = np.minimum(idx, len(cand) - 1)
            hit = (idx < len(cand)) & (cand[idxc] == nxt) & ok[idxc]
        else:
            hit = np.zeros(0, dtype=bool)
        link = np.where(hit, idx, -1)
        link[(nxt >= wend) & (nxt < n)] = -3
        link[nxt == n] = -2
        link[~ok] = -1
        has_pred = np.zeros(len(cand), dtype=bool)
        has_pred[link[link >= 0]] = True
        return wend, rend, cand, ln, nxt, ok, link, has_pred

    def _crc_good(self, s: int, ln: int) -> bool:
        return zlib.crc32(self.mv[s + _REC_HEAD : s + _REC_HEAD + ln]) == _RESIDUE

    @classmethod
    def _follow(cls, k: int, link: np.ndarray, has_pred: np.ndarray) -> np.ndarray:
        """Candidate indices of the chain of records from k, in order.

        Every record after the first of a chain is some record's link target,
        so the chain is nearly "k, then every later linked-to candidate".
        That guess is checked in one vectorised compare; a stray candidate
        that a false 0xA5 happened to link to is spliced out and the check
        repeated. Pathological input falls back to walking link by link.
        """
        parts = []
        cands = np.concatenate(([k], np.flatnonzero(has_pred[k + 1 :]) + (k + 1)))
        for _ in range(cls.MAX_SPLICES):
            nxt = link[cands[:-1]]
            bad = np.flatnonzero(nxt != cands[1:])
            if not len(bad):
                parts.append(cands)
                return np.concatenate(parts)
            b = int(bad[0])
            parts.append(cands[: b + 1])
            j = int(link[cands[b]])
            if j < 0:
                return np.concatenate(parts)
            cands = cands[int(np.searchsorted(cands, j)) :]
        lk = link.tolist()
        i = int(cands[0])
        chain: list[int] = []
        push = chain.append
        while True:
            push(i)
            j = lk[i]
            if j < 0:
                break
            i = j
        parts.append(np.asarray(chain, dtype=np.int64))
        return np.concatenate(parts)

    def _first_bad_crc(self, starts: np.ndarray, lens: np.ndarray) -> int:
        """Index of the first frame whose CRC fails, or -1.

        CRC is affine over GF(2): the CRC of the whole run of records equals
        that of the same records with every frame replaced by zeros and its
        right CRC exactly when every frame is good (bar errors cancelling,
        as unlikely as a single frame's 2**-32). So one zlib pass over the
        real bytes and one over a synthetic buffer replace a call per frame;
        only a failing run is searched frame by frame.
        """
        mv = self.mv
        if len(starts) > 8:
            base = int(starts[0]) - _REC_HEAD
            end = int(starts[-1] + lens[-1])
            v = np.zeros(end - base, dtype=np.uint8)
            rel = starts - base
            a = self.a
            v[rel - 3] = MARK
            v[rel - 2] = a[starts - 2]
            v[rel - 1] = a[starts - 1]
            cz = _CRCZ[lens]
            tail = rel + lens - tp.CRC_SIZE
            for q in range(4):
                v[tail + q] = cz[:, q]
            if zlib.crc32(mv[base:end]) == zlib.crc32(v.tobytes()):
                return -1
        sl = (starts).tolist()
        crcs = list(map(zlib.crc32, map(mv.__getitem__, map(slice, sl, (starts + lens).tolist()))))
        if crcs.count(_RESIDUE) == len(crcs):
            return -1
        return next(q for q, c in enumerate(crcs) if c != _RESIDUE)

    def _report(self, x: int, c: int) -> None:
        """Classify the bad bytes [x, c) (c == n: up to the end of the file).

        Records that still chain by their lengths are counted one by one as
        "crc"; once the chain is lost the rest up to c is one "garbage" (or
        "corrupt", when it starts at a mark with an impossible length).
        """
        a, n = self.a, self.n
        y = x
        while y < c:
            if a[y] != MARK:
                self.anomalies.append(Anomaly(y, c - y, "garbage"))
                return
            if y + _REC_HEAD > n:
                self.anomalies.append(Anomaly(y, c - y, "truncated"))
                return
            ln = int(a[y + 1]) | int(a[y + 2]) << 8
            end = y + _REC_HEAD + ln
            if not MIN_FRAME <= ln <= MAX_FRAME:
                self.anomalies.append(Anomaly(y, c - y, "corrupt"))
                return
            if end > c:
                kind = "truncated" if (c == n and end > n) else "corrupt"
                self.anomalies.append(Anomaly(y, c - y, kind))
                return
            self.anomalies.append(Anomaly(y, end - y, "crc"))
            y = end

    def run(self) -> Iterator[Batch]:
        n = self.n
        while self.pos < n:
            yield from self._window()
        if self.pending is not None:
            self._report(self.pending, n)
            self.pending = None

    def _window(self) -> Iterator[Batch]:
        p = self.pos
        n = self.n
        wend, rend, cand, ln, nxt, ok, link, has_pred = self._prepare(p)
        nc = len(cand)
        if self.pending is not None:
            x, search = self.pending, p
            self.pending = None
        else:
            x, search = None, None
            k = int(np.searchsorted(cand, p))
            if not (k < nc and cand[k] == p and ok[k]):
                x, search = p, p + 1
        while True:
            if x is not None:
                # Resynchronise: the first later candidate whose record checks.
                assert search is not None  # set together with x
                k = int(np.searchsorted(cand, search))
                while k < nc and not (ok[k] and self._crc_good(int(cand[k]), int(ln[k]))):
                    k += 1
                if k >= nc:
                    if rend >= n:
                        self._report(x, n)
                        self.pos = n
                    else:
                        self.pending = x
                        self.pos = rend
                    return
                c = int(cand[k])
                self._report(x, c)
                x = None
                if c >= wend:
                    self.pos = c
                    return
            ch = self._follow(k, link, has_pred)
            starts = cand[ch] + _REC_HEAD
            lens = ln[ch]
            bad = self._first_bad_crc(starts, lens)
            if bad >= 0:
                if bad:
                    yield Batch(starts[:bad], lens[:bad])
                x = int(cand[ch[bad]])
                search = x + 1
                continue
            yield Batch(starts, lens)
            i = int(ch[-1])
            end_code = int(link[i])
            e = int(nxt[i])
            if end_code == -2:
                self.pos = n
                return
            if end_code == -3:
                self.pos = e
                return
            x, search = e, e + 1
