"""MicroPython side of tools/bench.py: the metering tick's cost and allocation.

Usage: micropython tools/bench_mpy.py -> one JSON line.
Builds the real App on the simulated board (ideal energy source, TOU tariff,
friendly windows, standing charge, max-power limiter all active) and measures
`App.step()`, the body of the metering task: poll the energy source, bill, run credit
control, decide relay and persistence. Then the same meter's tasks in real time on
MicroPython's scheduler (100 ms ticks, 10 s), with and without the display (cycling its
screens) and keypad tasks: the metering step's median in each case (each the best of
three alternated runs).
"""

import asyncio
import gc
import json
import time

import micropython

from firmware.app import App
from firmware.billing.settings import Settings
from tools.sim.board import JOURNAL_SECTORS, SimBoard
from tools.sim.nor import NorFlash
from tools.sim import commission

N = 5000
_FLASH = []  # one flash chip for every meter built here: its 64 KB in one piece, found once


def _flash():
    if not _FLASH:
        _FLASH.append(NorFlash(JOURNAL_SECTORS))
    _FLASH[0].reset()
    return _FLASH[0]


def build(meter="ideal", ui=False, store="journal", clock=None, tick_ms=1000):
    settings = Settings(
        {
            "tariff": {
                "type": "tou",
                "bands": [
                    {"days": "mon-fri", "from": "07:00", "to": "23:00", "price_per_kwh": "0.30"}
                ],
                "default_price_per_kwh": "0.12",
            },
            "standing_charge_per_day": "0.40",
            "friendly": [{"days": "sat,sun", "from": "00:00", "to": "24:00"}],
            "holidays": ["2026-12-25", "2026-12-26"],
            "max_power_w": 9000,
            "persist_money": "1000.00",
            "persist_s": 86400,
        }
    )
    board = SimBoard(
        (2026, 1, 5, 0),
        "/tmp",
        settings,
        meter=meter,
        display=ui,
        keypad=ui,
        store=store,
        flash=_flash() if store == "journal" else None,
        clock=clock,
    )
    board.store.erase()
    app = App(board, settings, tick_ms=tick_ms)
    commission.open_account(app.meter, 100000000)
    board.mains.set_watts(2300)
    board.relay.closed = True  # as after the boot-time re-assert
    return board, app


LOOP_S = 10  # real seconds per run
LOOP_TICK_MS = 100


def loop_figures(ui):
    """The median step in us with the app's tasks running in real time on
    MicroPython's own scheduler, as on the board (the virtual clock's scheduler is the
    simulator's Python: its work between ticks is not the firmware's)."""
    from tools.sim.rtclock import RealClock

    asyncio.new_event_loop()  # the previous run's cancelled tasks go with their loop
    gc.collect()
    board, app = build(ui=ui, store="file", clock=RealClock(), tick_ms=LOOP_TICK_MS)
    samples = [0] * (LOOP_S * 1000 // LOOP_TICK_MS + 50)  # preallocated: no allocation
    n = [0]
    step = app.step

    def timed(dt_ms):
        t = time.ticks_us()
        step(dt_ms)
        if n[0] < len(samples):
            samples[n[0]] = time.ticks_diff(time.ticks_us(), t)
            n[0] += 1

    app.step = timed

    async def go():
        tasks = [asyncio.create_task(t) for t in app.tasks()]
        await asyncio.sleep_ms(LOOP_S * 1000)
        for t in tasks:
            t.cancel()

    asyncio.run(go())
    samples = sorted(samples[: n[0]])
    if ui:
        assert app.display.frames > 0
    assert app.errors == 0 and n[0] >= LOOP_S * 1000 // LOOP_TICK_MS // 2
    return samples[len(samples) // 2]


def main():
    board, app = build()
    clock = board.clock
    for _ in range(100):  # warm up
        clock.now += 1000
        app.step(1000)
    samples = []
    for _ in range(N):
        clock.now += 1000
        t0 = time.ticks_us()
        app.step(1000)
        samples.append(time.ticks_diff(time.ticks_us(), t0))
    samples.sort()
    gc.collect()
    gc.disable()
    before = gc.mem_alloc()
    for _ in range(1000):
        clock.now += 1000
        app.step(1000)
    alloc = gc.mem_alloc() - before
    gc.enable()
    locked_ok = True
    micropython.heap_lock()
    try:
        for _ in range(1000):
            clock.now += 1000
            app.step(1000)
    except MemoryError:
        locked_ok = False
    micropython.heap_unlock()
    # The same tick reading the ATM90E26 driver over SPI from the chip model (the model's
    # own cost is included: on the board it is the SPI bus time instead).
    board, app = build("chip")
    clock = board.clock
    for _ in range(100):
        clock.now += 1000
        app.step(1000)
    chip_samples = []
    t0 = board.chip.transfers
    for _ in range(1000):
        clock.now += 1000
        t = time.ticks_us()
        app.step(1000)
        chip_samples.append(time.ticks_diff(time.ticks_us(), t))
    per_tick = (board.chip.transfers - t0) / 1000
    chip_samples.sort()
    board = app = None  # the flash model needs 64 KB in one piece
    gc.collect()
    # alternated three times, the best of each: the host's own noise is larger than the
    # difference being measured
    runs = [loop_figures(ui) for ui in (False, True, False, True, False, True)]
    bare_step = min(runs[0::2])
    ui_step = min(runs[1::2])
    print(
        json.dumps(
            {
                "tick_us": samples[N // 2],
                "tick_us_p99": samples[N * 99 // 100],
                "tick_alloc_bytes": alloc,
                "tick_heap_locked_ok": locked_ok,
                "tick_us_chip_model": chip_samples[500],
                "spi_transfers_per_tick": per_tick,
                # 24 clocks per transfer at the board's 115200 Hz SPI clock
                "spi_bus_us_per_tick": int(per_tick * 24 * 1000000 // 115200),
                "loop_tick_us": bare_step,
                "loop_tick_us_ui": ui_step,
                "ui_tick_ratio": ui_step / bare_step,
            }
        )
    )


main()
