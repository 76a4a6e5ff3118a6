"""The keypad (drivers/keypad.py) scanned against the matrix model (tools/sim/keypad.py),
and what the customer types (firmware/ui/keyentry.py) on a running meter (portable).

The meter is the App on SimBoard with keypad=True: the driver scans the model's rows and
columns on the virtual clock, so debounce, bounce and two-key presses are those of a
wired matrix; tokens are minted with the firmware's own primitives.
"""

import asyncio

import support
from drivers.keypad import MANY, NO_KEY, MatrixKeypad
from firmware.tokens import keys
from firmware.tokens import codes as rc
from tools.sim import tokenmint as mint
from tools.sim import commission
from firmware.app import App
from firmware.billing.settings import Settings
from tools.sim.board import SimBoard
from tools.sim.keypad import KeypadModel
from tools.sim.vclock import VirtualClock

METER_ID = 4711002
KEY = keys.MeterKey(keys.derive_meter_key(bytes(range(32)), METER_ID))
RAW = {
    "meter_id": str(METER_ID),
    "tariff": {"type": "flat", "price_per_kwh": "1.0000"},
    "low_credit": "2.00",
    "reconnect_min": "1.00",
}


def _pad(**kw):
    clock = VirtualClock()
    model = KeypadModel(clock, **kw)
    pad = MatrixKeypad(model.rows, model.cols, model.keymap, clock, scan_ms=10)
    return clock, model, pad


def _collect(clock, pad, until_ms):
    got = []

    async def go():
        t = asyncio.create_task(pad.run(got.append))
        await clock.run(until_ms)
        t.cancel()
        await asyncio.sleep(0)

    asyncio.run(go())
    return got


def test_each_key_of_the_matrix_is_read_once_per_press():
    clock, model, pad = _pad()
    end = model.type("123456789*0#")
    assert _collect(clock, pad, end + 200) == list("123456789*0#")
    assert pad.presses == 12 and model.typed == 12


def test_contact_bounce_gives_one_key_and_a_glitch_gives_none():
    clock, model, pad = _pad(bounce=4)
    end = model.type("55")
    assert _collect(clock, pad, end + 200) == ["5", "5"]
    clock, model, pad = _pad()
    model.hold_ms = 15  # shorter than the debounce (3 scans of 10 ms): a membrane glitch
    end = model.type("7")
    assert _collect(clock, pad, end + 200) == []


def test_two_keys_at_once_give_nothing_until_both_are_let_go():
    clock, model, pad = _pad()
    clock.at(0, lambda: model.press("1"))
    clock.at(0, lambda: model.press("6"))
    clock.at(200, lambda: model.release("1"))
    clock.at(400, lambda: model.release("6"))
    clock.at(600, lambda: model.press("9"))
    clock.at(700, lambda: model.release("9"))
    assert _collect(clock, pad, 900) == ["9"]
    model.press("1")
    model.press("2")
    assert pad.scan() == MANY
    model.release("1")
    model.release("2")
    assert pad.scan() == NO_KEY


def test_a_scan_allocates_nothing():
    if not support.MICROPYTHON:
        support.skip("heap_lock exists only under MicroPython; proven there")
    import micropython

    clock, model, pad = _pad()
    model.press("5")
    micropython.heap_lock()
    try:
        for _ in range(10):
            pad.step()
    finally:
        micropython.heap_unlock()
    assert pad.presses == 1


def test_a_keymap_of_the_wrong_size_is_refused():
    clock, model, _ = _pad()
    assert support.raises(ValueError, MatrixKeypad, model.rows, model.cols, "123", clock)


# -- on a meter ---------------------------------------------------------------------------
def _meter(balance=0):
    settings = Settings(RAW)
    board = SimBoard(
        (2026, 1, 5, 12 * 3600), None, settings, meter="ideal", relay_closed=False, keypad=True
    )
    asyncio.new_event_loop()
    app = App(board, settings, key=KEY)
    if balance:
        commission.open_account(app.meter, balance)
        app.save()
    return board, app


def _type(board, app, text, after_ms=3000):
    end = board.keypad_model.type(text, at_ms=board.clock.now + 100)
    support.run_app(board, app, end + after_ms)


def test_a_token_typed_on_the_keypad_credits_and_closes_the_relay():
    board, app = _meter()
    assert not board.relay_model.closed
    tok = mint.compact_credit(KEY, 1, 500)
    _type(board, app, tok + "#")
    e = app.entry
    assert e.answer["accepted"] and e.answer["code"] == rc.ACCEPT
    assert e.answer["word"] == rc.word(rc.ACCEPT) and e.answer["balance"] == 500
    assert app.meter.ledger.balance == 500 and board.relay_model.closed
    assert e.mode == "idle" and e.digits == "" and "accepted" in board.indicator.played


def test_a_wrong_token_answers_its_reject_word_and_credits_nothing():
    board, app = _meter(balance=300)
    tok = mint.compact_credit(KEY, 1, 500)
    wrong = tok[:-1] + str((int(tok[-1]) + 1) % 10)  # one digit mistyped
    _type(board, app, wrong + "#")
    e = app.entry
    assert not e.answer["accepted"] and e.answer["word"] == rc.word(e.answer["code"])
    assert e.answer["code"] in (rc.CRC, rc.FORMAT)
    assert app.meter.ledger.balance == 300 and "rejected" in board.indicator.played
    _type(board, app, tok + "#")  # the same token typed right: accepted once
    _type(board, app, tok + "#")
    assert [t["word"] for t in e.tokens][-2:] == [rc.word(rc.ACCEPT), rc.word(rc.USED)]
    assert app.meter.ledger.balance == 800


def test_backspace_cancel_and_the_twenty_digit_limit():
    board, app = _meter()
    _type(board, app, "1234*5", after_ms=200)
    assert app.entry.digits == "1235" and app.entry.mode == "token"
    _type(board, app, "****", after_ms=200)  # the last digit deleted ends the line
    assert app.entry.digits == "" and app.entry.mode == "idle"
    steps = app.entry.steps
    _type(board, app, "#*", after_ms=200)  # a code started and dropped
    assert app.entry.mode == "idle" and app.entry.steps == steps
    _type(board, app, "1" * 25, after_ms=200)
    assert app.entry.digits == "1" * 20


def test_information_codes_and_screen_steps():
    board, app = _meter()
    e = app.entry
    for code, name in (("1", "balance"), ("4", "power_limit"), ("078", "last_token")):
        _type(board, app, "#" + code + "#", after_ms=200)
        assert e.info[0] == name and e.mode == "idle"
    steps = e.steps
    _type(board, app, "##", after_ms=200)
    _type(board, app, "*", after_ms=200)
    assert e.steps == steps + 2 and e.info is None
    _type(board, app, "#55#", after_ms=1000)  # no such code
    assert e.info is None and board.indicator.played[-1] == "rejected"
    assert app.meter.ledger.balance == 0  # codes never reach the credit path


def test_a_line_left_alone_is_dropped():
    board, app = _meter()
    _type(board, app, "1234", after_ms=40000)
    assert app.entry.mode == "idle" and app.entry.digits == ""
    changes = app.entry.changes
    _type(board, app, "5", after_ms=200)
    assert app.entry.digits == "5" and app.entry.changes > changes


def _night_and_day(sod):
    """A meter at `sod` whose balance crosses the low-credit threshold in a few seconds;
    returns (buzzer went on during the warning, LED went on, buzzer on at a key press)."""
    settings = Settings(RAW)
    board = SimBoard((2026, 1, 5, sod), None, settings, meter="ideal", keypad=True)
    asyncio.new_event_loop()
    app = App(board, settings, key=KEY)
    commission.open_account(app.meter, 210)  # 2.10: low credit (2.00) after 10 s at 36 kW
    app.save()
    board.mains.set_watts(36000)
    seen = {"buzzer": [], "led": []}
    board.buzzer.watchers.append(lambda p, v: v and seen["buzzer"].append(board.clock.now))
    board.led.watchers.append(lambda p, v: v and seen["led"].append(board.clock.now))
    support.run_app(board, app, 16000)
    assert "low_credit" in board.indicator.played
    late = [t for t in seen["buzzer"] if t > 6000], [t for t in seen["led"] if t > 6000]
    warned_buzz, warned_led = bool(late[0]), bool(late[1])  # after the start-up patterns
    seen["buzzer"] = []
    board.keypad_model.type("*", at_ms=board.clock.now + 100)
    support.run_app(board, app, board.clock.now + 1000)
    return warned_buzz, warned_led, bool(seen["buzzer"])


def test_quiet_hours_silence_the_warning_but_not_the_keypad():
    assert _night_and_day(23 * 3600) == (False, True, True)  # 23:00: LED only
    assert _night_and_day(12 * 3600) == (True, True, True)  # noon: it sounds


def test_an_idle_pad_reads_its_columns_rarely_and_wakes_on_a_key():
    clock, model, pad = _pad()
    got = []

    async def go():
        t = asyncio.create_task(pad.run(got.append))
        await clock.run(10000)  # 10 s untouched
        idle_reads = model.reads
        model.type("8", at_ms=clock.now + 7)
        await clock.run(10400)
        t.cancel()
        await asyncio.sleep(0)
        return idle_reads

    idle_reads = asyncio.run(go())
    # the columns every 50 ms (3 reads), after the first scans settled (3 x 12 reads);
    # scanning all the time would be 12,000 reads
    assert idle_reads <= 10000 // 50 * 3 + 3 * 12
    assert got == ["8"]  # woken by the key, read within its 120 ms press
