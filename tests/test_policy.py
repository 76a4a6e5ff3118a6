"""Credit control (firmware/billing/policy.py) driven through the Meter, as the app drives it.

Portable: runs under CPython pytest and under `micropython` (tests/mpy_runner.py).
The tariff is 1.0000 per kWh with 2 currency decimals, so 10 Wh (10000 mWh) costs
exactly one cent: `_use(m, n)` burns n cents in n one-second ticks.
"""

import support

from firmware.billing import events as ev
from firmware.billing import policy
from firmware.billing.meter import Meter
from firmware.billing.policy import CONNECTED, DISCONNECTED, READY_FOR_RECONNECTION
from firmware.billing.settings import Settings
from firmware.billing.wallclock import WallClock

CENT_MWH = 10000  # energy that costs one cent at 1.0000 per kWh
MONDAY_NOON = (2026, 1, 5, 12 * 3600)  # 2026-01-05 is a Monday


def _meter(extra=None, balance=0, start=MONDAY_NOON):
    raw = {
        "tariff": {"type": "flat", "price_per_kwh": "1.0000"},
        "low_credit": "2.00",
        "reconnect_min": "1.00",
        "low_credit_repeat_s": 60,
    }
    if extra:
        raw.update(extra)
    m = Meter(Settings(raw), WallClock(start[0], start[1], start[2], start[3]))
    # Every event, as a listener sees it: log.items is a bounded ring (100).
    m.seen = []
    m.log.listeners.append(
        lambda stamp, kind, bal, value: m.seen.append((stamp, kind, bal, value))
    )
    if balance:
        m.ledger.balance = balance
        m.control.after_credit()
    return m


def _use(m, cents, power_w=1000):
    """Burn `cents` one cent per one-second tick; no energy flows while the relay is open."""
    for _ in range(cents):
        m.tick(1, CENT_MWH if m.relay_closed() else 0, power_w if m.relay_closed() else 0)


def _idle(m, seconds, step=1):
    for _ in range(seconds // step):
        m.tick(step, 0, 0)


def _events(m, kind):
    return [e for e in m.seen if e[1] == kind]


def _count(m, kind):
    return len(_events(m, kind))


def _run_until_state(m, state, limit, cents_per_tick=1):
    """Tick until control_state == state; return the number of ticks it took."""
    for i in range(limit):
        m.tick(1, cents_per_tick * CENT_MWH, 1000)
        if m.control.control_state == state:
            return i + 1
    raise AssertionError("state %d not reached in %d ticks" % (state, limit))


# -- low credit ----------------------------------------------------------------------


def test_low_credit_once_per_crossing_with_reminders_and_rearm_after_topup():
    m = _meter(balance=210)
    _use(m, 10)
    assert m.ledger.balance == 200
    assert _count(m, ev.LOW_CREDIT) == 0  # at the threshold is not below it
    assert m.control.credit_status() == policy.IN_CREDIT
    _use(m, 1)
    lows = _events(m, ev.LOW_CREDIT)
    assert len(lows) == 1
    crossed = lows[0][0]
    assert lows[0][2] == 199
    assert m.control.credit_status() == policy.LOW_CREDIT
    _use(m, 130)  # still low: reminders every 60 s, no second low_credit
    assert m.ledger.balance == 69
    assert _count(m, ev.LOW_CREDIT) == 1
    reminders = [e[0] - crossed for e in _events(m, ev.LOW_CREDIT_REMINDER)]
    assert reminders == [60, 120]
    # a top-up that leaves the balance low does not re-arm the crossing event
    m.credit(50)
    _use(m, 5)
    assert _count(m, ev.LOW_CREDIT) == 1
    # a top-up above the threshold re-arms it; the reminders stop while above
    m.credit(100)
    assert m.ledger.balance == 214
    _use(m, 14)
    assert m.ledger.balance == 200
    _idle(m, 300)
    assert _count(m, ev.LOW_CREDIT_REMINDER) == 2
    _use(m, 1)
    assert _count(m, ev.LOW_CREDIT) == 2
    assert _events(m, ev.LOW_CREDIT)[-1][2] == 199


def test_low_credit_without_reminders_when_repeat_is_zero():
    m = _meter({"low_credit_repeat_s": 0}, balance=205)
    _use(m, 150)
    assert _count(m, ev.LOW_CREDIT) == 1
    assert _count(m, ev.LOW_CREDIT_REMINDER) == 0


def test_no_reminders_while_cut_for_credit_resumed_after_reconnect():
    m = _meter(balance=30)
    _use(m, 30)
    assert m.control.control_state == DISCONNECTED
    n = _count(m, ev.LOW_CREDIT_REMINDER)
    _idle(m, 600)
    assert _count(m, ev.LOW_CREDIT_REMINDER) == n
    m.credit(150)  # back on, still below low_credit: an overdue reminder, then every 60 s
    assert m.control.control_state == CONNECTED
    back = m.clock.stamp()
    _idle(m, 130)
    assert [e[0] - back for e in _events(m, ev.LOW_CREDIT_REMINDER)[n:]] == [1, 61, 121]
    assert _count(m, ev.LOW_CREDIT) == 1


# -- disconnect ------------------------------------------------------------------------


def test_disconnect_on_the_tick_the_balance_reaches_zero():
    m = _meter(balance=5)
    _use(m, 4)
    assert m.ledger.balance == 1
    assert m.control.control_state == CONNECTED
    assert m.relay_closed()
    m.tick(1, CENT_MWH, 1000)
    assert m.ledger.balance == 0
    assert m.control.control_state == DISCONNECTED
    assert not m.relay_closed()
    assert m.control.credit_status() == policy.OUT_OF_CREDIT
    disc = _events(m, ev.DISCONNECT)
    assert len(disc) == 1
    assert disc[0][2] == 0
    assert disc[0][3] & policy.OPEN_CREDIT


def test_disconnect_when_a_tick_overshoots_zero():
    m = _meter(balance=3)
    m.tick(1, 5 * CENT_MWH, 1000)
    assert m.ledger.balance == -2
    assert m.control.control_state == DISCONNECTED


def test_disconnect_at_minus_emergency_credit_once_invoked():
    m = _meter({"emergency_credit": "1.00"}, balance=150)
    assert m.control.invoke_emergency_credit()
    assert m.control.disconnect_level() == -100
    _use(m, 150)
    assert m.ledger.balance == 0
    assert m.control.control_state == CONNECTED  # emergency credit carries it on
    assert m.control.credit_status() == policy.EMERGENCY
    _use(m, 99)
    assert m.ledger.balance == -99
    assert m.control.control_state == CONNECTED
    m.tick(1, CENT_MWH, 1000)
    assert m.ledger.balance == -100
    assert m.control.control_state == DISCONNECTED
    assert _count(m, ev.DISCONNECT) == 1


# -- friendly credit ---------------------------------------------------------------


def test_no_disconnect_inside_a_weekday_window_then_cut_when_it_ends():
    evening = [{"days": "mon-fri", "from": "18:00", "to": "20:00"}]
    m = _meter({"friendly": evening}, balance=20, start=(2026, 1, 5, 18 * 3600 - 10))
    _use(m, 20)  # zero reached at 18:00:10, inside the window
    assert m.ledger.balance == 0
    assert m.control.control_state == CONNECTED
    assert m.control.credit_status() == policy.FRIENDLY
    holds = _events(m, ev.FRIENDLY_HOLD)
    assert len(holds) == 1 and holds[0][2] == 0
    # keep consuming to 19:59:59: never cut, one hold event, the balance goes negative
    while m.clock.sod < 20 * 3600 - 1:
        m.tick(1, CENT_MWH, 1000)
    assert m.control.control_state == CONNECTED
    assert m.ledger.balance < -7000
    assert _count(m, ev.FRIENDLY_HOLD) == 1
    assert _count(m, ev.DISCONNECT) == 0
    m.tick(1, CENT_MWH, 1000)  # 20:00:00, the window has ended
    assert m.clock.sod == 20 * 3600
    assert m.control.control_state == DISCONNECTED
    assert _events(m, ev.DISCONNECT)[0][0] == m.clock.stamp()
    # the debt run up in the window is recovered from the next top-up
    debt = -m.ledger.balance
    m.credit(debt + 50)
    assert m.ledger.balance == 50
    assert m.control.control_state == DISCONNECTED  # below reconnect_min


def test_window_on_other_days_does_not_hold():
    weekend = [{"days": "sat,sun", "from": "00:00", "to": "24:00"}]
    m = _meter({"friendly": weekend}, balance=3)
    _use(m, 3)
    assert m.control.control_state == DISCONNECTED
    assert _count(m, ev.FRIENDLY_HOLD) == 0


def test_no_disconnect_on_a_listed_holiday_then_cut_at_midnight():
    m = _meter({"holidays": ["2026-01-06"]}, balance=5, start=(2026, 1, 6, 0))
    _use(m, 10)
    assert m.ledger.balance == -5
    assert m.control.control_state == CONNECTED
    assert _count(m, ev.FRIENDLY_HOLD) == 1
    while m.clock.sod < 86400 - 3600:
        m.tick(3600, 0, 1000)
    while m.clock.day == 6:
        assert m.control.control_state == CONNECTED
        m.tick(1, 0, 1000)
    assert m.clock.date_code == 20260107 and m.clock.sod == 0
    assert m.control.control_state == DISCONNECTED
    assert _events(m, ev.DISCONNECT)[0][0] == m.clock.stamp()


def test_window_end_does_not_cut_when_topped_up_above_the_level_meanwhile():
    m = _meter({"holidays": ["2026-01-05"]}, balance=2, start=(2026, 1, 5, 86400 - 100))
    _use(m, 10)
    assert m.control.credit_status() == policy.FRIENDLY
    m.credit(58)  # 0.50: above the disconnect level, below reconnect_min
    assert m.ledger.balance == 50
    _idle(m, 200)  # past midnight
    assert m.clock.day == 6
    assert m.control.control_state == CONNECTED
    assert _count(m, ev.DISCONNECT) == 0


def test_a_window_does_not_reconnect_an_already_cut_supply():
    m = _meter({"friendly": [{"days": "all", "from": "12:01", "to": "13:00"}]}, balance=3)
    _use(m, 3)
    assert m.control.control_state == DISCONNECTED
    _idle(m, 600)
    assert m.control.control_state == DISCONNECTED
    assert _count(m, ev.RECONNECT) == 0


# -- reconnect ----------------------------------------------------------------------


def test_reconnect_at_once_when_a_topup_reaches_reconnect_min_not_below():
    m = _meter(balance=2)
    _use(m, 2)
    assert m.control.control_state == DISCONNECTED
    m.credit(50)
    assert m.ledger.balance == 50
    assert m.control.control_state == DISCONNECTED
    _idle(m, 5)
    assert m.control.control_state == DISCONNECTED
    assert _count(m, ev.RECONNECT) == 0
    m.credit(49)
    assert m.control.control_state == DISCONNECTED
    m.credit(1)  # 1.00 == reconnect_min: restored without waiting for a tick
    assert m.ledger.balance == 100
    assert m.control.control_state == CONNECTED
    assert _count(m, ev.RECONNECT) == 1
    assert m.control.credit_status() == policy.LOW_CREDIT


def test_reconnect_after_debt_needs_reconnect_min_above_zero():
    m = _meter(balance=1)
    m.tick(1, 40 * CENT_MWH, 1000)
    assert m.ledger.balance == -39
    m.credit(120)  # 0.81: positive but below reconnect_min
    assert m.control.control_state == DISCONNECTED
    m.credit(19)
    assert m.control.control_state == CONNECTED


def test_no_chatter_around_zero():
    # 864.00 a day standing charge: one cent a second, billed while off as well
    m = _meter({"standing_charge_per_day": "864.00"}, balance=1)
    for _ in range(200):  # 0.01 / 0.00 / 0.01 ...: the balance keeps crossing zero
        _idle(m, 1)
        m.credit(1)
    assert m.ledger.balance == 1
    assert _count(m, ev.DISCONNECT) == 1
    assert _count(m, ev.RECONNECT) == 0
    assert m.control.control_state == DISCONNECTED


def test_no_chatter_around_reconnect_min():
    m = _meter(balance=1)
    _use(m, 1)
    m.credit(99)
    assert m.control.control_state == DISCONNECTED
    for _ in range(200):  # 1.00 / 0.99 / 1.00 ...
        m.credit(1)
        _use(m, 1)
    assert m.ledger.balance == 99
    assert _count(m, ev.DISCONNECT) == 1
    assert _count(m, ev.RECONNECT) == 1
    assert m.control.control_state == CONNECTED


def test_random_walk_cuts_only_at_zero_and_restores_only_at_reconnect_min():
    m = _meter(balance=150)
    seed = 12345
    for _ in range(3000):
        seed = (seed * 1103515245 + 12345) & 0x7FFFFFFF
        r = seed >> 16
        if r % 7 == 0:
            m.credit(1 + r % 20)
        _use(m, r % 5)
    # Walk the log: reconnects happen at >= reconnect_min, disconnects at <= 0.
    cuts = 0
    ups = 0
    for stamp, kind, bal, value in m.seen:
        if kind == ev.DISCONNECT:
            assert bal <= 0
            cuts += 1
        elif kind == ev.RECONNECT:
            assert bal >= 100
            ups += 1
    assert cuts >= 3 and ups >= 3  # the walk really crossed the thresholds
    assert m.log.total == len(m.seen)
    assert m.log.items == m.seen[-len(m.log.items) :]


# -- emergency credit ----------------------------------------------------------------


def test_emergency_credit_refused_at_or_above_low_credit_and_when_not_offered():
    m = _meter({"emergency_credit": "1.00"}, balance=300)
    assert not m.control.invoke_emergency_credit()
    _use(m, 100)
    assert m.ledger.balance == 200
    assert not m.control.invoke_emergency_credit()
    assert _count(m, ev.EMERGENCY_CREDIT) == 0
    _use(m, 1)
    assert m.control.invoke_emergency_credit()
    assert _count(m, ev.EMERGENCY_CREDIT) == 1
    assert not m.control.invoke_emergency_credit()  # once per debt
    m2 = _meter(balance=50)  # emergency_credit defaults to 0: not offered
    assert not m2.control.invoke_emergency_credit()


def test_emergency_credit_restores_supply_and_is_repaid_by_next_topup():
    m = _meter({"emergency_credit": "1.00"}, balance=3)
    _use(m, 3)
    assert m.control.control_state == DISCONNECTED
    assert m.control.invoke_emergency_credit()
    assert m.control.control_state == CONNECTED
    assert m.control.credit_status() == policy.EMERGENCY
    ec = _events(m, ev.EMERGENCY_CREDIT)
    assert len(ec) == 1 and ec[0][3] == 100
    n = _run_until_state(m, DISCONNECTED, 200)
    assert n == 100 and m.ledger.balance == -100
    assert not m.control.invoke_emergency_credit()  # not twice for the same debt
    m.credit(300)  # repays the 1.00 used, 2.00 left
    assert m.ledger.balance == 200
    assert not m.control.ec_invoked
    assert m.control.disconnect_level() == 0
    assert m.control.control_state == CONNECTED
    assert m.control.credit_status() == policy.IN_CREDIT
    _use(m, 1)
    assert m.control.invoke_emergency_credit()  # selectable again
    assert _count(m, ev.EMERGENCY_CREDIT) == 2


def test_partial_repayment_keeps_emergency_credit_in_use():
    m = _meter({"emergency_credit": "1.00"}, balance=10)
    assert m.control.invoke_emergency_credit()
    _use(m, 60)
    assert m.ledger.balance == -50
    m.credit(30)
    assert m.ledger.balance == -20
    assert m.control.ec_invoked
    assert m.control.control_state == CONNECTED
    assert not m.control.invoke_emergency_credit()


def test_a_topup_never_cuts_the_supply():
    # On emergency credit at -0.30, a top-up of exactly 0.30 lands on zero: paying must
    # not turn the lights off that emergency credit was keeping on.
    m = _meter({"emergency_credit": "1.00"}, balance=10)
    assert m.control.invoke_emergency_credit()
    _use(m, 40)
    assert m.ledger.balance == -30
    m.credit(30)
    assert m.ledger.balance == 0
    assert m.control.control_state == CONNECTED
    assert _count(m, ev.DISCONNECT) == 0
    m.credit(1)  # now above zero: repaid, and selectable again
    assert not m.control.ec_invoked
    assert m.control.invoke_emergency_credit()


# -- debt recovery -------------------------------------------------------------------


def test_debt_recovered_as_a_share_of_each_topup():
    m = _meter({"debt_recovery_percent": 25}, balance=500)
    m.ledger.debt = 300
    assert m.credit(400) == 100
    assert m.ledger.debt == 200
    assert m.ledger.balance == 800
    rec = _events(m, ev.DEBT_RECOVERED)
    assert len(rec) == 1 and rec[0][3] == 100 and rec[0][2] == 800
    assert _events(m, ev.TOPUP)[-1][3] == 400
    assert m.credit(1) == 0  # floor(1 * 25 / 100)
    assert m.credit(2000) == 200  # capped at what is owed
    assert m.ledger.debt == 0
    assert m.ledger.recovered == 300
    assert m.credit(1000) == 0
    assert m.ledger.balance == 500 + 300 + 1 + 1800 + 1000
    assert m.ledger.credited == m.ledger.balance - 500
    assert support.raises(ValueError, m.credit, 0)
    assert support.raises(ValueError, m.credit, -5)


def test_no_debt_recovery_at_zero_percent():
    m = _meter(balance=100)
    m.ledger.debt = 300
    assert m.credit(400) == 0
    assert m.ledger.debt == 300 and m.ledger.balance == 500
    assert _count(m, ev.DEBT_RECOVERED) == 0


# -- reconnect by button -------------------------------------------------------------


def test_reconnect_needs_button():
    m = _meter({"reconnect_needs_button": True}, balance=2)
    assert not m.control.press_button()  # connected: nothing to do
    _use(m, 2)
    assert m.control.control_state == DISCONNECTED
    assert not m.control.press_button()  # still out of credit
    assert m.control.control_state == DISCONNECTED
    m.credit(150)
    assert m.control.control_state == READY_FOR_RECONNECTION
    assert not m.relay_closed()
    assert _count(m, ev.READY_FOR_RECONNECTION) == 1
    _idle(m, 600)
    assert m.control.control_state == READY_FOR_RECONNECTION
    assert _count(m, ev.RECONNECT) == 0
    assert m.control.press_button()
    assert m.control.control_state == CONNECTED
    assert m.relay_closed()
    assert _count(m, ev.RECONNECT) == 1
    assert not m.control.press_button()


# -- max power -----------------------------------------------------------------------


def _mp_meter(start=MONDAY_NOON, **kw):
    extra = {
        "max_power_w": 5000,
        "max_power_trip_s": 10,
        "max_power_retry_s": 60,
        "max_power_lockout_trips": 3,
        "max_power_lockout_window_s": 600,
    }
    extra.update(kw)
    return _meter(extra, balance=100000, start=start)


def _load(m, seconds, watts):
    """Ticks with `watts` offered by the house; the meter sees 0 W while the relay is open."""
    for _ in range(seconds):
        m.tick(1, 0, watts if m.relay_closed() else 0)


def test_max_power_trips_after_continuous_overload_only():
    m = _mp_meter()
    _load(m, 100, 5000)  # at the limit is not over it
    _load(m, 9, 5001)
    _load(m, 1, 4000)  # a dip resets the count
    _load(m, 9, 6000)
    assert m.control.control_state == CONNECTED
    assert _count(m, ev.MAX_POWER_TRIP) == 0
    _load(m, 1, 6000)
    _load(m, 1, 6000)  # one more tick: the 10th continuous second
    assert m.control.control_state == DISCONNECTED
    trips = _events(m, ev.MAX_POWER_TRIP)
    assert len(trips) == 1 and trips[0][3] == 6000
    assert _events(m, ev.DISCONNECT)[0][3] & policy.OPEN_MAX_POWER


def test_max_power_trip_exact_timing_retry_and_lockout():
    m = _mp_meter()
    t0 = m.clock.stamp()
    _load(m, 10, 7000)
    trip = _events(m, ev.MAX_POWER_TRIP)[0][0]
    assert trip - t0 == 10
    assert m.control.control_state == DISCONNECTED
    _load(m, 59, 7000)
    assert m.control.control_state == DISCONNECTED
    _load(m, 1, 7000)
    assert m.control.control_state == CONNECTED
    retry = _events(m, ev.MAX_POWER_RETRY)
    assert len(retry) == 1 and retry[0][0] - trip == 60
    _load(m, 70, 7000)  # trip 2 at +10, retry at +60
    assert _count(m, ev.MAX_POWER_TRIP) == 2
    assert m.control.control_state == CONNECTED
    _load(m, 10, 7000)  # trip 3 within 600 s of trip 1: locked out
    assert _count(m, ev.MAX_POWER_TRIP) == 3
    assert _count(m, ev.MAX_POWER_LOCKOUT) == 1
    assert m.control.open_reasons & policy.OPEN_LOCKOUT
    _load(m, 3600, 0)
    assert m.control.control_state == DISCONNECTED  # no retry from a lockout
    assert _count(m, ev.MAX_POWER_RETRY) == 2
    assert m.control.clear_lockout()
    assert m.control.control_state == CONNECTED
    assert _count(m, ev.LOCKOUT_CLEARED) == 1
    assert not m.control.clear_lockout()
    # the trip history was cleared: the next trip is an ordinary one
    _load(m, 10, 7000)
    assert m.control.open_reasons == policy.OPEN_MAX_POWER
    assert _count(m, ev.MAX_POWER_LOCKOUT) == 1


def test_trips_spread_beyond_the_window_do_not_lock_out():
    m = _mp_meter()
    for _ in range(6):
        _load(m, 10, 7000)  # trip
        _load(m, 60, 0)  # retry
        _load(m, 250, 1000)
    assert _count(m, ev.MAX_POWER_TRIP) == 6
    assert _count(m, ev.MAX_POWER_LOCKOUT) == 0
    assert m.control.control_state == CONNECTED


def test_one_trip_lockout():
    m = _mp_meter(max_power_lockout_trips=1)
    _load(m, 10, 7000)
    assert m.control.open_reasons == policy.OPEN_LOCKOUT
    _load(m, 1000, 7000)
    assert m.control.control_state == DISCONNECTED


def test_max_power_and_credit_reasons_combine():
    m = _mp_meter()
    m.ledger.balance = 5
    _load(m, 10, 7000)
    assert m.control.open_reasons == policy.OPEN_MAX_POWER
    m.tick(1, 5 * CENT_MWH, 0)  # energy read late: the balance reaches zero
    assert m.control.open_reasons == policy.OPEN_MAX_POWER | policy.OPEN_CREDIT
    _load(m, 100, 0)  # retry happens, but credit still holds the supply off
    assert _count(m, ev.MAX_POWER_RETRY) == 1
    assert m.control.control_state == DISCONNECTED
    m.credit(100)
    assert m.control.control_state == CONNECTED
    assert _count(m, ev.DISCONNECT) == 1


def test_no_low_credit_reminders_while_off_for_max_power_or_waiting_for_the_button():
    m = _mp_meter(reconnect_needs_button=True)
    m.ledger.balance = 150  # below low_credit (2.00): reminders every 60 s while on
    m.control.evaluate()
    assert _count(m, ev.LOW_CREDIT) == 1
    _load(m, 10, 7000)  # trip: off for max power, retry after 60 s
    _load(m, 60, 7000)
    assert m.control.control_state == READY_FOR_RECONNECTION
    _load(m, 600, 7000)  # the button is not pressed: still off
    assert _count(m, ev.LOW_CREDIT_REMINDER) == 0
    assert m.control.press_button()
    for _ in range(3):  # trips 2 and 3: locked out
        _load(m, 10, 7000)
        if m.control.control_state == READY_FOR_RECONNECTION:
            assert m.control.press_button()
        _load(m, 60, 0)
        if m.control.control_state == READY_FOR_RECONNECTION:
            assert m.control.press_button()
    assert m.control.open_reasons & policy.OPEN_LOCKOUT
    on = _count(m, ev.LOW_CREDIT_REMINDER)  # while the supply was on between the trips
    _load(m, 3600, 0)  # an hour locked out: no buzzer, LED or message
    assert _count(m, ev.LOW_CREDIT_REMINDER) == on
    assert m.control.clear_lockout()
    assert m.control.control_state == READY_FOR_RECONNECTION
    _load(m, 600, 0)
    assert _count(m, ev.LOW_CREDIT_REMINDER) == on
    assert m.control.press_button()
    back = m.clock.stamp()
    _load(m, 130, 0)  # on again and still low: the overdue reminder, then every 60 s
    assert [e[0] - back for e in _events(m, ev.LOW_CREDIT_REMINDER)[on:]] == [1, 61, 121]


# -- standing charge -----------------------------------------------------------------


def test_standing_charge_accrues_while_disconnected_when_configured():
    # 8.64 a day: one cent every 100 s
    m = _meter({"standing_charge_per_day": "8.64"}, balance=1000)
    _idle(m, 1000, step=10)
    assert m.ledger.balance == 990
    m.ledger.balance = 0
    _idle(m, 1)
    assert m.control.control_state == DISCONNECTED
    before = m.ledger.balance
    _idle(m, 1000, step=10)
    assert m.ledger.balance == before - 10


def test_standing_charge_stops_while_disconnected_when_not_configured():
    m = _meter(
        {"standing_charge_per_day": "8.64", "standing_charge_when_off": False}, balance=1000
    )
    _idle(m, 1000, step=10)
    assert m.ledger.balance == 990
    m.ledger.balance = 0
    _idle(m, 1)
    assert m.control.control_state == DISCONNECTED
    charged = m.ledger.charged
    _idle(m, 5000, step=10)
    assert m.ledger.balance == 0 and m.ledger.charged == charged
    m.credit(200)
    assert m.control.control_state == CONNECTED
    _idle(m, 1000, step=10)
    assert m.ledger.balance == 190


def test_standing_charge_is_exact_over_a_day():
    m = _meter({"standing_charge_per_day": "0.37"}, balance=1000)
    _idle(m, 86400, step=7 * 60)  # 205 ticks of 420 s + the rest in one
    m.tick(86400 - (86400 // 420) * 420, 0, 0)
    assert m.ledger.charged == 37
    assert m.ledger.standing_carry == 0


# -- settings ------------------------------------------------------------------------


def _settings_error(raw):
    return str(support.raises(ValueError, Settings, raw))


def test_settings_errors_name_the_field():
    assert _settings_error({"low_credit": "x"}).startswith("low_credit:")
    assert _settings_error({"no_such_thing": 1}).startswith("no_such_thing:")
    assert _settings_error({"reconnect_min": "0"}).startswith("reconnect_min:")
    assert _settings_error({"low_credit": "0.50", "reconnect_min": "1.00"}).startswith(
        "low_credit:"
    )
    assert _settings_error({"max_power_trip_s": 0}).startswith("max_power_trip_s:")
    assert _settings_error({"reconnect_needs_button": 1}).startswith("reconnect_needs_button:")
    assert _settings_error({"emergency_credit": "-1.00"}).startswith("emergency_credit:")
    e = _settings_error({"friendly": [{"from": "25:00", "to": "26:00"}]})
    assert e.startswith("friendly[0].from:")
    assert _settings_error({"holidays": ["2026-02-30"]}).startswith("holidays[0]:")
    e = _settings_error({"tariff": {"type": "flat", "price_per_kwh": "-1"}})
    assert e.startswith("tariff.price_per_kwh:")
    assert _settings_error([1, 2]).startswith("settings:")


def test_valid_settings_become_integers():
    s = Settings({"low_credit": "2.50", "reconnect_min": "1.25", "emergency_credit": "3"})
    assert s.low_credit == 250 and s.reconnect_min == 125 and s.emergency_credit == 300
    s2 = s.changed("reconnect_min", "2.50")
    assert s2.reconnect_min == 250 and s.reconnect_min == 125
    assert support.raises(ValueError, s.changed, "reconnect_min", "2.51")


def test_whole_unit_currency_settings_load_with_default_persist_bound():
    s = Settings({"currency_decimals": 0, "low_credit": "200", "reconnect_min": "100"})
    assert s.persist_money == 10 and s.low_credit == 200
    err = support.raises(ValueError, Settings, {"currency_decimals": 0, "low_credit": "2.5"})
    assert "low_credit" in str(err)


def test_reboot_with_the_clock_behind_the_record_serves_the_retry_in_full():
    extra = {"max_power_w": 5000, "max_power_trip_s": 10, "max_power_retry_s": 60}
    m = _meter(extra, balance=50000)
    for _ in range(10):
        m.tick(1, 10, 6000)
    assert m.control.control_state == DISCONNECTED
    state = m.snapshot()
    m2 = _meter(extra)  # its clock starts 10 s before the record's stamp: no time counted
    m2.restore(state)
    m2.control.update(0, 0)
    assert m2.control.control_state == DISCONNECTED  # no reconnect on the first tick
    for _ in range(59):
        m2.tick(1, 0, 0)
    assert m2.control.control_state == DISCONNECTED
    m2.tick(1, 0, 0)
    assert m2.control.control_state == CONNECTED
    assert _count(m2, ev.MAX_POWER_RETRY) == 1


def test_reboot_while_low_does_not_fire_an_overdue_reminder_at_once():
    m = _meter(balance=150)  # below low_credit: low_credit event fired
    _idle(m, 30)
    state = m.snapshot()
    m2 = _meter()
    m2.restore(state)
    _idle(m2, 59)
    assert _count(m2, ev.LOW_CREDIT) == 0 and _count(m2, ev.LOW_CREDIT_REMINDER) == 0
    _idle(m2, 1)
    assert _count(m2, ev.LOW_CREDIT_REMINDER) == 1


def test_max_power_state_through_the_journal_keeps_trips_retry_and_clock():
    m = _mp_meter(max_power_lockout_trips=3)
    _load(m, 10, 7000)  # trip 1 at 10 s
    _load(m, 60, 7000)  # retry at 70
    _load(m, 10, 7000)  # trip 2 at 80
    assert _count(m, ev.MAX_POWER_TRIP) == 2 and m.control.control_state == DISCONNECTED
    state = m.snapshot()
    later = (MONDAY_NOON[0], MONDAY_NOON[1], MONDAY_NOON[2], MONDAY_NOON[3] + 80 + 30)
    m2 = _mp_meter(max_power_lockout_trips=3, start=later)  # 30 s without power
    m2.restore(state)
    assert m2.control.now == 110 and m2.control.retry_at == 140
    _load(m2, 29, 7000)
    assert m2.control.control_state == DISCONNECTED
    _load(m2, 1, 7000)  # 140 s: the retry came when it would have without the cut
    assert m2.control.control_state == CONNECTED
    _load(m2, 10, 7000)  # trip 3 at 150 s, within 600 s of trip 1: locked out
    assert _count(m2, ev.MAX_POWER_LOCKOUT) == 1
    assert m2.control.open_reasons & policy.OPEN_LOCKOUT


def test_max_power_state_beyond_the_kept_trips_errs_toward_the_lockout():
    n = policy.TRIPS_KEPT + 4
    m = _mp_meter(max_power_lockout_trips=n, max_power_lockout_window_s=86400)
    for _ in range(n - 1):
        _load(m, 10, 7000)  # a trip
        _load(m, 60, 0)  # its retry
    times = [t for t in m.control.trips if t != -1]
    assert len(times) == n - 1 and _count(m, ev.MAX_POWER_LOCKOUT) == 0
    state = m.control.max_power_state()
    assert state[2] == n - 1
    assert list(state[3:]) == sorted(times, reverse=True)[: policy.TRIPS_KEPT]
    m2 = _mp_meter(max_power_lockout_trips=n, max_power_lockout_window_s=86400)
    m2.control.restore_max_power(state, 0)
    got = [t for t in m2.control.trips if t != -1]
    oldest_kept = state[3 + policy.TRIPS_KEPT - 1]
    # the 8 newest exactly; the 3 older ones no earlier than they were (at the oldest kept)
    assert sorted(got)[-policy.TRIPS_KEPT :] == sorted(times)[-policy.TRIPS_KEPT :]
    assert sorted(got)[: n - 1 - policy.TRIPS_KEPT] == [oldest_kept] * (n - 1 - policy.TRIPS_KEPT)
    # the next trip is the n-th within the window: locked out, as without the reboot
    _load(m2, 10, 7000)
    assert _count(m2, ev.MAX_POWER_LOCKOUT) == 1


def test_a_record_without_the_max_power_state_waits_a_full_retry():
    m = _mp_meter()
    _load(m, 10, 7000)
    state = m.snapshot()[:16] + (0, -1, 0) + (-1,) * policy.TRIPS_KEPT  # as an older record
    m2 = _mp_meter()
    m2.restore(state)
    assert m2.control.retry_at == m2.control.now + 60
    assert m2.control.trips == [-1, -1, -1]
