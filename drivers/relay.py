"""Latching (bistable) relay with separate set and reset coils.

Wiring: two outputs, each through a driver transistor to one coil. A pulse of
`pulse_ms` on the set coil closes the contacts and one on the reset coil opens them;
the contacts then stay put with no coil current. The driver never energises both
coils, keeps at least `min_interval_ms` between operations (contact and coil
heating), and remembers only what it last commanded: the app journals that state and
re-asserts it after a reboot with one pulse in the same direction, which cannot flip
the contacts.

    relay = LatchingRelay(Pin(25, Pin.OUT), Pin(26, Pin.OUT), clock, pulse_ms=80)
    await relay.drive(True)   # close
"""


class LatchingRelay:
    def __init__(self, set_pin, reset_pin, clock, pulse_ms=80, min_interval_ms=1000):
        self.set_pin = set_pin
        self.reset_pin = reset_pin
        self.clock = clock
        self.pulse_ms = pulse_ms
        self.min_interval_ms = min_interval_ms
        self.closed = None  # last commanded state; None until the first operation
        self.operations = 0
        self.busy = False
        self._last = None  # ticks of the last operation's end
        set_pin.value(0)
        reset_pin.value(0)

    async def drive(self, closed):
        """Pulse the coil for `closed`; waits out the minimum interval first."""
        if self.busy:
            raise RuntimeError("relay: operation already in progress")
        self.busy = True
        try:
            clk = self.clock
            if self._last is not None:
                wait = self.min_interval_ms - clk.ticks_diff(clk.ticks_ms(), self._last)
                if wait > 0:
                    await clk.sleep_ms(wait)
            on, off = (self.set_pin, self.reset_pin) if closed else (self.reset_pin, self.set_pin)
            off.value(0)
            on.value(1)
            try:
                await clk.sleep_ms(self.pulse_ms)
            finally:
                on.value(0)
            self.closed = bool(closed)
            self.operations += 1
            self._last = clk.ticks_ms()
        finally:
            self.busy = False
