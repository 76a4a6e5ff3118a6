"""The display task: draws the screens' content on a dot-matrix canvas and pushes it.

Owns the layout of a 128x64 monochrome canvas (any framebuf-like object: fill, text,
fill_rect, hline; MicroPython's 8x8 font) and the task that keeps the panel current:

    rows  0-10  title bar, inverted: the title left, "p/n" of the cycle right
    rows 16-31  the main value at twice the font size (16 px per character) with its unit
                in the small font beside it, centred; a value too wide for that is drawn
                in the small font on one or two centred lines (rows 16-33), as is a
                value the content wants small (the digits being typed)
    rows 40-47  the note line, centred
    row  52     a rule, and rows 55-62 the status line, centred (only when there is one)

Twice the font size: the value is drawn in the 8x8 font into a small scratch
FrameBuffer (one byte per column, MONO_VLSB) and each column's runs of lit pixels are
drawn 2x2 with fill_rect. Blink: while the content blinks, the value shows in one phase
of `blink_ms` and is left out in the other.

The task (`run()`) wakes every `period_ms` (250 ms) while the customer is at the keypad
and every `idle_ms` (500 ms) otherwise, composes the content (firmware/ui/screens.py) and
redraws only when the content changed or the blink phase flipped, then awaits the
panel's `show(sleep_ms)`, which pushes page by page with a yield between pages. A
panel that fails a push is tried again after `retry_ms`. Drawing a frame is one
synchronous piece; `render_us_max` keeps the longest (measured on the board's own
clock), so the metering tick's worst wait is known. Every error is counted
(`errors`; logged at the 1st, 2nd, 4th, 8th... so a lasting fault cannot flood the log),
never raised out of the task.
"""

import sys
import time

from firmware.ui.screens import Content, Screens

try:
    import framebuf
except ImportError:  # CPython: no 8x8 font to scale; the value is drawn at 1x
    framebuf = None

W = 128
H = 64
FONT = 8
TITLE_H = 11
VALUE_Y = 16
NOTE_Y = 40
RULE_Y = 52
STATUS_Y = 55
BIG_MAX = W // (2 * FONT)  # characters of the 2x value across the panel
LINE_MAX = W // FONT


def _us():
    if hasattr(time, "ticks_us"):
        return time.ticks_us()
    return time.perf_counter_ns() // 1000


def _us_since(t0):
    if hasattr(time, "ticks_diff"):
        return time.ticks_diff(time.ticks_us(), t0)
    return time.perf_counter_ns() // 1000 - t0


def centre_x(chars, scale=1):
    return (W - chars * FONT * scale) // 2


def wrap(text, width=LINE_MAX):
    """At most two lines of `width` characters, broken at the last space that fits."""
    if len(text) <= width:
        return (text,)
    cut = text.rfind(" ", 0, width + 1)
    if cut <= 0:
        return (text[:width], text[width : 2 * width])
    return (text[:cut], text[cut + 1 : cut + 1 + width])


def value_fits_big(value, unit):
    if len(value) > BIG_MAX:
        return False
    width = len(value) * 2 * FONT + ((4 + len(unit) * FONT) if unit else 0)
    return width <= W


class Display:
    def __init__(
        self,
        app,
        panel,
        clock,
        period_ms=250,
        idle_ms=500,
        blink_ms=500,
        cycle_ms=4000,
        hold_ms=10000,
        retry_ms=2000,
    ):
        self.app = app
        self.panel = panel
        self.canvas = panel.framebuf
        self.clock = clock
        self.period_ms = period_ms
        self.idle_ms = idle_ms
        self._changes = None  # entry.changes last seen
        self._busy_at = 0  # ticks of the last keypad activity
        self.blink_ms = blink_ms
        self.retry_ms = retry_ms
        self.screens = Screens(app, clock, cycle_ms=cycle_ms, hold_ms=hold_ms)
        self.content = Content()  # composed now
        self.shown = Content()  # drawn on the canvas
        self._phase = 0
        self._drawn = False
        self._dirty = False  # drawn but not yet pushed to the panel
        self.frames = 0  # pushes that went through
        self.renders = 0
        self.failed = 0  # pushes the panel did not take
        self.errors = 0
        self.render_us = 0
        self.render_us_max = 0
        self._scratch = None
        if framebuf is not None:
            self._scratch_buf = bytearray(BIG_MAX * FONT)
            self._scratch = framebuf.FrameBuffer(
                self._scratch_buf, BIG_MAX * FONT, FONT, framebuf.MONO_VLSB
            )

    # -- drawing ---------------------------------------------------------------------
    def big_text(self, s, x, y, c=1):
        """Text at twice the font size (16x16 per character) on the canvas."""
        fb = self.canvas
        sc = self._scratch
        if sc is None:
            fb.text(s, x + len(s) * FONT // 2, y + FONT // 2, c)
            return
        sc.fill(0)
        sc.text(s, 0, 0, 1)
        buf = self._scratch_buf
        for col in range(len(s) * FONT):
            b = buf[col]
            row = 0
            while b:
                if b & 1:
                    start = row
                    while b & 1:
                        b >>= 1
                        row += 1
                    fb.fill_rect(x + 2 * col, y + 2 * start, 2, 2 * (row - start), c)
                else:
                    b >>= 1
                    row += 1

    def render(self, content, phase=0):
        """Draw `content` on the canvas (the whole frame). phase 1: a blinking value is
        in its off phase."""
        fb = self.canvas
        fb.fill(0)
        fb.fill_rect(0, 0, W, TITLE_H, 1)
        fb.text(content.title[:LINE_MAX], 2, 2, 0)
        if content.pages:
            p = str(content.page) + "/" + str(content.pages)
            fb.text(p, W - 2 - len(p) * FONT, 2, 0)
        value = content.value
        unit = content.unit
        show_value = not (content.blink and phase)
        if not content.small and value_fits_big(value, unit):
            width = len(value) * 2 * FONT + ((4 + len(unit) * FONT) if unit else 0)
            x = (W - width) // 2
            if show_value:
                self.big_text(value, x, VALUE_Y)
            if unit:
                fb.text(unit, x + len(value) * 2 * FONT + 4, VALUE_Y + FONT, 1)
        else:
            lines = wrap(value + (" " + unit if unit else ""))
            y = VALUE_Y + 4 if len(lines) == 1 else VALUE_Y
            for line in lines:
                if show_value:
                    fb.text(line, centre_x(len(line)), y, 1)
                y += FONT + 2
        if content.note:
            note = content.note[:LINE_MAX]
            fb.text(note, centre_x(len(note)), NOTE_Y, 1)
        if content.status:
            fb.hline(0, RULE_Y, W, 1)
            s = content.status[:LINE_MAX]
            fb.text(s, centre_x(len(s)), STATUS_Y, 1)

    # -- the task ------------------------------------------------------------------------
    def update(self):
        """Compose, and draw when the content or the blink phase changed: True then."""
        c = self.screens.compose(self.content)
        phase = 0
        if c.blink:
            phase = (self.clock.ticks_ms() // self.blink_ms) & 1
        if self._drawn and c.same(self.shown) and phase == self._phase:
            return False
        t0 = _us()
        self.render(c, phase)
        self.render_us = _us_since(t0)
        if self.render_us > self.render_us_max:
            self.render_us_max = self.render_us
        self.renders += 1
        self.shown.copy(c)
        self._phase = phase
        self._drawn = True
        self._dirty = True
        return True

    async def push(self):
        """Push the canvas to the panel; True when it took the whole frame."""
        ok = await self.panel.show(self.clock.sleep_ms)
        if ok:
            self.frames += 1
            self._dirty = False
        else:
            self.failed += 1
        return ok

    def busy(self):
        """True while the customer is at the keypad (a line, or a key in the last 3 s)."""
        entry = getattr(self.app, "entry", None)
        if entry is None:
            return False
        now = self.clock.ticks_ms()
        if entry.changes != self._changes:
            self._changes = entry.changes
            self._busy_at = now
            return True
        return entry.mode != "idle" or self.clock.ticks_diff(now, self._busy_at) < 3000

    async def run(self):
        clk = self.clock
        while True:
            wait = self.period_ms if self.busy() else self.idle_ms
            try:
                if self.screens.version_wanted():  # hash the files a turn at a time
                    from firmware.storage import version

                    self.screens.set_version(await version.identify_async(clk.sleep_ms))
                if self.update():
                    await clk.sleep_ms(0)  # drawing and the first page: two pieces
                if self._dirty and not await self.push():
                    wait = self.retry_ms  # the panel is away: try again later
            except Exception as e:  # the display must never stop the meter
                self.errors += 1
                if not self.errors & (self.errors - 1):  # the 1st, 2nd, 4th, 8th...
                    sys.stdout.write("display: error " + str(self.errors) + ": " + repr(e) + "\n")
                wait = self.retry_ms
            await clk.sleep_ms(wait)
