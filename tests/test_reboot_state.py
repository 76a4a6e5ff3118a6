"""What credit control keeps through a power cut: friendly windows and the max-power
protection (portable: CPython pytest and MicroPython).

The App runs on the simulated board (tools/sim/board.py) with its journal on the NOR
flash model; a cut is what the simulator's `power_cuts` do (tools/sim/runner.py): the
supply fails, the meter is dead for the outage, the board's drivers are made afresh and
a new App starts from the journal on the same flash and relay.
"""

import asyncio

import support
from firmware.app import App
from firmware.billing import events as ev
from firmware.billing import policy
from firmware.billing.settings import Settings
from tools.sim import commission
from tools.sim.board import SimBoard

SATURDAY_10 = (2026, 1, 10, 10 * 3600)  # 2026-01-10 is a Saturday
MONDAY_NOON = (2026, 1, 5, 12 * 3600)


def _boot(board, settings, seen):
    asyncio.new_event_loop()
    app = App(board, settings)
    app.meter.log.listeners.append(lambda stamp, kind, bal, v: seen.append((stamp, kind, v)))
    return app


def _start(start, raw, balance, watts, seen):
    s = Settings(raw)
    board = SimBoard(start, None, s, meter="ideal", store="journal", flash_sectors=4)
    app = _boot(board, s, seen)
    commission.open_account(app.meter, balance)
    app.save()
    board.mains.set_watts(watts)
    return board, s, app


def _cut(board, settings, for_s, seen):
    """The supply fails now for `for_s` seconds; the meter that starts again."""
    board.power_cut()
    board.clock.outage(board.clock.now + for_s * 1000)
    board.power_on()
    board.boot()
    return _boot(board, settings, seen)


def _kinds(seen, kind):
    return [e for e in seen if e[1] == kind]


# -- friendly windows ----------------------------------------------------------------

WEEKEND = {
    "tariff": {"type": "flat", "price_per_kwh": "1.0000"},
    "low_credit": "1.00",
    "reconnect_min": "1.00",
    "friendly": [{"days": "sat-sun", "from": "08:00", "to": "10:30"}],
}


def test_a_reboot_inside_a_friendly_window_keeps_the_supply_on():
    seen = []
    # 3600 W at 1.0000/kWh: 0.1 cent a second; 20 cents last 200 s
    board, s, app = _start(SATURDAY_10, WEEKEND, 20, 3600, seen)
    opened = []  # the reset coil's pulses: the relay opening
    board.reset_pin.watchers.append(lambda pin, v: v and opened.append(board.clock.now))
    support.run_app(board, app, 600 * 1000)
    assert app.meter.ledger.balance < 0 and app.meter.control.held
    assert len(_kinds(seen, ev.FRIENDLY_HOLD)) == 1 and not _kinds(seen, ev.DISCONNECT)
    app = _cut(board, s, 5, seen)  # a 5-second outage at 10:10
    assert app.meter.control.control_state == policy.CONNECTED
    assert app.meter.control.credit_status() == policy.FRIENDLY
    # to 10:20, still inside the window: never cut; then past 10:30, when it ends
    at_1020 = support.run_app(
        board,
        app,
        1810 * 1000,
        calls=[(595 * 1000, lambda: (len(_kinds(seen, ev.DISCONNECT)), board.relay_model.closed))],
    )
    assert at_1020 == [(0, True)]
    # the window still ends as it would have: cut within a tick of 10:30
    cuts = _kinds(seen, ev.DISCONNECT)
    assert len(cuts) == 1 and cuts[0][2] == policy.OPEN_CREDIT
    assert app.meter.clock.sod >= 10 * 3600 + 30 * 60
    assert not board.relay_model.closed and len(opened) == 1


def test_a_reboot_outside_the_window_with_no_credit_still_cuts():
    seen = []
    sunday_11 = (2026, 1, 11, 11 * 3600)  # after the window
    board, s, app = _start(sunday_11, WEEKEND, 5, 3600, seen)
    support.run_app(board, app, 100 * 1000)
    assert app.meter.control.control_state == policy.DISCONNECTED
    app = _cut(board, s, 5, seen)
    assert app.meter.control.control_state == policy.DISCONNECTED
    support.run_app(board, app, 200 * 1000)
    assert not board.relay_model.closed


# -- the max-power protection --------------------------------------------------------

MAX_POWER = {
    "tariff": {"type": "flat", "price_per_kwh": "0.2500"},
    "max_power_w": 3000,
    "max_power_trip_s": 30,
    "max_power_retry_s": 120,
    "max_power_lockout_trips": 4,
    "max_power_lockout_window_s": 1800,
}


def _overload(cuts):
    """5 kW against a 3 kW limit for 20 minutes, a 5-second cut at each of `cuts` (s);
    returns the (trip, retry, lockout) event times in seconds from the start."""
    seen = []
    board, s, app = _start(MONDAY_NOON, MAX_POWER, 100000, 5000, seen)
    t0 = app.meter.clock.stamp()
    for at_s in cuts:
        support.run_app(board, app, at_s * 1000)
        app = _cut(board, s, 5, seen)
    support.run_app(board, app, 1200 * 1000)
    return tuple(
        [e[0] - t0 for e in _kinds(seen, k)]
        for k in (ev.MAX_POWER_TRIP, ev.MAX_POWER_RETRY, ev.MAX_POWER_LOCKOUT)
    ), app


def test_power_cuts_during_the_retries_change_nothing_of_the_protection():
    (trips, retries, lockouts), app = _overload(())
    assert len(trips) == 4 and len(retries) == 3 and len(lockouts) == 1
    assert lockouts[0] == trips[3]  # the 4th trip in 1800 s locks out
    assert [r - t for t, r in zip(trips, retries)] == [120, 120, 120]
    assert app.meter.control.open_reasons & policy.OPEN_LOCKOUT
    # the same load with a cut in the middle of every retry wait: the same trips, the
    # same retry times (the outage counts as time off), the same lock-out
    cuts = [t + 60 for t in trips[:3]]
    (trips2, retries2, lockouts2), app2 = _overload(cuts)
    assert (trips2, retries2, lockouts2) == (trips, retries, lockouts)
    assert app2.meter.control.open_reasons & policy.OPEN_LOCKOUT
    assert app2.boots == 4


def test_a_cut_just_after_each_trip_still_locks_out_at_the_fourth():
    (trips, _, _), _ = _overload(())
    (trips2, retries2, lockouts2), app = _overload([t + 1 for t in trips[:3]])
    assert len(trips2) == 4 and len(lockouts2) == 1 and lockouts2[0] == trips2[3]
    assert [r - t for t, r in zip(trips2, retries2)] == [120, 120, 120]
    assert app.meter.control.control_state == policy.DISCONNECTED
