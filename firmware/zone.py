# The local offset's changes a prescription carries (its `timezone` on the host, which
# computes the next 24 months' changes from the zone data; the pump needs none): each is
# applied at its UTC instant, as a clock change by the schedule (time_changed, who
# schedule), so a timed bolus the change jumps over starts late or is recorded as not
# given (engine.py), and daylight saving moves the daily schedule as the patient's day.
from engine import NEVER
from part import Part


class Zone(Part):
    """When the next offset change is due (monotonic device time `t`, NEVER: none)."""

    def __init__(self):
        self.t = NEVER

    def plan(self, p, now):
        """Find the next change of the prescription in force after `now` (its UTC: now +
        p.wall_delta); one already due is applied now. Call when the prescription or the
        wall clock changes, and at `t` (the tick). (A prescription without a time zone
        loads nothing more.)"""
        rx = p.plan.rx
        if rx is None or not rx.zone_utc:
            self.t = NEVER
            return
        import zonechange

        self.t = zonechange.plan(p, now, rx)
