"""The one credit path (firmware/tokens/intake.py) in the App on the simulated board (portable).

Tokens are minted with the firmware's own primitives (tools/vend, the independent host
implementation, is checked against them in the host tests). The meter keeps its state in
the journal on the NOR flash model; reboots are a new App on the same hardware.
"""

import asyncio
import gc

from firmware.tokens import keys
from firmware.billing import policy
from firmware.tokens import codes as rc
from tools.sim import tokenmint as mint
from firmware.app import STATE_FIELDS, App
from firmware.billing.settings import Settings
from tools.sim.board import SimBoard
from tools.sim.nor import PowerCut

METER_ID = 4711002
OTHER_ID = 4711003
VK = bytes(range(32))
KEY = keys.MeterKey(keys.derive_meter_key(VK, METER_ID))
OTHER = keys.MeterKey(keys.derive_meter_key(VK, OTHER_ID))
CREDITED = STATE_FIELDS.index("credited")
HIGH = STATE_FIELDS.index("high")
STAMP0 = 26 * 365 * 86400  # around 2026, seconds since 2000


def _settings(**extra):
    raw = {
        "meter_id": str(METER_ID),
        "tariff": {"type": "flat", "price_per_kwh": "1.0000"},
        "low_credit": "2.00",
        "reconnect_min": "1.00",
    }
    raw.update(extra)
    return Settings(raw)


def _board(settings, sectors=4):
    return SimBoard((2026, 1, 5, 12 * 3600), None, settings, meter="ideal", flash_sectors=sectors)


def _app(board, settings, key=KEY, **kw):
    asyncio.new_event_loop()
    return App(board, settings, key=key, **kw)


def _run(board, app, until_ms):
    async def go():
        for t in app.tasks():
            asyncio.create_task(t)
        await board.clock.run(until_ms)

    asyncio.run(go())


def _reboot(board, settings, key=KEY):
    board.power_cut()
    board.clock.outage(board.clock.now + 1000)
    board.power_on()
    board.boot()
    return _app(board, settings, key)


def test_compact_credit_once_then_used_also_after_a_reboot():
    s = _settings()
    board = _board(s)
    app = _app(board, s)
    tok = mint.compact_credit(KEY, 5, 1234)
    r, bal = app.enter(tok)
    assert r.code == rc.ACCEPT and r.amount == 1234 and bal == 1234
    assert app.meter.ledger.credited == 1234
    assert board.store.load()[CREDITED] == 1234  # journaled before the answer
    r, bal = app.enter(tok)
    assert r.code == rc.USED and bal == 1234
    app = _reboot(board, s)
    assert app.meter.ledger.balance == 1234
    r, bal = app.enter(tok)
    assert r.code == rc.USED and app.meter.ledger.credited == 1234
    kinds = [e[1] for e in app.meter.log.last(5)]
    assert kinds[-1] == "token_rejected" and app.meter.log.last(1)[0][3] == rc.USED


def test_envelope_credit_hex_and_bytes_and_wrong_meter():
    s = _settings()
    board = _board(s)
    app = _app(board, s)
    env = mint.envelope_credit(KEY, METER_ID, 900, 2500, STAMP0)
    r, bal = app.enter(env.hex())
    assert r.code == rc.ACCEPT and bal == 2500
    r, _ = app.enter(bytes(env))
    assert r.code == rc.USED
    stranger = mint.envelope_credit(OTHER, OTHER_ID, 901, 2500, STAMP0)
    r, bal = app.enter(stranger)
    assert r.code == rc.WRONG_METER and bal == 2500


def test_a_top_up_reconnects_a_disconnected_meter():
    s = _settings()
    board = _board(s)
    app = _app(board, s)
    board.mains.set_watts(3600)  # 1.0000 per kWh: a cent each 10 s
    app.enter(mint.compact_credit(KEY, 1, 50))
    _run(board, app, 700 * 1000)
    assert app.meter.control.control_state == policy.DISCONNECTED
    assert not board.relay_model.closed
    r, bal = app.enter(mint.compact_credit(KEY, 2, 500))
    assert r.code == rc.ACCEPT
    _run(board, app, 702 * 1000)
    assert board.relay_model.closed and app.meter.control.control_state == policy.CONNECTED


def test_bad_tokens_get_codes_and_lock_out_after_three():
    s = _settings()
    board = _board(s)
    app = _app(board, s)
    codes = [app.enter(t)[0].code for t in ("12345", "1234567890123456789x", "")]
    assert codes == [rc.FORMAT, rc.FORMAT, rc.FORMAT]
    good = mint.compact_credit(KEY, 9, 100)
    assert app.enter(good)[0].code == rc.LOCKOUT  # three wrong: 10 s of lock-out
    board = _board(s)
    app = _app(board, s)
    bad = good[:-1] + str((int(good[-1]) + 1) % 10)
    for _ in range(3):
        assert app.enter(bad)[0].code == rc.CRC
    r, bal = app.enter(good)
    assert r.code == rc.LOCKOUT and bal == 0
    # the lock-out is journaled: a reboot does not lift it
    app = _reboot(board, s)
    assert app.enter(good)[0].code == rc.LOCKOUT
    assert app.meter.ledger.credited == 0
    # ... but time does (the clock runs on while the lock-out lasts)
    _run(board, app, board.clock.now + 11000)
    r, bal = app.enter(good)
    assert r.code == rc.ACCEPT and bal == 100


def test_management_tokens_change_settings_through_the_schema():
    s = _settings()
    board = _board(s)
    saved = []
    app = _app(board, s, on_settings=saved.append)
    r, _ = app.enter(mint.compact_management(KEY, "max_power", 20, 4600))
    assert r.code == rc.ACCEPT and app.meter.settings.max_power_w == 4600
    assert saved[-1]["max_power_w"] == 4600
    r, _ = app.enter(mint.compact_management(KEY, "low_credit", 21, 350))
    assert r.code == rc.ACCEPT and app.meter.settings.low_credit == 350
    assert saved[-1]["low_credit"] == "3.50"
    # a threshold the schema refuses (below reconnect_min) leaves the settings alone
    r, _ = app.enter(mint.compact_management(KEY, "low_credit", 22, 50))
    assert r.code == rc.ACCEPT and app.meter.settings.low_credit == 350
    assert app.meter.log.last(2)[0][1] == "setting_refused"
    assert app.meter.log.last(1)[0][1] == "token_accepted"


def test_postpaid_mode_never_disconnects_for_credit():
    s = _settings()
    board = _board(s)
    app = _app(board, s)
    r, _ = app.enter(mint.compact_management(KEY, "payment_mode", 30, 1))
    assert r.code == rc.ACCEPT and app.meter.settings.postpaid
    board.mains.set_watts(3600)
    _run(board, app, 600 * 1000)
    assert app.meter.ledger.balance < 0
    assert board.relay_model.closed and app.meter.control.control_state == policy.CONNECTED
    r, _ = app.enter(mint.compact_management(KEY, "payment_mode", 31, 2))
    _run(board, app, 602 * 1000)
    assert not app.meter.settings.postpaid and not board.relay_model.closed


def test_key_change_envelope_then_old_key_refused_new_key_accepted():
    s = _settings()
    board = _board(s)
    app = _app(board, s)
    material = keys.key_material(VK, METER_ID, 1)
    r, _ = app.enter(mint.envelope_key_change(KEY, METER_ID, 40, material, 255, STAMP0))
    assert r.code == rc.KCT2 and r.new_key is not None
    new = keys.MeterKey(keys.derive_meter_key(VK, METER_ID, 1), 1)
    assert r.new_key.key == new.key and app.intake.tokens.key.revision == 1
    assert app.enter(mint.compact_credit(KEY, 41, 100))[0].code != rc.ACCEPT
    r, bal = app.enter(mint.compact_credit(new, 42, 100))
    assert r.code == rc.ACCEPT and bal == 100


def _filled(s):
    """A meter whose next save enters a new sector (an erase, then a program)."""
    gc.collect()
    board = _board(s, sectors=2)
    app = _app(board, s)
    for _ in range(16):
        app.save()
    return board, app


def test_cut_at_every_flash_operation_of_a_top_up_credits_it_at_most_once():
    s = _settings()
    tok = mint.compact_credit(KEY, 77, 999)
    board, app = _filled(s)
    first = board.flash.ops
    app.enter(tok)
    ops = board.flash.ops - first
    assert ops == 2  # one sector erase, one program
    for op in range(ops):
        for at in (0, 50, 4095):
            board, app = _filled(s)
            board.flash.cut(board.flash.ops + op, at)
            try:
                app.enter(tok)
                raise AssertionError("no cut")
            except PowerCut:
                pass
            app = _reboot(board, s)
            rec = board.store.load()
            credited = rec[CREDITED]
            assert credited in (0, 999), (op, at)
            assert (rec[HIGH] == 77) == (credited == 999), (op, at)  # both or neither
            # the back office sends it again: it lands exactly once
            r, bal = app.enter(tok)
            assert r.code == (rc.USED if credited else rc.ACCEPT), (op, at)
            assert app.meter.ledger.credited == 999 and bal == 999


def test_a_message_without_a_token_is_refused_and_logged_and_changes_nothing():
    s = _settings()
    board = _board(s)
    app = _app(board, s)
    app.enter(mint.compact_credit(KEY, 1, 500))
    saves = board.store.saves
    fields = app.fields()
    assert app.intake.refuse(rc.FORMAT) == 500
    assert app.meter.log.last(1)[0][1:] == ("token_rejected", 500, rc.FORMAT)
    assert board.store.saves == saves and app.fields() == fields  # no lock-out count
    assert app.intake.last[0].accepted  # the last token's answer still stands
