# The local offset's changes a prescription carries (its `timezone` on the host, which
# computes the next 24 months' changes from the zone data; the pump needs none): each is
# applied at its UTC instant, as a clock change by the schedule (time_changed, who
# schedule), so a timed bolus the change jumps over starts late or is recorded as not
# given (engine.py), and daylight saving moves the daily schedule as the patient's day.
import msgdefs as md
from engine import NEVER
from eventlog import wall_u32
from part import Part

_WHO_SCHEDULE = 3  # names.WHO


class Zone(Part):
    """When the next offset change is due (monotonic device time `t`, NEVER: none)."""

    def __init__(self):
        self.t = NEVER

    def plan(self, p, now):
        """Find the next change of the prescription in force after `now` (its UTC: now +
        p.wall_delta); one already due is applied now. Call when the prescription or the
        wall clock changes."""
        rx = p.plan.rx
        self.t = NEVER
        if rx is None or not rx.zone_utc:
            return
        utc = now + p.wall_delta
        cur = -1
        for i in range(len(rx.zone_utc)):
            if rx.zone_utc[i] <= utc:
                cur = i
            else:
                self.t = rx.zone_utc[i] - p.wall_delta
                break
        if cur >= 0 and rx.zone_offset[cur] != p.offset:
            self._apply(p, now, rx.zone_offset[cur])

    def change(self, p, now):
        """The change due at `t` (the tick calls it when now >= t)."""
        self.plan(p, now)

    def _apply(self, p, now, offset):
        utc = now + p.wall_delta
        p.log(now, md.EV_TIME_CHANGED, _WHO_SCHEDULE, wall_u32(utc), wall_u32(utc), offset)
        p.set_clock(now, utc, offset)
        p.replanned()
