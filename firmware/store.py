# Persistent state on the board's littlefs2 filesystem (a mounted image on the twin).
#
# Three files, each written so that a power cut at any instant leaves a usable state:
# - state.bin and state.bak: two copies of the therapy snapshot (prescription, mode,
#   alarms, concentration, bolus history, rolling 24 h buckets, key counters...), each
#   with a save number and a CRC. state.bin is written to state.new, then renamed over
#   (littlefs renames atomically: a cut leaves the old or the new one), then state.bak
#   is written: a byte damaged in one copy leaves the other, the same save. Boot takes
#   up the newer good copy and says what it found damaged (restore.py).
# - journal.bin: the stroke journal, a ring of fixed records (seq, CRC). A record with
#   the reservoir *after* the next stroke is written before the motor moves, so a cut
#   can only make the pump believe it delivered one stroke it did not: the reservoir is
#   never over-estimated.
# - events.bin: the event log, a ring of EVENT_SLOTS fixed slots (record + CRC); the slot
#   of event n is n % EVENT_SLOTS, so boot finds the newest by scanning.
import os
import struct

import micropython

from binascii import crc32

from codec import crc_ok, crc_put
from msgdefs import (
    EVENT_FMT as _EV_FMT,
    EVENT_SIZE as _EV_REC,
    EVENT_SLOT_SIZE as _EV_SLOT,
    EVENT_SLOTS,
    JOURNAL_FMT as _J_FMT,
    JOURNAL_SIZE as _J_SIZE,
    JOURNAL_SLOTS,
    STATE_HDR_FMT as _STATE_HDR,
    STATE_VERSION as _STATE_VERSION,
)

_J_CRC_AT = _J_SIZE - 4  # the journal record's CRC covers what is before it


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def _written(buf):
    # a slot that holds something (a file grows with zeros where nothing was written yet)
    for b in buf:
        if b:
            return True
    return False


class Store:
    """The pump's files under `root` (a directory on a littlefs2 filesystem)."""

    def __init__(self, root, event_slots=EVENT_SLOTS):
        self.dir = root.rstrip("/") + "/theca"
        if not _exists(self.dir):
            os.mkdir(self.dir)
        self.slots = event_slots
        self.ev_path = self.dir + "/events.bin"
        self.j_path = self.dir + "/journal.bin"
        self.state_path = self.dir + "/state.bin"
        self.state_new = self.dir + "/state.new"
        self.state_bak = self.dir + "/state.bak"
        self.rev = 0  # the save number of the copy taken up (load_state), then of the last
        # what the boot found damaged (STORAGE_DAMAGE bits of the journal and the events)
        self.j_bad = 0  # journal slots that failed their CRC
        self.ev_bad = 0  # event slots that failed their CRC
        self._ev_buf = bytearray(_EV_SLOT)
        self._ev_rd = bytearray(_EV_SLOT)
        self._j_buf = bytearray(_J_SIZE)
        self.j_seq = 0
        self.ev = self._open_ring(self.ev_path)
        self.j = self._open_ring(self.j_path)
        self.writes = 0  # file writes made, for the wear figures

    def _open_ring(self, path):
        if not _exists(path):
            with open(path, "wb"):
                pass
        return open(path, "r+b")

    # -- event ring ---------------------------------------------------------------------
    def log_bounds(self):
        """(next_seq, first_seq) from the slots on flash. Scans every slot once at boot."""
        hi = 0
        lo = 0
        buf = self._ev_rd
        f = self.ev
        f.seek(0)
        for i in range(self.slots):
            if f.readinto(buf) != _EV_SLOT:
                break
            if not crc_ok(buf, _EV_REC + 4):
                if _written(buf):
                    self.ev_bad += 1
                continue
            seq = struct.unpack_from(_EV_FMT, buf, 0)[1]
            if seq == 0 or seq % self.slots != i:
                continue
            if seq > hi:
                hi = seq
            if lo == 0 or seq < lo:
                lo = seq
        if hi == 0:
            return 1, 1
        first = hi - self.slots + 1
        if first < lo:
            first = lo
        return hi + 1, first

    def log_append(self, rec, seq):
        """Write event `seq` (22-byte record) to its slot; returns the first readable seq."""
        buf = self._ev_buf
        buf[:_EV_REC] = rec
        crc_put(buf, _EV_REC)  # the CRC never becomes a Python int (no allocation)
        f = self.ev
        f.seek((seq % self.slots) * _EV_SLOT)
        f.write(buf)
        f.flush()
        self.writes += 1
        first = seq - self.slots + 1
        return first if first > 1 else 1

    def log_read(self, seq):
        """Event `seq` as bytes, or None if its slot holds another or a damaged record."""
        buf = bytearray(_EV_SLOT)
        f = self.ev
        f.seek((seq % self.slots) * _EV_SLOT)
        if f.readinto(buf) != _EV_SLOT:
            return None
        if not crc_ok(buf, _EV_REC + 4):
            return None
        if struct.unpack_from(_EV_FMT, buf, 0)[1] != seq:
            return None
        return memoryview(buf)[:_EV_REC]

    # -- stroke journal -----------------------------------------------------------------
    @micropython.native
    def journal(self, t, reservoir_nl, delivered_ul, delivered_nl, acc, flags, window_ng):
        """Write ahead: the accounting as it will be after the coming stroke, and the drug
        the rolling 24 h window holds with it."""
        self.j_seq += 1
        buf = self._j_buf
        struct.pack_into(_J_FMT, buf, 0, self.j_seq, t, reservoir_nl, delivered_ul, acc,
                         delivered_nl, flags, window_ng, 0)
        crc_put(buf, _J_CRC_AT)
        f = self.j
        f.seek((self.j_seq % JOURNAL_SLOTS) * _J_SIZE)
        f.write(buf)
        f.flush()
        self.writes += 1

    def journal_last(self):
        """The newest good journal record as a tuple (seq, t, reservoir_nl, delivered_ul,
        acc, delivered_nl, flags, window_ng), or None; j_bad counts the damaged ones.
        (Boot only: storeread.py, which leaves the heap after the boot.)"""
        import storeread

        best, self.j_bad = storeread.journal_last(self.j)
        if best is not None:
            self.j_seq = best[0]
        return best

    # -- snapshot -----------------------------------------------------------------------
    def save_state(self, blob):
        """Replace both copies of the snapshot: state.bin atomically (write new, rename
        over), then state.bak. Allocates: never per stroke."""
        self.rev = (self.rev + 1) & 0xFFFF
        hdr = struct.pack(_STATE_HDR, _STATE_VERSION, self.rev, crc32(blob))
        with open(self.state_new, "wb") as f:
            f.write(hdr)
            f.write(blob)
        os.rename(self.state_new, self.state_path)
        with open(self.state_bak, "wb") as f:
            f.write(hdr)
            f.write(blob)
        self.writes += 2

    def load_state(self):
        """(blob, damaged): the newer good copy's snapshot (None if neither is good) and
        how many copies exist but failed their CRC (or state.bin is gone beside a copy).
        (Boot only: storeread.py.)"""
        import storeread

        blob, damaged, self.rev = storeread.load_state(self.state_path, self.state_bak)
        return blob, damaged

    def is_blank(self):
        """True if no copy of the state, no journal record and no event was ever written
        here (a new pump): otherwise a pump without its state is a damaged one."""
        import storeread

        return storeread.is_blank((self.state_path, self.state_bak), (self.j_path, self.ev_path))

    def close(self):
        self.ev.close()
        self.j.close()
