"""MicroPython side of tools/bench.py's "drivers" section: what importing a modem driver
with its dialects costs the heap.

Usage: micropython tools/bench_import_mpy.py DRIVER [DIALECT ...] -> one JSON line:
{"alloc": bytes allocated by the imports (the GC off), "held": bytes still live after a
collection}, for `drivers.DRIVER` (with drivers/at.py and what it shares) and each named
dialect loaded by drivers/dialects.py as the driver does. Run it in a fresh process per
case, with the firmware's .mpy first on MICROPYPATH to measure what the board loads.
"""

import gc
import json
import sys


def measure(driver, names):
    gc.collect()
    gc.disable()
    start = gc.mem_alloc()
    __import__("drivers." + driver)
    from drivers import dialects

    for name in names:
        dialects.load(driver, name)
    alloc = gc.mem_alloc() - start
    gc.enable()
    gc.collect()
    return {"alloc": alloc, "held": gc.mem_alloc() - start}


if __name__ == "__main__":
    print(json.dumps(measure(sys.argv[1], sys.argv[2:])))
