"""Device time and UTC: the one conversion every host module uses (issue 22). Device time
is seconds since 2020-01-01T00:00:00Z (the protocol's epoch); its text is ISO-8601 UTC,
e.g. 2026-01-01T00:01:00Z, one value (`iso`) or a whole column at once (`iso_matrix`,
`iso_many`, the same text)."""

from __future__ import annotations

import datetime as _dt

import numpy as np
from theca_protocol import names as N

#: Device time 0 in Unix seconds.
EPOCH_UNIX = N.EPOCH_UNIX
#: 0..999 as three digits (the thousandths of a value in uL).
FRAC = [f"{i:03d}" for i in range(1000)]
#: 0..99 as two ASCII digits, a row each.
D2 = np.array([[48 + i // 10, 48 + i % 10] for i in range(100)], np.uint8)
_ORD_1970 = _dt.date(1970, 1, 1).toordinal()
_day_cache: dict[int, str] = {}


def iso(t: int) -> str:
    """Device time as ISO-8601 UTC, e.g. 2026-01-01T00:01:00Z."""
    d, s = divmod(t + EPOCH_UNIX, 86400)
    p = _day_cache.get(d)
    if p is None:
        p = (_dt.date(1970, 1, 1) + _dt.timedelta(days=d)).isoformat()
        if len(_day_cache) < 100_000:
            _day_cache[d] = p
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    return f"{p}T{h:02d}:{m:02d}:{s:02d}Z"


def iso_matrix(t: np.ndarray) -> np.ndarray:
    """iso() of device times as an (n, 20) matrix of ASCII: the date of each distinct day
    once, the time of day from two-digit tables."""
    day, sec = np.divmod(t.astype(np.int64) + EPOCH_UNIX, 86400)
    ud, inv = np.unique(day, return_inverse=True)
    dates = np.frombuffer(b"".join(_dt.date.fromordinal(_ORD_1970 + d).isoformat().encode()
                                   for d in ud.tolist()), np.uint8).reshape(-1, 10)
    m = np.empty((len(t), 20), np.uint8)
    m[:, :10] = dates[inv]
    m[:, 10] = ord("T")
    m[:, 11:13] = D2[sec // 3600]
    m[:, 13] = m[:, 16] = ord(":")
    m[:, 14:16] = D2[sec // 60 % 60]
    m[:, 17:19] = D2[sec % 60]
    m[:, 19] = ord("Z")
    return m


def iso_many(t: np.ndarray) -> list[str]:
    """iso() of an array of device times (vectorised)."""
    return iso_matrix(t).view("S20")[:, 0].astype(str).tolist() if len(t) else []
