"""The SSD1306 driver (drivers/ssd1306.py) against the controller model (tools/sim/ssd1306.py):
the init sequence, page and frame pushes into GDDRAM, orientation, contrast, invert and
on/off, I2C failures counted and recovered from, no allocation per page.

Portable: CPython pytest and `micropython` (tests/mpy_runner.py).
"""

import support
from drivers.ssd1306 import SSD1306
from tools.sim.ssd1306 import HORIZONTAL, SimI2C, SSD1306Model
from tools.sim.vclock import VirtualClock


def _panel(**kw):
    model = SSD1306Model()
    bus = SimI2C(model)
    return model, bus, SSD1306(bus, **kw)


def _pattern(buf):
    for i in range(len(buf)):
        buf[i] = (i * 7 + (i >> 7) * 31) & 0xFF


def _show(oled, clock=None):
    clock = clock or VirtualClock()
    return support.drive(clock, oled.show(clock.sleep_ms))


def test_init_configures_the_controller_and_keeps_the_display_dark():
    model, bus, oled = _panel(contrast=0x40)
    assert bus.transfers == 0  # the constructor does not touch the bus
    assert oled.init() and oled.ready
    assert bus.transfers == 1  # one command stream
    assert model.mode == HORIZONTAL
    assert model.charge_pump and model.mux == 63 and model.offset == 0
    assert model.seg_remap and model.com_remap and model.com_pins == 0x12
    assert model.start_line == 0 and model.contrast == 0x40
    assert not model.inverse and not model.entire_on and not model.scrolling
    assert model.clock_div == 0x80 and model.precharge == 0xF1 and model.vcomh == 0x30
    assert model.protocol_errors == 0 and model.unknown == 0 and model.ignored == 0
    assert model._cmd is None  # every parameter arrived
    # off until a frame is written: the power-on noise in GDDRAM is never shown
    assert not model.on and not model.lit() and not oled.is_on
    cmds = [c[0] for c in model.commands]
    assert cmds[0] == 0xAE and 0xAF not in cmds
    assert cmds.index(0x8D) < len(cmds)


def test_show_page_writes_one_page_through_a_window():
    model, bus, oled = _panel()
    _pattern(oled.buffer)
    noise = bytes(model.gddram)
    assert oled.show_page(3)
    assert bus.transfers == 3  # init, window, 129-byte data
    assert model.gddram[384:512] == oled.buffer[384:512]
    assert model.gddram[:384] == noise[:384] and model.gddram[512:] == noise[512:]
    assert model.commands[-2:] == [(0x21, 0, 127), (0x22, 3, 3)]
    assert model.data_bytes == 128
    assert model.page == 3 and model.col == 0  # the pointer wrapped inside the window
    assert oled.show_page(0) and model.gddram[:128] == oled.buffer[:128]


def test_show_pushes_the_frame_with_a_yield_between_pages_then_switches_on():
    model, bus, oled = _panel()
    _pattern(oled.buffer)
    clock = VirtualClock()
    seen = []

    async def sleep_ms(ms):
        seen.append((ms, model.data_bytes, model.on))
        await clock.sleep_ms(ms)

    assert support.drive(clock, oled.show(sleep_ms)) is True
    assert seen == [(0, 128 * k, False) for k in range(1, 8)]  # never more than a page
    assert model.gddram == oled.buffer
    assert model.on and model.lit() and oled.is_on and oled.frames == 1
    on_cmds = [c for c in model.commands if c == (0xAF,)]
    assert len(on_cmds) == 1
    oled.buffer[0] = 0x81
    assert _show(oled) and model.gddram[0] == 0x81
    assert [c for c in model.commands if c == (0xAF,)] == on_cmds  # no second switch-on
    assert oled.errors == 0 and model.protocol_errors == 0


def test_the_glass_shows_column_0_page_0_bit_0_top_left_and_rotate_flips_it():
    model, bus, oled = _panel()
    oled.buffer[0] = 0x01  # (0, 0)
    oled.buffer[7 * 128 + 127] = 0x80  # (127, 63)
    oled.buffer[2 * 128 + 10] = 0x08  # (10, 19)
    assert _show(oled)
    v = model.view()
    lit = [(i % 128, i // 128) for i in range(len(v)) if v[i]]
    assert lit == [(0, 0), (10, 19), (127, 63)]
    oled.rotate(180)  # mounted upside down: the next push re-inits
    assert _show(oled)
    v = model.view()
    lit = [(i % 128, i // 128) for i in range(len(v)) if v[i]]
    assert lit == [(0, 0), (117, 44), (127, 63)]


def test_contrast_invert_and_power_reach_the_controller():
    model, bus, oled = _panel()
    oled.buffer[5] = 0xFF
    assert _show(oled)
    assert oled.contrast(0x10) and model.contrast == 0x10
    assert oled.invert(True) and model.inverse
    v = model.view()
    assert v[5] == 0 and v[6] == 1 and sum(v) == 128 * 64 - 8
    assert oled.invert(False) and not model.inverse
    assert oled.power(False) and not model.on and sum(model.view()) == 0
    assert oled.power(True) and model.on and sum(model.view()) == 8
    # settings made while the panel is down are sent with its init
    oled.ready = False
    oled.contrast(0x99)
    oled.invert(True)
    assert _show(oled)
    assert model.contrast == 0x99 and model.inverse and model.protocol_errors == 0


def test_i2c_errors_are_counted_never_raised_and_the_panel_is_brought_back():
    model, bus, oled = _panel()
    _pattern(oled.buffer)
    assert _show(oled)
    bus.fail = 1  # a glitch on the bus: the first write of the next frame times out
    assert _show(oled) is False
    assert oled.errors == 1 and oled.last_error == 116 and not oled.ready
    model.power_on()  # the panel browned out meanwhile: RAM noise, off, no charge pump
    assert _show(oled) is True
    assert model.commands[0] == (0xAE,) and (0x8D, 0x14) in model.commands  # init again
    assert model.lit() and model.gddram == oled.buffer and model.charge_pump
    assert oled.errors == 1


def test_an_absent_panel_costs_one_failed_write_per_push():
    bus = SimI2C()  # nothing at 0x3C
    oled = SSD1306(bus)
    for n in range(1, 4):
        assert _show(oled) is False
        assert oled.errors == n and oled.last_error == 19 and bus.transfers == n
    assert oled.show_page(0) is False and oled.errors == 4
    assert oled.contrast(1) and oled.invert(True) and oled.power(False)  # held for init
    model = SSD1306Model()  # plugged in
    bus.devices[model.addr] = model
    assert _show(oled) is True
    assert model.contrast == 1 and model.inverse and not model.on  # power(False) kept
    assert oled.power(True) and model.lit()


def test_other_address_and_framebuf_text_reach_gddram():
    model = SSD1306Model(addr=0x3D)
    oled = SSD1306(SimI2C(model), addr=0x3D)
    if oled.framebuf is None:
        support.skip("framebuf exists only under MicroPython; proven there")
    import framebuf

    oled.framebuf.fill(0)
    oled.framebuf.text("Meter 42", 3, 9, 1)
    assert _show(oled)
    ref = bytearray(1024)
    framebuf.FrameBuffer(ref, 128, 64, framebuf.MONO_VLSB).text("Meter 42", 3, 9, 1)
    assert model.gddram == ref and sum(ref) > 0


def test_a_page_push_allocates_nothing():
    if not support.MICROPYTHON:
        support.skip("heap_lock exists only under MicroPython; proven there")
    import micropython

    class NullBus:
        def writeto(self, addr, buf):
            pass

    oled = SSD1306(NullBus())
    assert oled.init()
    micropython.heap_lock()
    try:
        for p in range(8):
            oled.show_page(p)
        oled.contrast(0x20)
        oled.invert(True)
    finally:
        micropython.heap_unlock()
    assert oled.errors == 0


def test_model_addressing_modes_and_control_bytes():
    def fresh(mode):
        m = SSD1306Model()
        m.write(bytes((0x00, 0x20, mode)))
        m.gddram[:] = bytes(1024)
        return m

    data = bytes(range(1, 41))  # 40 bytes into an 11-column x 3-page window: wraps
    stream = fresh(0)
    stream.write(bytes((0x00, 0x21, 10, 20, 0x22, 2, 4)))  # Co=0: all the rest commands
    stream.write(b"\x40" + data)  # Co=0, D/C#=1: all the rest data
    single = fresh(0)
    single.write(bytes((0x80, 0x21, 0x80, 10, 0x80, 20)))  # Co=1: a control byte each
    single.write(bytes((0x80, 0x22)) + bytes((0x80, 2)))
    single.write(bytes((0x80, 4)))  # a parameter in a later transfer
    for b in data:
        single.write(bytes((0xC0, b)))
    assert stream.gddram == single.gddram and stream.data_bytes == single.data_bytes == 40
    want = bytearray(1024)
    for k in range(40):
        page, col = 2 + (k // 11) % 3, 10 + k % 11
        want[page * 128 + col] = data[k]  # 33 fill the window, 7 wrap to its start
    want[2 * 128 + 10 : 2 * 128 + 17] = data[33:]
    assert stream.gddram == want
    assert (stream.page, stream.col) == (2, 17)
    vert = fresh(1)  # vertical: down the pages first
    vert.write(bytes((0x00, 0x21, 0, 1, 0x22, 0, 7)))
    vert.write(b"\x40" + bytes(range(1, 17)))
    assert [vert.gddram[p * 128] for p in range(8)] == list(range(1, 9))
    assert [vert.gddram[p * 128 + 1] for p in range(8)] == list(range(9, 17))
    page = fresh(2)  # page addressing: B0-B7 and the column nibbles; wraps in the page
    page.write(bytes((0x00, 0xB5, 0x0E, 0x17)))  # page 5, column 0x7E
    page.write(b"\x40" + bytes(range(1, 5)))  # 1, 2 at 126, 127; then back to 126
    assert page.page_col_start == 0x7E and page.page == 5
    assert page.gddram[5 * 128 + 0x7E] == 3 and page.gddram[5 * 128 + 0x7F] == 4
    assert page.data_bytes == 4
    assert page.gddram[4 * 128 : 5 * 128] == bytes(128) and page.gddram[6 * 128 :] == bytes(256)
    assert page.protocol_errors == 0 and page.ignored == 0
    stream.write(bytes((0x00, 0xB3, 0x05)))  # page-mode commands in horizontal mode
    assert stream.ignored == 2 and stream.page == 2 and stream.unknown == 0
    stream.write(bytes((0x01, 0xE3)))  # a control byte with its low bits set
    assert stream.protocol_errors == 1
