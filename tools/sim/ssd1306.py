"""Model of the SSD1306 OLED controller's I2C side, and a fake I2C bus that feeds it.

The model owns what the chip holds: the 1024-byte GDDRAM (8 pages x 128 columns, a byte
is 8 vertical pixels, bit 0 on top) and the registers a driver sets (addressing mode,
column/page windows and pointers, contrast, normal/inverse, display on/off, entire
display on, charge pump, start line, offset, multiplex ratio, segment remap, COM scan
direction and pin configuration, scrolling). It decodes each transfer as the datasheet
says: a control byte (Co bit 7, D/C# bit 6, the other six bits 0) then command or data
bytes; Co=0 makes the rest of the transfer one stream, Co=1 carries a single byte and
another control byte follows. A command's parameter bytes are commands too and may come
in later transfers. Data bytes go to GDDRAM at the pointers, which advance as the
addressing mode says (horizontal, vertical, page). At power-on the RAM holds noise, the
display is off and the charge pump disabled, as on the chip.

`view()` is what the customer sees on the glass (row-major 128x64, 1 = lit): nothing
unless the display is on and the charge pump running; the RAM through the start line,
offset, multiplex ratio, inverse and the remaps. The glass is wired as the usual
128x64 modules: the column/row order is upright with segment remap (A1), COM scan
remapped (C8) and the alternative COM pin configuration (DA 12); other settings show
mirrored, flipped or (a wrong COM configuration) row-scrambled pictures. `glass()` is
the same picture packed in GDDRAM's layout (1024 bytes: tools/sim/png.py draws it).

`SimI2C` is the bus: `writeto(addr, buf)` to the device at that address, OSError(ENODEV)
when nothing acknowledges (as machine.I2C), and faults to inject (`fail`: the next n
transfers raise ETIMEDOUT). Runs under CPython and MicroPython.
"""

ENODEV = 19
ETIMEDOUT = 116

_ARGS = {
    0x20: 1,  # memory addressing mode
    0x21: 2,  # column address start, end
    0x22: 2,  # page address start, end
    0x26: 6,  # right horizontal scroll setup
    0x27: 6,  # left horizontal scroll setup
    0x29: 5,  # vertical and right horizontal scroll setup
    0x2A: 5,  # vertical and left horizontal scroll setup
    0x81: 1,  # contrast
    0x8D: 1,  # charge pump setting
    0xA3: 2,  # vertical scroll area
    0xA8: 1,  # multiplex ratio
    0xD3: 1,  # display offset
    0xD5: 1,  # display clock divide ratio / oscillator frequency
    0xD9: 1,  # pre-charge period
    0xDA: 1,  # COM pins hardware configuration
    0xDB: 1,  # VCOMH deselect level
}

HORIZONTAL = 0
VERTICAL = 1
PAGE = 2


class SSD1306Model:
    def __init__(self, addr=0x3C):
        self.addr = addr
        self.gddram = bytearray(1024)
        self.power_on()

    def power_on(self):
        """The chip's reset state; the RAM holds noise until it is written."""
        x = 0x2545F491
        for i in range(1024):  # xorshift noise: a driver that shows RAM unwritten is seen
            x ^= (x << 13) & 0xFFFFFFFF
            x ^= x >> 17
            x ^= (x << 5) & 0xFFFFFFFF
            self.gddram[i] = x & 0xFF
        self.on = False
        self.contrast = 0x7F
        self.inverse = False
        self.entire_on = False
        self.charge_pump = False
        self.mode = PAGE
        self.col_start = 0
        self.col_end = 127
        self.page_start = 0
        self.page_end = 7
        self.col = 0
        self.page = 0
        self.page_col_start = 0  # page addressing: where the column pointer wraps to
        self.start_line = 0
        self.offset = 0
        self.mux = 63
        self.seg_remap = False
        self.com_remap = False
        self.com_pins = 0x12
        self.scrolling = False
        self.clock_div = 0x80
        self.precharge = 0x22
        self.vcomh = 0x20
        self._cmd = None  # command waiting for parameters
        self._args = []
        self.transfers = 0
        self.data_bytes = 0
        self.commands = []  # the latest complete commands: (opcode, parameters...)
        self.command_count = 0
        self.protocol_errors = 0  # control bytes with the low six bits set, bad values
        self.unknown = 0
        self.ignored = 0  # page-mode pointer commands given in another mode

    def power_off(self):
        """The supply fails: dark (the RAM is noise again at power_on)."""
        self.on = False
        self.charge_pump = False

    # -- the I2C side ------------------------------------------------------------------
    def write(self, buf):
        """One I2C write transfer after the address byte."""
        self.transfers += 1
        n = len(buf)
        i = 0
        while i < n:
            ctrl = buf[i]
            i += 1
            if ctrl & 0x3F:
                self.protocol_errors += 1
            data = ctrl & 0x40
            if ctrl & 0x80:  # Co=1: one byte, then another control byte
                if i < n:
                    self._byte(data, buf[i])
                    i += 1
            elif data and self.mode == HORIZONTAL:  # a data stream: copied in runs
                self._data_run(buf, i, n)
                i = n
            else:
                while i < n:
                    self._byte(data, buf[i])
                    i += 1

    def _byte(self, data, b):
        if data:
            self._data(b)
        elif self._cmd is not None:
            self._args.append(b)
            if len(self._args) == _ARGS[self._cmd]:
                self._run(self._cmd, self._args)
                self._cmd = None
                self._args = []
        elif b in _ARGS:
            self._cmd = b
        else:
            self._run(b, ())

    def _data_run(self, buf, i, n):
        """buf[i:n] into GDDRAM in horizontal addressing: what _data() does byte by byte."""
        while i < n:
            k = min(n - i, self.col_end - self.col + 1)
            if k <= 0:  # a window whose end is before its start: byte by byte
                self._data(buf[i])
                i += 1
                continue
            o = self.page * 128 + self.col
            self.gddram[o : o + k] = buf[i : i + k]
            self.data_bytes += k
            i += k
            self.col += k
            if self.col > self.col_end:
                self.col = self.col_start
                self.page += 1
                if self.page > self.page_end:
                    self.page = self.page_start

    def _data(self, b):
        self.data_bytes += 1
        self.gddram[self.page * 128 + self.col] = b
        if self.mode == HORIZONTAL:
            self.col += 1
            if self.col > self.col_end:
                self.col = self.col_start
                self.page += 1
                if self.page > self.page_end:
                    self.page = self.page_start
        elif self.mode == VERTICAL:
            self.page += 1
            if self.page > self.page_end:
                self.page = self.page_start
                self.col += 1
                if self.col > self.col_end:
                    self.col = self.col_start
        else:
            self.col += 1
            if self.col > 127:
                self.col = self.page_col_start

    def _run(self, c, a):
        self.command_count += 1
        if len(self.commands) >= 512:  # a long run: keep the latest only
            del self.commands[:256]
        self.commands.append((c,) + tuple(a))
        if c == 0xAE or c == 0xAF:
            self.on = c == 0xAF
        elif c == 0x81:
            self.contrast = a[0]
        elif c == 0xA4 or c == 0xA5:
            self.entire_on = c == 0xA5
        elif c == 0xA6 or c == 0xA7:
            self.inverse = c == 0xA7
        elif c == 0x8D:
            if a[0] & 0xFB != 0x10:
                self.protocol_errors += 1
            self.charge_pump = bool(a[0] & 0x04)
        elif c == 0x20:
            if a[0] & 3 == 3:
                self.protocol_errors += 1  # invalid: the mode is kept
            else:
                self.mode = a[0] & 3
        elif c == 0x21:
            self.col_start = a[0] & 0x7F
            self.col_end = a[1] & 0x7F
            self.col = self.col_start
        elif c == 0x22:
            self.page_start = a[0] & 7
            self.page_end = a[1] & 7
            self.page = self.page_start
        elif c <= 0x1F:  # page addressing: column start, low then high nibble
            if self.mode != PAGE:
                self.ignored += 1
            elif c <= 0x0F:
                self.page_col_start = (self.page_col_start & 0x70) | c
                self.col = self.page_col_start
            else:
                self.page_col_start = (self.page_col_start & 0x0F) | ((c & 0x07) << 4)
                self.col = self.page_col_start
        elif 0xB0 <= c <= 0xB7:
            if self.mode != PAGE:
                self.ignored += 1
            else:
                self.page = c & 7
        elif 0x40 <= c <= 0x7F:
            self.start_line = c & 0x3F
        elif c == 0xA0 or c == 0xA1:
            self.seg_remap = c == 0xA1
        elif c == 0xC0 or c == 0xC8:
            self.com_remap = c == 0xC8
        elif c == 0xA8:
            if a[0] & 0x3F < 15:
                self.protocol_errors += 1
            else:
                self.mux = a[0] & 0x3F
        elif c == 0xD3:
            self.offset = a[0] & 0x3F
        elif c == 0xDA:
            self.com_pins = a[0] & 0x32
        elif c == 0xD5:
            self.clock_div = a[0]
        elif c == 0xD9:
            self.precharge = a[0]
        elif c == 0xDB:
            self.vcomh = a[0]
        elif c == 0x2E:
            self.scrolling = False
        elif c == 0x2F:
            self.scrolling = True
        elif c in _ARGS or c == 0xE3:  # scroll setups, NOP: nothing visible
            pass
        else:
            self.unknown += 1

    # -- what the glass shows ----------------------------------------------------------------
    def lit(self):
        """True when the panel emits light at all (display on, charge pump running)."""
        return self.on and self.charge_pump

    def view(self):
        """bytearray(128 * 64), row-major from the top-left as mounted: 1 where lit."""
        out = bytearray(128 * 64)
        if not self.lit():
            return out
        ram = self.gddram
        for r in range(64):
            pin = r
            if not self.com_pins & 0x10:  # sequential config on alternative-wired glass
                pin = r // 2 + (32 if r & 1 else 0)
            if self.com_pins & 0x20:  # COM left/right remap
                pin ^= 1
            i = pin if self.com_remap else 63 - pin  # the row counter driving this COM
            i = (i - self.offset) & 63
            if i > self.mux:
                continue  # beyond the multiplex ratio: never driven
            row = (i + self.start_line) & 63
            base = (row >> 3) * 128
            bit = row & 7
            o = r * 128
            for x in range(128):
                if self.entire_on:
                    out[o + x] = 1
                    continue
                col = x if self.seg_remap else 127 - x
                v = (ram[base + col] >> bit) & 1
                out[o + x] = v ^ 1 if self.inverse else v
        return out

    def glass(self):
        """view() packed as the GDDRAM is (8 pages x 128 columns, bit 0 on top): 1024 bytes."""
        v = self.view()
        out = bytearray(1024)
        for y in range(64):
            o = y * 128
            base = (y >> 3) * 128
            bit = 1 << (y & 7)
            for x in range(128):
                if v[o + x]:
                    out[base + x] |= bit
        return out

    def text_art(self, view=None):
        """The glass as 64 lines of '#' and '.' (test failure messages)."""
        v = self.view() if view is None else view
        lines = []
        for r in range(64):
            lines.append("".join("#" if v[r * 128 + x] else "." for x in range(128)))
        return "\n".join(lines)


class SimI2C:
    """machine.I2C's writeto() for the models on one simulated bus."""

    def __init__(self, *devices):
        self.devices = {}
        for d in devices:
            self.devices[d.addr] = d
        self.fail = 0  # the next n transfers time out
        self.transfers = 0

    def scan(self):
        return sorted(self.devices)

    def writeto(self, addr, buf, stop=True):
        self.transfers += 1
        if self.fail:
            self.fail -= 1
            raise OSError(ETIMEDOUT)
        dev = self.devices.get(addr)
        if dev is None:
            raise OSError(ENODEV)
        dev.write(bytes(buf))
        return len(buf)
