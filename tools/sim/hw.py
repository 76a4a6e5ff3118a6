"""Models of the simple parts: output pins and the latching relay.

SimPin behaves like a machine.Pin output (value() get/set) and tells watchers about
changes. LatchingRelayModel is the physical relay: its contacts move only when one
coil has been energised for at least `operate_ms` (a shorter pulse does nothing, as
on the real part), energising both coils at once is a fault that is counted and
moves nothing, and the contacts keep their position without power.
"""


class SimPin:
    def __init__(self, name, clock=None):
        self.name = name
        self.clock = clock
        self.v = 0
        self.watchers = []

    def value(self, v=None):
        if v is None:
            return self.v
        v = 1 if v else 0
        if v != self.v:
            self.v = v
            for fn in self.watchers:
                fn(self, v)
        return None

    def __call__(self, v=None):
        return self.value(v)

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)


class LatchingRelayModel:
    def __init__(self, clock, set_pin, reset_pin, closed=True, operate_ms=20):
        self.clock = clock
        self.set_pin = set_pin
        self.reset_pin = reset_pin
        self.closed = closed
        self.operate_ms = operate_ms
        self.faults = 0
        self.operations = 0
        self.short_pulses = 0
        self.before_change = None  # callable run just before the contacts move
        self.after_change = None  # callable run once they have moved
        self._since = {}
        set_pin.watchers.append(self._coil)
        reset_pin.watchers.append(self._coil)

    def _coil(self, pin, v):
        if v:
            if self.set_pin.v and self.reset_pin.v:
                self.faults += 1
            self._since[pin.name] = self.clock.now
            return
        start = self._since.pop(pin.name, None)
        if start is None or (self.set_pin.v or self.reset_pin.v):
            return
        if self.clock.now - start < self.operate_ms:
            self.short_pulses += 1
            return
        want = pin is self.set_pin
        self.operations += 1
        if want != self.closed:
            if self.before_change is not None:
                self.before_change()
            self.closed = want
            if self.after_change is not None:
                self.after_change()
