"""The UART side every AT modem model shares (tools/sim/modem.py, tools/sim/rak3172.py).

A model is attached to a SimUART (tools/sim/uart.py) and runs from its `poll()`, called on
every firmware access to the UART. What it says goes into an output queue with a due
time: `_emit(bytes, delay)` never schedules before what is already queued (replies come
in order), `_line(text)` adds the CR LF framing, `_flush_due()` hands what is due to the
UART. `_after(ms, fn)` sets a timer (each model runs its timers in its own poll, with
its own semantics), `garbage()` and `garbage_every_ms` put noise between the replies
(`GARBAGE`, the model's own noise lines), `slow_ms` delays every reply (a slow modem).
The subclass calls `_start_output(clock)` in its constructor and keeps `uart`.
"""

GARBAGE = (b"\r\n~~ #@!noise 0x3F\r\n", b"\r\n\xff\xfe\x00\x81garbage\r\n", b"\r\n+???\r\n")


class ATModel:
    GARBAGE = GARBAGE
    slow_ms = 0

    def _start_output(self, clock):
        self.clock = clock
        self._t0 = clock.ticks_ms()
        self._out = []  # [due_ms, bytes], in order
        self._last_due = 0
        self._timers = []  # [due_ms, fn]
        self.garbage_every_ms = 0
        self._next_garbage = 0

    def _now(self):
        clk = self.clock
        return clk.ticks_diff(clk.ticks_ms(), self._t0)

    def _emit(self, data, delay=0):
        due = self._now() + self.slow_ms + delay
        if due < self._last_due:
            due = self._last_due
        self._last_due = due
        self._out.append([due, data])

    def _line(self, text, delay=0):
        self._emit(b"\r\n" + text.encode() + b"\r\n", delay)

    def _after(self, ms, fn):
        self._timers.append([self._now() + ms, fn])

    def garbage(self, data=None):
        self._emit(data or self.GARBAGE[0])

    def _garbage_due(self, now):
        """The periodic noise line, when garbage_every_ms says one is due."""
        if self.garbage_every_ms and now >= self._next_garbage:
            self._next_garbage = now + self.garbage_every_ms
            g = self.GARBAGE
            self._emit(g[(now // self.garbage_every_ms) % len(g)])

    def _flush_due(self, force=False):
        now = self._now()
        out = self._out
        while out and (force or out[0][0] <= now):
            self.uart.feed(out.pop(0)[1])
