"""SMS to the customer (firmware/comms/sms.py) through the cellular driver's AT+CMGS on the modem
model (tools/sim/modem.py), in virtual time (portable).

The meter runs down its credit at a heavy load: the low-credit and the disconnect events
each send one text to the bound number; the rate limit holds back repeats; a modem
without network or answering +CMS ERROR delays the message, never the meter.
"""

import asyncio

import support
from drivers.cellular import sms_number_ok
from firmware.app import App
from firmware.tokens import keys
from firmware.billing.settings import Settings
from firmware.comms.sms import Notifier
from tools.sim.board import SimBoard
from tools.sim import commission

NUMBER = "+254700000001"
KEY = keys.MeterKey(keys.derive_meter_key(bytes(range(32)), 4711002))  # top-ups are tokens


def _settings(**kw):
    raw = {
        "meter_id": "4711002",
        "tariff": {"type": "flat", "price_per_kwh": "1.0000"},
        "low_credit": "2.00",
        "reconnect_min": "1.00",
        "sms_to": NUMBER,
    }
    raw.update(kw)
    return Settings(raw)


def _meter(settings, balance=215):
    board = SimBoard((2026, 1, 5, 12 * 3600), None, settings, meter="ideal")
    asyncio.new_event_loop()
    app = App(board, settings, key=KEY)
    commission.open_account(
        app.meter, balance
    )  # 2.15 at 36 kW (1 cent a second): low at 15 s, 0 at 215 s
    app.save()
    board.mains.set_watts(36000)
    link = board.modem(settings)
    app.sms = Notifier(app, link, retry_ms=20000)
    app.extra_tasks += [link.run(), app.sms.run()]
    return board, app, board.modem_model


def test_low_credit_and_disconnection_each_text_the_customer_once():
    board, app, model = _meter(_settings())
    support.run_app(board, app, 400000)
    assert app.meter.control.control_state == 0  # disconnected on its own
    texts = [t for n, t in model.sms]
    assert [n for n, t in model.sms] == [NUMBER, NUMBER]
    assert "low credit" in texts[0] and "4711002" in texts[0] and "1.99" in texts[0]
    assert "disconnected" in texts[1] and "balance 0.00" in texts[1]
    assert app.sms.sent == 2 and app.sms.failed == 0
    assert any(c.startswith('AT+CMGS="' + NUMBER) for c in model.log)
    assert app.errors == 0


def test_a_hovering_balance_does_not_flood_the_customer():
    board, app, model = _meter(_settings())
    # topped up over the threshold and run down again, four times
    topups = [(t, lambda: support.topup(app, 60)) for t in (60000, 120000, 180000, 240000)]
    got = support.run_app(board, app, 300000, calls=[(50000, lambda: len(model.sms))] + topups)
    assert got[0] == 1  # the first crossing texted
    assert len(model.sms) == 1 and app.sms.suppressed >= 3
    lows = [e for e in app.meter.log.items if e[1] == "low_credit"]
    assert len(lows) >= 4  # the events themselves all happened


def test_the_daily_cap_holds_even_past_the_interval():
    board, app, model = _meter(_settings(sms_min_interval_s=60, sms_per_day=2))
    # +1.20 every 2 minutes: a new low-credit crossing each time, 120 s apart
    topups = [
        (t, lambda: support.topup(app, 120)) for t in (60000, 180000, 300000, 420000, 540000)
    ]
    support.run_app(board, app, 600000, calls=topups)
    lows = [e for e in app.meter.log.items if e[1] == "low_credit"]
    assert len(lows) >= 5 and app.meter.control.control_state == 1
    assert len(model.sms) == 2 and app.sms.suppressed >= 3


def test_no_network_or_an_error_delays_the_text_not_the_meter():
    board, app, model = _meter(_settings())
    model.sms_error = 500  # the first try: +CMS ERROR: 500
    got = support.run_app(
        board,
        app,
        500000,
        calls=[
            (30000, lambda: (len(model.sms), app.sms.pending[0] is not None)),
            (80000, lambda: len(model.sms)),
            (80000, lambda: model.set_reg(0)),  # the network goes
            (300000, lambda: (app.meter.control.control_state, len(model.sms))),
            (300000, lambda: model.set_reg(1)),
        ],
    )
    assert got[0] == (0, True)  # failed once, still pending
    assert got[1] == 1  # retried after retry_ms
    assert got[3] == (0, 1)  # disconnected on its own; its text waits for the network
    assert len(model.sms) == 2 and "disconnected" in model.sms[1][1]
    assert app.errors == 0


def test_numbers_and_settings_are_checked():
    for ok in ("+254700000001", "0712345678", "911"):
        assert sms_number_ok(ok)
    for bad in ("", "+12", "07x2345678", "+1234567890123456", None):
        assert not sms_number_ok(bad)
    assert support.raises(ValueError, _settings, sms_to="07 1234")
    assert support.raises(ValueError, _settings, sms_per_day=0)
    assert _settings(sms_to="").sms_to == ""
