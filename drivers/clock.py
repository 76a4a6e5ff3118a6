"""The monotonic clock the app and drivers are given: ticks, differences, async sleep.

On the board it is MicroPython's `time.ticks_ms` and `asyncio.sleep_ms`; the simulator
injects a virtual clock with the same three calls so a day runs in seconds.
"""

import asyncio
import time


class Clock:
    def __init__(self):
        if hasattr(time, "ticks_ms"):
            self.ticks_ms = time.ticks_ms
            self.ticks_diff = time.ticks_diff
        else:  # CPython, for host tests of the app
            self.ticks_ms = _host_ticks_ms
            self.ticks_diff = _host_ticks_diff
        self.sleep_ms = getattr(asyncio, "sleep_ms", None) or _host_sleep_ms


def _host_ticks_ms():
    return (time.monotonic_ns() // 1000000) & 0x3FFFFFFF


def _host_ticks_diff(a, b):
    d = (a - b) & 0x3FFFFFFF
    return d - 0x40000000 if d & 0x20000000 else d


async def _host_sleep_ms(ms):
    await asyncio.sleep(ms / 1000)
