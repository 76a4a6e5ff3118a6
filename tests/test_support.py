"""Portable self-tests of tests/support.py; also gives the MicroPython bridge a module to run."""

import support


def _boom(kind, msg="boom"):
    raise kind(msg)


def _quiet(*args, **kw):
    return args, kw


def test_raises_returns_the_exception():
    e = support.raises(ValueError, _boom, ValueError, msg="bad price")
    assert isinstance(e, ValueError)
    assert e.args == ("bad price",)


def test_raises_accepts_a_base_class_and_tuples():
    assert isinstance(support.raises(Exception, _boom, KeyError), KeyError)
    assert isinstance(support.raises((TypeError, KeyError), _boom, KeyError), KeyError)


def test_raises_fails_when_nothing_is_raised():
    try:
        support.raises(ValueError, _quiet, 1, x=2)
    except AssertionError as e:
        assert "ValueError" in str(e)
        assert "_quiet" in str(e)
    else:
        raise AssertionError("raises() did not fail")


def test_raises_lets_other_exceptions_through():
    try:
        support.raises(ValueError, _boom, KeyError)
    except KeyError:
        pass
    else:
        raise AssertionError("KeyError was swallowed")


def test_runtime_flag_matches_interpreter():
    import sys

    assert support.MICROPYTHON == (sys.implementation.name == "micropython")


def _meter(key=True):
    """An App on the simulated board (ideal source) at 1.0000 per kWh, with or without a
    meter key."""
    import asyncio

    from firmware.app import App
    from firmware.billing.settings import Settings
    from firmware.tokens import keys
    from tools.sim.board import SimBoard

    meter_id = 4711002
    raw = {"meter_id": str(meter_id), "low_credit": "2.00", "reconnect_min": "1.00"}
    raw["tariff"] = {"type": "flat", "price_per_kwh": "1.0000"}
    settings = Settings(raw)
    k = keys.MeterKey(keys.derive_meter_key(bytes(range(32)), meter_id)) if key else None
    board = SimBoard((2026, 1, 5, 12 * 3600), None, settings, meter="ideal", flash_sectors=4)
    asyncio.new_event_loop()
    return board, App(board, settings, key=k)


def test_topup_is_a_token_through_the_credit_path():
    from firmware.billing import events as ev
    from firmware.billing import policy

    board, app = _meter()
    assert (
        app.meter.control.control_state == policy.DISCONNECTED
    )  # a new meter: no credit, disconnected
    saves = board.store.saves
    assert support.topup(app, 1234) == 1234
    assert support.topup(app, 66) == 1300  # the next token id: not a replay
    m = app.meter
    assert m.ledger.credited == 1300 and app.intake.tokens.memory.high == 2
    assert board.store.saves == saves + 2  # each journaled before its answer
    assert [e[3] for e in m.log.items if e[1] == ev.TOPUP] == [1234, 66]
    assert app.intake.last[0].accepted and m.control.control_state == policy.CONNECTED
    keyless = _meter(key=False)[1]
    e = support.raises(AssertionError, support.topup, keyless, 100)
    assert "no key" in str(e) and keyless.meter.ledger.credited == 0


def test_open_account_restores_a_supplying_meter_with_a_balance_and_debt():
    from firmware.app import STATE_FIELDS
    from firmware.billing import policy
    from tools.sim import commission

    board, app = _meter()
    m = app.meter
    assert m.control.open_reasons == policy.OPEN_CREDIT
    commission.open_account(m, 150, debt=40)  # below low_credit: warned at once
    assert (m.ledger.balance, m.ledger.debt, m.ledger.credited) == (150, 40, 0)
    assert m.control.control_state == policy.CONNECTED and m.control.open_reasons == 0
    assert m.control.credit_status() == policy.LOW_CREDIT
    app.save()
    got = board.store.load()
    assert got[STATE_FIELDS.index("balance")] == 150 and got[STATE_FIELDS.index("debt")] == 40
    commission.open_account(m, 0)  # at the disconnect level: the credit rules cut it
    assert m.control.control_state == policy.DISCONNECTED
    assert m.control.open_reasons == policy.OPEN_CREDIT
