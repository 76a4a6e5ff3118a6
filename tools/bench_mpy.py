"""MicroPython side of tools/bench.py: the metering tick's cost and allocation.

Usage: micropython tools/bench_mpy.py -> one JSON line.
Builds the real App on the simulated board (ideal energy source, TOU tariff,
friendly windows, standing charge, max-power limiter all active) and measures
`App.step()`, the body of the metering task: poll the energy source, bill, run credit
control, decide relay and persistence.
"""

import gc
import json
import time

import micropython

from firmware.app import App
from firmware.settings import Settings
from tools.sim.board import SimBoard

N = 5000


def build(meter="ideal"):
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
    board = SimBoard((2026, 1, 5, 0), "/tmp", settings, meter=meter)
    board.store.erase()
    app = App(board, settings)
    app.meter.open_account(100000000)
    board.mains.set_watts(2300)
    board.relay.closed = True  # as after the boot-time re-assert
    return board, app


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
            }
        )
    )


main()
