"""A matrix keypad (4x3 or 4x4) scanned in its own asyncio task, with debounce.

Wiring: the row lines are outputs held high, the column lines inputs with pull-ups; a
key joins its row to its column. A scan drives one row low at a time and reads the
columns (a pressed key reads low). Injected pins; nothing is created here.

    pad = MatrixKeypad(rows, cols, "123456789*0#", clock)
    asyncio.create_task(pad.run(entry.key))   # on_key(ch) once per press

While no key is down the pad idles: every row is held low and only the columns are read,
every `idle_ms` (50 ms); any key then pulls its column low and scanning starts, every
`scan_ms`, until all keys are up again. An idle pad costs a few pin reads a second's
tenth, not a full scan every few milliseconds.

A key counts as pressed after `debounce` scans in a row see it alone, and as released
after as many scans see nothing: contact bounce and a membrane that "presses itself"
for one scan give no key. Two keys at once (a palm on the pad; a third could ghost on a
matrix without diodes) give nothing, and no key counts again until all are let go. A scan allocates nothing; `on_key` is called
only on a press. An exception from `on_key` is counted and the scanning goes on.
"""

NO_KEY = -1
MANY = -2


class MatrixKeypad:
    def __init__(self, rows, cols, keymap, clock, scan_ms=10, debounce=3, idle_ms=50):
        if len(keymap) != len(rows) * len(cols):
            raise ValueError("keypad: keymap needs %d keys" % (len(rows) * len(cols)))
        self.rows = rows
        self.cols = cols
        self.keymap = keymap
        self.clock = clock
        self.scan_ms = scan_ms
        self.idle_ms = idle_ms
        self.debounce = debounce
        self.presses = 0
        self.errors = 0
        self._seen = NO_KEY  # what the last scans saw
        self._count = 0  # how many scans in a row saw it
        self._down = NO_KEY  # the key taken as held, NO_KEY when none
        for r in rows:
            r.value(1)

    def scan(self):
        """The one key down now (its index), NO_KEY, or MANY for several at once."""
        found = NO_KEY
        ncols = len(self.cols)
        for i in range(len(self.rows)):
            row = self.rows[i]
            row.value(0)
            for j in range(ncols):
                if not self.cols[j].value():
                    if found != NO_KEY:
                        row.value(1)
                        return MANY
                    found = i * ncols + j
            row.value(1)
        return found

    def step(self):
        """One scan and the debounce; the key character on a press, else None."""
        k = self.scan()
        if k == self._seen:
            if self._count < self.debounce:
                self._count += 1
        else:
            self._seen = k
            self._count = 1
        if self._count < self.debounce:
            return None
        if k == NO_KEY:
            self._down = NO_KEY
            return None
        if k == MANY:
            self._down = MANY  # blocked until nothing is held
            return None
        if self._down != NO_KEY:
            return None  # still the key already taken (or a block)
        self._down = k
        self.presses += 1
        return self.keymap[k]

    def idle(self):
        """True when nothing is held and the debounce has settled on that."""
        return self._down == NO_KEY and self._seen == NO_KEY and self._count >= self.debounce

    def _any_down(self):
        for c in self.cols:
            if not c.value():
                return True
        return False

    async def run(self, on_key):
        while True:
            if self.idle():
                for r in self.rows:
                    r.value(0)  # every row low: any key pulls its column low
                while not self._any_down():
                    await self.clock.sleep_ms(self.idle_ms)
                for r in self.rows:
                    r.value(1)
            ch = self.step()
            if ch is not None:
                try:
                    on_key(ch)
                except Exception:
                    self.errors += 1
            await self.clock.sleep_ms(self.scan_ms)
