# The event log: numbered EventRecords (t, event_seq, code, who, a, b, c, d).
#
# Kept in a RAM ring here; a board with storage passes a `store` that keeps every
# record on flash (see store.py) and this ring is then only a cache of the newest.
import struct

from engine import NEVER
from micropython import const
from msgdefs import (
    EV_AUTH_FAILURE,
    EV_BOLUS_DENIED,
    EV_PROTECTED,
    EVENT_FMT as REC,
    EVENT_SIZE as REC_SIZE,
    PROTECTED_S,
    ROLE_PATIENT,
)

HOLD_MAX = const(24)  # events one command may hold back (below the RAM ring's 32)


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
        # a command's events are held back from flash until its snapshot is saved (they
        # go into it), so a power cut leaves the command done and logged or neither
        self.holding = False
        self.held = 0  # first seq held (0: none)
        self.dropped = 0  # floodable events not recorded: they would evict protected ones
        self.unwritten_from = 0  # first event the flash failed to take (0: none)
        if store is not None:
            self.next_seq, self.first_seq = store.log_bounds()
        # the RAM ring holds only what was appended since this boot; older is on flash
        self.ram_first = self.next_seq

    def append(self, t, code, who, a, b, c, d=0):
        """Record an event; returns its event_seq (0: not recorded, see _evicts)."""
        seq = self.next_seq
        st = self.store
        if st is not None and seq > st.slots and (code == EV_AUTH_FAILURE or (
                code == EV_BOLUS_DENIED and who == ROLE_PATIENT)) and self._evicts(seq, t):
            self.dropped += 1
            return 0
        off = (seq % self.cap) * REC_SIZE
        struct.pack_into(REC, self.buf, off, t, seq, code, who, a & 0xFFFFFFFF, b & 0xFFFFFFFF,
                         c & 0xFFFFFFFF, d & 0xFFFFFFFF)
        self.next_seq = seq + 1
        if st is not None:
            if seq > st.slots and (seq - 1) % st.slots == 0:
                self.wrapped = True  # a new lap: this event overwrites the oldest on flash
            if self.holding:
                if not self.held:
                    self.held = seq
                if seq - self.held + 1 >= HOLD_MAX:
                    self._write_held()  # more than a snapshot carries: written now
            else:
                self._write(seq)
        elif seq - self.first_seq >= self.cap:
            self.first_seq = seq - self.cap + 1
        return seq

    def _write(self, seq):
        # Event seq to flash, after any the flash failed to take before it (those still in
        # the RAM ring: older ones are gone with it)
        lo = self.unwritten_from or seq
        if lo < self.next_seq - self.cap:
            lo = self.next_seq - self.cap
        while lo <= seq:
            off = (lo % self.cap) * REC_SIZE
            try:
                first = self.store.log_append(self.mv[off : off + REC_SIZE], lo)
            except OSError:
                # the flash failed: the event stays in the RAM ring (telemetry, LOG_READ)
                # and goes to flash with the next one it takes; the fault it causes is
                # the caller's to raise
                self.unwritten_from = lo
                return
            self.first_seq = first
            lo += 1
        self.unwritten_from = 0

    def _evicts(self, seq, t):
        # Would event `seq` at wall time t overwrite a protected event younger than
        # PROTECTED_S? Only what a patient's or a keyless sender's frames can cause
        # asks (a denial, a bad MAC): they must never erase the record of therapy.
        old = self.store.log_read(seq - self.store.slots)
        if old is None:
            return False
        ot, _, ocode = struct.unpack_from(REC, old, 0)[:3]
        return ocode < len(EV_PROTECTED) and EV_PROTECTED[ocode] and t - ot < PROTECTED_S

    def first_kept(self):
        """The oldest event the flash keeps once the next event is written too."""
        n = self.next_seq - self.store.slots + 1 if self.store is not None else 1
        return n if n > 1 else 1

    def lapped(self):
        """True once after an append overwrote the oldest event on flash (a new lap)."""
        w = self.wrapped
        self.wrapped = False
        return w

    def hold(self):
        """Hold the coming events back from flash until release()."""
        self.holding = True

    def held_range(self):
        """(first seq, count) of the events held back now."""
        return (self.held, self.next_seq - self.held) if self.held else (0, 0)

    def drop_held(self):
        """Forget the events held back: the command that made them is not done (its
        snapshot could not be saved); holding goes on for what follows."""
        if self.held:
            self.next_seq = self.held
            self.held = 0

    def release(self):
        """Write the held events to flash (after the snapshot that carries them)."""
        self._write_held()
        self.holding = False

    def _write_held(self):
        # (still holding: the command goes on, and its events stay off the air until
        # release; Pump.release_events sends them all once)
        if self.held:
            for seq in range(self.held, self.next_seq):
                self._write(seq)
            self.held = 0

    def replay(self, recs, first, n):
        """After a restart: write those of n held records (first seq `first`) that the
        flash does not have yet (the cut came between the snapshot and them)."""
        for i in range(n):
            seq = first + i
            if seq != self.next_seq:
                continue  # on flash already (or a gap: never renumber)
            off = (seq % self.cap) * REC_SIZE
            self.buf[off : off + REC_SIZE] = recs[i * REC_SIZE : (i + 1) * REC_SIZE]
            self.next_seq = seq + 1
            self._write(seq)

    def skip_to(self, seq):
        """After a restart: the log on flash ends before event `seq` the pump already
        numbered (its newest were lost): the next event gets `seq`, never a number
        twice."""
        if seq > self.next_seq:
            self.next_seq = seq
            self.ram_first = seq

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
