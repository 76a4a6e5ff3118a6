"""SSD1306 128x64 OLED over I2C: init sequence, frame buffer, page pushes that never block.

Owns the panel's controller: its configuration (charge pump, horizontal addressing,
segment and COM remap, contrast, invert, on/off) and a MONO_VLSB frame buffer of
1024 bytes (byte = 8 vertical pixels of one column, 8 pages of 128 columns: the layout
of the chip's GDDRAM). The I2C bus is injected (`writeto(addr, buf)`, as
`machine.I2C`); nothing here creates pins.

Every transfer starts with the datasheet's control byte: 0x00 for a stream of command
bytes (parameters included), 0x40 for a stream of GDDRAM data. A page is one window
command (column 0-127, page p) and one 129-byte data write: at 400 kHz about 3 ms, so
`show_page(p)` is the longest the asyncio loop waits, and `await show(sleep_ms)` pushes
the 8 pages with a yield between them (1 KB would be ~25 ms in one go). All transfer
buffers are allocated once here: a frame allocates nothing.

An I2C failure (OSError: no ACK, bus timeout) is counted in `errors` (errno in
`last_error`) and never raised; the panel is then treated as unknown (it may have lost
power) and the next push sends the init sequence again first. The display is switched
on only after a whole frame is in GDDRAM, so the power-on RAM noise is never seen.

    oled = SSD1306(I2C(0, scl=Pin(22), sda=Pin(21), freq=400000))
    oled.framebuf.text("hello", 0, 0, 1)
    await oled.show(asyncio.sleep_ms)
"""

try:
    from micropython import const
except ImportError:  # CPython: host tests of the init sequence and page writes

    def const(x):
        return x


try:
    import framebuf
except ImportError:  # CPython has no framebuf: the byte buffer alone
    framebuf = None

WIDTH = const(128)
HEIGHT = const(64)
PAGES = const(8)
ADDR = const(0x3C)  # SA0 low; 0x3D with SA0 high

_CTRL_CMD = const(0x00)  # Co=0 D/C#=0: the rest of the transfer is command bytes
_CTRL_DATA = const(0x40)  # Co=0 D/C#=1: the rest of the transfer is GDDRAM data

_SET_CONTRAST = const(0x81)
_DISPLAY_RAM = const(0xA4)  # A5 would light every pixel whatever the RAM holds
_NORMAL = const(0xA6)  # A7: inverse
_DISPLAY_OFF = const(0xAE)  # sleep
_DISPLAY_ON = const(0xAF)
_MEMORY_MODE = const(0x20)  # 0 horizontal, 1 vertical, 2 page addressing
_HORIZONTAL = const(0x00)
_COLUMN_ADDR = const(0x21)  # start, end
_PAGE_ADDR = const(0x22)  # start, end
_SCROLL_OFF = const(0x2E)
_START_LINE = const(0x40)  # | line 0-63
_SEG_REMAP = const(0xA0)  # | 1: column 127 drives SEG0
_MUX_RATIO = const(0xA8)
_COM_SCAN_UP = const(0xC0)  # COM0 -> COM[N-1]
_COM_SCAN_DOWN = const(0xC8)  # COM[N-1] -> COM0
_DISPLAY_OFFSET = const(0xD3)
_COM_PINS = const(0xDA)
_COM_ALTERNATIVE = const(0x12)  # alternative COM pin configuration: 128x64 glass
_CLOCK_DIV = const(0xD5)
_CLOCK_RESET = const(0x80)  # divide ratio 1, oscillator frequency at its reset value
_PRECHARGE = const(0xD9)
_PRECHARGE_PUMP = const(0xF1)  # phase 1: 1 DCLK, phase 2: 15 DCLK (internal charge pump)
_VCOMH = const(0xDB)
_VCOMH_083 = const(0x30)  # ~0.83 x VCC
_CHARGE_PUMP = const(0x8D)
_PUMP_ON = const(0x14)

# offsets of the patched bytes in the init sequence
_I_SEG = const(11)
_I_COM = const(12)
_I_CONTRAST = const(16)
_I_INVERT = const(22)


class SSD1306:
    def __init__(self, i2c, addr=ADDR, contrast=0xCF, rotate=0):
        self.i2c = i2c
        self.addr = addr
        self.buffer = bytearray(WIDTH * PAGES)
        self.framebuf = (
            framebuf.FrameBuffer(self.buffer, WIDTH, HEIGHT, framebuf.MONO_VLSB)
            if framebuf is not None
            else None
        )
        mv = memoryview(self.buffer)
        self._pages = tuple(mv[p * WIDTH : (p + 1) * WIDTH] for p in range(PAGES))
        self._tx = bytearray(WIDTH + 1)
        self._tx[0] = _CTRL_DATA
        self._tx_data = memoryview(self._tx)[1:]
        self._window = bytearray((_CTRL_CMD, _COLUMN_ADDR, 0, WIDTH - 1, _PAGE_ADDR, 0, 0))
        self._cmd = bytearray(3)
        self._cmd[0] = _CTRL_CMD
        self._cmd1 = memoryview(self._cmd)[:2]
        self._init = bytearray(
            (
                _CTRL_CMD,
                _DISPLAY_OFF,
                _CLOCK_DIV,
                _CLOCK_RESET,
                _MUX_RATIO,
                HEIGHT - 1,
                _DISPLAY_OFFSET,
                0,
                _START_LINE,
                _CHARGE_PUMP,
                _PUMP_ON,
                _SEG_REMAP | 1,  # _I_SEG
                _COM_SCAN_DOWN,  # _I_COM
                _COM_PINS,
                _COM_ALTERNATIVE,
                _SET_CONTRAST,
                contrast,  # _I_CONTRAST
                _PRECHARGE,
                _PRECHARGE_PUMP,
                _VCOMH,
                _VCOMH_083,
                _DISPLAY_RAM,
                _NORMAL,  # _I_INVERT
                _SCROLL_OFF,
                _MEMORY_MODE,
                _HORIZONTAL,
            )
        )
        self.rotate(rotate)
        self.contrast_level = contrast
        self.inverted = False
        self.want_on = True
        self.ready = False  # the init sequence went through since the last failure
        self.is_on = False
        self._whole = False  # a whole frame is in GDDRAM since the init
        self.errors = 0
        self.last_error = 0
        self.frames = 0

    # -- configuration (applied at once when the panel is up, else at its init) --------
    def rotate(self, degrees):
        """0: the module's natural orientation; 180: mounted upside down."""
        if degrees not in (0, 180):
            raise ValueError("rotate: 0 or 180")
        self._init[_I_SEG] = _SEG_REMAP | (0 if degrees else 1)
        self._init[_I_COM] = _COM_SCAN_UP if degrees else _COM_SCAN_DOWN
        self.ready = False

    def contrast(self, level):
        self.contrast_level = level & 0xFF
        self._init[_I_CONTRAST] = self.contrast_level
        return not self.ready or self._command2(_SET_CONTRAST, self.contrast_level)

    def invert(self, on):
        self.inverted = bool(on)
        self._init[_I_INVERT] = _NORMAL | (1 if on else 0)
        return not self.ready or self._command(self._init[_I_INVERT])

    def power(self, on):
        """Display on or off (sleep, the RAM kept). On waits for a whole frame."""
        self.want_on = bool(on)
        if not self.ready:
            return True
        if not on:
            self.is_on = False
            return self._command(_DISPLAY_OFF)
        if self._whole and not self.is_on:
            self.is_on = self._command(_DISPLAY_ON)
            return self.is_on
        return True

    def init(self):
        """Send the init sequence (display off); True when the panel acknowledged it."""
        self.is_on = False
        self._whole = False
        self.ready = self._write(self._init)
        return self.ready

    # -- pushing the frame buffer --------------------------------------------------------
    def show_page(self, p):
        """Write page p (rows 8p..8p+7) to GDDRAM: one window command, one data write."""
        if not self.ready and not self.init():
            return False
        w = self._window
        w[5] = p
        w[6] = p
        if not self._write(w):
            return False
        self._tx_data[:] = self._pages[p]
        return self._write(self._tx)

    async def show(self, sleep_ms):
        """Push the whole frame, yielding to the loop (`await sleep_ms(0)`) between pages;
        then switch the display on if it should be. True when every write went through."""
        for p in range(PAGES):
            if p:
                await sleep_ms(0)
            if not self.show_page(p):
                return False
        self._whole = True
        if self.want_on and not self.is_on:
            self.is_on = self._command(_DISPLAY_ON)
            if not self.is_on:
                return False
        self.frames += 1
        return True

    # -- the bus ---------------------------------------------------------------------------
    def _command(self, c):
        self._cmd[1] = c
        return self._write(self._cmd1)

    def _command2(self, c, arg):
        self._cmd[1] = c
        self._cmd[2] = arg
        return self._write(self._cmd)

    def _write(self, buf):
        try:
            self.i2c.writeto(self.addr, buf)
            return True
        except OSError as e:
            self.errors += 1
            self.last_error = e.args[0] if e.args else 0
            self.ready = False
            self.is_on = False
            return False
