"""Performance and memory figures, printed as one JSON object (CPython host tool).

  tick_us           median cost of one metering+control tick (App.step) under micropython
  tick_us_p99       its 99th percentile
  tick_alloc_bytes  heap allocated by 1000 steady-state ticks (must be 0)
  peak_heap_bytes   the largest live heap (gc.mem_alloc() right after gc.collect(), sampled
                    every simulated minute) over a simulated week at 1 s ticks, less the
                    ATM90E26 model's own code and state (host-side hardware); the relay,
                    mains and clock models and the runner are still counted
  peak_heap_bytes_ideal_64wk  the same week on the ideal energy source (no chip model),
                    run under `-X heapsize=64wk` (64 K words: the ESP32's 64 KB of objects)
  tick_us_chip_model  the same tick reading the driver over SPI from the chip model
  spi_transfers_per_tick, spi_bus_us_per_tick  SPI accesses per tick and their bus time
                    at 115.2 kHz on the board
  sim_day_s         wall seconds to simulate the bundled household day at 1 s ticks

Usage: python tools/bench.py
"""

import copy
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tools.sim import host  # noqa: E402


def tick_figures():
    out = subprocess.run(
        [host.micropython_cmd(), "-X", "heapsize=256wk", str(ROOT / "tools/bench_mpy.py")],
        cwd=str(ROOT),
        env=host.mpy_env(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def household():
    with open(ROOT / "scenarios/household.json") as f:
        return json.load(f)


def week():
    day = household()
    sc = copy.deepcopy(day)
    sc["duration_s"] = 7 * 86400
    sc["load"] = [
        {"at_s": d * 86400 + step["at_s"], "watts": step["watts"]}
        for d in range(7)
        for step in day["load"]
    ]
    sc["topups"] = [{"at_s": d * 86400 + 72000, "amount": "10.00"} for d in range(7)]
    return sc


def main():
    figures = tick_figures()
    t0 = time.perf_counter()
    host.run(household())
    figures["sim_day_s"] = round(time.perf_counter() - t0, 2)
    # The chip model is host-side hardware (and compiling it from source needs more
    # transient heap than 64 K words): the week with the chip runs in a larger heap and
    # counts what is not the model; the same week on the ideal source must run in 64 K
    # words.
    report = host.run(week(), heap="256wk")
    model = report["final"]["model_heap"]
    figures["peak_heap_bytes"] = report["final"]["live_heap_peak"] - model
    figures["chip_model_heap_bytes"] = model
    ideal = host.run(dict(week(), meter="ideal"), heap="64wk")
    figures["peak_heap_bytes_ideal_64wk"] = ideal["final"]["live_heap_peak"]
    figures["week_errors"] = report["final"]["errors"]
    print(json.dumps(figures, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
