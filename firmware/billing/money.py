"""Decimal strings <-> integer money and energy amounts; no float anywhere.

Money inside the meter is an integer count of the currency's minor unit (cents for
currency_decimals=2). Prices are integers in 1/100 of a minor unit per kWh, so a price
string may have currency_decimals + 2 decimals ("0.2500" with 2 decimals is 2500).
Energy is integer milli-watt-hours.
"""

PRICE_EXTRA_DECIMALS = 2  # price resolution: 1/100 of the minor unit per kWh
MWH_PER_KWH = 1000000
# charge in minor units = energy_mwh * price // CHARGE_SCALE
CHARGE_SCALE = MWH_PER_KWH * 10**PRICE_EXTRA_DECIMALS
# On the ESP32 a small int holds 31 bits; larger values become heap-allocated longs.
SMALL_INT_MAX = (1 << 30) - 1
# Highest price accepted, in price units (1/100 minor unit per kWh).
MAX_PRICE = 100000000


def parse_decimal(text, decimals, field="value", allow_negative=False):
    """Return int(text * 10**decimals) exactly; ValueError naming `field` otherwise."""
    if not isinstance(text, str):
        if isinstance(text, int) and not isinstance(text, bool):
            text = str(text)
        else:
            raise ValueError(field + ": expected a decimal string, got " + repr(text))
    s = text.strip()
    neg = False
    if s[:1] == "-":
        if not allow_negative:
            raise ValueError(field + ": must not be negative: " + repr(text))
        neg = True
        s = s[1:]
    elif s[:1] == "+":
        s = s[1:]
    whole, dot, frac = s.partition(".")
    if not whole and not frac:
        raise ValueError(field + ": not a decimal number: " + repr(text))
    for part in (whole, frac):
        for ch in part:
            if ch < "0" or ch > "9":
                raise ValueError(field + ": not a decimal number: " + repr(text))
    if dot and not frac:
        raise ValueError(field + ": not a decimal number: " + repr(text))
    if len(frac.rstrip("0")) > decimals:
        raise ValueError(
            field + ": " + repr(text) + " has more than " + str(decimals) + " decimals"
        )
    frac = (frac + "0" * decimals)[:decimals]
    value = int(whole or "0") * 10**decimals + int(frac or "0")
    return -value if neg else value


def format_decimal(value, decimals):
    """Format an integer count of 10**-decimals units as a decimal string."""
    sign = "-" if value < 0 else ""
    value = -value if value < 0 else value
    if decimals == 0:
        return sign + str(value)
    digits = str(value)
    if len(digits) <= decimals:
        digits = "0" * (decimals - len(digits) + 1) + digits
    return sign + digits[:-decimals] + "." + digits[-decimals:]


def parse_money(text, currency_decimals, field="money", allow_negative=False):
    return parse_decimal(text, currency_decimals, field, allow_negative)


def parse_price(text, currency_decimals, field="price_per_kwh"):
    return parse_decimal(text, currency_decimals + PRICE_EXTRA_DECIMALS, field)


def format_price(value, currency_decimals):
    return format_decimal(value, currency_decimals + PRICE_EXTRA_DECIMALS)


def check_small(value, field):
    """Refuse a configured amount that could push the tick into long-int arithmetic."""
    if value > SMALL_INT_MAX or value < -SMALL_INT_MAX:
        raise ValueError(field + ": out of range (limit " + str(SMALL_INT_MAX) + " units)")
    return value
