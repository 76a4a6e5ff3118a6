"""Buzzer and LED patterns: on/off sequences played by one asyncio task.

Each pattern is a tuple of (on_ms, off_ms) pairs played on the LED and, where it
sounds, the buzzer. `play(name)` queues a pattern (a newer one replaces one still
waiting); `run()` is the task that plays them. Pins are injected. While `quiet()` says
so (the meter's quiet hours) the unsolicited patterns, the ones nobody asked for
(low-credit warning, disconnected), show on the LED only; the answers to a customer at
the keypad (click, accepted, rejected) always sound.

    ind = Indicator(clock, led=Pin(2, Pin.OUT), buzzer=Pin(4, Pin.OUT))
"""

PATTERNS = {
    # name: (sounds, ((on_ms, off_ms), ...))
    "click": (True, ((20, 0),)),
    "accepted": (True, ((100, 80), (100, 0))),
    "rejected": (True, ((600, 0),)),
    "low_credit": (True, ((200, 200), (200, 200), (200, 0))),
    "disconnected": (True, ((1000, 300), (1000, 0))),
    "reconnected": (False, ((300, 0),)),
}

UNSOLICITED = ("low_credit", "disconnected")


class Indicator:
    def __init__(self, clock, led=None, buzzer=None, quiet=None):
        self.clock = clock
        self.led = led
        self.buzzer = buzzer
        self.quiet = quiet  # callable -> True while the buzzer must stay silent
        self.pending = None
        self.played = []  # names played, newest last (bounded; for status and tests)
        self._wake = None
        for p in (led, buzzer):
            if p is not None:
                p.value(0)

    def play(self, name):
        if name not in PATTERNS:
            raise ValueError("indicator: unknown pattern " + repr(name))
        self.pending = name
        if self._wake is not None:
            self._wake.set()

    async def run(self):
        import asyncio

        self._wake = asyncio.Event()
        while True:
            if self.pending is None:
                await self._wake.wait()
                self._wake.clear()
                continue
            name = self.pending
            self.pending = None
            sounds, steps = PATTERNS[name]
            hush = name in UNSOLICITED and self.quiet is not None and self.quiet()
            buzz = self.buzzer if sounds and not hush else None
            for on_ms, off_ms in steps:
                self._set(buzz, 1)
                await self.clock.sleep_ms(on_ms)
                self._set(buzz, 0)
                if off_ms:
                    await self.clock.sleep_ms(off_ms)
            self.played.append(name)
            if len(self.played) > 20:
                self.played.pop(0)

    def _set(self, buzz, v):
        if self.led is not None:
            self.led.value(v)
        if buzz is not None:
            buzz.value(v)
