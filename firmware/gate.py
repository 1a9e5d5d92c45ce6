# The patient-bolus gate and the rolling 24 h drug window: the rules that stand between
# a button on a handheld remote and an overdose.
from array import array

from engine import NEVER
from micropython import const
from part import Part

BUCKET_S = const(300)
# the current (partial) bucket and the 288 before it: always at least 24 h
NBUCKETS = const(289)
MAX_STARTS = const(24)

OK = const(0)
# deny reasons, as the protocol names them
from msgdefs import (  # noqa: E402,F401
    DENY_CAPACITY as CAPACITY,
    DENY_DAILY_LIMIT as DAILY_LIMIT,
    DENY_IN_PROGRESS as IN_PROGRESS,
    DENY_LOCKOUT as LOCKOUT,
    DENY_MAX_PER_DAY as MAX_PER_DAY,
    DENY_NOT_CONFIGURED as NOT_CONFIGURED,
    DENY_NOT_RUNNING as NOT_RUNNING,
    DENY_RESERVOIR as RESERVOIR,
)


class Rolling(Part):
    """Drug delivered in the last 24 h (ng), in 5-minute buckets.

    The sum covers the current bucket and the 288 before it, i.e. between 24 h and
    24 h + 5 min: the window errs towards counting more, so a limit check errs towards
    denial.
    Per-stroke `add` is allocation-free.
    """

    SNAP_PREFIX = "rolling_"
    SNAP = ("idx", "total")

    def __init__(self):
        self.b = array("i", bytes(4 * NBUCKETS))
        self.idx = 0  # bucket number (time // BUCKET_S) of the newest bucket
        self.total = 0

    def _roll(self, now):
        # (its frame fits the C stack's 11 words: no heap block per stroke, SR-HEAP-01)
        k = now // BUCKET_S
        d = k - self.idx
        if d <= 0:
            return
        if d >= NBUCKETS:
            self.clear()
        else:
            b = self.b
            j = self.idx
            while d:
                j = (j + 1) % NBUCKETS
                self.total -= b[j]
                b[j] = 0
                d -= 1
        self.idx = k

    def snap_into(self, v):
        super().snap_into(v)
        v["rolling"] = bytes(self.b)

    def take_up(self, v):
        super().take_up(v)
        self.b[:] = array("i", v["rolling"])

    def clear(self):
        """Forget the history (another drug: one drug's ng say nothing of another's)."""
        for i in range(NBUCKETS):
            self.b[i] = 0
        self.total = 0

    def scale(self, num, den):
        """Every bucket times num / den, rounded up (another fill of the same drug)."""
        t = 0
        for i in range(NBUCKETS):
            v = (self.b[i] * num + den - 1) // den
            self.b[i] = v
            t += v
        self.total = t

    def add(self, now, ng):
        self._roll(now)
        self.b[self.idx % NBUCKETS] += ng
        self.total += ng

    def sum(self, now):
        self._roll(now)
        return self.total


class Gate(Part):
    """Lockout from the last start and a maximum count in any rolling 24 h."""

    SNAP_PREFIX = "gate_"
    SNAP = ("n", "head")

    def __init__(self):
        self.starts = array("i", bytes(4 * MAX_STARTS))  # ring of recent start times
        self.n = 0
        self.head = 0
        self.forget_count()

    def snap_into(self, v):
        super().snap_into(v)
        v["gate"] = bytes(self.starts)

    def take_up(self, v):
        super().take_up(v)
        self.starts[:] = array("i", v["gate"])
        self.forget_count()

    def forget_count(self):
        """The ring changed (a start, a restore): the next count_24h counts again."""
        self.c = 0
        self.c_from = 1
        self.c_until = 0  # [c_from, c_until): when the counted c still holds

    def last_start(self):
        if self.n == 0:
            return None
        return self.starts[(self.head - 1) % MAX_STARTS]

    def count_24h(self, now):
        """Starts in the 24 h before `now`. Counted once, then reused until the first counted
        start ages out (every STATUS frame asks; a count over 24 starts each time was a
        third of the frame's cost). A start older than 24 h stays so as `now` goes on, so
        only a new start, a restore or a clock that goes back counts again."""
        if self.c_from <= now < self.c_until:
            return self.c
        c = 0
        until = NEVER
        for i in range(self.n):
            t = self.starts[(self.head - 1 - i) % MAX_STARTS]
            if now - t < 86400:
                c += 1
                if t + 86400 < until:
                    until = t + 86400
        self.c = c
        self.c_from = now
        self.c_until = until
        return c

    def check(self, now, lockout_s, max_per_day):
        """Reason code (OK when allowed) for a patient bolus asked for at `now`."""
        last = self.last_start()
        if last is not None and now - last < lockout_s:
            return LOCKOUT
        if self.count_24h(now) >= max_per_day:
            return MAX_PER_DAY
        return OK

    def record(self, now):
        self.starts[self.head] = now
        self.head = (self.head + 1) % MAX_STARTS
        if self.n < MAX_STARTS:
            self.n += 1
        self.forget_count()
