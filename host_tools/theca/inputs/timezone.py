"""A prescription's `timezone` (an IANA name): the local offset's changes over the next 24
months, from the zone data of the pinned `tzdata` package (the same on every machine; the
pump needs none). The host sends them with the prescription; the pump applies each at its
UTC instant (SAFETY.md SR-TIME-04)."""

from __future__ import annotations

import importlib.resources
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from theca_protocol import messages as M

from theca.inputs import units as u

#: How far ahead the changes are computed.
MONTHS = 24
_DAY = 86400


def zone(name: str) -> ZoneInfo:
    """The zone `name` from the tzdata package; ValueError naming it if there is none."""
    if not isinstance(name, str) or not name or ".." in name or name.startswith("/"):
        raise ValueError(f"{name!r} is not an IANA time zone name such as \"Europe/Berlin\"")
    try:
        res = importlib.resources.files("tzdata.zoneinfo").joinpath(*name.split("/"))
        with res.open("rb") as f:
            return ZoneInfo.from_file(f, key=name)
    except (OSError, ValueError):
        raise ValueError(f"{name!r} is not an IANA time zone (e.g. \"Europe/Berlin\", "
                         "\"America/New_York\")") from None


def _offset(z: ZoneInfo, t: int) -> int:
    off = datetime.fromtimestamp(t + u.UNIX_OFFSET_S, z).utcoffset()
    assert off is not None
    return int(off.total_seconds())


def changes(name: str, start: int, months: int = MONTHS) -> tuple[tuple[int, int], ...]:
    """((device time, offset s), ...): the offset at `start` (device time), then each change
    in the next `months`, to the second, at most RX_MAX_ZONE in all (the first ones)."""
    z = zone(name)
    out = [(start, _offset(z, start))]
    end = start + months * 30 * _DAY + months // 2 * _DAY  # ~`months` months
    t = start
    while t < end and len(out) < M.RX_MAX_ZONE:
        nxt = t + _DAY
        if _offset(z, nxt) != out[-1][1]:
            lo, hi = t, nxt  # the change is in (lo, hi]: find its second
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if _offset(z, mid) == out[-1][1]:
                    lo = mid
                else:
                    hi = mid
            out.append((hi, _offset(z, hi)))
        t = nxt
    return tuple(out)


def now_device() -> int:
    """The host's clock as device time (UTC seconds since 2020-01-01)."""
    return int((datetime.now(u.THECA_EPOCH.tzinfo) - u.THECA_EPOCH) / timedelta(seconds=1))
