"""CPython-only property tests of billing: the ledger's carry, the meter's tariffs, thresholds.

Oracles are independent of the firmware: exact arithmetic with fractions.Fraction, the
weekday from datetime, and a time-of-use / block tier model written here from the
documented semantics (a band with to < from runs from `from` on a listed day to `to`
the next morning; block tiers count the calendar month's energy, split to the mWh).
A tick is priced at its start, the clock time before it advances, and its energy counts
in the month it started in (docs/billing.md).
"""

from datetime import datetime, timedelta
from fractions import Fraction
from math import floor

from hypothesis import given
from hypothesis import strategies as st

from firmware.billing import events as ev
from firmware.billing.events import EventLog
from firmware.billing.ledger import SECONDS_PER_DAY, Ledger
from firmware.billing.meter import Meter
from firmware.billing.money import CHARGE_SCALE, MAX_PRICE
from firmware.billing.settings import Settings
from firmware.billing.wallclock import WallClock

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


# -- helpers written for the tests (no firmware code) ----------------------------------
def dec(value, decimals):
    """Integer count of 10**-decimals units -> decimal string."""
    if decimals == 0:
        return str(value)
    return "%d.%0*d" % (value // 10**decimals, decimals, value % 10**decimals)


def hhmm(minutes):
    return "%02d:%02d" % divmod(minutes, 60)


# -- the ledger's carry -----------------------------------------------------------------
@given(
    slices=st.lists(st.integers(0, 10**7), max_size=300),
    price=st.integers(0, MAX_PRICE),
    carry0=st.integers(0, CHARGE_SCALE - 1),
)
def test_random_splits_bill_the_floor_of_the_total(slices, price, carry0):
    led = Ledger(0)
    led.carry = carry0
    charges = 0
    for e in slices:
        charges += led.charge_energy(e * price)
        assert 0 <= led.carry < CHARGE_SCALE
    exact = Fraction(sum(slices) * price + carry0, CHARGE_SCALE)
    assert charges == floor(exact) == led.charged == -led.balance
    assert led.carry == (exact - floor(exact)) * CHARGE_SCALE


@given(ticks=st.lists(st.tuples(st.integers(0, 50000), st.integers(0, MAX_PRICE)), max_size=300))
def test_random_slices_at_changing_prices(ticks):
    led = Ledger(0)
    exact = Fraction(0)
    for mwh, price in ticks:
        led.charge_energy(mwh * price)
        exact += Fraction(mwh * price, CHARGE_SCALE)
        assert led.charged == floor(exact)
        assert 0 <= led.carry < CHARGE_SCALE
    assert led.carry == (exact - floor(exact)) * CHARGE_SCALE


@given(per_day=st.integers(0, 10**6), steps=st.lists(st.integers(1, 86400), max_size=200))
def test_standing_charge_any_split_of_time(per_day, steps):
    led = Ledger(0)
    for s in steps:
        led.charge_standing(per_day, s)
        assert 0 <= led.standing_carry < SECONDS_PER_DAY
    assert led.charged == floor(Fraction(per_day * sum(steps), SECONDS_PER_DAY))


# -- tariffs through the meter ----------------------------------------------------------
@st.composite
def day_specs(draw):
    """(days string for the config, set of weekday numbers it means)."""
    kind = draw(st.sampled_from(("list", "range", "all", "default")))
    if kind == "default":
        return None, set(range(7))
    if kind == "all":
        return "all", set(range(7))
    if kind == "range":
        a, b = draw(st.integers(0, 6)), draw(st.integers(0, 6))
        days = {(a + i) % 7 for i in range((b - a) % 7 + 1)}
        return DAY_NAMES[a] + "-" + DAY_NAMES[b], days
    chosen = draw(st.lists(st.integers(0, 6), min_size=1, max_size=7, unique=True))
    return ",".join(DAY_NAMES[i] for i in chosen), set(chosen)


@st.composite
def tariffs(draw, decimals, kinds=("flat", "tou", "block")):
    """(tariff config dict, oracle description) with prices as integers in price units."""
    pd = decimals + 2
    price = st.integers(0, 99999 * 10 ** (pd - 4) if pd >= 4 else 9999)
    kind = draw(st.sampled_from(kinds))
    if kind == "flat":
        p = draw(price)
        return {"type": "flat", "price_per_kwh": dec(p, pd)}, ("flat", p)
    if kind == "tou":
        bands = []
        model = []
        for _ in range(draw(st.integers(0, 4))):
            start = draw(st.integers(0, 1439))
            end = draw(st.integers(0, 1440).filter(lambda m, s=start: m != s))
            days, day_set = draw(day_specs())
            p = draw(price)
            band = {"from": hhmm(start), "to": hhmm(end), "price_per_kwh": dec(p, pd)}
            if days is not None:
                band["days"] = days
            bands.append(band)
            model.append((day_set, start * 60, end * 60, p))
        default = draw(price)
        cfg = {"type": "tou", "bands": bands, "default_price_per_kwh": dec(default, pd)}
        return cfg, ("tou", model, default)
    # bounds of a few Wh or kWh so that a few ticks of mwh_st cross them
    bound_st = st.one_of(st.integers(1, 20), st.integers(1, 6000))
    bounds = sorted(draw(st.lists(bound_st, max_size=4, unique=True)))
    tiers = []
    model = []
    for b in bounds + [None]:
        p = draw(price)
        tiers.append({"up_to_kwh": None if b is None else dec(b, 3), "price_per_kwh": dec(p, pd)})
        model.append((b, p))
    return {"type": "block", "tiers": tiers}, ("block", model)


def tou_price(model, default, when):
    wd = when.weekday()
    sod = when.hour * 3600 + when.minute * 60 + when.second
    for days, start, end, p in model:
        if start < end:
            if wd in days and start <= sod < end:
                return p
        elif (sod >= start and wd in days) or (sod < end and (wd - 1) % 7 in days):
            return p
    return default


def block_numerator(model, month_mwh, mwh):
    """mWh x price for `mwh` more energy when the month is at `month_mwh`."""
    total = 0
    lo = 0
    for bound_wh, p in model:
        hi = month_mwh + mwh if bound_wh is None else bound_wh * 1000
        overlap = min(month_mwh + mwh, hi) - max(month_mwh, lo)
        if overlap > 0:
            total += overlap * p
        lo = hi
    return total


seconds_st = st.one_of(st.integers(1, 5), st.integers(1, 7200), st.integers(1, 4 * 86400))
mwh_st = st.one_of(
    st.integers(0, 10), st.integers(0, 2000), st.integers(0, 3000000), st.integers(200000, 2000000)
)


def run_meter(decimals, cfg, model, start, ticks, standing):
    """Drive a Meter through `ticks` and check it against the oracle."""
    start = start.replace(microsecond=0)
    settings = Settings(
        {
            "currency_decimals": decimals,
            "tariff": cfg,
            "standing_charge_per_day": dec(standing, decimals),
            "low_credit": dec(2, 0),
            "reconnect_min": dec(1, 0),
            # the default "0.10" does not parse at currency_decimals=0 (settings.py)
            "persist_money": dec(10, decimals),
        }
    )
    sod = start.hour * 3600 + start.minute * 60 + start.second
    meter = Meter(settings, WallClock(start.year, start.month, start.day, sod))
    balance0 = meter.ledger.balance

    exact = Fraction(0)
    month = (start.year, start.month)
    month_mwh = 0
    elapsed = 0
    for seconds, mwh in ticks:
        meter.tick(seconds, mwh, 0)
        when = start + timedelta(seconds=elapsed)  # the tick's start prices it
        if model[0] == "flat":
            num = mwh * model[1]
        elif model[0] == "tou":
            num = mwh * tou_price(model[1], model[2], when)
        else:
            num = block_numerator(model[1], month_mwh, mwh)
        exact += Fraction(num, CHARGE_SCALE)
        month_mwh += mwh
        elapsed += seconds
        when = start + timedelta(seconds=elapsed)
        if (when.year, when.month) != month:
            month = (when.year, when.month)
            month_mwh = 0
        c = meter.clock
        assert (c.year, c.month, c.day, c.wday) == (
            when.year,
            when.month,
            when.day,
            when.weekday(),
        )
        led = meter.ledger
        assert led.month_wh * 1000 + led.month_mwh == month_mwh
        # exact after every tick, not only at the end
        assert led.charged == floor(exact) + standing * elapsed // SECONDS_PER_DAY

    led = meter.ledger
    energy_charge = floor(exact)
    standing_charge = floor(Fraction(standing * elapsed, SECONDS_PER_DAY))
    assert balance0 - led.balance == energy_charge + standing_charge
    assert led.charged == energy_charge + standing_charge
    assert led.carry == (exact - energy_charge) * CHARGE_SCALE
    assert led.energy_wh * 1000 + led.energy_mwh == sum(m for _, m in ticks)


@given(
    data=st.data(),
    decimals=st.sampled_from((0, 2, 3)),
    start=st.datetimes(min_value=datetime(2001, 1, 1), max_value=datetime(2150, 12, 31)),
    ticks=st.lists(st.tuples(seconds_st, mwh_st), min_size=1, max_size=60),
    standing=st.integers(0, 500),
)
def test_meter_bills_the_exact_tariff_cost(data, decimals, start, ticks, standing):
    cfg, model = data.draw(tariffs(decimals))
    run_meter(decimals, cfg, model, start, ticks, standing)


@given(
    data=st.data(),
    start=st.datetimes(min_value=datetime(2001, 1, 1), max_value=datetime(2150, 12, 31)),
    ticks=st.lists(
        st.tuples(
            st.one_of(st.integers(1, 60), st.integers(1, 8 * 86400)),
            st.one_of(st.integers(0, 2500), st.integers(0, 3000000)),
        ),
        min_size=10,
        max_size=100,
    ),
)
def test_meter_block_tiers_split_exactly(data, start, ticks):
    # block tiers only, long runs of ticks: bounds are crossed, landed on, and reset
    # by the calendar month
    cfg, model = data.draw(tariffs(2, kinds=("block",)))
    run_meter(2, cfg, model, start, ticks, 0)


@given(
    data=st.data(),
    start=st.datetimes(min_value=datetime(2001, 1, 1), max_value=datetime(2150, 12, 31)),
)
def test_meter_price_now_matches_the_oracle(data, start):
    cfg, model = data.draw(tariffs(2))
    start = start.replace(microsecond=0)
    meter = Meter(
        Settings({"tariff": cfg}),
        WallClock(start.year, start.month, start.day, start.hour * 3600 + start.minute * 60),
    )
    when = start.replace(second=0)
    month = (when.year, when.month)
    month_mwh = 0
    for _ in range(20):
        step = data.draw(st.integers(1, 3 * 3600))
        mwh = data.draw(st.integers(0, 5000000))
        meter.tick(step, mwh, 0)
        when += timedelta(seconds=step)
        month_mwh += mwh  # the tick's energy counts in the month it started in
        if (when.year, when.month) != month:
            month = (when.year, when.month)
            month_mwh = 0
        if model[0] == "flat":
            want = model[1]
        elif model[0] == "tou":
            want = tou_price(model[1], model[2], when)
        else:
            want = next(p for b, p in model[1] if b is None or month_mwh < b * 1000)
        assert meter.price_now() == want


# -- thresholds ---------------------------------------------------------------------------
op_st = st.one_of(
    st.tuples(st.just("tick"), st.integers(1, 600), st.integers(0, 30000)),
    st.tuples(st.just("credit"), st.integers(1, 5000), st.just(0)),
    # land next to low_credit on purpose: balance -> low_credit + d (d in -2..2)
    st.tuples(st.just("tick_to"), st.integers(1, 600), st.integers(-2, 2)),
    st.tuples(st.just("credit_to"), st.just(0), st.integers(-2, 2)),
)


@given(
    low=st.integers(1, 3000),
    reconnect_frac=st.integers(0, 100),
    balance0=st.integers(1, 6000),
    repeat_s=st.sampled_from((0, 60, 3600)),
    ops=st.lists(op_st, max_size=120),
)
def test_low_credit_fires_once_per_downward_crossing(low, reconnect_frac, balance0, repeat_s, ops):
    reconnect = max(1, low * reconnect_frac // 100)
    settings = Settings(
        {
            # 10.0000 per kWh: 30000 mWh costs 30 cents
            "tariff": {"type": "flat", "price_per_kwh": "10.0000"},
            "low_credit": dec(low, 2),
            "reconnect_min": dec(reconnect, 2),
            "low_credit_repeat_s": repeat_s,
        }
    )
    log = EventLog(size=100000)
    meter = Meter(settings, WallClock(2026, 1, 5, 0), log=log)
    observed = []  # balance after every evaluation of the credit rules
    fired = []  # low_credit events emitted by that evaluation

    def run(fn, *args):
        before = log.total
        fn(*args)
        new = log.items[before:]
        observed.append(meter.ledger.balance)
        fired.append([e for e in new if e[1] == ev.LOW_CREDIT])
        for e in new:
            assert e[0] == meter.clock.stamp()

    run(meter.credit, balance0)
    for kind, a, b in ops:
        bal = meter.ledger.balance
        if kind == "tick":
            run(meter.tick, a, b, 0)
        elif kind == "credit":
            run(meter.credit, a)
        elif kind == "tick_to":
            # 1000 mWh is exactly one cent here, whatever the carry holds
            run(meter.tick, a, max(0, bal - (low + b)) * 1000, 0)
        else:
            run(meter.credit, max(1, low + b - bal))

    crossings = 0
    for i, bal in enumerate(observed):
        down = bal < low and (i == 0 or observed[i - 1] >= low)
        crossings += down
        assert len(fired[i]) == (1 if down else 0), (i, observed[: i + 1])
        for _stamp, _kind, ev_balance, _value in fired[i]:
            assert ev_balance == bal
            assert bal < low
    total = sum(1 for e in log.items if e[1] == ev.LOW_CREDIT)
    assert total == crossings
    # every event is a crossing: between two events the balance was back at low_credit
    idx = [i for i, f in enumerate(fired) if f]
    for a, b in zip(idx, idx[1:]):
        assert any(bal >= low for bal in observed[a + 1 : b])
