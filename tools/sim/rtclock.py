"""Real time with the simulator's clock shape: `now` (ms since start) beside the firmware
clock's ticks_ms, ticks_diff and sleep_ms, so the board models (relay, ideal source)
run against the wall clock when the meter talks to real sockets (tools/sim/live.py)."""

from drivers.clock import Clock


class RealClock(Clock):
    def __init__(self):
        super().__init__()
        self._t0 = self.ticks_ms()
        self._last = self._t0
        self._base = 0
        self.halt = None

    @property
    def now(self):
        t = self.ticks_ms()  # wraps at 2**30 ms (12 days): carried into _base
        self._base += self.ticks_diff(t, self._last)
        self._last = t
        return self._base
