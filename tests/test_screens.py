"""What the customer's display shows (firmware/ui/screens.py), as panel-neutral content: the
cycle, energy left under each tariff type and the time it lasts, the state and alert
words, low-credit blink, the keypad line, answers and information screens.

Portable: CPython pytest and `micropython`. The meter is the App on tools/sim's SimBoard
(ideal energy source, virtual clock); the pixels are checked in tests/test_display.py.
"""

import asyncio

import support
from firmware.tokens import keys
from firmware.billing import policy
from firmware.ui import screens
from tools.sim import tokenmint as mint
from tools.sim import commission
from firmware.app import App
from firmware.comms.outbox import Outbox
from firmware.ui.screens import Content, Screens
from firmware.billing.settings import Settings
from tools.sim.board import SimBoard

METER_ID = 4711002
KEY = keys.MeterKey(keys.derive_meter_key(bytes(range(32)), METER_ID))
MONDAY_NOON = (2026, 1, 5, 12 * 3600)
RAW = {
    "meter_id": str(METER_ID),
    "tariff": {"type": "flat", "price_per_kwh": "0.2500"},
    "low_credit": "2.00",
    "reconnect_min": "1.00",
}


class Meter:
    def __init__(self, raw=None, balance=1234, start=MONDAY_NOON, watts=0, entry=True):
        cfg = dict(RAW)
        cfg.update(raw or {})
        self.settings = Settings(cfg)
        self.board = SimBoard(
            start, None, self.settings, meter="ideal", flash_sectors=4, keypad=entry
        )
        asyncio.new_event_loop()
        self.app = App(self.board, self.settings, key=KEY)
        commission.open_account(self.app.meter, balance)
        self.clock = self.board.clock
        self.entry = self.app.entry  # firmware/ui/keyentry.py's Entry on a keypad board
        assert (self.entry is not None) == entry
        self.board.mains.set_watts(watts)
        self.board.source.poll()
        self.screens = Screens(self.app, self.clock)

    def show(self):
        return self.screens.compose(Content())

    def at(self, ms, fn=None):
        """Move the virtual clock to `ms` (no tasks run), then fn(); returns compose()."""
        self.clock.now = ms
        if fn is not None:
            fn()
        return self.show()

    def keys(self, text):
        for ch in text:
            self.entry.key(ch)


def _fields(c):
    return (c.name, c.title, c.value, c.unit, c.note, c.status, c.blink, c.page, c.pages)


def test_the_cycle_shows_each_screen_for_four_seconds():
    m = Meter(watts=2000)
    got = [_fields(m.at(t)) for t in (0, 3999, 4000, 8000, 12000, 16000, 20000)]
    assert got == [
        ("balance", "Balance", "12.34", "", "", "", False, 1, 5),
        ("balance", "Balance", "12.34", "", "", "", False, 1, 5),
        ("kwh_left", "Energy left", "49.36", "kWh", "2000 W: 24h40", "", False, 2, 5),
        ("power", "Power now", "2000", "W", "", "", False, 3, 5),
        ("state", "State", "Normal", "", "Supply on", "", False, 4, 5),
        ("meter_id", "Meter", "4711002", "", "no modem", "", False, 5, 5),
        ("balance", "Balance", "12.34", "", "", "", False, 1, 5),
    ]


def test_kwh_left_is_balance_over_the_price_now_under_each_tariff_type():
    def check(m, price):
        c = m.screens.screen("kwh_left", Content())
        bal = m.app.meter.ledger.balance
        assert m.app.meter.price_now() == price
        whole, frac = c.value.split(".")
        v = int(whole) * 100 + int(frac)  # 0.01 kWh
        # floor(balance / price) to the 0.01 kWh shown: v x price <= balance x 10^4 < (v+1) x price
        assert v * price <= bal * 10000 < (v + 1) * price, (c.value, bal, price)
        return c.value

    flat = Meter({"tariff": {"type": "flat", "price_per_kwh": "0.2500"}})
    assert check(flat, 2500) == "49.36"  # 12.34 / 0.25
    odd = Meter({"tariff": {"type": "flat", "price_per_kwh": "0.3333"}}, balance=100000)
    assert check(odd, 3333) == "3000.30"  # 1000.00 / 0.3333 = 3000.3000...
    tou = {
        "type": "tou",
        "bands": [{"days": "mon-fri", "from": "07:00", "to": "10:00", "price_per_kwh": "0.4000"}],
        "default_price_per_kwh": "0.1000",
    }
    m = Meter({"tariff": tou}, start=(2026, 1, 5, 7 * 3600 - 10))  # Monday 06:59:50
    assert check(m, 1000) == "123.40"  # off-peak
    support.run_app(m.board, m.app, 20000)  # into the morning peak
    assert m.app.meter.clock.sod >= 7 * 3600
    assert m.app.meter.ledger.balance == 1234
    assert check(m, 4000) == "30.85"  # 12.34 / 0.40
    block = {
        "type": "block",
        "tiers": [
            {"up_to_kwh": "1", "price_per_kwh": "0.1500"},
            {"up_to_kwh": None, "price_per_kwh": "0.3000"},
        ],
    }
    m = Meter({"tariff": block}, balance=5000, watts=36000)  # 10 Wh a second
    assert check(m, 1500) == "333.33"  # 50.00 / 0.15
    support.run_app(m.board, m.app, 50000)
    assert m.app.meter.ledger.month_wh < 1000
    check(m, 1500)
    support.run_app(m.board, m.app, 150000)  # past the first tier's 1 kWh this month
    assert m.app.meter.ledger.month_wh > 1000
    assert m.app.meter.ledger.balance < 5000 - 15
    check(m, 3000)


def test_the_time_left_at_the_present_load():
    assert screens.kwh_left_x100(1234, 2500) == 4936
    assert screens.kwh_left_x100(1234, 0) is None
    assert screens.kwh_left_x100(-50, 2500) == 0
    # 12.34 at 0.25 buys 49.36 kWh: 24.68 h at 2 kW, 49.36 min at 60 kW
    assert screens.minutes_left(1234, 2500, 2000) == 1480
    assert screens.minutes_left(1234, 2500, 60000) == 49
    assert screens.minutes_left(1234, 2500, 0) is None
    assert screens.minutes_left(1234, 0, 2000) is None
    assert screens.minutes_left(0, 2500, 2000) == 0
    texts = [screens.duration_text(n) for n in (None, 0, 49, 60, 1480, 5999, 6000, 14400)]
    assert texts == ["--", "0 min", "49 min", "1h00", "24h40", "99h59", "4.1 days", "10 days"]
    m = Meter(watts=0)
    c = m.screens.screen("kwh_left", Content())
    assert (c.value, c.note) == ("49.36", "0 W: --")
    free = Meter({"tariff": {"type": "flat", "price_per_kwh": "0"}}, watts=500)
    c = free.screens.screen("kwh_left", Content())
    assert (c.value, c.note) == ("--", "500 W: --")
    big = Meter(balance=1000000000, watts=1)  # the largest balance at the lowest load
    c = big.screens.screen("kwh_left", Content())
    assert c.value == "40000000.00" and c.note == "1666666666 days"  # too long with the load


def test_low_credit_and_emergency_credit_blink_the_balance_only():
    m = Meter(balance=150)  # 1.50 < low_credit 2.00
    c = m.show()
    assert c.name == "balance" and c.blink and c.status == "LOW CREDIT"
    assert not m.at(4000).blink  # the energy-left screen keeps still
    m = Meter({"emergency_credit": "5.00"}, balance=100)
    assert m.app.meter.control.invoke_emergency_credit()
    c = m.show()
    assert c.blink and c.status == "EMERGENCY CREDIT"
    assert not Meter(balance=200).show().blink  # at the level: not low
    assert not Meter(balance=0).show().blink  # out of credit: the status line says so


def test_state_words_and_the_status_line():
    m = Meter(balance=0)
    ctl = m.app.meter.control
    assert ctl.control_state == policy.DISCONNECTED
    c = m.screens.screen("state", Content())
    assert (c.value, c.note, c.status) == ("No credit", "Supply off", "NO CREDIT")
    assert m.show().status == "NO CREDIT"
    ctl.open_reasons |= policy.OPEN_TAMPER
    c = m.screens.screen("state", Content())
    assert (c.value, c.status) == ("Tamper", "TAMPER")
    ctl.open_reasons = policy.OPEN_MAX_POWER
    assert m.screens.alert() == "OVER POWER LIMIT"
    ctl.open_reasons = policy.OPEN_LOCKOUT | policy.OPEN_MAX_POWER
    assert m.screens.alert() == "POWER LOCKOUT"
    ctl.open_reasons = policy.OPEN_REMOTE
    assert m.screens.alert() == "REMOTE OFF"
    # back on credit with the button rule: ready, waiting for the customer
    m = Meter({"reconnect_needs_button": True}, balance=0)
    m.app.meter.credit(500)
    assert m.app.meter.control.control_state == policy.READY_FOR_RECONNECTION
    c = m.screens.screen("state", Content())
    assert (c.value, c.note, c.status) == ("Normal", "Supply ready", "PRESS BUTTON")
    # friendly hours: out of credit but held on
    m = Meter({"friendly": [{"from": "08:00", "to": "20:00"}]}, balance=5, watts=36000)
    support.run_app(m.board, m.app, 30000)  # 0.25 a second: below zero inside the window
    assert m.app.meter.ledger.balance < 0
    assert m.app.meter.control.credit_status() == policy.FRIENDLY
    c = m.screens.screen("state", Content())
    assert (c.value, c.note, c.status) == ("Friendly", "Supply on", "FRIENDLY HOURS")
    m = Meter(balance=-123)
    c = m.screens.screen("balance", Content())
    assert c.value == "-1.23"


def test_typed_digits_then_the_answer_for_ten_seconds_then_the_cycle():
    m = Meter()
    tok = mint.compact_credit(KEY, 1, 500)
    c = m.at(1000, lambda: m.keys(tok[:6]))
    assert _fields(c) == (
        "entry",
        "Token",
        tok[:4] + " " + tok[4:6],
        "",
        "6 of 20",
        "",
        False,
        0,
        0,
    )
    c = m.at(1500, lambda: m.keys(tok[6:]))
    assert c.value == " ".join([tok[i : i + 4] for i in range(0, 20, 4)])
    assert c.note == "20 of 20"
    c = m.at(2000, lambda: m.keys("#"))
    assert (c.name, c.title, c.value, c.note) == ("answer", "Token", "Accepted", "Balance 17.34")
    assert m.at(11999).name == "answer"
    c = m.at(12000)
    assert (c.name, c.value, c.page, c.pages) == ("balance", "17.34", 1, 6)  # + last token
    c = m.at(13000, lambda: m.keys(tok + "#"))
    assert (c.name, c.value, c.note) == ("answer", "Used", "Rejected (10)")
    c = m.at(14000, lambda: m.keys("12#"))  # a short wrong token
    assert c.name == "answer" and c.note.startswith("Rejected (")
    c = m.at(15000, lambda: m.keys("#07"))
    assert (c.title, c.value, c.note) == ("Code", "#07_", "number then #")
    c = m.at(16000, lambda: m.keys("8#"))  # #078#: the last token's result
    last = m.app.intake.last[0].code
    assert last != 1 and (c.name, c.title) == ("last_token", "Last token")
    assert (c.value, c.note) == (screens.tokencodes.word(last), "Rejected (" + str(last) + ")")
    c = m.at(17000, lambda: m.keys("#30#"))  # the tokens typed, newest first
    assert (c.name, c.title, c.status) == ("tokens", "Tokens 3", "Used Accepted")
    assert c.value == screens.tokencodes.word(last)
    assert m.at(26999).name == "tokens"
    assert m.at(27000).name == "balance"


def test_information_codes_and_the_next_screen_key():
    m = Meter({"max_power_w": 5000}, watts=450)
    c = m.at(1000, lambda: m.keys("#4#"))
    assert _fields(c)[:5] == ("power_limit", "Power limit", "5000", "W", "trips after 30 s")
    c = m.at(2000, lambda: m.keys("#3#"))
    assert (c.name, c.value, c.unit, c.note) == ("power", "450", "W", "limit 5000 W")
    c = m.at(3000, lambda: m.keys("#6#"))
    assert (c.name, c.value, c.unit, c.note) == ("signal", "--", "dBm", "no modem")
    c = m.at(4000, lambda: m.keys("#0#"))
    assert (c.name, c.value) == ("meter_id", "4711002")
    c = m.at(5000, lambda: m.keys("#2#"))
    assert (c.name, c.value) == ("kwh_left", "49.36")
    c = m.at(6000, lambda: m.keys("#5#"))
    assert (c.name, c.value) == ("state", "Normal")
    c = m.at(7000, lambda: m.keys("#1#"))
    assert (c.name, c.value) == ("balance", "12.34")
    c = m.at(8000, lambda: m.keys("#90#"))
    assert (c.name, c.title, c.value) == ("version", "Version", "unreleased")
    assert len(c.note) == 12 and c.status == ""
    # the next-screen key ends the information screen and steps the cycle at once
    before = m.screens.index
    c = m.at(9000, lambda: m.keys("A"))
    assert c.name == screens.CYCLE[before + 1] and c.pages == 5
    c = m.at(9500, lambda: m.keys("*"))  # `*` on an idle pad steps too
    assert c.name == screens.CYCLE[before + 2]
    assert m.at(13499).name == screens.CYCLE[before + 2]  # a whole dwell after the key
    assert m.at(13500).name == screens.CYCLE[before + 3]
    c = m.at(20000, lambda: m.keys("#4#"))
    m.app.meter.settings.max_power_w = 0
    assert m.show().value == "None"


def test_the_meter_number_and_signal_from_the_link():
    class Link:
        def __init__(self):
            self.rssi = None

        def telemetry(self):
            return {"state": "up", "rssi_dbm": self.rssi}

    class Comms:  # what App.status() reads of a transport
        def __init__(self):
            self.online = False
            self.link = Link()
            self.outbox = Outbox(4)

    m = Meter()
    m.app.comms = Comms()
    c = m.screens.screen("meter_id", Content())
    assert (c.value, c.note) == ("4711002", "offline")
    m.app.comms.online = True
    m.app.comms.link.rssi = -71
    c = m.screens.screen("meter_id", Content())
    assert c.note == "online -71 dBm"
    c = m.screens.screen("signal", Content())
    assert (c.value, c.unit, c.note) == ("-71", "dBm", "online")


def test_without_a_keypad_the_cycle_runs_alone():
    m = Meter(entry=False)
    assert m.show().name == "balance"
    assert m.at(4000).name == "kwh_left"
    assert screens.group4("12345678901") == "1234 5678 901"
    assert screens.group4("") == ""


def test_a_token_from_the_back_office_shows_its_answer_too():
    m = Meter(entry=False)
    tok = mint.compact_credit(KEY, 1, 500)
    c = m.at(1000, lambda: m.app.enter(tok))  # the remote path: comms, technician
    assert (c.name, c.title, c.value, c.note) == ("answer", "Top-up", "Accepted", "Balance 17.34")
    assert m.at(10999).name == "answer"
    assert m.at(11000).name == "balance"
    c = m.at(12000, lambda: m.app.enter(tok))
    assert (c.title, c.value, c.note) == ("Top-up", "Used", "Rejected (10)")
    # a meter restarted with a token already answered shows the cycle
    later = Screens(m.app, m.clock)
    assert later.compose(Content()).name == "balance"
    # typed on the keypad: the keypad's answer, once
    k = Meter()
    c = k.at(1000, lambda: k.keys(mint.compact_credit(KEY, 2, 100) + "#"))
    assert (c.title, c.value, c.note) == ("Token", "Accepted", "Balance 13.34")
