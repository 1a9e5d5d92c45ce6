# A prescription's time zone (zone.py): the offset change due now and the next one. Only a
# pump whose prescription has a time zone loads this module.
import msgdefs as md
from engine import NEVER
from eventlog import wall_u32


def plan(p, now, rx):
    """Apply the change of `rx` in force at `now` if the pump's offset is not its; returns
    the monotonic time of the next change (NEVER: none)."""
    utc = now + p.wall_delta
    cur = -1
    nxt = NEVER
    for i in range(len(rx.zone_utc)):
        if rx.zone_utc[i] <= utc:
            cur = i
        else:
            nxt = rx.zone_utc[i] - p.wall_delta
            break
    if cur >= 0 and rx.zone_offset[cur] != p.offset:
        offset = rx.zone_offset[cur]
        p.log(now, md.EV_TIME_CHANGED, md.WHO_SCHEDULE, wall_u32(utc), wall_u32(utc), offset)
        p.set_clock(now, utc, offset)
        p.replanned()
    return nxt
