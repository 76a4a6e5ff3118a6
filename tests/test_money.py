"""Portable tests of firmware/billing/money.py: decimal strings <-> integer amounts, no float."""

import support
from firmware.billing import money


def _err(fn, *args, **kw):
    """The ValueError message fn raises."""
    return str(support.raises(ValueError, fn, *args, **kw))


def test_parse_decimal_known_values():
    cases = [
        ("0", 2, 0),
        ("1", 2, 100),
        ("1.5", 2, 150),
        ("1.05", 2, 105),
        ("0.01", 2, 1),
        (".5", 2, 50),
        ("+3.1", 2, 310),
        ("  12.34  ", 2, 1234),
        ("007.10", 2, 710),
        ("12", 0, 12),
        ("12.000", 0, 12),
        ("1.2500", 2, 125),  # trailing zeros beyond the precision are harmless
        ("123456.789", 3, 123456789),
        ("0.0001", 4, 1),
    ]
    for text, decimals, want in cases:
        got = money.parse_decimal(text, decimals)
        assert got == want, (text, decimals, got, want)
        assert type(got) is int


def test_parse_decimal_accepts_ints_but_not_bools_or_floats():
    assert money.parse_decimal(7, 2) == 700
    assert money.parse_decimal(0, 3) == 0
    for bad in (True, 1.5, None, b"1.00", [1]):
        msg = _err(money.parse_decimal, bad, 2, "credit")
        assert msg.startswith("credit:"), msg


def test_parse_decimal_negative_only_when_allowed():
    assert money.parse_decimal("-1.25", 2, allow_negative=True) == -125
    assert money.parse_decimal("-0.01", 2, allow_negative=True) == -1
    assert money.parse_decimal("-0", 2, allow_negative=True) == 0
    msg = _err(money.parse_decimal, "-1.25", 2, "low_credit")
    assert msg.startswith("low_credit:"), msg
    assert "negative" in msg
    msg = _err(money.parse_decimal, -3, 2, "low_credit")
    assert msg.startswith("low_credit:") and "negative" in msg, msg


def test_parse_decimal_rejects_with_the_field_named():
    bad = [
        ("1.234", 2, "decimals"),  # too many decimals
        ("0.001", 2, "decimals"),
        ("1.5", 0, "decimals"),
        ("abc", 2, "not a decimal"),
        ("1a", 2, "not a decimal"),
        ("1.2x", 2, "not a decimal"),
        ("1e3", 2, "not a decimal"),
        ("", 2, "not a decimal"),
        ("   ", 2, "not a decimal"),
        (".", 2, "not a decimal"),
        ("1.", 2, "not a decimal"),
        ("-", 2, "not a decimal"),
        ("+", 2, "not a decimal"),
        ("1.2.3", 2, "not a decimal"),
        ("1,50", 2, "not a decimal"),
        ("1 000", 2, "not a decimal"),
        ("--1", 2, "not a decimal"),
        ("+-1", 2, "not a decimal"),
    ]
    for text, decimals, why in bad:
        msg = _err(money.parse_decimal, text, decimals, "tariff.price_per_kwh", True)
        assert msg.startswith("tariff.price_per_kwh: "), (text, msg)
        assert why in msg, (text, msg)
        assert repr(text) in msg, (text, msg)


def test_parse_decimal_default_field_name():
    assert _err(money.parse_decimal, "x", 2).startswith("value: ")
    assert _err(money.parse_money, "x", 2).startswith("money: ")
    assert _err(money.parse_price, "x", 2).startswith("price_per_kwh: ")


def test_format_decimal_known_values():
    cases = [
        (0, 2, "0.00"),
        (1, 2, "0.01"),
        (99, 2, "0.99"),
        (100, 2, "1.00"),
        (12345, 2, "123.45"),
        (-1, 2, "-0.01"),
        (-12345, 2, "-123.45"),
        (7, 0, "7"),
        (-7, 0, "-7"),
        (2500, 4, "0.2500"),
        (1, 4, "0.0001"),
        (10**12, 3, "1000000000.000"),
    ]
    for value, decimals, want in cases:
        assert money.format_decimal(value, decimals) == want, (value, decimals)


def test_round_trip_format_then_parse():
    values = [0, 1, 9, 10, 11, 99, 100, 101, 999, 1000, 123456, 1 << 30, 10**15 + 7]
    for decimals in range(7):
        for v in values:
            for x in (v, -v):
                text = money.format_decimal(x, decimals)
                back = money.parse_decimal(text, decimals, allow_negative=True)
                assert back == x, (x, decimals, text, back)


def test_round_trip_parse_then_format():
    for text, decimals in (("0.00", 2), ("12.30", 2), ("-4.05", 2), ("0.2500", 4), ("8", 0)):
        v = money.parse_decimal(text, decimals, allow_negative=True)
        assert money.format_decimal(v, decimals) == text


def test_money_helpers():
    assert money.parse_money("20.00", 2) == 2000
    assert money.parse_money("20", 3) == 20000
    assert money.parse_money("-2.50", 2, allow_negative=True) == -250
    assert _err(money.parse_money, "-2.50", 2, "emergency_credit").startswith("emergency_credit: ")


def test_parse_price_scaling():
    # price units: 1/100 of the minor unit per kWh -> currency_decimals + 2 decimals
    assert money.PRICE_EXTRA_DECIMALS == 2
    assert money.parse_price("0.2500", 2) == 2500
    assert money.parse_price("0.25", 2) == 2500
    assert money.parse_price("1", 2) == 10000
    assert money.parse_price("0.0001", 2) == 1
    assert money.parse_price("0.2500", 0) == 25  # whole-unit currency: 1/100 unit
    assert money.parse_price("12.5", 0) == 1250
    assert money.parse_price("0.123456", 4) == 123456
    msg = _err(money.parse_price, "0.00001", 2, "tariff.bands[1].price_per_kwh")
    assert msg.startswith("tariff.bands[1].price_per_kwh: "), msg
    assert "4 decimals" in msg
    msg = _err(money.parse_price, "-0.25", 2)
    assert msg.startswith("price_per_kwh: ") and "negative" in msg
    assert money.format_price(2500, 2) == "0.2500"
    assert money.format_price(25, 0) == "0.25"


def test_charge_scale_matches_units():
    # 1 kWh (10**6 mWh) at a price of 1 minor unit per kWh (100 price units) is 1 unit.
    assert money.MWH_PER_KWH == 1000000
    assert money.CHARGE_SCALE == 100000000
    assert (money.MWH_PER_KWH * money.parse_price("1", 2)) // money.CHARGE_SCALE == 100
    # 3 kWh at 0.2500/kWh is 75 cents
    assert 3 * money.MWH_PER_KWH * money.parse_price("0.2500", 2) // money.CHARGE_SCALE == 75


def test_check_small():
    top = money.SMALL_INT_MAX
    assert top == (1 << 30) - 1
    for v in (0, 1, -1, top, -top):
        assert money.check_small(v, "low_credit") == v
    for v in (top + 1, -top - 1, 1 << 40):
        msg = _err(money.check_small, v, "standing_charge_per_day")
        assert msg.startswith("standing_charge_per_day: "), msg
        assert "out of range" in msg
        assert str(top) in msg


def test_max_price_keeps_a_tick_small():
    # a 1-second tick at 24 kW is under 7 mWh; times the highest price it stays small
    assert 7 * money.MAX_PRICE <= money.SMALL_INT_MAX
