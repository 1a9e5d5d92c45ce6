# Delivery engine: a prescription's volume rates -> motor strokes, exactly.
#
# All accounting is in "units" of 1/86400 nL, so a rate of R nL/day adds exactly R units
# per second and no division happens in the per-stroke path. `acc` is the exact integral
# of the prescription minus the strokes already delivered; strokes are due while
# acc >= Q (one stroke). Because a stroke is taken the moment acc reaches Q, delivered
# volume never differs from the exact integral by a whole stroke or more.
#
# The engine is a functional core: every call takes `now` (device seconds); it never
# reads a clock or touches hardware. The pump (its `host`) is asked to gate timed
# boluses and is told about step changes and finished boluses.
from array import array

from micropython import const

NEVER = const(0x3FFFFFFF)  # "no such event": a time no schedule reaches (< 2**30)
NB = const(10)  # bolus slots: 8 timed + patient + clinician may overlap
from msgdefs import BOLUS_CLINICIAN as KIND_CLINICIAN  # noqa: E402, F401 (for the pump)
from msgdefs import BOLUS_PATIENT as KIND_PATIENT  # noqa: E402, F401
from msgdefs import BOLUS_PRIME as KIND_PRIME  # noqa: E402, F401
from msgdefs import BOLUS_TIMED as KIND_TIMED  # noqa: E402
DAY = const(86400)
_SMALL = const(0x40000000)  # 2**30: a 32-bit board's small ints stay below it


class Engine:
    """Turns the loaded plan into strokes of `stroke_nl`; see module comment."""

    def __init__(self, stroke_nl, host):
        self.stroke_nl = stroke_nl
        self.Q = stroke_nl * DAY
        self.host = host
        self.acc = 0
        self.t = 0
        self.offset = 0  # local time = device time + offset
        self.loaded = False
        # plan, volume units
        self.n_steps = 0
        self.step_start = array("i", bytes(4 * 24))
        self.step_rate = array("i", bytes(4 * 24))  # nL/day
        self.n_timed = 0
        self.timed_start = array("i", bytes(4 * 8))
        self.timed_dur = array("i", bytes(4 * 8))
        self.timed_dose = array("i", bytes(4 * 8))  # nL
        # position in the schedule
        self.step = 0
        self.basal = 0
        self.next_step_t = NEVER
        self.next_timed_t = NEVER
        self.next_timed_i = 0
        # the local day (local time // DAY) each timed bolus was last due on: given at
        # most once a local day, whatever the clock does (-1: never)
        self.timed_day = array("i", [-1] * 8)
        # bolus slots: rate (units/s), end time, remainder units added at the end
        self.b_on = bytearray(NB)
        self.b_kind = bytearray(NB)
        self.b_rate = array("i", bytes(4 * NB))
        self.b_start = array("i", bytes(4 * NB))
        self.b_end = array("i", bytes(4 * NB))
        self.b_rem = array("i", bytes(4 * NB))
        self.b_dose = array("i", bytes(4 * NB))  # nL
        self.b_next_end = NEVER
        self.rate = 0  # basal + active boluses, nL/day == units/s
        # daily profile for projections (built on load; not used per stroke)
        self.prof_t = []
        self.prof_rate = []
        self.day_units = 0

    # -- plan -------------------------------------------------------------------------
    def load(self, step_start_s, step_rate_nl, timed, now, offset):
        """Load a volume plan. `timed` is a list of (start_s, duration_s, dose_nl).

        Keeps `acc` (the fraction of a stroke already owed) and any bolus running, so a
        reprogram neither loses nor repeats volume.
        """
        if self.loaded and now > self.t:
            self.advance(now)  # the old plan is owed up to now
        self.offset = offset
        self.n_steps = len(step_start_s)
        for i in range(self.n_steps):
            self.step_start[i] = step_start_s[i]
            self.step_rate[i] = step_rate_nl[i]
        self.n_timed = len(timed)
        order = sorted(range(self.n_timed), key=lambda i: timed[i][0])
        for j, i in enumerate(order):
            if self.timed_start[j] != timed[i][0]:
                self.timed_day[j] = -1  # another time of day: not yet due on any day
            self.timed_start[j] = timed[i][0]
            self.timed_dur[j] = timed[i][1]
            self.timed_dose[j] = timed[i][2]
        self.loaded = True
        self.t = now
        self._place(now)
        self._build_profile()

    def unload(self, now):
        self.loaded = False
        self.cancel_boluses(now)
        self.basal = 0
        self.rate = 0
        self.next_step_t = NEVER
        self.next_timed_t = NEVER
        self.t = now

    def take_up_owed(self, acc):
        """After a restart: the fraction of a stroke the journal says was owed (never
        more than a stroke)."""
        if 0 < acc < self.Q:
            self.acc = acc

    def set_offset(self, offset, now):
        """A new local offset moves the schedule; nothing is integrated across it. A
        timed bolus the jump passed over is due now (the host starts it late or records
        it as not given); one already due today is not due again."""
        old = self.offset
        self.offset = offset
        self.t = now
        if self.loaded:
            self._jumped(now, old)
            self._place(now)

    def _jumped(self, now, old):
        # the timed boluses of today the clock jumped forward over (old: the offset before)
        nd, ntod = divmod(now + self.offset, DAY)
        od, otod = divmod(now + old, DAY)
        if nd < od or nd == od and ntod <= otod:
            return  # back (or nowhere): the local day's record keeps a bolus from repeating
        for j in range(self.n_timed):
            s = self.timed_start[j]
            if s > ntod or self.timed_day[j] == nd or od == nd and s <= otod:
                continue
            self.timed_day[j] = nd
            self.host.on_timed(now, self.timed_dose[j], self.timed_dur[j], ntod - s)

    def _tod(self, t):
        return (t + self.offset) % DAY

    def _place(self, now):
        # Find the step and next timed bolus for the local time of day at `now`.
        tod = self._tod(now)
        base = now - tod
        i = self.n_steps - 1
        while i > 0 and self.step_start[i] > tod:
            i -= 1
        self.step = i
        self.basal = self.step_rate[i]
        if i + 1 < self.n_steps:
            self.next_step_t = base + self.step_start[i + 1]
        else:
            self.next_step_t = base + DAY  # step 0 again at local midnight
        self._place_timed(now)
        self._sum_rate()

    def _place_timed(self, now):
        tod = self._tod(now)
        base = now - tod
        for j in range(self.n_timed):
            if self.timed_start[j] > tod:
                self.next_timed_i = j
                self.next_timed_t = base + self.timed_start[j]
                return
        if self.n_timed:
            self.next_timed_i = 0
            self.next_timed_t = base + DAY + self.timed_start[0]
        else:
            self.next_timed_t = NEVER

    def _sum_rate(self):
        r = self.basal
        nxt = NEVER
        for k in range(NB):
            if self.b_on[k]:
                r += self.b_rate[k]
                if self.b_end[k] < nxt:
                    nxt = self.b_end[k]
        self.rate = r
        self.b_next_end = nxt

    # -- time -------------------------------------------------------------------------
    def advance(self, now, deliver=True):
        """Integrate the plan up to `now`; returns the number of strokes due now.

        With deliver=False time moves on but nothing is owed (suspended, halted,
        stalled): the schedule keeps its place and is never caught up later. Every
        breakpoint (step, timed bolus, bolus end) at or before `now` is handled, at its
        own scheduled time, so none can be left behind however the engine was driven.
        """
        if now >= NEVER:
            now = NEVER - 1  # NEVER is no time: breakpoints at it are never reached
        t = self.t
        while True:
            seg = now
            if self.next_step_t < seg:
                seg = self.next_step_t
            if self.next_timed_t < seg:
                seg = self.next_timed_t
            if self.b_next_end < seg:
                seg = self.b_next_end
            if seg < t:
                seg = t  # a breakpoint already due: handle it without going back
            if deliver:
                self.acc += self.rate * (seg - t)
            t = seg
            self.t = t
            hit = False
            if self.b_next_end <= t:
                self._end_boluses(self.b_next_end, deliver)
                hit = True
            if self.next_step_t <= t:
                self._next_step(self.next_step_t)
                hit = True
            if self.next_timed_t <= t:
                self._timed_due(self.next_timed_t, deliver)
                hit = True
            if not hit and t >= now:
                break
        if not deliver:
            # A fraction of a stroke may stay owed; more than that would be a catch-up.
            if self.acc >= self.Q:
                self.acc = self.Q - 1
            return 0
        return self.acc // self.Q

    def stroke_done(self):
        """One stroke was delivered and confirmed by the mechanism."""
        self.acc -= self.Q

    def drop_owed(self):
        """Forget strokes owed but not delivered (the motor could not move): no catch-up.
        Returns the nL dropped."""
        q = self.acc // self.Q
        self.acc -= q * self.Q
        return q * self.stroke_nl

    def _next_step(self, t):
        i = self.step + 1
        if i >= self.n_steps:
            i = 0
        self.step = i
        self.basal = self.step_rate[i]
        if i + 1 < self.n_steps:
            self.next_step_t = t - self.step_start[i] + self.step_start[i + 1]
        else:
            self.next_step_t = t - self.step_start[i] + DAY
        self._sum_rate()
        if self.n_steps > 1:
            self.host.on_step(t, i, self.basal)

    def _timed_due(self, t, deliver):
        # Every timed bolus that starts at this time of day (two may share a start), once
        # a local day: a clock set back over its time does not make it due again.
        start = self.timed_start[self.next_timed_i]
        day = (t + self.offset) // DAY
        for j in range(self.next_timed_i, self.n_timed):
            if self.timed_start[j] != start:
                break
            if self.timed_day[j] == day:
                continue
            self.timed_day[j] = day
            if deliver:
                self.host.on_timed(t, self.timed_dose[j], self.timed_dur[j], 0)
            else:
                self.host.on_timed_missed(t, self.timed_dose[j])
        self._place_timed(t)

    def _end_boluses(self, t, delivered):
        for k in range(NB):
            if self.b_on[k] and self.b_end[k] <= t:
                if delivered:
                    self.acc += self.b_rem[k]
                self.b_on[k] = 0
                self.host.on_bolus_end(t, self.b_kind[k], self.b_dose[k])
        self._sum_rate()

    # -- boluses ----------------------------------------------------------------------
    def start_bolus(self, now, dose_nl, duration_s, kind):
        """Spread dose_nl over duration_s on top of the basal rate. Returns the slot or -1.

        Units owed = dose_nl * 86400 exactly: `rate` units/s for duration_s seconds, plus
        the remainder (< duration_s units, under 1 nL) when it ends.
        """
        if duration_s <= 0 or dose_nl <= 0:
            return -1
        if dose_nl * DAY // duration_s >= _SMALL or now + duration_s >= NEVER:
            # the pump refuses a bolus faster than max_rate first; a rate or an end time
            # that does not fit the slot arrays must never be stored truncated
            raise ValueError("bolus does not fit")
        if now > self.t:
            self.advance(now)  # what was owed before the bolus, at the old rate
        for k in range(NB):
            if not self.b_on[k]:
                units = dose_nl * DAY
                rate = units // duration_s
                self.b_on[k] = 1
                self.b_kind[k] = kind
                self.b_rate[k] = rate
                self.b_start[k] = now
                self.b_end[k] = now + duration_s
                self.b_rem[k] = units - rate * duration_s
                self.b_dose[k] = dose_nl
                self._sum_rate()
                return k
        return -1

    def bolus_active(self, kind):
        for k in range(NB):
            if self.b_on[k] and self.b_kind[k] == kind:
                return True
        return False

    def committed_nl(self, now):
        """Bolus volume promised but not yet delivered (nL, rounded up)."""
        tot = 0
        for k in range(NB):
            if self.b_on[k]:
                left = self.b_end[k] - now
                if left > 0:
                    tot += (self.b_rate[k] * left + self.b_rem[k] + DAY - 1) // DAY
        return tot

    def cancel_boluses(self, now):
        """Stop every bolus; each is reported with the volume its schedule had reached."""
        for k in range(NB):
            if self.b_on[k]:
                self.b_on[k] = 0
                done = self.b_rate[k] * (now - self.b_start[k]) // DAY
                self.host.on_bolus_end(now, self.b_kind[k], done)
        self._sum_rate()

    # -- planning ---------------------------------------------------------------------
    def next_breakpoint(self):
        """The next step change, timed bolus start or bolus end (NEVER if none)."""
        nxt = self.next_step_t
        if self.next_timed_t < nxt:
            nxt = self.next_timed_t
        if self.b_next_end < nxt:
            nxt = self.b_next_end
        return nxt

    def next_time(self, now):
        """When the engine next needs the pump: a stroke, a step, a bolus start or end."""
        nxt = self.next_breakpoint()
        if self.rate > 0:
            need = self.Q - self.acc
            if need <= 0:
                return now
            ts = now + (need + self.rate - 1) // self.rate
            if ts < nxt:
                nxt = ts
        return nxt

    def _build_profile(self):
        # Piecewise-constant total rate over a local day (basal + timed boluses), used
        # to project when the reservoir reaches a volume. Built once per plan.
        pts = set()
        for i in range(self.n_steps):
            pts.add(self.step_start[i])
        spans = []
        for j in range(self.n_timed):
            s = self.timed_start[j]
            units = self.timed_dose[j] * DAY
            r = units // self.timed_dur[j]
            e = s + self.timed_dur[j]
            if e <= DAY:
                spans.append((s, e, r))
            else:
                spans.append((s, DAY, r))
                spans.append((0, e - DAY, r))
        for s, e, _ in spans:
            pts.add(s)
            pts.add(e % DAY)
        pts.add(0)
        ts = sorted(pts)
        rates = []
        for t in ts:
            i = self.n_steps - 1
            while i > 0 and self.step_start[i] > t:
                i -= 1
            r = self.step_rate[i]
            for s, e, br in spans:
                if s <= t < e:
                    r += br
            rates.append(r)
        self.prof_t = ts
        self.prof_rate = rates
        tot = 0
        for k in range(len(ts)):
            end = ts[k + 1] if k + 1 < len(ts) else DAY
            tot += rates[k] * (end - ts[k])
        self.day_units = tot

    def plan_units(self, t0, t1):
        """Units (1/86400 nL) the schedule (basal + timed boluses) delivers in [t0, t1)."""
        ts = self.prof_t
        rs = self.prof_rate
        n = len(ts)
        tot = 0
        t = t0
        while t < t1:
            tod = self._tod(t)
            k = n - 1
            while k > 0 and ts[k] > tod:
                k -= 1
            end = t + (ts[k + 1] if k + 1 < n else DAY) - tod
            if end > t1:
                end = t1
            tot += rs[k] * (end - t)
            t = end
        return tot

    def committed_extra_nl(self, now):
        """Like committed_nl, for patient and clinician boluses only (timed boluses are
        part of the schedule that plan_units already counts)."""
        tot = 0
        for k in range(NB):
            if self.b_on[k] and self.b_kind[k] != KIND_TIMED:
                left = self.b_end[k] - now
                if left > 0:
                    tot += (self.b_rate[k] * left + self.b_rem[k] + DAY - 1) // DAY
        return tot

    def time_to_deliver(self, now, vol_nl, extra_nl=0):
        """Projected device time when the schedule has delivered vol_nl more (nL).

        Follows the real step schedule and timed boluses, not the current rate.
        `extra_nl` is volume already promised outside the schedule (a running patient
        bolus). Returns NEVER if the schedule delivers nothing. Allocates; call on change
        only, never per stroke.
        """
        if not self.loaded:
            return NEVER
        need = (vol_nl - extra_nl) * DAY - self.acc
        if need <= 0:
            return now
        if self.day_units <= 0:
            return NEVER
        t = now
        # whole days first (same amount every day), keeping one day to walk exactly
        days = need // self.day_units - 1
        if days > 0:
            t += days * DAY
            need -= days * self.day_units
        ts = self.prof_t
        rs = self.prof_rate
        n = len(ts)
        while True:
            tod = self._tod(t)
            k = n - 1
            while k > 0 and ts[k] > tod:
                k -= 1
            end = ts[k + 1] if k + 1 < n else DAY
            span = end - tod
            r = rs[k]
            if r * span >= need:
                return t + (need + r - 1) // r
            need -= r * span
            t += span
            if t - now > 3660 * DAY:
                return NEVER
