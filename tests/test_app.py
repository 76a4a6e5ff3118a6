"""The asyncio App on the simulated board: tick allocation, relay driving, journaling,
reboot, fault recovery; and the A/B state file under it.

Portable: runs under CPython pytest and under `micropython` (tests/mpy_runner.py). The
board is tools/sim's SimBoard (virtual clock, pin and relay models, power model,
StateFile in a scratch directory); the tests run the App's tasks in virtual time.
"""

import asyncio

import support

from drivers.relay import LatchingRelay
from firmware.billing import events as ev
from firmware.billing import policy
from firmware.tokens import keys
from firmware.storage import record
from firmware.app import App
from firmware.app import STATE_FIELDS
from firmware.billing.settings import Settings
from firmware.storage.statefile import StateFile
from tools.sim.board import SimBoard
from tools.sim import commission
from tools.sim.hw import SimPin
from tools.sim.vclock import VirtualClock

N = len(STATE_FIELDS)
BALANCE = STATE_FIELDS.index("balance")
CARRY = STATE_FIELDS.index("carry")
CONTROL = STATE_FIELDS.index("control_state")
MONDAY_NOON = (2026, 1, 5, 12 * 3600)
# 1.0000 per kWh: 3600 W is 1 Wh a second, 0.1 cent a second
PRICEY = {"type": "flat", "price_per_kwh": "1.0000"}
METER_ID = 4711002
KEY = keys.MeterKey(keys.derive_meter_key(bytes(range(32)), METER_ID))  # top-ups are tokens


# -- scaffolding -------------------------------------------------------------------


_tmpdir = support.tmpdir
_rmtree = support.rmtree


def _settings(extra=None):
    raw = {
        "meter_id": str(METER_ID),
        "tariff": PRICEY,
        "low_credit": "2.00",
        "reconnect_min": "1.00",
    }
    if extra:
        raw.update(extra)
    return Settings(raw)


def _app(d, settings, start=MONDAY_NOON, relay_closed=True, balance=None):
    board = SimBoard(start, d, settings, relay_closed=relay_closed, meter="ideal", store="file")
    app = App(board, settings, key=KEY)
    if balance is not None:  # a meter that was supplying with this balance
        commission.open_account(app.meter, balance)
        app.save()
    return board, app


def _run(board, app, until_ms):
    """Run the app's tasks on the virtual clock until until_ms, then stop them."""
    support.run_app(board, app, until_ms)


class CoilWatch:
    """Records coil pulses [name, start_ms, end_ms] and any moment both coils are on."""

    def __init__(self, clock, set_pin, reset_pin):
        self.clock = clock
        self.pins = (set_pin, reset_pin)
        self.pulses = []
        self.both_on = 0
        set_pin.watchers.append(self._edge)
        reset_pin.watchers.append(self._edge)

    def _edge(self, pin, v):
        if self.pins[0].v and self.pins[1].v:
            self.both_on += 1
        if v:
            self.pulses.append([pin.name, self.clock.now, None])
        else:
            for p in self.pulses:
                if p[0] == pin.name and p[2] is None:
                    p[2] = self.clock.now

    def names(self):
        return [p[0] for p in self.pulses]


class FlakySource:
    """Wraps the power model; poll() raises while `fail` is set (a bad SPI read)."""

    def __init__(self, inner):
        self.inner = inner
        self.fail = False
        self.mwh = 0
        self.power_w = 0

    def poll(self):
        if self.fail:
            raise OSError(5)
        self.inner.poll()
        self.mwh = self.inner.mwh
        self.power_w = self.inner.power_w


# -- the steady-state tick -------------------------------------------------------


def _allocates():
    return [1, 2, 3]


def test_step_allocates_nothing_in_the_steady_state():
    d = _tmpdir()
    try:
        s = _settings({"tariff": {"type": "flat", "price_per_kwh": "0.2537"}})
        board, app = _app(d, s, balance=100000)
        board.source.set_watts(1500)
        clock = board.clock
        for _ in range(50):  # warm-up
            clock.now += 1000
            app.step(1000)
        before = app.meter.ledger.balance
        if support.MICROPYTHON:
            import micropython

            bites = False  # check that the lock really catches an allocation
            micropython.heap_lock()
            try:
                _allocates()
            except MemoryError:
                bites = True
            micropython.heap_unlock()
            assert bites
            micropython.heap_lock()
        try:
            i = 0
            while i < 1000:
                clock.now += 1000
                app.step(1000)
                i += 1
        finally:
            if support.MICROPYTHON:
                micropython.heap_unlock()
        led = app.meter.ledger
        assert app.ticks == 1050
        assert app.meter.clock.sod == 12 * 3600 + 1050
        assert led.balance < before
        assert led.energy_wh * 1000 + led.energy_mwh == board.source.true_mwh == 437500
        # 437.5 Wh at 0.2537 per kWh, floor to the cent, the rest carried
        assert led.charged == 437500 * 2537 // 100000000
        assert led.carry == 437500 * 2537 % 100000000
    finally:
        _rmtree(d)


def test_step_carries_partial_seconds():
    d = _tmpdir()
    try:
        s = _settings()
        board, app = _app(d, s, balance=10000)
        start = app.meter.clock.stamp()
        for dt in (250, 250, 250, 249, 1, 1003, 333, 333, 334, 997):
            app.step(dt)
        assert app.meter.clock.stamp() - start == 4
        assert app._acc_ms == 0
    finally:
        _rmtree(d)


# -- relay driving ---------------------------------------------------------------


def test_relay_never_both_coils_interval_and_pulse_length():
    d = _tmpdir()
    try:
        s = _settings({"relay_pulse_ms": 80, "relay_min_interval_ms": 5000})
        board, app = _app(d, s, balance=5)
        watch = CoilWatch(board.clock, board.set_pin, board.reset_pin)
        board.source.set_watts(3600)  # 0.1 cent a second: zero at t = 50 s
        board.clock.at(51000, lambda: support.topup(app, 200))  # soon after the cut
        _run(board, app, 120000)
        assert watch.both_on == 0
        assert board.relay_model.faults == 0
        assert board.relay_model.short_pulses == 0
        # boot re-assert (close), cut at zero (open), restore after the top-up (close)
        assert watch.names() == ["relay_set", "relay_reset", "relay_set"]
        for name, start, end in watch.pulses:
            assert end - start == 80
        cut = watch.pulses[1]
        assert cut[1] == 50000  # the tick that reached zero
        restore = watch.pulses[2]
        gap = restore[1] - cut[2]
        assert 5000 <= gap < 5000 + 1000
        assert board.relay_model.closed
        assert app.board.relay.operations == 3
        assert app.errors == 0
        kinds = [e[1] for e in app.meter.log.items]
        assert ev.DISCONNECT in kinds and ev.RECONNECT in kinds
    finally:
        _rmtree(d)


def test_relay_driver_waits_and_refuses_overlap():
    clock = VirtualClock()
    set_pin, reset_pin = SimPin("relay_set", clock), SimPin("relay_reset", clock)
    set_pin.value(1)  # whatever the pins held at power-up
    relay = LatchingRelay(set_pin, reset_pin, clock, pulse_ms=50, min_interval_ms=700)
    assert set_pin.value() == 0 and reset_pin.value() == 0
    watch = CoilWatch(clock, set_pin, reset_pin)
    seen = []

    async def second():
        seen.append(support.raises(RuntimeError, _start_now, relay))

    async def go():
        await relay.drive(False)
        asyncio.create_task(relay.drive(True))
        await asyncio.sleep(0)
        await second()

    async def main():
        t = asyncio.create_task(go())
        await clock.run(5000)
        await t

    asyncio.run(main())
    assert relay.closed is True and relay.operations == 2
    assert watch.names() == ["relay_reset", "relay_set"]
    assert watch.pulses[0][1:] == [0, 50]
    assert watch.pulses[1][1:] == [750, 800]
    assert watch.both_on == 0
    assert len(seen) == 1


def _start_now(relay):
    """Run drive() up to its first await: raises at once if the relay is busy."""
    co = relay.drive(True)
    try:
        co.send(None)
    finally:
        co.close()


# -- journaling -----------------------------------------------------------------


def test_topup_is_journaled_before_it_returns():
    d = _tmpdir()
    try:
        s = _settings()
        board, app = _app(d, s, balance=150)
        saves = board.store.saves
        assert support.topup(app, 1234) == 1384
        assert board.store.saves == saves + 1
        got = StateFile(d).load()
        assert got is not None
        assert got[BALANCE] == 1384
        assert got[STATE_FIELDS.index("credited")] == 1234
    finally:
        _rmtree(d)


def _reboot_after(d, s, relay_closed):
    """A new board and App on the same state directory: what a power cut leaves."""
    board = SimBoard(
        (2026, 1, 5, 15 * 3600), d, s, relay_closed=relay_closed, meter="ideal", store="file"
    )
    watch = CoilWatch(board.clock, board.set_pin, board.reset_pin)
    return board, App(board, s, key=KEY), watch


def test_reboot_restores_state_and_reasserts_an_open_relay():
    d = _tmpdir()
    try:
        s = _settings({"tariff": {"type": "flat", "price_per_kwh": "0.3333"}})
        board, app = _app(d, s, balance=20)
        board.source.set_watts(2345)
        _run(board, app, 1200000)
        assert not board.relay_model.closed  # ran out of credit
        assert app.meter.control.control_state == policy.DISCONNECTED
        saved = StateFile(d).load()
        assert saved[CONTROL] == policy.DISCONNECTED
        assert saved[CARRY] != 0
        b2, app2, watch = _reboot_after(d, s, relay_closed=False)
        restored = dict(zip(STATE_FIELDS, app2.fields()))
        saved_by_name = dict(zip(STATE_FIELDS, saved))
        assert restored.pop("boots") == saved_by_name.pop("boots") + 1  # one more start
        # the max-power protection's clock runs on by the time the meter was off
        off_s = restored.pop("stamp") - saved_by_name.pop("stamp")
        assert off_s > 0 and restored.pop("mp_clock") == saved_by_name.pop("mp_clock") + off_s
        assert restored == saved_by_name  # all else as it was, the last command included
        assert app2.meter.ledger.balance == saved[BALANCE]
        assert app2.meter.ledger.carry == saved[CARRY]
        boots = [e for e in app2.meter.log.items if e[1] == ev.BOOT]
        assert len(boots) == 1 and boots[0][3] == 1
        b2.source.set_watts(2345)
        _run(b2, app2, 10000)
        assert watch.names() == ["relay_reset"]  # same direction as the journal
        assert not b2.relay_model.closed
        assert b2.source.true_mwh == 0
        assert app2.meter.control.control_state == policy.DISCONNECTED
    finally:
        _rmtree(d)


def test_reboot_reasserts_a_closed_relay_without_flipping():
    d = _tmpdir()
    try:
        s = _settings()
        board, app = _app(d, s, balance=5000)
        board.source.set_watts(1000)
        _run(board, app, 30000)
        app.save()
        b2, app2, watch = _reboot_after(d, s, relay_closed=True)
        assert app2.meter.ledger.balance == app.meter.ledger.balance
        assert app2.meter.ledger.carry == app.meter.ledger.carry
        assert app2.meter.relay_closed()
        _run(b2, app2, 10000)
        assert watch.names() == ["relay_set"]
        assert b2.relay_model.closed
        assert b2.relay_model.faults == 0
    finally:
        _rmtree(d)


def test_reboot_completes_a_cut_the_power_failure_interrupted():
    # The journal says open (saved before the coil moved), the contacts are still closed.
    d = _tmpdir()
    try:
        s = _settings()
        board, app = _app(d, s, balance=1)
        board.source.set_watts(3600)
        board.clock.now += 10000
        app.step(10000)  # a big tick: zero reached
        assert app.meter.control.control_state == policy.DISCONNECTED
        app.save()
        b2, app2, watch = _reboot_after(d, s, relay_closed=True)
        _run(b2, app2, 5000)
        assert watch.names() == ["relay_reset"]
        assert not b2.relay_model.closed
    finally:
        _rmtree(d)


# -- faults ---------------------------------------------------------------------


def test_energy_source_fault_does_not_stop_metering():
    d = _tmpdir()
    try:
        s = _settings({"standing_charge_per_day": "8.64"})
        board, app = _app(d, s, balance=100000)
        src = FlakySource(board.source)
        board.source = src
        start = app.meter.clock.stamp()
        mid = []

        def fault(on):
            src.fail = on
            mid.append((app.meter.ledger.charged, app.ticks))

        board.clock.at(0, lambda: src.inner.set_watts(3600))
        board.clock.at(10000, lambda: fault(True))
        board.clock.at(20000, lambda: fault(False))
        _run(board, app, 600000)
        assert app.errors == 10
        assert mid[1][1] == mid[0][1]  # no tick completed during the fault
        assert app.ticks == 590
        assert app.ticks > mid[1][1]  # the task carried on
        led = app.meter.ledger
        assert led.charged > mid[1][0]
        # nothing lost: the clock kept time, energy and standing charge are complete
        assert app.meter.clock.stamp() - start == 600
        assert led.energy_wh * 1000 + led.energy_mwh == src.inner.true_mwh == 600000
        assert led.charged == 60 + 6  # 600 Wh at 1.00/kWh + 600 s of 8.64 a day
    finally:
        _rmtree(d)


class SteadySource:
    """An energy source that reads the same energy at every poll."""

    def __init__(self, mwh):
        self.mwh = mwh
        self.power_w = 0

    def poll(self):
        pass


def test_a_tick_is_priced_at_its_start_by_the_tou_band_and_the_passive_tariff_alike():
    # bands by the minute: 12:00-12:01 at 1.0000, 12:01-13:00 at 2.0000, else 0.1000;
    # every tick reads 100 Wh: 1 cent at 0.1000 per kWh, 10 at 1.0000, 50 at 5.0000
    tou = {
        "type": "tou",
        "bands": [
            {"from": "12:00", "to": "12:01", "price_per_kwh": "1.0000"},
            {"from": "12:01", "to": "13:00", "price_per_kwh": "2.0000"},
        ],
        "default_price_per_kwh": "0.1000",
    }
    d = _tmpdir()
    try:
        s = _settings(
            {
                "tariff": tou,
                "tariff_next": {"type": "flat", "price_per_kwh": "5.0000"},
                "tariff_next_from": "2026-01-05T12:01:15",
            }
        )
        board, app = _app(d, s, start=(2026, 1, 5, 12 * 3600 - 5), balance=100000)
        board.source = SteadySource(100000)
        led = app.meter.ledger

        def tick(seconds):
            before = led.charged
            app.step(seconds * 1000)
            return led.charged - before

        assert tick(7) == 1  # 11:59:55-12:00:02 crosses into the band: priced at 11:59:55
        assert tick(58) == 10  # 12:00:02-12:01:00 ends where the next band starts
        assert tick(10) == 20  # 12:01:00-12:01:10 starts at the band's first second
        assert tick(10) == 20  # 12:01:10-12:01:20 crosses the activation at 12:01:15
        assert tick(10) == 50  # 12:01:20-12:01:30: the first tick after it starts
        acts = [e for e in app.meter.log.items if e[1] == ev.TARIFF_ACTIVATED]
        assert [e[0] - app.meter.clock.stamp() for e in acts] == [-10]
        app.change_settings(
            {
                "tariff_next": {"type": "flat", "price_per_kwh": "3.0000"},
                "tariff_next_from": "2026-01-05T12:01:30",
            }
        )
        assert tick(10) == 30  # 12:01:30-12:01:40 starts at the activation time
    finally:
        _rmtree(d)


# -- contained errors: event listeners and tasks -------------------------------------


def _bad_listener(stamp, kind, balance, value):
    raise RuntimeError("listener bug")


def test_a_failing_event_listener_never_stops_the_tick():
    d = _tmpdir()
    try:
        s = _settings({"low_credit_repeat_s": 1})
        board, app = _app(d, s, balance=205)  # low credit in 6 s, then a reminder a second
        lines = []
        app.error_write = lines.append
        heard = []
        app.meter.log.listeners.insert(0, _bad_listener)  # before the app's own listener
        app.meter.log.listeners.append(lambda *e: heard.append(e[1]))
        board.clock.at(0, lambda: board.source.set_watts(36000))  # 1 cent a second
        _run(board, app, 60000)
        assert app.ticks == 60
        assert app.meter.ledger.balance == 205 - 60
        assert ev.LOW_CREDIT in heard and ev.LOW_CREDIT_REMINDER in heard
        n = app.meter.log.listener_errors
        assert n == len(heard) > 40  # every event, every listener after the bad one too
        assert app.errors == n  # counted where the status shows it
        assert app.status()["errors"] == n
        # one line per 10 s at most, each saying how many it did not print
        assert 5 <= len(lines) <= 7
        assert "listener bug" in lines[0] and "more not printed" in lines[1]
    finally:
        _rmtree(d)


def test_a_listener_failing_during_the_chip_recovery_loses_no_tick():
    from drivers import atm90e26

    d = _tmpdir()
    try:
        s = _settings()
        board = SimBoard(MONDAY_NOON, d, s, meter="chip", store="file")
        app = App(board, s, key=KEY)
        commission.open_account(app.meter, 100000)
        app.error_write = lambda line: None
        recovery = (atm90e26.EV_RESET, atm90e26.EV_RECOVERED)

        def fails_on_chip_events(stamp, kind, balance, value):
            if kind in recovery:
                raise RuntimeError("listener bug")

        app.meter.log.listeners.insert(0, fails_on_chip_events)
        board.clock.at(0, lambda: board.mains.set_load(230.0, 10.0))
        board.clock.at(100500, board.chip.reset)  # brown-out of the chip
        _run(board, app, 300000)
        chip = board.source
        assert app.ticks == 300  # none lost
        assert chip.reinits == 1  # one recovery, not one a tick
        assert board.chip.resets == 3  # start-up, the brown-out, the one recovery
        assert app.meter.log.listener_errors == 2 and app.errors == 2
        kinds = [e[1] for e in app.meter.log.items]
        assert kinds.count(atm90e26.EV_RESET) == 1 and kinds.count(atm90e26.EV_RECOVERED) == 1
        led = app.meter.ledger
        # billed on after the recovery: the load ran 300 s, at most a few seconds lost
        assert 2300 * 290 // 3600 <= led.energy_wh <= 2300 * 300 // 3600
    finally:
        _rmtree(d)


def test_a_task_that_raises_is_counted_and_started_again_and_metering_goes_on():
    d = _tmpdir()
    try:
        board, app = _app(d, _settings(), balance=100000)
        lines = []
        app.error_write = lines.append
        runs = []

        async def flaky():
            runs.append(board.clock.now)
            await board.clock.sleep_ms(4000)
            raise ValueError("task bug")

        async def once():
            await board.clock.sleep_ms(500)
            raise KeyError("gone")

        app.extra_tasks += [flaky, once()]  # a factory is started again, a coroutine not
        board.clock.at(0, lambda: board.source.set_watts(3600))
        _run(board, app, 60000)
        assert app.ticks == 60
        led = app.meter.ledger
        assert led.energy_wh * 1000 + led.energy_mwh == 60000  # 1 Wh a second, all billed
        assert runs[:3] == [0, 5000, 10000]  # restarted a second after each failure
        assert len(runs) == 13  # the 13th started at 60 s
        assert app.errors == 12 + 1  # the flaky task's failures and the coroutine's one
        assert app.status()["errors"] == 13
        assert "KeyError" in lines[0] and len(lines) <= 7
    finally:
        _rmtree(d)


# -- the state file -------------------------------------------------------------


def _fields(n):
    """A record's values, different for each n and field, each fitting its field."""
    return tuple(n * 10 + i for i in range(N))


_read = support.read_file
_write = support.write_file


def test_statefile_round_trip_and_alternation():
    d = _tmpdir()
    try:
        sf = StateFile(d)
        assert sf.load() is None
        for n in range(1, 6):
            sf.save(_fields(n))
            got = StateFile(d).load()
            assert tuple(got) == _fields(n)
        a, b = _read(sf.paths[0]), _read(sf.paths[1])
        got = (record.STATE.unpack(a)[1], record.STATE.unpack(b)[1])
        assert _fields(4) in got
        assert len(a) == len(b) == record.STATE.size
    finally:
        _rmtree(d)


def test_statefile_torn_or_corrupt_newest_falls_back():
    d = _tmpdir()
    try:
        sf = StateFile(d)
        sf.save(_fields(1))
        sf.save(_fields(2))
        sf.save(_fields(3))
        newest = sf.paths[sf.slot]
        older = sf.paths[sf.slot ^ 1]
        good = _read(newest)
        _write(newest, good[: len(good) // 2])  # torn
        sf2 = StateFile(d)
        assert tuple(sf2.load()) == _fields(2)
        bad = bytearray(good)
        bad[20] ^= 0x04  # one flipped bit in a field
        _write(newest, bad)
        sf3 = StateFile(d)
        assert tuple(sf3.load()) == _fields(2)
        # the next save goes over the damaged slot, never over the good one
        kept = _read(older)
        sf3.save(_fields(4))
        assert _read(older) == kept
        assert tuple(StateFile(d).load()) == _fields(4)
        _write(older, b"")
        _write(newest, b"\xff" * record.STATE.size)  # erased flash
        assert StateFile(d).load() is None
    finally:
        _rmtree(d)


def test_statefile_sequence_wrap():
    d = _tmpdir()
    try:
        sf = StateFile(d)
        sf.seq = 0xFFFFFFFE
        sf.save(_fields(1))  # seq 0xFFFFFFFF
        sf.save(_fields(2))  # seq 0: wrapped, still the newer
        sf2 = StateFile(d)
        assert tuple(sf2.load()) == _fields(2)
        assert sf2.seq == 0
        sf2.save(_fields(3))
        sf3 = StateFile(d)
        assert tuple(sf3.load()) == _fields(3) and sf3.seq == 1
    finally:
        _rmtree(d)


def test_record_detects_every_single_byte_error():
    buf = record.STATE.pack(77, _fields(9))
    assert record.STATE.unpack(buf) == (77, _fields(9))
    assert record.STATE.unpack(buf[:-1]) is None
    for i in range(len(buf)):
        bad = bytearray(buf)
        bad[i] ^= 0xA5
        assert record.STATE.unpack(bad) is None
