"""Price of energy now: flat, time-of-use bands, and monthly block (stepped) tiers.

A tariff turns an energy amount (mWh) into a charge numerator in units of
mWh x price, where price is in 1/100 of a minor unit per kWh (see money.py); the
ledger divides by money.CHARGE_SCALE with a carried remainder. `cost()` allocates
nothing, so it runs inside the metering tick.
"""

from firmware.billing import money
from firmware.billing.wallclock import parse_days, parse_hhmm

TYPES = ("flat", "tou", "block")
_KEYS = {
    "flat": ("type", "price_per_kwh"),
    "tou": ("type", "bands", "default_price_per_kwh"),
    "block": ("type", "tiers"),
}
_BAND_KEYS = ("days", "from", "to", "price_per_kwh")
_TIER_KEYS = ("up_to_kwh", "price_per_kwh")


def check_keys(obj, keys, field):
    """Refuse a nested object that is not one, or that holds a key outside `keys`, naming
    the field ("tariff.bands[1].dayz: unknown key"): a misspelt key must never leave its
    field at the default without a word."""
    if not isinstance(obj, dict):
        raise ValueError(field + ": expected an object")
    for key in obj:
        if key not in keys:
            raise ValueError(field + "." + str(key) + ": unknown key")


class Flat:
    kind = "flat"

    def __init__(self, price):
        self.price = price

    def price_now(self, clock, month_wh):
        return self.price

    def cost(self, mwh, clock, month_wh, month_mwh):
        return mwh * self.price


def in_window(mask, start, end, clock):
    """True when the clock's weekday is in `mask` and start <= time < end.

    A window with end < start runs over midnight: it matches from `start` on the
    listed days until `end` the next morning (end == start is refused when parsed).
    """
    sod = clock.sod
    if start < end:
        return bool(mask & (1 << clock.wday)) and start <= sod < end
    if sod >= start:
        return bool(mask & (1 << clock.wday))
    if sod < end:
        return bool(mask & (1 << ((clock.wday + 6) % 7)))
    return False


def in_windows(windows, clock):
    """True when the clock is inside any of the parsed windows [(mask, start, end)]."""
    for w in windows:
        if in_window(w[0], w[1], w[2], clock):
            return True
    return False


class TimeOfUse:
    """Bands of (days mask, from, to, price); the first matching band wins."""

    kind = "tou"

    def __init__(self, bands, default_price):
        self.bands = bands
        self.default_price = default_price

    def price_now(self, clock, month_wh):
        for band in self.bands:
            if in_window(band[0], band[1], band[2], clock):
                return band[3]
        return self.default_price

    def cost(self, mwh, clock, month_wh, month_mwh):
        return mwh * self.price_now(clock, month_wh)


class Block:
    """Stepped tiers on the energy used this calendar month.

    tiers: list of (upper bound in Wh or None for the last tier, price). Energy that
    crosses a bound inside one tick is split between the two tiers to the mWh.
    """

    kind = "block"

    def __init__(self, tiers):
        self.tiers = tiers

    def price_now(self, clock, month_wh):
        for tier in self.tiers:
            if tier[0] is None or month_wh < tier[0]:
                return tier[1]
        return self.tiers[-1][1]

    def cost(self, mwh, clock, month_wh, month_mwh):
        total = 0
        pos_wh = month_wh
        pos_mwh = month_mwh
        for tier in self.tiers:
            bound = tier[0]
            if bound is not None and pos_wh >= bound:
                continue
            # Room left in this tier, computed only when the tick can reach the bound
            # so the arithmetic stays in small ints.
            if bound is None or bound - pos_wh > mwh // 1000 + 2:
                return total + mwh * tier[1]
            room = (bound - pos_wh) * 1000 - pos_mwh
            if mwh <= room:
                return total + mwh * tier[1]
            total += room * tier[1]
            mwh -= room
            pos_wh = bound
            pos_mwh = 0
        return total


def from_config(cfg, decimals, field="tariff"):
    """Build a tariff from its settings dict (decimal strings), naming any bad field."""
    if not isinstance(cfg, dict):
        raise ValueError(field + ": expected an object")
    kind = cfg.get("type")
    if kind not in _KEYS:
        raise ValueError(
            field + ".type: unknown tariff type " + repr(kind) + " (expected flat, tou or block)"
        )
    for key in cfg:
        if key not in _KEYS[kind]:
            raise ValueError(field + "." + key + ": unknown key for a " + repr(kind) + " tariff")
    if kind == "flat":
        return Flat(_price(cfg, "price_per_kwh", decimals, field))
    if kind == "tou":
        bands = cfg.get("bands")
        if not isinstance(bands, list):
            raise ValueError(field + ".bands: expected a list")
        out = []
        for i, band in enumerate(bands):
            f = field + ".bands[" + str(i) + "]"
            check_keys(band, _BAND_KEYS, f)
            start = parse_hhmm(band.get("from"), f + ".from")
            end = parse_hhmm(band.get("to"), f + ".to", allow_24=True)
            if start == end:
                raise ValueError(f + ": empty band (from == to)")
            mask = parse_days(band.get("days", "all"), f + ".days")
            out.append((mask, start, end, _price(band, "price_per_kwh", decimals, f)))
        return TimeOfUse(out, _price(cfg, "default_price_per_kwh", decimals, field))
    # block
    tiers = cfg.get("tiers")
    if not isinstance(tiers, list) or not tiers:
        raise ValueError(field + ".tiers: expected a non-empty list")
    out = []
    last = 0
    for i, tier in enumerate(tiers):
        f = field + ".tiers[" + str(i) + "]"
        check_keys(tier, _TIER_KEYS, f)
        up_to = tier.get("up_to_kwh")
        if up_to is None:
            if i != len(tiers) - 1:
                raise ValueError(f + ".up_to_kwh: only the last tier may be open (null)")
            bound = None
        else:
            bound = money.parse_decimal(up_to, 3, f + ".up_to_kwh")
            money.check_small(bound, f + ".up_to_kwh")
            if bound <= last:
                raise ValueError(f + ".up_to_kwh: tiers must increase")
            last = bound
        out.append((bound, _price(tier, "price_per_kwh", decimals, f)))
    if out[-1][0] is not None:
        raise ValueError(field + ".tiers: the last tier must have up_to_kwh null")
    return Block(out)


def _price(cfg, key, decimals, field):
    if key not in cfg:
        raise ValueError(field + "." + key + ": missing")
    value = money.parse_price(cfg[key], decimals, field + "." + key)
    # mWh x price must stay a 31-bit small int in a 1-second tick (about 7 mWh at 24 kW).
    if value > money.MAX_PRICE:
        raise ValueError(field + "." + key + ": implausibly high price")
    return value
