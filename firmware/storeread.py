# The store's boot-time reads (store.py's files): the two copies of the state, the stroke
# journal's newest record, whether the store was ever written. Only the boot calls them
# (restore.py); powerup.py drops this module from the heap after it.
import os
import struct

from binascii import crc32

from codec import crc_ok
from msgdefs import (
    JOURNAL_FMT as _J_FMT,
    JOURNAL_SIZE as _J_SIZE,
    JOURNAL_SLOTS,
    STATE_HDR_FMT as _STATE_HDR,
    STATE_HDR_SIZE as _STATE_HDR_SIZE,
    STATE_VERSION as _STATE_VERSION,
)
from store import _exists, _written


def _size(path):
    try:
        return os.stat(path)[6]
    except OSError:
        return 0


def _read_copy(path):
    # (rev, blob) of a good copy, False if damaged, None if there is none
    if not _exists(path):
        return None
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < _STATE_HDR_SIZE:
        return False
    ver, rev, crc = struct.unpack_from(_STATE_HDR, data, 0)
    blob = data[_STATE_HDR_SIZE:]
    if ver != _STATE_VERSION or crc32(blob) != crc:
        return False
    return rev, blob


def journal_last(f):
    """(the newest good record of the journal file f as a tuple (seq, t, reservoir_nl,
    delivered_ul, acc, delivered_nl, flags, window_ng) or None, records that failed
    their CRC)."""
    best = None
    bad = 0
    buf = bytearray(_J_SIZE)
    f.seek(0)
    for _ in range(JOURNAL_SLOTS):
        if f.readinto(buf) != _J_SIZE:
            break
        if not crc_ok(buf, _J_SIZE):
            if _written(buf):
                bad += 1
            continue
        r = struct.unpack_from(_J_FMT, buf, 0)
        if r[0] and (best is None or r[0] > best[0]):
            best = r
    return (best[:8] if best else None), bad


def load_state(path, bak):
    """(blob, damaged, rev): the newer good copy's snapshot (None if neither is good),
    how many copies exist but failed their CRC (or `path` is gone beside a copy), and
    the save number of the copy taken."""
    best = None
    damaged = 0
    for p in (path, bak):
        r = _read_copy(p)
        if r is None:
            continue
        if r is False:
            damaged += 1
            continue
        # the newer of two by the save number, mod 2**16 (serial number arithmetic)
        if best is None or (r[0] - best[0]) & 0xFFFF < 0x8000:
            best = r
    if best is not None and not _exists(path):
        damaged += 1  # renamed over, never removed: it was lost
    if best is None:
        return None, damaged, 0
    return best[1], damaged, best[0]


def is_blank(copies, rings):
    """True if no copy of the state exists and the ring files hold nothing (a new pump's
    store): otherwise a pump without its state is a damaged one."""
    for p in copies:
        if _exists(p):
            return False
    for p in rings:
        if _size(p):
            return False
    return True
