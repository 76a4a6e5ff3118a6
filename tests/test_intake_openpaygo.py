"""OpenPAYGO Token as the third keypad format of the credit path (firmware/tokens/intake.py), in
the App on the simulated board (portable: CPython pytest and MicroPython).

Tokens come from `opg_token()` below, the OpenPAYGO generation rule written with the
firmware's own chain step; its output is checked first against tokens the `openpaygo`
package made (the same tables as test_openpaygo.py). tests/test_host_openpaygo_intake.py
feeds the package's own tokens through the same path under both runtimes.
"""

import asyncio

import support

from firmware.storage import conffile
from firmware.tokens import keys, replay
from firmware.tokens.openpaygo import keyfile as opaygokey
from firmware.billing import policy
from firmware.tokens.openpaygo import decoder as opg
from firmware.tokens import codes as rc
from tools.sim import tokenmint as mint
from firmware.app import STATE_FIELDS, App
from firmware.tokens.intake import OPG_FIELDS, OPAYGO
from firmware.tokens.intake import STATE_FIELDS as INTAKE_FIELDS
from firmware.billing.settings import Settings
from tools.sim.board import SimBoard
from tools.sim.nor import PowerCut

METER_ID = 4711002
KEY = keys.MeterKey(keys.derive_meter_key(bytes(range(32)), METER_ID))
OPG_KEY = "a29ab82edc5fbbc41ec9530f6dac86b1"
OPG_OTHER = "bc41ec9530f6dac86b1a29ab82edc5fb"
START = 573664003  # the default starting code of OPG_KEY
CREDITED = STATE_FIELDS.index("credited")
OPG_COUNT = STATE_FIELDS.index("opg_count")
OPG_USED = STATE_FIELDS.index("opg_used")
UNIT = 100  # value 10 -> 10.00 (1000 minor units)

# Made by openpaygo 0.6.3 generate_token (test_openpaygo.py): (start, restricted,
# extended, count the token is for, value, token).
REFERENCE = (
    (START, False, False, 2, 10, "088903013"),
    (START, False, False, 40, 10, "809650013"),
    (START, False, False, 21, 5, "649906008"),
    (START, False, False, 23, 998, "523772001"),
    (START, False, False, 141, 999, "053819002"),
    (123456789, False, False, 5, 12, "722588801"),
    (START, True, False, 2, 42, "312431243343242"),
    (START, False, True, 3, 999999, "677381664002"),
    (START, True, True, 2, 250000, "43144241231143224214"),
)


def opg_token(count, value, key=OPG_KEY, start=START, restricted=False, extended=False):
    """The token OpenPAYGO vends for (count, value): the starting code with its low digits
    replaced by (start + value) mod 10**3 (10**6 extended), hashed `count` times, the low
    digits replaced again; restricted: 2 bits a digit, as 1-4."""
    d = opg.Decoder(key, starting_code=start)
    mod = 1000000 if extended else 1000
    base = (start + value) % mod
    code = start - start % mod + base
    for _ in range(count):
        code = d.next_code_extended(code) if extended else d.next_code(code)
    n = code - code % mod + base
    if restricted:
        digits = 20 if extended else 15
        return "".join(str(((n >> (2 * i)) & 3) + 1) for i in range(digits - 1, -1, -1))
    return ("%012d" if extended else "%09d") % n


def _settings(**extra):
    raw = {
        "meter_id": str(METER_ID),
        "tariff": {"type": "flat", "price_per_kwh": "1.0000"},
        "low_credit": "2.00",
        "reconnect_min": "1.00",
    }
    raw.update(extra)
    return Settings(raw)


class Meter:
    """A meter on the simulated board with its key files in a fresh directory."""

    def __init__(self, opaygo=True, sectors=4, **cfg):
        self.dir = support.tmpdir("opg_intake")
        self.key_path = self.dir + "/meter.key"
        self.opg_path = self.dir + "/opaygo.key"
        self.saved = []
        if opaygo:
            kw = {"value_unit": UNIT}
            kw.update(cfg)
            opaygokey.save(self.opg_path, kw.pop("key", OPG_KEY), **kw)
        self.s = _settings()
        self.board = SimBoard(
            (2026, 1, 5, 12 * 3600), None, self.s, meter="ideal", flash_sectors=sectors
        )
        self.app = self.start()

    def start(self):
        asyncio.new_event_loop()
        return App(
            self.board, self.s, key=KEY, key_path=self.key_path, on_settings=self.saved.append
        )

    def reboot(self):
        b = self.board
        b.power_cut()
        b.clock.outage(b.clock.now + 1000)
        b.power_on()
        b.boot()
        self.s = self.app.meter.settings  # the settings file, as on_settings wrote it
        self.app = self.start()
        return self.app

    def enter(self, token):
        r, bal = self.app.enter(token)
        return r.code, bal

    def run(self, until_ms):
        app = self.app
        board = self.board

        async def go():
            for t in app.tasks():
                asyncio.create_task(t)
            await board.clock.run(until_ms)

        asyncio.run(go())

    def close(self):
        support.rmtree(self.dir)


def _events(app):
    return [(e[1], e[3]) for e in app.meter.log.last(20)]


def _with_meter(**kw):
    def wrap(fn):
        def run():
            m = Meter(**kw)
            try:
                fn(m)
            finally:
                m.close()

        return run

    return wrap


def test_token_rule_matches_the_reference_generator():
    for start, restricted, extended, count, value, token in REFERENCE:
        got = opg_token(count, value, start=start, restricted=restricted, extended=extended)
        assert got == token, (count, value, got, token)


def test_state_fields_follow_the_token_memory():
    assert OPG_FIELDS == opg.STATE_FIELDS
    assert INTAKE_FIELDS == replay.STATE_FIELDS + opg.STATE_FIELDS
    n = STATE_FIELDS.index("high")
    assert STATE_FIELDS[n : n + len(INTAKE_FIELDS)] == INTAKE_FIELDS


@_with_meter()
def test_add_credits_once_and_replay_is_refused_also_after_a_reboot(m):
    tok = opg_token(2, 10)
    code, bal = m.enter(tok)
    assert (code, bal) == (rc.ACCEPT, 1000)
    r = m.app.intake.last[0]
    assert r.format == OPAYGO and r.kind == "credit" and r.amount == 1000 and r.token_id == 2
    rec = m.board.store.load()
    assert rec[CREDITED] == 1000 and (rec[OPG_COUNT], rec[OPG_USED]) == (2, 0b10)
    assert [e[1:] for e in m.app.meter.log.last(5) if e[1] == "topup"] == [("topup", 1000, 1000)]
    assert m.enter(tok) == (rc.USED, 1000)
    m.reboot()
    assert m.app.intake.opaygo.to_fields() == (2, 0b10)
    assert m.enter(tok) == (rc.USED, 1000)
    assert m.enter(" " + opg_token(4, 10) + "\n") == (rc.ACCEPT, 2000)
    assert m.enter(opg_token(4, 10).encode()) == (rc.USED, 2000)  # bytes too
    assert m.app.meter.ledger.credited == 2000
    assert m.app.meter.log.last(1)[0][1:] == ("token_rejected", 2000, rc.USED)


@_with_meter()
def test_set_credit_sets_the_balance_and_books_the_difference(m):
    led = m.app.meter.ledger
    m.board.mains.set_watts(3600)  # 1.0000 per kWh: a cent each 10 s
    assert m.enter(opg_token(2, 10))[0] == rc.ACCEPT
    m.run(100 * 1000)
    assert 0 < led.charged < 1000
    code, bal = m.enter(opg_token(3, 5))  # set 5.00
    assert (code, bal) == (rc.ACCEPT, 500)
    r = m.app.intake.last[0]
    assert r.kind == "set_credit" and r.value == 500 and r.amount == 0 and r.token_id == 3
    assert led.balance == led.credited - led.charged  # the ledger still reconciles
    assert m.board.store.load()[CREDITED] == led.credited
    assert m.app.meter.log.last(1)[0][1:] == ("token_accepted", 500, 3)
    assert m.enter(opg_token(5, 20)) == (rc.ACCEPT, 2000)  # upwards too
    assert led.balance == led.credited - led.charged
    # an add token older than the set is refused: the set closed the window
    assert m.enter(opg_token(4, 10)) == (rc.USED, 2000)


@_with_meter()
def test_set_credit_reconnects_and_clears_emergency_credit_like_a_top_up(m):
    m.board.mains.set_watts(3600)
    m.enter(opg_token(2, 1))  # 1.00
    m.run(1100 * 1000)
    assert m.app.meter.control.control_state == policy.DISCONNECTED
    assert m.enter(opg_token(3, 50))[0] == rc.ACCEPT
    m.run(1102 * 1000)
    assert m.app.meter.control.control_state == policy.CONNECTED
    assert m.board.relay_model.closed


@_with_meter()
def test_disable_payg_turns_postpaid_and_an_add_turns_prepayment_back_on(m):
    app = m.app
    assert m.enter(opg_token(2, 1))[0] == rc.ACCEPT
    code, _ = m.enter(opg_token(3, 998))
    assert code == rc.ACCEPT and app.intake.last[0].kind == "disable_payg"
    assert app.meter.settings.postpaid and m.saved[-1]["postpaid"] is True
    m.board.mains.set_watts(3600)
    m.run(2500 * 1000)
    assert app.meter.ledger.balance < -100
    assert m.board.relay_model.closed and app.meter.control.control_state == policy.CONNECTED
    app = m.reboot()  # the mode is in the settings file, the count in the journal
    assert app.meter.settings.postpaid and app.intake.opaygo.to_fields()[0] == 3
    code, bal = m.enter(opg_token(4, 1))  # 1.00 does not cover the debt
    assert code == rc.ACCEPT and bal < 0
    assert not app.meter.settings.postpaid and m.saved[-1]["postpaid"] is False
    m.run(m.board.clock.now + 2000)
    assert not m.board.relay_model.closed
    # a set token turns prepayment back on too
    assert m.enter(opg_token(5, 998))[0] == rc.ACCEPT and app.meter.settings.postpaid
    code, bal = m.enter(opg_token(7, 30))
    assert (code, bal) == (rc.ACCEPT, 3000) and not app.meter.settings.postpaid
    m.run(m.board.clock.now + 2000)
    assert m.board.relay_model.closed


@_with_meter()
def test_counter_sync_only_moves_the_count(m):
    app = m.app
    assert m.enter(opg_token(2, 10))[0] == rc.ACCEPT
    saves = len(m.saved)
    code, bal = m.enter(opg_token(41, 999))
    assert (code, bal) == (rc.ACCEPT, 1000) and app.intake.last[0].kind == "counter_sync"
    assert app.meter.ledger.credited == 1000 and len(m.saved) == saves
    assert m.board.store.load()[OPG_COUNT] == 41
    assert m.app.meter.log.last(1)[0][1:] == ("token_accepted", 1000, 41)
    assert m.enter(opg_token(40, 10)) == (rc.USED, 1000)  # below the sync: spent
    assert m.enter(opg_token(41, 999)) == (rc.USED, 1000)
    assert m.enter(opg_token(42, 10)) == (rc.ACCEPT, 2000)


@_with_meter()
def test_an_older_add_token_within_the_window_is_accepted_once(m):
    assert m.enter(opg_token(10, 10))[0] == rc.ACCEPT
    assert m.enter(opg_token(6, 10)) == (rc.ACCEPT, 2000)
    assert m.enter(opg_token(6, 10)) == (rc.USED, 2000)
    m.reboot()
    assert m.enter(opg_token(6, 10)) == (rc.USED, 2000)
    assert m.enter(opg_token(8, 10)) == (rc.ACCEPT, 3000)
    assert m.enter(opg_token(30, 10))[0] == rc.ACCEPT
    assert m.enter(opg_token(12, 10)) == (rc.USED, 4000)  # 18 below: out of the window
    assert m.enter(opg_token(16, 10)) == (rc.ACCEPT, 5000)  # 14 below: in it


@_with_meter()
def test_wrong_key_is_refused_and_counts_toward_the_lock_out(m):
    app = m.app
    stranger = opg_token(2, 10, key=OPG_OTHER, start=opg.Decoder(OPG_OTHER).start)
    assert m.enter(stranger) == (rc.CRC, 0)
    assert app.intake.last[0].counted and app.intake.tokens.memory.failures == 1
    assert m.enter("12345678x") == (rc.FORMAT, 0)  # not digits: no OpenPAYGO token
    bad = mint.compact_credit(KEY, 5, 100)
    bad = bad[:-1] + str((int(bad[-1]) + 1) % 10)
    assert m.enter(bad) == (rc.CRC, 0)  # compact and OpenPAYGO failures count together
    good = opg_token(2, 10)
    assert m.enter(good) == (rc.LOCKOUT, 0)  # three wrong: 10 s of lock-out
    assert app.intake.tokens.memory.failures == 3  # a locked-out entry is not counted
    m.reboot()
    assert m.enter(good) == (rc.LOCKOUT, 0)
    m.run(m.board.clock.now + 11000)
    assert m.enter(good) == (rc.ACCEPT, 1000)
    assert m.app.intake.tokens.memory.failures == 0  # an accepted token clears the count


@_with_meter()
def test_a_used_token_is_not_a_failure(m):
    tok = opg_token(2, 10)
    m.enter(tok)
    for _ in range(5):
        assert m.enter(tok)[0] == rc.USED
    assert m.app.intake.tokens.memory.failures == 0
    assert m.enter(opg_token(4, 10))[0] == rc.ACCEPT


@_with_meter(opaygo=False)
def test_without_a_key_file_openpaygo_digits_are_no_token(m):
    assert m.app.intake.opaygo is None and m.app.intake.opaygo_report is None
    assert m.enter(opg_token(2, 10)) == (rc.FORMAT, 0)
    assert m.app.intake.last[0].counted
    assert m.enter(opg_token(2, 42, restricted=True)) == (rc.FORMAT, 0)
    # compact tokens are not affected
    assert m.enter(mint.compact_credit(KEY, 1, 100)) == (rc.ACCEPT, 100)
    # installing the key file turns OpenPAYGO on
    opaygokey.save(m.opg_path, OPG_KEY, None, UNIT)
    assert m.app.intake.load_opaygo() is None
    assert m.enter(opg_token(2, 10)) == (rc.ACCEPT, 1100)


@_with_meter(opaygo=False)
def test_a_bad_key_file_is_a_clear_error_and_openpaygo_stays_off(m):
    support.write_file(m.opg_path, b"\x00" * opaygokey.SIZE)
    app = m.reboot()
    assert app.intake.opaygo is None
    source, reason = app.intake.opaygo_report
    assert source is None and "not an OpenPAYGO key record" in reason, reason
    assert ("key_bad", 1) in _events(app)
    assert support.read_file(m.opg_path + ".bad") is not None  # kept for the technician
    assert m.enter(opg_token(2, 10)) == (rc.FORMAT, 0)
    # a good last copy is used when the file itself is bad
    k = opaygokey.save(m.opg_path, OPG_KEY, START, UNIT)
    support.write_file(m.opg_path + ".bak", k.to_bytes())
    data = bytearray(k.to_bytes())
    data[20] ^= 1  # one flipped key bit: the CRC catches it
    support.write_file(m.opg_path, bytes(data))
    app = m.reboot()
    assert app.intake.opaygo_report == (conffile.BAK, "ValueError: opaygo key: CRC mismatch")
    assert ("key_fallback", 2) in _events(app)  # detail 2: the .bak copy
    assert m.enter(opg_token(2, 10)) == (rc.ACCEPT, 1000)


def test_key_file_record_and_its_errors():
    d = support.tmpdir("opg_key")
    try:
        path = d + "/opaygo.key"
        k = opaygokey.save(path, OPG_KEY, None, 250, True, restricted=True)
        got, source, _ = conffile.load(path, opaygokey.load)
        assert source == conffile.MAIN
        assert got.key == bytes(bytearray.fromhex(OPG_KEY)) and got.starting_code == START
        assert (got.value_unit, got.extended, got.restricted) == (250, True, True)
        assert got.lengths() == (15, 20) and got.to_bytes() == k.to_bytes()
        assert len(k.to_bytes()) == opaygokey.SIZE
        assert opaygokey.OpaygoKey(OPG_KEY).lengths() == (9,)
        assert opaygokey.OpaygoKey(OPG_KEY, extended=True).lengths() == (9, 12)
        good = k.to_bytes()

        def resealed(b):
            import binascii
            import struct

            b = bytearray(b)
            struct.pack_into("<I", b, 32, binascii.crc32(bytes(b[:32])))
            return bytes(b)

        bad = {
            good[:-1]: "not an OpenPAYGO key record",
            b"OPG2" + good[4:]: "not an OpenPAYGO key record",
            good[:20] + b"\x00" + good[21:]: "CRC mismatch",
            resealed(good[:4] + b"\x04" + good[5:]): "reserved bits",
            resealed(good[:6] + b"\x01" + good[7:]): "reserved bits",
            resealed(good[:8] + b"\x00\xca\x9a\x3b" + good[12:]): "starting_code",
            resealed(good[:12] + b"\x00\x00\x00\x00" + good[16:]): "value_unit",
        }
        for data, words in bad.items():
            e = support.raises(ValueError, opaygokey.load, data)
            assert words in str(e), (words, str(e))
        for args, words in (
            (("00",), "32 hex digits"),
            (("zz" * 16,), "32 hex digits"),
            ((b"short",), "16 bytes"),
            ((OPG_KEY, 10**9), "starting_code"),
            ((OPG_KEY, -1), "starting_code"),
            ((OPG_KEY, None, 0), "value_unit"),
            ((OPG_KEY, None, 1 << 30), "value_unit"),
        ):
            e = support.raises(ValueError, opaygokey.save, d + "/other.key", *args)
            assert words in str(e), (args, str(e))
        assert support.read_file(d + "/other.key") is None  # nothing written
    finally:
        support.rmtree(d)


@_with_meter(extended=True)
def test_extended_12_digit_tokens(m):
    tok = opg_token(2, 123456, extended=True)
    assert len(tok) == 12
    assert m.enter(tok) == (rc.ACCEPT, 12345600)
    assert m.enter(opg_token(4, 10)) == (rc.ACCEPT, 12346600)  # 9 digits still
    assert m.enter(tok)[0] == rc.USED


@_with_meter(restricted=True, extended=True, value_unit=1)
def test_twenty_digits_of_1_to_4_are_compact_first_then_openpaygo(m):
    app = m.app
    assert app.intake.opaygo.lengths == (15, 20)
    tok = opg_token(2, 250000, restricted=True, extended=True)
    assert len(tok) == 20
    assert m.enter(tok) == (rc.ACCEPT, 250000)
    assert app.intake.last[0].format == OPAYGO
    assert m.enter(tok) == (rc.USED, 250000)  # the OpenPAYGO answer, not the compact one
    assert m.enter(opg_token(4, 42, restricted=True)) == (rc.ACCEPT, 250042)  # 15 digits
    comp = mint.compact_credit(KEY, 1, 100)
    assert m.enter(comp) == (rc.ACCEPT, 250142)
    assert app.intake.last[0].format == "compact"
    assert m.enter(comp) == (rc.USED, 250142)  # a compact answer stays one
    # 20 digits of 1-4 that are neither: the compact answer, counted once
    code, _ = m.enter("12341234123412341234")
    assert code in (rc.CRC, rc.FORMAT) and app.intake.last[0].format == "compact"
    assert app.intake.tokens.memory.failures == 1
    # 15 digits outside 1-4: the OpenPAYGO decoder says Format
    assert m.enter("123451234512345")[0] == rc.FORMAT
    assert app.intake.tokens.memory.failures == 2
    assert m.enter("123412341234123")[0] == rc.CRC  # two failures: not locked yet
    assert app.intake.tokens.memory.failures == 3
    assert m.enter(opg_token(6, 1, restricted=True, extended=True))[0] == rc.LOCKOUT


@_with_meter(restricted=True, extended=True, value_unit=1)
def test_twenty_digits_without_a_meter_key_still_reach_openpaygo(m):
    app = m.app
    app.intake.tokens.set_key(None)  # compact answers NotReady to every 20 digits
    assert m.enter(mint.compact_credit(KEY, 1, 100)) == (rc.NOT_READY, 0)
    tok = opg_token(2, 7, restricted=True, extended=True)
    assert m.enter(tok) == (rc.ACCEPT, 7)


@_with_meter(value_unit=(1 << 30) - 1)
def test_an_amount_beyond_the_credit_limit_is_range_and_not_spent(m):
    tok = opg_token(2, 10)
    assert m.enter(tok) == (rc.RANGE, 0)
    assert m.app.intake.opaygo.to_fields() == (0, 0)
    assert m.enter(opg_token(4, 1)) == (rc.ACCEPT, (1 << 30) - 1)
    assert m.enter(opg_token(6, 1)) == (rc.OVERFLOW, (1 << 30) - 1)
    assert m.enter(opg_token(7, 1))[0] == rc.ACCEPT  # a set never overflows


@_with_meter()
def test_restore_takes_its_own_fields_and_reads_older_records_as_zeros(m):
    it = m.app.intake
    assert len(it.to_fields()) == len(INTAKE_FIELDS) == 7
    it.restore((0, 0, 0, 1, 5))  # a record from before OpenPAYGO: count 0
    assert it.opaygo.to_fields() == (0, 0) and it.tokens.memory.failures == 1
    it.restore((9, 0, 0, 0, 0, 12, 0b101, 77, 88))  # other owners' fields after ours
    assert it.to_fields() == (9, 0, 0, 0, 0, 12, 0b101)
    it.restore((9, 0, 0, 0, 0, -1, 0))  # not a valid window: a fresh one
    assert it.opaygo.to_fields() == (0, 0) and it.tokens.memory.high == 9


@_with_meter(opaygo=False)
def test_the_count_is_kept_while_openpaygo_is_off(m):
    it = m.app.intake
    it.restore((0, 0, 0, 0, 0, 12, 0b10))
    assert it.to_fields()[5:] == (12, 0b10)
    m.app.save()
    opaygokey.save(m.opg_path, OPG_KEY, None, UNIT)
    m.reboot()
    assert m.app.intake.opaygo.to_fields() == (12, 0b10)
    assert m.enter(opg_token(12, 10))[0] == rc.USED
    assert m.enter(opg_token(14, 10))[0] == rc.ACCEPT


def test_a_cut_at_every_flash_operation_of_an_openpaygo_top_up_credits_it_at_most_once():
    tok = opg_token(2, 10)
    for op in range(2):  # a sector erase, then the record's program
        for at in (0, 50, 4095):
            m = Meter(sectors=2)
            try:
                for _ in range(16):
                    m.app.save()  # the next save enters a new sector
                m.board.flash.cut(m.board.flash.ops + op, at)
                try:
                    m.app.enter(tok)
                    raise AssertionError("no cut")
                except PowerCut:
                    pass
                m.reboot()
                rec = m.board.store.load()
                assert rec[CREDITED] in (0, 1000), (op, at)
                assert (rec[OPG_COUNT] == 2) == (rec[CREDITED] == 1000), (op, at)
                code, bal = m.enter(tok)  # entered again: lands exactly once
                assert code == (rc.USED if rec[CREDITED] else rc.ACCEPT), (op, at)
                assert bal == 1000 and m.app.meter.ledger.credited == 1000
            finally:
                m.close()
