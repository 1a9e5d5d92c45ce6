"""Quantities with units -> integer device units (host_tools/theca/units.py)."""

from __future__ import annotations

import tomllib
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st
from theca.errors import BAD_INPUT, DEVICE_REFUSED, LINK_FAILURE, OK, BadInput, Problems
from theca.inputs import units as u


def msg(exc: pytest.ExceptionInfo) -> str:
    assert isinstance(exc.value, BadInput)
    assert len(exc.value.messages) == 1
    return exc.value.messages[0]


# -- conversions -------------------------------------------------------------


@pytest.mark.parametrize("text, ng_ml", [
    ("10 mg/mL", 10_000_000),
    ("100 mcg/mL", 100_000),
    ("100 ug/mL", 100_000),
    ("100 \u00b5g/mL", 100_000),   # micro sign
    ("100 \u03bcg/mL", 100_000),   # Greek mu
    ("0.5 mg/ml", 500_000),
    ("0.5 MG/ML", 500_000),
    ("25mcg/mL", 25_000),
    ("2 mg / mL", 2_000_000),
    ("  20 mg/mL  ", 20_000_000),
    ("1 ng/mL", 1),
    (".5 mg/mL", 500_000),
])
def test_concentration(text, ng_ml):
    assert u.parse_concentration(text, "concentration") == ng_ml


@pytest.mark.parametrize("text, ng", [
    ("0.2 mg", 200_000),
    ("50 mcg", 50_000),
    ("50 ug", 50_000),
    ("1 mg", 1_000_000),
    ("0.07 mg", 70_000),        # 0.07 * 1e6 is 70000.00000000001 in floats
    ("4.35 mg", 4_350_000),     # 4.35 * 1e6 is 4349999.999999999 in floats
    ("12 ng", 12),
])
def test_amount(text, ng):
    assert u.parse_amount(text, "dose") == ng


@pytest.mark.parametrize("text, ng_day", [
    ("1.5 mg/day", 1_500_000),
    ("100 mcg/day", 100_000),
    ("100 ug/day", 100_000),
    ("0.1 mg/h", 2_400_000),
    ("5 mcg/h", 120_000),
    ("0 mg/day", 0),
    ("0.0 mcg/h", 0),
])
def test_drug_rate(text, ng_day):
    assert u.parse_rate(text, "rate") == ng_day


@pytest.mark.parametrize("text, conc, ng_day", [
    ("0.5 mL/day", 10_000_000, 5_000_000),     # 0.5 mL x 10 mg/mL
    ("20 uL/h", 10_000_000, 4_800_000),        # 480 uL/day x 10 mg/mL
    ("4 uL/h", 25_000, 2_400),                 # ziconotide 25 mcg/mL
    ("0.1 mL/day", 3, 0),                      # 0.3 ng/day -> 0 would be refused, see below
])
def test_volume_rate(text, conc, ng_day):
    if ng_day == 0:
        with pytest.raises(BadInput) as e:
            u.parse_rate(text, "steps[1].rate", conc)
        assert msg(e) == 'steps[1].rate: "0.1 mL/day" is below the resolution of 1 ng/day'
    else:
        assert u.parse_rate(text, "rate", conc) == ng_day


def test_volume_rate_needs_concentration():
    with pytest.raises(BadInput) as e:
        u.parse_rate("0.5 mL/day", "steps[2].rate")
    assert msg(e).startswith("steps[2].rate: ")
    assert "concentration" in msg(e)


def test_rate_exact_keeps_kind():
    assert u.parse_rate_exact("20 uL/h", "r") == (Fraction(480_000), "nl")
    assert u.parse_rate_exact("1 mcg/h", "r") == (Fraction(24_000), "ng")
    assert u.volume_rate_to_ng_day(Fraction(1, 3), 3_000_000) == 1


@pytest.mark.parametrize("text, nl", [
    ("18 mL", 18_000_000), ("500 uL", 500_000), ("0.15 mL", 150_000), ("1.1 mL", 1_100_000),
    ("250 nL", 250),
])
def test_volume(text, nl):
    assert u.parse_volume(text, "volume") == nl


@pytest.mark.parametrize("text, s", [
    ("30 min", 1800), ("10 min", 600), ("2 h", 7200), ("45 s", 45), ("1 day", 86400),
    ("80 days", 80 * 86400), ("1.5 h", 5400), ("90 sec", 90), ("2 hours", 7200),
    ("0.5 day", 43200), ("1 minute", 60),
])
def test_duration(text, s):
    assert u.parse_duration(text, "duration") == s


def test_zero_allowed_only_when_asked():
    assert u.parse_duration("0 days", "remaining", allow_zero=True) == 0
    assert u.parse_amount("0 mg", "x", allow_zero=True) == 0
    assert u.parse_volume("0 mL", "x", allow_zero=True) == 0
    with pytest.raises(BadInput) as e:
        u.parse_duration("0 min", "timed_boluses[1].duration")
    assert msg(e) == 'timed_boluses[1].duration: "0 min" must be greater than zero'


# -- rounding: nearest, halves up, never to zero silently ---------------------


def test_rounding_half_up_not_bankers():
    # 2.5 ng: banker's rounding would give 2.
    assert u.parse_amount("0.0000025 mg", "d") == 3
    assert u.parse_amount("0.0000035 mg", "d") == 4
    assert u.parse_amount("0.0000024 mg", "d") == 2
    assert u.parse_amount("0.0000005 mg", "d") == 1
    assert u.parse_duration("0.5 s", "d") == 1
    assert u.parse_duration("1.49 s", "d") == 1
    assert u.round_half_up(Fraction(5, 2)) == 3
    assert u.round_half_up(Fraction(7, 3)) == 2


def test_nonzero_that_rounds_to_zero_is_refused():
    with pytest.raises(BadInput) as e:
        u.parse_amount("0.0000004 mg", "patient_bolus.dose")
    assert msg(e) == 'patient_bolus.dose: "0.0000004 mg" is below the resolution of 1 ng'
    with pytest.raises(BadInput) as e:
        u.parse_rate("0.0001 mcg/day", "steps[1].rate")
    assert "below the resolution of 1 ng/day" in msg(e)


# -- bad input ----------------------------------------------------------------


def test_unknown_rate_unit_message():
    with pytest.raises(BadInput) as e:
        u.parse_rate("1.5 mg/week", "steps[1].rate")
    assert msg(e) == ('steps[1].rate: unknown unit "mg/week" '
                      '(use mg/day, mcg/day, mg/h, mcg/h, mL/day or uL/h)')


@pytest.mark.parametrize("fn, text, unit, hint", [
    (u.parse_concentration, "10 mg/L", "mg/L", "mg/mL, mcg/mL or ug/mL"),
    (u.parse_concentration, "10 mg", "mg", "mg/mL"),
    (u.parse_amount, "0.2 mL", "mL", "mg or mcg"),
    (u.parse_amount, "2 grams", "grams", "mg or mcg"),
    (u.parse_volume, "18 mg", "mg", "mL or uL"),
    (u.parse_duration, "3 weeks", "weeks", "s, min, h or days"),
    (u.parse_rate, "1 mg/min", "mg/min", "mg/day"),
    (u.parse_rate, "1 mg", "mg", "mg/day"),
    (u.parse_rate, "1 L/day", "L/day", "mL/day"),
])
def test_unknown_units(fn, text, unit, hint):
    with pytest.raises(BadInput) as e:
        fn(text, "the.field")
    m = msg(e)
    assert m.startswith(f'the.field: unknown unit "{unit}"')
    assert hint in m


@pytest.mark.parametrize("value, expect", [
    (10, "missing unit in 10"),
    (1.5, "missing unit in 1.5"),
    ("10", 'missing unit in "10"'),
    ("-1 mg", "is negative"),
    ("-0.5 mg", "is negative"),
    ("nan mg", "is not a number"),
    ("NaN", "is not a number"),
    ("inf mg", "is not a number"),
    (float("nan"), "is not a number"),
    (float("inf"), "is not a number"),
    ("mg", "is not a number with a unit"),
    ("", "is not a number with a unit"),
    ("1e3 mg", "is not a number with a unit"),
    ("1.2.3 mg", "is not a number with a unit"),
    ("10 20 mg", "is not a number with a unit"),
    ("0,5 mg", "decimal point"),
    ("0x10 mg", "is not a number with a unit"),
    (True, "expected a drug amount"),
    (None, "expected a drug amount"),
    (["1 mg"], "expected a drug amount"),
    ({"v": 1}, "expected a drug amount"),
])
def test_bad_amounts(value, expect):
    with pytest.raises(BadInput) as e:
        u.parse_amount(value, "timed_boluses[2].dose")
    m = msg(e)
    assert m.startswith("timed_boluses[2].dose: ")
    assert expect in m
    assert e.value.fields == ["timed_boluses[2].dose"]


def test_negative_zero_is_zero():
    # "-0" is not negative; whether zero is allowed is the caller's rule.
    assert u.parse_rate("-0 mg/day", "r") == 0
    with pytest.raises(BadInput, match="greater than zero"):
        u.parse_amount("-0 mg", "d")


# -- clock times, offsets, instants --------------------------------------------


@pytest.mark.parametrize("value, minutes", [
    ("00:00", 0), ("08:00", 480), ("23:59", 1439), ("7:05", 425), (" 12:30 ", 750),
    (time(8, 0), 480), (time(23, 59), 1439),
])
def test_clock(value, minutes):
    assert u.parse_clock(value, "steps[1].start") == minutes


def test_clock_from_toml_local_time():
    data = tomllib.loads("start = 08:30:00")
    assert u.parse_clock(data["start"], "start") == 510


@pytest.mark.parametrize("value", ["24:00", "12:60", "noon", "12:00:30", "-1:00", "1200", "",
                                   720, 8.0, None, time(8, 0, 30),
                                   time(8, 0, tzinfo=UTC)])
def test_bad_clock(value):
    with pytest.raises(BadInput) as e:
        u.parse_clock(value, "steps[3].start")
    m = msg(e)
    assert m.startswith("steps[3].start: ")
    assert '"HH:MM"' in m and "00:00 to 23:59" in m


@pytest.mark.parametrize("text, s", [
    ("+01:00", 3600), ("-05:30", -19800), ("Z", 0), ("+00:00", 0), ("+14:00", 50400),
    ("-14:00", -50400),
])
def test_offset(text, s):
    assert u.parse_offset(text, "local_offset") == s


@pytest.mark.parametrize("value", ["01:00", "+1:00", "+15:00", "+01:75", "UTC+1", 3600, ""])
def test_bad_offset(value):
    with pytest.raises(BadInput) as e:
        u.parse_offset(value, "local_offset")
    assert msg(e).startswith("local_offset: ")


def test_datetime_epoch_and_forms():
    assert u.parse_datetime("2020-01-01T00:00:00Z", "start") == 0
    t = u.parse_datetime("2026-01-01T00:00:00Z", "start")
    assert t == 1767225600 - u.UNIX_OFFSET_S == 189388800
    toml = tomllib.loads("a = 2026-01-01T00:00:00Z\nb = 2026-01-01T01:00:00+01:00")
    assert u.parse_datetime(toml["a"], "a") == t
    assert u.parse_datetime(toml["b"], "b") == t          # offsets convert to UTC
    assert u.parse_datetime(datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=-5))), "c") \
        == t + 5 * 3600
    assert u.fmt_time(t) == "2026-01-01T00:00:00Z"


@pytest.mark.parametrize("value, expect", [
    ("2026-01-01T00:00:00", "no UTC offset"),
    (datetime(2026, 1, 1), "no UTC offset"),
    ("2026-01-01", "no UTC offset"),
    (date(2026, 1, 1), "expected a UTC date and time"),
    ("yesterday", "expected a UTC date and time"),
    (1767225600, "expected a UTC date and time"),
    ("2026-01-01T00:00:00.5Z", "whole seconds"),
    ("2019-12-31T23:59:59Z", "before the device epoch"),
    ("2060-01-01T00:00:00Z", "after the last supported device time"),
])
def test_bad_datetime(value, expect):
    with pytest.raises(BadInput) as e:
        u.parse_datetime(value, "events[4].at")
    m = msg(e)
    assert m.startswith("events[4].at: ")
    assert expect in m


def test_parse_number_exact():
    assert u.parse_number(0.1, "x", "mL") == Fraction(1, 10)
    assert u.parse_number(20, "x", "mL") == 20
    for bad in (True, "20", None, float("nan")):
        with pytest.raises(BadInput, match=r"^x: "):
            u.parse_number(bad, "x", "mL")


# -- formatting ------------------------------------------------------------------


def test_formatting():
    assert u.fmt_amount(200_000) == "200 mcg"
    assert u.fmt_amount(200_000, "mg") == "0.2 mg"
    assert u.fmt_amount(16_200_000) == "16.2 mg"
    assert u.fmt_amount(15_000_001) == "15.000001 mg"
    assert u.fmt_amount(12) == "12 ng"
    assert u.fmt_rate(19_200) == "19.2 mcg/day"
    assert u.fmt_conc(10_000_000) == "10 mg/mL"
    assert u.fmt_conc(100_000) == "100 mcg/mL"
    assert u.fmt_volume(18_000_000) == "18 mL"
    assert u.fmt_volume(150_000) == "150 uL"
    assert u.fmt_volume(250) == "250 nL"
    assert u.fmt_duration(1800) == "30 min"
    assert u.fmt_duration(86400) == "1 day"
    assert u.fmt_duration(80 * 86400) == "80 days"
    assert u.fmt_duration(5400) == "90 min"
    assert u.fmt_duration(0) == "0 s"
    assert u.fmt_clock(425) == "07:05"


def test_errors_module():
    assert (OK, BAD_INPUT, DEVICE_REFUSED, LINK_FAILURE) == (0, 2, 3, 4)
    e = BadInput(["a: x", "b: y"], ["a", "b"])
    assert str(e) == "a: x\nb: y"
    with pytest.raises(ValueError):
        BadInput([])
    p = Problems()
    p.add("steps[1].rate", "bad")
    p.add(None, "whole file")
    with pytest.raises(BadInput) as ei:
        p.raise_if_any("rx.toml", lambda f: 7 if f == "steps[1].rate" else None)
    assert ei.value.messages == ["rx.toml:7: steps[1].rate: bad", "rx.toml: whole file"]


# -- properties ------------------------------------------------------------------

ints = st.integers(min_value=1, max_value=10**12)


@given(ints, st.sampled_from(["mg", "mcg", "ng", None]))
def test_amount_roundtrip(ng, unit):
    assert u.parse_amount(u.fmt_amount(ng, unit), "d") == ng


@given(ints)
def test_conc_volume_duration_roundtrip(n):
    assert u.parse_concentration(u.fmt_conc(n), "c") == n
    assert u.parse_volume(u.fmt_volume(n), "v") == n
    assert u.parse_duration(u.fmt_duration(n), "t") == n


@given(st.integers(min_value=0, max_value=10**12))
def test_rate_roundtrip(n):
    assert u.parse_rate(u.fmt_rate(n), "r") == n


@given(st.integers(min_value=0, max_value=1439))
def test_clock_roundtrip(m):
    assert u.parse_clock(u.fmt_clock(m), "s") == m


@given(st.integers(min_value=0, max_value=u.DEVICE_TIME_MAX))
def test_time_roundtrip(t):
    assert u.parse_datetime(u.fmt_time(t), "at") == t


@given(st.decimals(min_value=Decimal("0.000001"), max_value=Decimal("100000"), places=9,
                   allow_nan=False, allow_infinity=False),
       st.sampled_from([("mg", 10**6), ("mcg", 1000), ("ug", 1000), ("ng", 1)]))
def test_amount_is_exact_then_rounded_once(d, unit):
    name, factor = unit
    exact = Fraction(d) * factor
    text = f"{format(d, 'f')} {name}"
    if exact == 0:
        return
    if u.round_half_up(exact) == 0:
        with pytest.raises(BadInput, match="below the resolution"):
            u.parse_amount(text, "d")
    else:
        got = u.parse_amount(text, "d")
        assert got == u.round_half_up(exact)
        assert abs(got - exact) <= Fraction(1, 2)


@given(st.integers(min_value=0, max_value=10**9), st.integers(min_value=1, max_value=10**8))
def test_volume_rate_conversion_exact(nl_day, conc):
    text = f"{u.fmt_decimal(nl_day, 1000)} uL/day"
    exact = Fraction(nl_day * conc, 10**6)
    if nl_day and u.round_half_up(exact) == 0:
        with pytest.raises(BadInput):
            u.parse_rate(text, "r", conc)
    else:
        assert u.parse_rate(text, "r", conc) == u.round_half_up(exact)
