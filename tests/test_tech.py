"""The technician's calls (firmware/service/tech.py) on a running meter, the audit log, software
identification, safe mode and the watchdog's feeding (portable: CPython and micropython).

The meter is the App on tools/sim's SimBoard (virtual clock, relay model, ideal energy
source or the ATM90E26 chip model), its settings file and audit log in a scratch folder.
"""

import asyncio
import json
import os

import support
from firmware.tokens import keys
from firmware.storage import jsonseal, logfile, version
from firmware.service import safemode, tech
from firmware import config, start
from firmware.build import build
from tools.sim import tokenmint as mint
from tools.sim import commission
from firmware.app import App
from firmware.billing.settings import Settings
from tools.sim.board import SimBoard

METER_ID = 4711002
VK = bytes(range(32))
KEY = keys.MeterKey(keys.derive_meter_key(VK, METER_ID))
RAW = {
    "meter_id": str(METER_ID),
    "tariff": {"type": "flat", "price_per_kwh": "1.0000"},
    "low_credit": "2.00",
    "reconnect_min": "1.00",
}


class Meter:
    """A meter with its files in a scratch folder, tech attached to it."""

    def __init__(self, meter="ideal", balance=1000, relay_closed=True):
        self.d = support.tmpdir()
        self.path = self.d + "/settings.json"
        support.write_file(self.path, jsonseal.dumps(RAW))
        settings = Settings(RAW)
        self.board = SimBoard(
            (2026, 1, 5, 12 * 3600), None, settings, meter=meter, relay_closed=relay_closed
        )
        asyncio.new_event_loop()
        self.app = App(
            self.board,
            settings,
            key=KEY,
            on_settings=lambda raw: config.save_meter_settings(raw, self.path),
        )
        if balance is not None:
            commission.open_account(self.app.meter, balance)
            self.app.save()
        self.audit = self.d + "/audit.log"
        self.restarts = []
        tech.attach(self.app, self.path, audit_path=self.audit, restart=self._restart)

    def _restart(self):
        self.restarts.append(self.app.ticks)

    def run(self, until_ms, calls=()):
        return support.run_app(self.board, self.app, until_ms, calls)

    def close(self):
        tech.attach(None)
        support.rmtree(self.d)


def _with_meter(fn, **kw):
    m = Meter(**kw)
    try:
        fn(m)
    finally:
        m.close()


def test_status_reports_the_meter_while_it_runs():
    def check(m):
        m.board.mains.set_watts(3600)  # 1 Wh a second at 1.0000: 0.1 cent a second
        m.run(10000)
        st = tech.status()
        assert st["meter_id"] == str(METER_ID)
        assert st["balance"] == "9.99" and st["credit"] == "in_credit"
        assert st["relay"] == "closed" and st["control_state"] == "connected"
        assert st["power_w"] == 3600 and st["price_per_kwh"] == "1.0000"
        assert st["ticks"] >= 9 and st["errors"] == 0
        m.run(20000)
        assert tech.status()["ticks"] > st["ticks"]

    _with_meter(check)


def test_a_valid_setting_is_applied_stored_and_audited():
    def check(m):
        assert tech.set("low_credit", "5.00") == {"low_credit": "5.00"}
        assert m.app.meter.settings.low_credit == 500
        assert tech.settings()["low_credit"] == "5.00"
        on_disk = json.loads(support.read_file(m.path))
        assert on_disk["low_credit"] == "5.00"
        rec = tech.audit(1)[0]
        assert rec["op"] == "set" and rec["result"] == "ok" and rec["key"] == "low_credit"
        assert rec["old"] == "2.00" and rec["new"] == "5.00" and rec["t"].startswith("2026-01-05")

    _with_meter(check)


def test_a_setting_typed_wrong_is_refused_with_its_field_and_logged():
    def check(m):
        before = support.read_file(m.path)
        for key, value, word in (
            ("low_credit", "five", "low_credit"),
            ("max_power_w", -3, "max_power_w"),
            ("low_creditt", "5.00", "unknown setting"),
        ):
            try:
                tech.set(key, value)
            except ValueError as e:
                msg = str(e)
            else:
                raise AssertionError("accepted %r=%r" % (key, value))
            assert msg.startswith("refused: ") and word in msg, msg
            rec = tech.audit(1)[0]
            assert rec["result"] == "refused" and rec["key"] == key and rec["new"] == value
            assert word in rec["error"]
        assert m.app.meter.settings.low_credit == 200  # nothing changed
        assert support.read_file(m.path) == before
        assert len(tech.audit(10)) == 3

    _with_meter(check)


def test_topup_goes_through_the_credit_path_and_is_audited_masked():
    def check(m):
        tok = mint.compact_credit(KEY, 1, 500)
        out = tech.topup(tok[:4] + " " + tok[4:8] + "-" + tok[8:])  # as typed, grouped
        assert out["result"] == "accept" and out["balance"] == "15.00"
        assert m.app.meter.ledger.balance == 1500
        again = tech.topup(tok)
        assert again["result"] == "used" and m.app.meter.ledger.balance == 1500
        bad = tech.topup("12345678901234567890")
        assert bad["result"] != "accept"
        recs = tech.audit(3)
        assert [r["result"] for r in recs] == ["accept", "used", bad["result"]]
        assert recs[0]["token"] == "*" * 16 + tok[-4:]
        assert recs[0]["old"] == "10.00" and recs[0]["new"] == "15.00"
        assert "topup" in tech.events(5)[-3]

    _with_meter(check)


def test_relay_test_is_guarded_then_opens_and_restores_the_supply():
    def check(m):
        model = m.board.relay_model
        seen = []

        async def sample():
            while True:
                await m.board.clock.sleep_ms(250)
                seen.append(model.closed)

        got = m.run(
            12000,
            calls=[
                (0, lambda: asyncio.create_task(sample())),
                (2000, lambda: m.board.relay.operations),  # the boot's re-assert is done
                (2000, tech.relay_test),  # no confirm: only says what it would do
                (2000, lambda: tech.relay_test(confirm=True, seconds=0)),
                (2000, lambda: m.board.relay.operations),
                (2000, lambda: tech.relay_test(confirm=True, seconds=3)),
            ],
        )
        _, ops, unconfirmed, zero, ops_after, said = got
        assert "confirm=True" in unconfirmed and ops_after == ops
        assert isinstance(zero, ValueError) and "seconds" in str(zero)
        assert "open for 3 s" in said
        opened = seen.index(False)
        assert 10 <= seen[opened:].index(True) <= 16  # open for 3 s (+ the pulses)
        assert seen[-1] is True  # closed again, as the credit commands
        assert not m.app.relay_hold
        results = [r["result"] for r in tech.audit(10) if r["op"] == "relay_test"]
        assert results == ["refused", "started", "ok"]

    _with_meter(check)


def test_relay_test_never_energises_a_disconnected_house():
    def check(m):
        got = m.run(13000, calls=[(3000, lambda: tech.relay_test(confirm=True))])
        assert isinstance(got[0], ValueError) and "energise" in str(got[0])
        assert not m.board.relay_model.closed and m.board.relay.operations <= 1
        assert tech.audit(1)[0]["result"] == "refused"

    _with_meter(check, balance=0, relay_closed=False)


def test_readers_events_journal_and_restart():
    def check(m):
        m.run(3000)
        ev = tech.events(50)
        assert ev and ev[0].split(" ")[1] == "boot" and "balance=" in ev[0]
        j = tech.journal()
        assert j["fields"]["balance"] == m.app.meter.ledger.balance
        assert j["store"] == "Journal" and j["saves"] >= 1
        tech.restart()
        assert m.restarts and tech.audit(1)[0]["op"] == "restart"

    _with_meter(check)


def test_calibrate_corrects_the_chip_against_a_reference_and_stores_it():
    def check(m):
        chip = m.board.chip
        chip.u_error = 0.03  # the front end reads 3 % high
        m.board.mains.set_load(volts=230.0, amps=5.0, pf=1.0)
        m.run(3000)
        assert abs(tech.registers()["urms_cv"] - 23690) <= 2
        before = tech.calibrate()["Ugain"]
        changed = tech.calibrate(volts="230.00")
        assert list(changed) == ["Ugain"] and changed["Ugain"][0] == before
        m.run(6000)
        assert abs(tech.registers()["urms_cv"] - 23000) <= 3
        stored = json.loads(support.read_file(m.path))["calibration"]
        assert stored["Ugain"] == changed["Ugain"][1]
        rec = tech.audit(1)[0]
        assert rec["op"] == "calibrate" and rec["new"]["Ugain"] == changed["Ugain"][1]
        for wrong in ("23.00", "2300.00", "0.01"):  # typos, not a front-end error
            try:
                tech.calibrate(volts=wrong)
            except ValueError as e:
                assert str(e).startswith("refused: calibration: volts"), str(e)
            else:
                raise AssertionError("calibrated to %s V" % wrong)
        assert tech.audit(1)[0]["result"] == "refused"
        assert tech.calibrate()["Ugain"] == changed["Ugain"][1]

    _with_meter(check, meter="chip")


def test_calls_say_when_the_meter_is_not_running():
    tech.attach(None)
    try:
        tech.status()
    except RuntimeError as e:
        assert "not running" in str(e)
    else:
        raise AssertionError("status without a meter")
    assert tech.help()


def test_version_matches_the_built_manifest_and_names_a_changed_file():
    d = support.tmpdir()
    try:
        os.mkdir(d + "/firmware")
        support.write_file(d + "/main.py", b"import firmware.start\n")
        support.write_file(d + "/firmware/a.mpy", b"M\x06code")
        files = {p: version.file_hash(d + "/" + p) for p in ("main.py", "firmware/a.mpy")}
        manifest = {"version": "1.2.3", "files": files, "hash": version.combined(files)}
        support.write_file(d + "/version.json", json.dumps(manifest).encode())
        v = version.identify(d)
        assert v["match"] is True and v["version"] == "1.2.3" and v["files"] == 2
        turns = []

        async def sleep_ms(ms):
            turns.append(ms)
            await asyncio.sleep(0)

        assert asyncio.run(version.identify_async(sleep_ms, d)) == v  # the same answer,
        assert turns == [0, 0]  # the loop had a turn after each file
        assert v["hash"] == manifest["hash"] and len(v["hash"]) == 64
        support.write_file(d + "/firmware/a.mpy", b"M\x06cod3")
        v = version.identify(d)
        assert v["match"] is False and v["changed"] == ["firmware/a.mpy"]
        os.remove(d + "/main.py")
        v = version.identify(d)
        assert v["missing"] == ["main.py"] and v["match"] is False
        os.remove(d + "/version.json")
        v = version.identify(d)  # a development tree: hash of what is there
        assert v["version"] == "unreleased" and v["match"] is None and v["files"] == 1
    finally:
        support.rmtree(d)


def test_the_combined_hash_follows_the_documented_rule():
    import binascii
    import hashlib

    files = {"b.py": "22" * 32, "a.py": "11" * 32}
    text = "a.py " + "11" * 32 + "\n" + "b.py " + "22" * 32 + "\n"
    want = binascii.hexlify(hashlib.sha256(text.encode()).digest()).decode()
    assert version.combined(files) == want


def test_safe_mode_by_file_or_strap_pin():
    d = support.tmpdir()
    here = os.getcwd()
    try:
        os.chdir(d)
        assert safemode.decide(False) is False and not start.safe_mode()
        assert safemode.decide(True) is True and "strap" in safemode.reason
        support.write_file("safemode", b"x")
        assert safemode.decide(False) is True and "file" in safemode.reason
        assert start.safe_mode()
        tech.safe_mode(False)
        assert safemode.decide(False) is False
        tech.safe_mode(True)
        assert safemode.decide(False) is True
    finally:
        os.chdir(here)
        safemode.active = None
        support.rmtree(d)


def test_the_audit_log_rotates_and_keeps_the_newest_lines():
    d = support.tmpdir()
    try:
        log = logfile.LineLog(d + "/a.log", max_bytes=100)
        for i in range(40):
            assert log.append("line %02d" % i)
        assert log.tail(3) == ["line 37", "line 38", "line 39"]
        assert os.stat(d + "/a.log")[6] <= 100
        assert len(log.tail(100)) >= 100 // 8  # the rotated copy still read
        bad = logfile.LineLog(d + "/no/such/dir/a.log")
        assert bad.append("x") is False and bad.failures == 1  # never raises
    finally:
        support.rmtree(d)


class WDT:
    def __init__(self):
        self.feeds = 0

    def feed(self):
        self.feeds += 1


def test_the_watchdog_is_fed_only_while_metering_progresses():
    def check(m):
        wdt = WDT()
        m.board.watchdog = lambda ms: wdt
        assert start.arm_watchdog(m.app) is wdt and m.app.watchdog_ms == 30000
        m.run(60000)
        fed = wdt.feeds
        assert fed >= 60000 // 7500 - 1
        m.app.step = lambda dt: None  # the metering task no longer completes a tick
        m.run(120000)
        assert wdt.feeds <= fed + 1  # the hardware would reset the board now

    _with_meter(check)


def test_attach_console_makes_tech_importable_and_serves_it():
    def check(m):
        import sys

        out = bytearray()

        class Reader:
            def __init__(self):
                self.data = [b"import tech\r", b"tech.status()['balance']\r"]

            async def read(self, n):
                await asyncio.sleep(0)
                return self.data.pop(0) if self.data else b""

        con = start.attach_console(m.app, m.path, reader=Reader(), write=out.extend)
        assert isinstance(sys.modules["tech"], start.LazyTech)  # not loaded yet
        m.run(5000)
        assert b"'10.00'" in bytes(out) and con.errors == 0, bytes(out)
        assert sys.modules["tech"] is tech  # loaded by the first call
        sessions = [e for e in m.app.meter.log.items if e[1] == "console_session"]
        assert len(sessions) == 1  # logged once, before the first of the two commands

    _with_meter(check)


def test_main_skips_the_meter_in_safe_mode_and_logs_a_crash_then_resets():
    d = support.tmpdir()
    here = os.getcwd()
    real_build, real_reset = start.build, start._reset
    calls = []

    def broken_build():
        calls.append("build")
        raise OSError("settings storage unreadable")

    try:
        os.chdir(d)
        start.build = broken_build
        start._reset = lambda: calls.append("reset")
        safemode.decide(True)  # boot.py found the strap pin held
        start.main()
        assert calls == []  # safe mode: nothing built, nothing reset
        safemode.decide(False)
        start.main()
        assert calls == ["build", "reset"]
        log = support.read_file("crash.log").decode()
        assert "OSError" in log and "settings storage unreadable" in log
        assert log.count("\n") == 1  # one line per crash, traceback folded in
        assert start.boot_fails() == 1
        start.main()
        start.main()  # the third start-up in a row that fails
        assert calls.count("build") == 3 and start.boot_fails() == 3
        start.main()  # no fourth try: the REPL, the relay left latched
        assert calls.count("build") == 3 and calls.count("reset") == 3
        os.remove(start.BOOT_FAILS)  # the technician fixed the cause
        start.main()
        assert calls.count("build") == 4
    finally:
        start.build, start._reset = real_build, real_reset
        os.chdir(here)
        safemode.active = None
        support.rmtree(d)


def test_a_comms_fault_at_start_up_leaves_the_meter_metering():
    flash = None  # one flash chip for both starts: a small heap need not hold two
    for extra in ({"mqtt_host": "127.0.0.1"}, {"sms_to": "+254700000001"}):
        flash = _comms_fault_at_start_up(extra, flash)


def _comms_fault_at_start_up(extra, flash):
    from firmware.storage import conffile

    d = support.tmpdir()
    try:
        path = d + "/settings.json"
        raw = dict(RAW, **extra)
        support.write_file(path, jsonseal.dumps(raw))
        conffile.save(config.key_path_for(path), KEY.to_bytes())
        if flash is not None:
            flash.reset()
        board = SimBoard((2026, 1, 5, 12 * 3600), None, Settings(raw), meter="ideal", flash=flash)

        def no_modem(settings):
            raise OSError("UART busy")

        board.modem = no_modem
        asyncio.new_event_loop()
        app = build(path, board=board)
        assert app.comms is None and app.sms is None
        for k in extra:  # the setting stands; only the part that failed is off
            assert app.meter.settings.raw[k] == extra[k]
        support.run_app(board, app, 5000)
        assert app.ticks >= 4 and app.errors == 0
        return board.flash
    finally:
        support.rmtree(d)


def test_mqtt_needs_a_real_meter_number_and_a_short_topic_prefix():
    assert support.raises(ValueError, Settings, {"mqtt_host": "broker"})  # id 00000000
    assert support.raises(ValueError, Settings, dict(RAW, topic_prefix="m" * 97))
    assert Settings(dict(RAW, mqtt_host="broker", topic_prefix="m" * 96)).mqtt_host == "broker"


def test_a_meter_that_meters_clears_its_failed_start_ups():
    def check(m):
        d = support.tmpdir()
        path = d + "/bootfails"
        try:
            support.write_file(path, b"2")
            assert start.boot_fails(path) == 2
            m.app.extra_tasks.append(start._healthy(m.app, path))
            m.run(5000)
            assert start.boot_fails(path) == 2  # 5 ticks: not yet
            m.app.extra_tasks[:] = [start._healthy(m.app, path)]  # a fresh watcher
            m.run(20000)
            assert start.boot_fails(path) == 0
        finally:
            support.rmtree(d)

    _with_meter(check)


def test_start_up_collects_often_and_the_loop_does_not():
    import gc

    main_py = support.read_file("main.py").decode()
    assert "gc.threshold(%d)" % start.BOOT_GC_BYTES in main_py  # set before the code loads
    if not hasattr(gc, "threshold"):  # CPython's collector has no allocation threshold
        return
    gc.threshold(start.BOOT_GC_BYTES)
    start.end_boot_gc()
    assert gc.threshold() == -1
