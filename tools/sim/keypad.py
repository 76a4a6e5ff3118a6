"""A matrix keypad model: keys held by a simulated customer join row and column lines.

The firmware's driver (drivers/keypad.py) drives the row pins (SimPin outputs, high at
rest) and reads the column pins, which read low while a held key joins them to a row
driven low, and high through their pull-up otherwise: the matrix as wired, so the
driver's scan and debounce are checked against it. `type(keys)` schedules presses on
the virtual clock, each held `hold_ms` with `gap_ms` between keys (a person types a key
in about 100-200 ms); `bounce` adds contact bounce at each press.

    pad = KeypadModel(clock, "123456789*0#", ncols=3)
    pad.type("12345678901234567890#", at_ms=clock.now)
"""

from tools.sim.hw import SimPin


class ColumnPin:
    def __init__(self, model, j):
        self.model = model
        self.j = j

    def value(self, v=None):
        return self.model._column(self.j)

    def __call__(self, v=None):
        return self.value()


class KeypadModel:
    def __init__(self, clock, keymap="123456789*0#", ncols=3, hold_ms=120, gap_ms=120, bounce=0):
        self.clock = clock
        self.keymap = keymap
        self.ncols = ncols
        nrows = len(keymap) // ncols
        self.rows = [SimPin("kp_row%d" % i, clock) for i in range(nrows)]
        self.cols = [ColumnPin(self, j) for j in range(ncols)]
        for r in self.rows:
            r.value(1)
        self.hold_ms = hold_ms
        self.gap_ms = gap_ms
        self.bounce = bounce  # bounce pulses at each press (1 ms apart)
        self.held = []  # key indexes held now
        self.typed = 0
        self.reads = 0  # column reads by the firmware (what scanning costs)

    def _column(self, j):
        self.reads += 1
        for k in self.held:
            if k % self.ncols == j and self.rows[k // self.ncols].v == 0:
                return 0
        return 1

    def index(self, ch):
        i = self.keymap.find(ch)
        if i < 0:
            raise ValueError("keypad model: no key " + repr(ch))
        return i

    def press(self, ch):
        k = self.index(ch)
        if k not in self.held:
            self.held.append(k)

    def release(self, ch):
        k = self.index(ch)
        if k in self.held:
            self.held.remove(k)

    def type(self, keys, at_ms=None):
        """Schedule `keys` (characters of the keymap) from at_ms (default now); returns
        the virtual time the last key is released."""
        t = self.clock.now if at_ms is None else at_ms
        for ch in keys:
            self.index(ch)  # refuse an unknown key before anything is scheduled
        for ch in keys:
            for b in range(self.bounce):  # make-break chatter before the contact settles
                self.clock.at(t + 2 * b, lambda ch=ch: self.press(ch))
                self.clock.at(t + 2 * b + 1, lambda ch=ch: self.release(ch))
            t0 = t + 2 * self.bounce
            self.clock.at(t0, lambda ch=ch: self.press(ch))
            self.clock.at(t0 + self.hold_ms, lambda ch=ch: self._done(ch))
            t = t0 + self.hold_ms + self.gap_ms
        return t - self.gap_ms

    def _done(self, ch):
        self.release(ch)
        self.typed += 1
