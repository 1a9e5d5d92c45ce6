# The event log: numbered EventRecords (t, event_seq, code, who, a, b, c, d).
#
# Kept in a RAM ring here; a board with storage passes a `store` that keeps every
# record on flash (see store.py) and this ring is then only a cache of the newest.
import struct

from engine import NEVER
from msgdefs import EVENT_FMT as REC, EVENT_SIZE as REC_SIZE


class EventLog:
    """Append-only numbered events; the oldest are overwritten when the ring is full."""

    def __init__(self, capacity=128, store=None):
        self.cap = capacity
        self.buf = bytearray(capacity * REC_SIZE)
        self.mv = memoryview(self.buf)
        self.next_seq = 1  # number the next event gets
        self.first_seq = 1  # oldest event still readable
        self.store = store
        self.wrapped = False  # set when an append overwrote the oldest event on flash
        if store is not None:
            self.next_seq, self.first_seq = store.log_bounds()
        # the RAM ring holds only what was appended since this boot; older is on flash
        self.ram_first = self.next_seq

    def append(self, t, code, who, a, b, c, d=0):
        """Record an event; returns its event_seq."""
        seq = self.next_seq
        off = (seq % self.cap) * REC_SIZE
        struct.pack_into(REC, self.buf, off, t, seq, code, who, a & 0xFFFFFFFF, b & 0xFFFFFFFF,
                         c & 0xFFFFFFFF, d & 0xFFFFFFFF)
        self.next_seq = seq + 1
        if self.store is not None:
            first = self.store.log_append(self.mv[off : off + REC_SIZE], seq)
            n = self.store.slots
            if seq > n and (seq - 1) % n == 0:
                self.wrapped = True  # a new lap: from here on the oldest are overwritten
            self.first_seq = first
        elif seq - self.first_seq >= self.cap:
            self.first_seq = seq - self.cap + 1
        return seq

    def record(self, seq):
        """Memoryview of event `seq`'s record, or None if it is gone or not yet made."""
        if seq < self.first_seq or seq >= self.next_seq:
            return None
        if self.store is not None and (seq < self.ram_first or self.next_seq - seq > self.cap):
            return self.store.log_read(seq)
        off = (seq % self.cap) * REC_SIZE
        return self.mv[off : off + REC_SIZE]

    def read_into(self, from_seq, max_n, dst, off):
        """Copy up to max_n records from from_seq into dst at off; returns (first, count)."""
        if from_seq < self.first_seq:
            from_seq = self.first_seq
        n = 0
        while n < max_n and from_seq + n < self.next_seq:
            r = self.record(from_seq + n)
            if r is None:
                break
            dst[off : off + REC_SIZE] = r
            off += REC_SIZE
            n += 1
        return from_seq, n


def wall_u32(t):
    """A wall time as an event word (u32): a time out of range (a clock never set, before
    the epoch, past 2**30 - 1) is recorded as 0 rather than wrapped."""
    return t if 0 <= t < NEVER else 0
