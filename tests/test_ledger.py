"""Portable tests of firmware/billing/ledger.py: exact billing with a carry, standing charge, credit.

The year of 1-second ticks runs here (under both runtimes) because it takes about 10 s
under the MicroPython unix port; see test_year_of_one_second_ticks.
"""

from firmware.billing.ledger import SECONDS_PER_DAY, Ledger
from firmware.billing.money import CHARGE_SCALE


def _lcg(seed):
    """Tiny deterministic pseudo-random source (the same on both runtimes)."""
    state = [seed & 0x7FFFFFFF]

    def nxt(n):
        state[0] = (state[0] * 1103515245 + 12345) & 0x7FFFFFFF
        return (state[0] >> 8) % n

    return nxt


def test_charge_energy_carries_the_remainder():
    led = Ledger(1000)
    assert led.charge_energy(CHARGE_SCALE - 1) == 0
    assert (led.balance, led.carry, led.charged) == (1000, CHARGE_SCALE - 1, 0)
    assert led.charge_energy(1) == 1
    assert (led.balance, led.carry, led.charged) == (999, 0, 1)
    assert led.charge_energy(0) == 0
    assert led.charge_energy(3 * CHARGE_SCALE + 5) == 3
    assert (led.balance, led.carry, led.charged) == (996, 5, 4)
    assert led.charge_energy(2 * CHARGE_SCALE - 5) == 2
    assert (led.balance, led.carry, led.charged) == (994, 0, 6)


def test_one_kwh_at_a_quarter():
    led = Ledger(0)
    # 1 kWh = 10**6 mWh at 0.2500 per kWh (2500 price units) costs 25 cents
    assert led.charge_energy(1000000 * 2500) == 25
    assert led.balance == -25 and led.carry == 0


def test_small_slices_equal_one_big_slice():
    rnd = _lcg(7)
    for price in (1, 99, 2500, 2537, 4099, 12345, 100000000):
        for total in (0, 1, 999, 40000, 1000003, 55200000, 123456789):
            big = Ledger(0)
            big.charge_energy(total * price)
            small = Ledger(0)
            left = total
            pieces = 0
            while left:
                e = rnd(3 * (total // 50 + 1)) + 1
                if e > left:
                    e = left
                small.charge_energy(e * price)
                assert 0 <= small.carry < CHARGE_SCALE
                left -= e
                pieces += 1
            want = total * price // CHARGE_SCALE
            assert big.charged == want and small.charged == want, (price, total, pieces)
            assert small.balance == big.balance == -want
            assert small.carry == big.carry == total * price % CHARGE_SCALE
            if total > 1000:
                assert pieces > 20


def test_carry_is_kept_across_calls_with_different_prices():
    led = Ledger(0)
    parts = [(333, 2500), (1, 100000000), (77777, 1200), (5, 4100), (999999, 3)]
    total = 0
    for mwh, price in parts:
        led.charge_energy(mwh * price)
        total += mwh * price
        assert led.charged == total // CHARGE_SCALE
        assert led.carry == total % CHARGE_SCALE


def test_day_of_one_second_ticks_at_2300_w():
    # The metering chip reports energy as watt x milliseconds; a tick bills the whole
    # milli-watt-hours and keeps the rest (3600 W.ms = 1 mWh) for the next tick.
    price = 2537  # 0.2537 per kWh: the day's charge is not a whole number of cents
    led = Ledger(5000)
    wms = 0
    energy = 0
    ticks_with = {638: 0, 639: 0}
    for _ in range(SECONDS_PER_DAY):
        wms += 2300 * 1000
        mwh = wms // 3600
        wms -= mwh * 3600
        ticks_with[mwh] += 1
        led.charge_energy(mwh * price)
        led.add_energy(mwh)
        energy += mwh
    assert energy == 55200000  # 2.3 kW x 24 h = 55.2 kWh, to the mWh
    assert wms == 0
    assert ticks_with[638] > 0 and ticks_with[639] > 0
    assert (led.energy_wh, led.energy_mwh) == (55200, 0)
    assert led.charged == 55200000 * 2537 // CHARGE_SCALE == 1400
    assert led.carry == 55200000 * 2537 % CHARGE_SCALE == 42400000
    assert led.balance == 5000 - 1400


def test_day_of_alternating_zero_and_one_mwh():
    # 1 mWh every other second: each tick is far below a whole cent
    price = 4100
    led = Ledger(0)
    energy = 0
    paid_at = []
    for s in range(SECONDS_PER_DAY):
        mwh = s & 1
        if led.charge_energy(mwh * price):
            paid_at.append(s)
        energy += mwh
        if s % 3600 == 3599:
            assert led.charged == energy * price // CHARGE_SCALE
    assert energy == 43200
    assert led.charged == 43200 * 4100 // CHARGE_SCALE == 1
    assert led.carry == 43200 * 4100 - CHARGE_SCALE
    # the one cent falls due on the tick where the running total first reaches it
    first = (CHARGE_SCALE + price - 1) // price  # mWh needed
    assert paid_at == [2 * first - 1]


def test_year_of_one_second_ticks():
    # 31,536,000 ticks with power and price that change by the hour (a household load
    # and a time-of-use price); the ledger must end to the unit where one big
    # reading would. Checked each midnight too. ~10 s under MicroPython and CPython.
    hour_power = (150, 120, 100, 100, 100, 130, 600, 2300, 1800, 400, 350, 300)
    hour_power += (900, 500, 300, 320, 450, 1200, 3100, 2600, 1700, 900, 400, 200)
    hour_price = (1200, 1200, 1200, 1200, 1200, 1200, 2500, 4100, 4100, 2500, 2500, 2500)
    hour_price += (2500, 2500, 2500, 2537, 2500, 4100, 4100, 4100, 4101, 2500, 1200, 1200)
    led = Ledger(0)
    charge = led.charge_energy
    wms = 0
    total = 0
    energy = 0
    days = 0
    s = 0
    year = 365 * SECONDS_PER_DAY
    while s < year:
        h = s // 3600 % 24
        wms += (hour_power[h] + (s % 7) * 13) * 1000
        mwh = wms // 3600
        wms -= mwh * 3600
        num = mwh * hour_price[h]
        total += num
        energy += mwh
        charge(num)
        s += 1
        if s % SECONDS_PER_DAY == 0:
            days += 1
            assert led.charged == total // CHARGE_SCALE, days
    assert days == 365
    assert energy > 6000000000  # > 6 MWh: the carry really rolled over many times
    assert led.charged == total // CHARGE_SCALE
    assert led.balance == -led.charged
    assert led.carry == total % CHARGE_SCALE


def test_standing_charge_a_day_of_one_second_ticks_bills_per_day():
    for per_day in (0, 1, 7, 150, 1234, 86399, 86400, 86401, 250000):
        led = Ledger(0)
        billed = 0
        for s in range(1, SECONDS_PER_DAY + 1):
            billed += led.charge_standing(per_day, 1)
            if s % 3600 == 0:
                # spread evenly: never ahead, never a unit behind
                assert billed == per_day * s // SECONDS_PER_DAY, (per_day, s)
        assert billed == per_day, per_day
        assert led.charged == per_day and led.balance == -per_day
        assert led.standing_carry == 0


def test_standing_charge_uneven_ticks_and_several_days():
    rnd = _lcg(11)
    per_day = 1234
    led = Ledger(0)
    t = 0
    while t < 3 * SECONDS_PER_DAY:
        step = rnd(9) + 1
        if t + step > 3 * SECONDS_PER_DAY:
            step = 3 * SECONDS_PER_DAY - t
        led.charge_standing(per_day, step)
        t += step
        assert led.charged == per_day * t // SECONDS_PER_DAY
        assert 0 <= led.standing_carry < SECONDS_PER_DAY
    assert led.charged == 3 * per_day


def test_standing_charge_units_fall_evenly():
    # 24 units a day: one unit each hour, on the hour
    led = Ledger(0)
    due = []
    for s in range(1, SECONDS_PER_DAY + 1):
        if led.charge_standing(24, 1):
            due.append(s)
    assert due == [3600 * k for k in range(1, 25)]


def test_standing_and_energy_carries_are_separate():
    led = Ledger(100)
    led.charge_energy(CHARGE_SCALE // 2)
    led.charge_standing(1, SECONDS_PER_DAY // 2)
    assert led.balance == 100 and led.carry == CHARGE_SCALE // 2
    assert led.standing_carry == SECONDS_PER_DAY // 2
    led.charge_energy(CHARGE_SCALE // 2)
    assert led.balance == 99 and led.standing_carry == SECONDS_PER_DAY // 2
    led.charge_standing(1, SECONDS_PER_DAY // 2)
    assert led.balance == 98 and led.carry == 0 and led.standing_carry == 0
    assert led.charged == 2


def test_credit_without_debt():
    led = Ledger(-150)
    assert led.credit(1000, 50) == 0
    assert (led.balance, led.credited, led.recovered, led.debt) == (850, 1000, 0, 0)


def test_credit_recovers_debt_by_percent():
    led = Ledger(0)
    led.debt = 1000
    # 25 % of 999 is 249.75: the floor goes to the debt
    assert led.credit(999, 25) == 249
    assert (led.balance, led.debt, led.recovered, led.credited) == (750, 751, 249, 750)
    assert led.credit(2000, 25) == 500
    assert (led.balance, led.debt, led.recovered) == (2250, 251, 749)
    # the last of the debt: only what is owed is taken
    assert led.credit(2000, 25) == 251
    assert (led.balance, led.debt, led.recovered) == (3999, 0, 1000)
    assert led.credit(2000, 25) == 0
    assert led.balance == 5999
    assert led.credited + led.recovered == 999 + 2000 * 3


def test_credit_recovery_edge_percents():
    led = Ledger(0)
    led.debt = 500
    assert led.credit(300, 0) == 0  # no recovery configured: the debt stays
    assert (led.balance, led.debt) == (300, 500)
    assert led.credit(300, 100) == 300  # all of it
    assert (led.balance, led.debt) == (300, 200)
    assert led.credit(1, 99) == 0  # floor(0.99)
    assert (led.balance, led.debt) == (301, 200)


def test_set_balance_books_the_difference_to_credited_and_leaves_the_debt():
    led = Ledger(0)
    led.credit(1000, 0)
    led.charge_standing(SECONDS_PER_DAY * 300, 1)  # 300 charged
    led.debt = 400
    led.set_balance(2000)  # up
    assert (led.balance, led.credited, led.charged, led.debt) == (2000, 2300, 300, 400)
    led.set_balance(-50)  # down, below zero
    assert (led.balance, led.credited, led.debt) == (-50, 250, 400)
    assert led.balance == led.credited - led.charged


def test_add_energy_rolls_mwh_into_wh():
    led = Ledger(0)
    led.add_energy(999)
    assert (led.energy_wh, led.energy_mwh, led.month_wh, led.month_mwh) == (0, 999, 0, 999)
    led.add_energy(1)
    assert (led.energy_wh, led.energy_mwh, led.month_wh, led.month_mwh) == (1, 0, 1, 0)
    led.add_energy(2500)
    assert (led.energy_wh, led.energy_mwh) == (3, 500)
    led.add_energy(0)
    assert (led.energy_wh, led.energy_mwh) == (3, 500)
    led.new_month()
    assert (led.month_wh, led.month_mwh) == (0, 0)
    assert (led.energy_wh, led.energy_mwh) == (3, 500)
    led.add_energy(1700)
    assert (led.energy_wh, led.energy_mwh, led.month_wh, led.month_mwh) == (5, 200, 1, 700)
    led.add_energy(123456789)
    assert (led.energy_wh, led.energy_mwh) == (123461, 989)
    assert (led.month_wh, led.month_mwh) == (123458, 489)


def test_add_energy_many_small_ticks():
    rnd = _lcg(3)
    led = Ledger(0)
    total = 0
    for _ in range(20000):
        e = rnd(12)
        led.add_energy(e)
        total += e
        assert 0 <= led.energy_mwh < 1000
    assert led.energy_wh * 1000 + led.energy_mwh == total
    assert led.month_wh * 1000 + led.month_mwh == total
