"""Values of a scenario file that stand on their own (volumes, whole numbers, the twin's
serial, the simulated span), each checked with its field named; scenario.py reads the
file with them."""

from __future__ import annotations

from collections.abc import Mapping

from theca.errors import BadInput, Problems
from theca.inputs import units as u

#: The longest simulation a scenario may ask for, days.
MAX_DAYS = 3660


def ml_to_nl(value, field: str, what: str) -> int:
    """A bare number of mL, or a volume with a unit, -> nL."""
    if isinstance(value, str):
        return u.parse_volume(value, field)
    q = u.parse_number(value, field, what)
    if q <= 0:
        raise BadInput.at(field, f"{value!r} must be greater than zero ({what})")
    n = u.round_half_up(q * u.NL_PER_ML)
    if n == 0:
        raise BadInput.at(field, f"{value!r} is below the resolution of 1 nL")
    return n


def uint(value, field: str, lo: int, hi: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadInput.at(field, f"expected a whole number {lo}..{hi} ({what}), got {value!r}")
    if not lo <= value <= hi:
        raise BadInput.at(field, f"{value} is outside {lo}..{hi} ({what})")
    return value


_SERIAL_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def serial(d: Mapping, probs: Problems) -> str:
    # The twin's serial: the scenario's `serial`, else one derived from the scenario's
    # content, so a run is reproducible and the logs of different scenarios (pumps) can
    # be told apart.
    if "serial" in d:
        v = d["serial"]
        if not (isinstance(v, str) and 1 <= len(v) <= 12 and set(v) <= _SERIAL_CHARS):
            probs.add("serial", f"{v!r} is not 1 to 12 letters, digits, '-' or '_'")
            return ""
        return v
    import hashlib
    import json

    text = json.dumps(d, sort_keys=True, default=str).encode()
    return "SIM" + hashlib.sha256(text).hexdigest()[:9].upper()


def sim_days(value, field: str) -> int:
    """`days` (a number, or a duration string) -> seconds, > 0 and <= MAX_DAYS days."""
    if isinstance(value, str):
        s = u.parse_duration(value, field)
    else:
        q = u.parse_number(value, field, "days of simulated time")
        if q <= 0:
            raise BadInput.at(field, f"{value!r} must be greater than zero")
        s = u.round_half_up(q * u.S_PER_DAY)
        if s == 0:
            raise BadInput.at(field, f"{value!r} is shorter than 1 s")
    if s > MAX_DAYS * u.S_PER_DAY:
        raise BadInput.at(field, f"{u.fmt_duration(s)} is longer than the maximum {MAX_DAYS} days")
    return s
