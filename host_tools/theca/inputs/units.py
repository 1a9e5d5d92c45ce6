"""Quantities with units, as a clinician writes them, to integer device units.

Device units (docs/DESIGN.md): drug in ng, concentration in ng/mL, drug rate
in ng/day, volume in nL, durations in s, time of day in minutes, absolute time
in device seconds since 2020-01-01T00:00:00Z.

Parsing is exact: the number is read as a decimal `Fraction`, multiplied by
the unit's exact factor, and only then rounded once. Rounding rule: to the
nearest integer of the target unit, an exact half rounds up (all values here
are non-negative, so "up" is "away from zero"). A non-zero value that would
round to 0 is refused rather than silently dropped.

Every parser takes the field path it is reading (e.g. `steps[2].rate`) and
raises `BadInput` with a message that names it and what was expected.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from fractions import Fraction

import theca_protocol as tp

from theca.errors import BadInput
from theca.log.devtime import iso

#: The device clock counts seconds from here (docs/DESIGN.md "Time and units").
THECA_EPOCH = datetime(2020, 1, 1, tzinfo=UTC)
#: Unix time = device time + this.
UNIX_OFFSET_S = tp.EPOCH_UNIX
#: Largest device time accepted (2049-12-31T23:59:59Z, as the device's SET_TIME): the
#: firmware keeps time as a MicroPython small int (< 2**30, early 2054) in its hot paths,
#: and no horizon it computes from a clock may pass that.
DEVICE_TIME_MAX = tp.UTC_MAX
#: Largest |local offset| a clock can be set to (UTC+14 exists, beyond does not).
MAX_LOCAL_OFFSET_S = 14 * 3600

NG_PER_MG = 1_000_000
NL_PER_ML = 1_000_000
S_PER_DAY = 86_400

# Unit spellings are matched after lower-casing and mapping the micro signs
# (U+00B5, U+03BC) to "u", so "mg/mL", "MG/ML" and "µg/ml" all work.
_MASS_NG = {"ng": 1, "ug": 1_000, "mcg": 1_000, "mg": 1_000_000}
_VOLUME_NL = {"nl": 1, "ul": 1_000, "ml": 1_000_000}
_PER_DAY = {"day": 1, "d": 1, "h": 24, "hr": 24}
_DURATION_S = {
    "s": 1, "sec": 1, "second": 1, "seconds": 1,
    "min": 60, "mins": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hr": 3600, "hour": 3600, "hours": 3600,
    "d": 86400, "day": 86400, "days": 86400,
}

_HINT_CONC = "use mg/mL, mcg/mL or ug/mL"
_HINT_AMOUNT = "use mg or mcg"
_HINT_RATE = "use mg/day, mcg/day, mg/h, mcg/h, mL/day or uL/h"
_HINT_VOLUME = "use mL or uL"
_HINT_DURATION = "use s, min, h or days"

# A plain decimal: no exponent, no thousands separators, so what a person
# reads is exactly the value used.
_NUMBER = re.compile(r"([+-]?)(\d+(?:\.\d+)?|\.\d+)\s*(.*)\Z", re.S)


def ng_to_nl(ng: int, conc_ng_ml: int) -> int:
    """Drug ng -> volume nL at conc (ng/mL), rounded to nearest, halves up: exactly the
    firmware's rx.ng_to_nl, so a limit on the volume is drawn where the device draws it."""
    return (ng * NL_PER_ML + conc_ng_ml // 2) // conc_ng_ml


def round_half_up(q: Fraction) -> int:
    """Round a non-negative exact value to the nearest integer, halves up."""
    return math.floor(q + Fraction(1, 2))


def _norm_unit(unit: str) -> str:
    return re.sub(r"\s+", "", unit).replace("\u00b5", "u").replace("\u03bc", "u").lower()


def _number(value, field: str, what: str, example: str) -> tuple[Fraction, str]:
    """Split `value` into (non-negative exact number, normalised unit)."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise BadInput.at(field, f'expected {what} such as "{example}", got {value!r}')
    if isinstance(value, float) and not math.isfinite(value):
        raise BadInput.at(field, f'{value!r} is not a number (expected {what} such as "{example}")')
    if isinstance(value, (int, float)):
        raise BadInput.at(
            field, f'missing unit in {value!r} (write it as a string with a unit, e.g. "{example}")'
        )
    text = value.strip()
    if re.match(r"[+-]?\d*,\d", text):
        raise BadInput.at(field, f'"{value}": use a decimal point, not a comma (e.g. "{example}")')
    m = _NUMBER.match(text)
    if not m:
        if text.lower().lstrip("+-").startswith(("nan", "inf")):
            raise BadInput.at(field, f'"{value}" is not a number (expected {what} such as "{example}")')
        raise BadInput.at(field, f'"{value}" is not a number with a unit (expected {what} such as "{example}")')
    sign, num, unit = m.groups()
    q = Fraction(num)
    if sign == "-" and q != 0:
        raise BadInput.at(field, f'"{value}" is negative (expected {what} >= 0)')
    unit = _norm_unit(unit)
    if not unit:
        raise BadInput.at(field, f'missing unit in "{value}" (e.g. "{example}")')
    # No unit contains a digit: "1e3 mg", "0x10 mg", "10 20 mg" are malformed numbers.
    if any(c.isdigit() for c in unit) or unit[0] in ".,":
        raise BadInput.at(field, f'"{value}" is not a number with a unit (expected {what} such as "{example}")')
    return q, unit


def _unknown(field: str, value: str, unit_text: str, hint: str) -> BadInput:
    raw = _NUMBER.match(value.strip())
    shown = raw.group(3).strip() if raw else unit_text
    return BadInput.at(field, f'unknown unit "{shown}" ({hint})')


def _to_int(q: Fraction, field: str, value, target: str, allow_zero: bool) -> int:
    if q == 0:
        if allow_zero:
            return 0
        raise BadInput.at(field, f'"{value}" must be greater than zero')
    n = round_half_up(q)
    if n == 0:
        raise BadInput.at(field, f'"{value}" is below the resolution of 1 {target}')
    return n


def parse_concentration(value, field: str) -> int:
    """"10 mg/mL", "100 mcg/mL", "0.5 mg/ml" -> ng/mL (int > 0)."""
    q, unit = _number(value, field, "a concentration", "10 mg/mL")
    mass, _, vol = unit.partition("/")
    if mass not in _MASS_NG or vol != "ml":
        raise _unknown(field, value, unit, _HINT_CONC)
    return _to_int(q * _MASS_NG[mass], field, value, "ng/mL", allow_zero=False)


def parse_amount(value, field: str, *, allow_zero: bool = False) -> int:
    """"0.2 mg", "50 mcg" -> ng (int; > 0 unless `allow_zero`)."""
    q, unit = _number(value, field, "a drug amount", "0.2 mg")
    if unit not in _MASS_NG:
        raise _unknown(field, value, unit, _HINT_AMOUNT)
    return _to_int(q * _MASS_NG[unit], field, value, "ng", allow_zero)


def parse_rate_exact(value, field: str) -> tuple[Fraction, str]:
    """A rate, unrounded: (amount per day, "ng") for drug rates or (…, "nl") for volume rates.

    Kept exact so a volume rate is converted to drug with one rounding only.
    """
    q, unit = _number(value, field, "a rate", "1.5 mg/day")
    amount, _, per = unit.partition("/")
    if per not in _PER_DAY:
        raise _unknown(field, value, unit, _HINT_RATE)
    if amount in _MASS_NG:
        return q * _MASS_NG[amount] * _PER_DAY[per], "ng"
    if amount in _VOLUME_NL:
        return q * _VOLUME_NL[amount] * _PER_DAY[per], "nl"
    raise _unknown(field, value, unit, _HINT_RATE)


def volume_rate_to_ng_day(nl_per_day: Fraction | int, conc_ng_ml: int) -> Fraction:
    """nL/day of a solution at `conc_ng_ml` -> ng/day, exact."""
    return Fraction(nl_per_day) * conc_ng_ml / NL_PER_ML


def parse_rate(value, field: str, conc_ng_ml: int | None = None) -> int:
    """"1.5 mg/day", "0.1 mg/h", "0.5 mL/day", "20 uL/h" -> ng/day (int >= 0).

    Volume rates need the concentration of the solution (`conc_ng_ml`).
    Zero is allowed (a step may pause basal delivery).
    """
    q, kind = parse_rate_exact(value, field)
    if kind == "nl":
        if conc_ng_ml is None:
            raise BadInput.at(field, f'"{value}" is a volume rate and needs a valid concentration')
        q = volume_rate_to_ng_day(q, conc_ng_ml)
    return _to_int(q, field, value, "ng/day", allow_zero=True)


def parse_volume(value, field: str, *, allow_zero: bool = False) -> int:
    """"18 mL", "500 uL" -> nL (int; > 0 unless `allow_zero`)."""
    q, unit = _number(value, field, "a volume", "18 mL")
    if unit not in _VOLUME_NL:
        raise _unknown(field, value, unit, _HINT_VOLUME)
    return _to_int(q * _VOLUME_NL[unit], field, value, "nL", allow_zero)


def parse_duration(value, field: str, *, allow_zero: bool = False) -> int:
    """"30 min", "2 h", "45 s", "1 day", "80 days" -> seconds (int; > 0 unless `allow_zero`)."""
    q, unit = _number(value, field, "a duration", "30 min")
    if unit not in _DURATION_S:
        raise _unknown(field, value, unit, _HINT_DURATION)
    return _to_int(q * _DURATION_S[unit], field, value, "s", allow_zero)


def parse_number(value, field: str, what: str) -> Fraction:
    """A bare TOML number (int or float) -> exact Fraction; `what` says what it counts.

    A float is taken as the decimal the user typed (its shortest repr), so
    `0.1` is exactly 1/10.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadInput.at(field, f"expected a number ({what}), got {value!r}")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise BadInput.at(field, f"{value!r} is not a number (expected {what})")
        return Fraction(repr(value))
    return Fraction(value)


def parse_clock(value, field: str) -> int:
    """"HH:MM" (or a TOML local time such as 08:00:00) -> minutes after midnight, 0..1439."""
    expected = 'expected a time of day "HH:MM" from 00:00 to 23:59'
    if isinstance(value, time):
        if value.tzinfo is not None or value.second or value.microsecond:
            raise BadInput.at(field, f"{value.isoformat()}: {expected} (whole minutes, no offset)")
        return value.hour * 60 + value.minute
    if not isinstance(value, str):
        raise BadInput.at(field, f"{expected}, got {value!r}")
    m = re.fullmatch(r"(\d{1,2}):(\d{2})", value.strip())
    if not m:
        raise BadInput.at(field, f'"{value}": {expected}')
    h, mi = int(m.group(1)), int(m.group(2))
    if h > 23 or mi > 59:
        raise BadInput.at(field, f'"{value}": {expected}')
    return h * 60 + mi


def parse_offset(value, field: str) -> int:
    """A UTC offset "+01:00", "-05:30" or "Z" -> seconds east of UTC (|x| <= 14 h)."""
    expected = 'expected a UTC offset such as "+01:00" or "-05:30"'
    if not isinstance(value, str):
        raise BadInput.at(field, f"{expected}, got {value!r}")
    text = value.strip()
    if text.upper() == "Z":
        return 0
    m = re.fullmatch(r"([+-])(\d{2}):(\d{2})", text)
    if not m or int(m.group(3)) > 59:
        raise BadInput.at(field, f'"{value}": {expected}')
    s = int(m.group(2)) * 3600 + int(m.group(3)) * 60
    if s > MAX_LOCAL_OFFSET_S:
        raise BadInput.at(field, f'"{value}": offset beyond +/-14:00')
    return -s if m.group(1) == "-" else s


def parse_datetime(value, field: str) -> int:
    """A UTC instant (TOML offset datetime, or ISO-8601 string with Z/offset) -> device seconds.

    A time without an offset is refused: the device runs on UTC and a local
    time would be silently an hour or more off.
    """
    expected = "expected a UTC date and time such as 2026-01-01T00:00:00Z"
    dt = value
    if isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value.strip())
        except ValueError:
            raise BadInput.at(field, f'"{value}": {expected}') from None
    if not isinstance(dt, datetime):
        raise BadInput.at(field, f"{value!r}: {expected}")
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise BadInput.at(field, f"{dt.isoformat()} has no UTC offset: add Z (UTC) or an offset like +01:00")
    if dt.microsecond:
        raise BadInput.at(field, f"{dt.isoformat()}: give whole seconds (the device clock has 1 s resolution)")
    t = (dt - THECA_EPOCH) // timedelta(seconds=1)
    if t < 0:
        raise BadInput.at(field, f"{dt.isoformat()} is before the device epoch 2020-01-01T00:00:00Z")
    if t > DEVICE_TIME_MAX:
        raise BadInput.at(field, f"{dt.isoformat()} is after the last supported device time {fmt_time(DEVICE_TIME_MAX)}")
    return t


# -- formatting: exact, and each output parses back to the same integer ------


def fmt_decimal(n: int, div: int) -> str:
    """Exact decimal text of n / div (div a power of ten), no exponent, no trailing zeros."""
    d = Decimal(n) / Decimal(div)
    s = format(d, "f")
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    return s


def amount_unit(ng: int) -> str:
    """The natural unit ("mg", "mcg" or "ng") to show an amount of this size in."""
    if ng >= NG_PER_MG:
        return "mg"
    if ng >= 1000:
        return "mcg"
    return "ng"


def fmt_amount(ng: int, unit: str | None = None) -> str:
    """ng -> "0.2 mg" (exact; `unit` "mg"|"mcg"|"ng", default by size)."""
    unit = unit or amount_unit(ng)
    return f"{fmt_decimal(ng, _MASS_NG[unit])} {unit}"


def fmt_reading(ng: int | float, unit: str | None = None) -> str:
    """An amount for a person to read in `unit`: exact up to 6 significant digits, else 4
    ("1.833 mg", not "1.833334 mg"); exact values stay in the json and parquet fields."""
    unit = unit or amount_unit(int(ng))
    if isinstance(ng, int):
        exact = fmt_decimal(ng, _MASS_NG[unit])
        if len(exact.replace(".", "").replace("-", "").lstrip("0")) <= 6:
            return f"{exact} {unit}"  # (exact when short: "19.201 mcg" stays above 19.2)
    v = ng / _MASS_NG[unit]
    return f"{v:.4g} {unit}" if abs(v) < 10000 else f"{v:,.0f} {unit}"


def fmt_rate(ng_day: int, unit: str | None = None) -> str:
    """ng/day -> "1.5 mg/day"."""
    return fmt_amount(ng_day, unit) + "/day"


def fmt_conc(ng_ml: int) -> str:
    """ng/mL -> "10 mg/mL" or "100 mcg/mL"."""
    return fmt_amount(ng_ml) + "/mL"


def fmt_volume(nl: int) -> str:
    """nL -> "18 mL" or "500 uL"."""
    if nl >= NL_PER_ML:
        return f"{fmt_decimal(nl, NL_PER_ML)} mL"
    if nl >= 1000:
        return f"{fmt_decimal(nl, 1000)} uL"
    return f"{nl} nL"


def fmt_duration(s: int) -> str:
    """seconds -> "30 min", "2 h", "80 days", "45 s" (largest unit that divides exactly)."""
    if s and s % S_PER_DAY == 0:
        d = s // S_PER_DAY
        return "1 day" if d == 1 else f"{d} days"
    if s and s % 3600 == 0:
        return f"{s // 3600} h"
    if s and s % 60 == 0:
        return f"{s // 60} min"
    return f"{s} s"


def fmt_clock(minutes: int) -> str:
    """minutes after midnight -> "HH:MM"."""
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def fmt_time(t: int) -> str:
    """device seconds -> "2026-01-01T00:00:00Z" (the one conversion: log/devtime.py)."""
    return iso(t)
