"""Fake `machine` for the emulated board: the ESP32 calls drivers/board.py makes, bound to
the simulator's models (tools/sim/emuworld.py). Never part of the meter's image.

With tools/sim/fakes first on MICROPYPATH this file wins over the unix port's built-in
`machine` (an extensible built-in). Pin(n) is the wire the world has at GPIO n: the
ATM90E26 model's CS, the relay coils, LED, buzzer, the modem's PWRKEY, or a plain pin;
inputs read the world (pulled up: 1 unless held low). SPI(id) on the world's metering
bus is the chip model's bus, UART(id) on the modem UART the modem model's SimUART,
I2C the bus with the world's I2C device models (a display).
WDT(timeout=ms) arms the world's watchdog (a second WDT re-times it, as on the ESP32);
reset() and soft_reset() stop the emulated board (emuboot exits with their codes).
Every call first lets the world check the watchdog and the run limit.
"""

import time

from tools.sim import emuworld

_w = emuworld.world

PWRON_RESET = emuworld.PWRON_RESET
HARD_RESET = emuworld.HARD_RESET
WDT_RESET = emuworld.WDT_RESET
DEEPSLEEP_RESET = emuworld.DEEPSLEEP_RESET
SOFT_RESET = emuworld.SOFT_RESET


class Pin:
    IN = 1
    OUT = 3
    OPEN_DRAIN = 7
    PULL_UP = 1
    PULL_DOWN = 2
    PULL_HOLD = 4
    IRQ_RISING = 1
    IRQ_FALLING = 2

    def __init__(self, id, mode=-1, pull=-1, *, value=None, drive=None, hold=None):
        self.id = id
        self.mode = self.IN
        self.pull = None
        self.handler = None
        self._wire = _wire_for(id)
        self.init(mode, pull, value=value)

    def init(self, mode=-1, pull=-1, *, value=None, drive=None, hold=None):
        _w().poll()
        if mode != -1 and mode is not None:
            self.mode = mode
        if pull != -1:
            self.pull = pull
        if value is not None:
            self._wire.value(1 if value else 0)

    def value(self, v=None):
        w = _w()
        w.poll()
        if v is None:
            if self.mode == self.IN:
                return _input(w, self.id, self.pull)
            return self._wire.value()
        self._wire.value(1 if v else 0)
        return None

    def __call__(self, v=None):
        return self.value(v)

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)

    def irq(self, handler=None, trigger=3, *, wake=None, hard=False):
        self.handler = handler
        return None

    def __repr__(self):
        return "Pin(%d)" % self.id


def _input(w, n, pull):
    if n in w.held_low:
        return 0
    if n in w.inputs:
        return w.inputs[n]
    return 1 if pull == Pin.PULL_UP else 0


def _wire_for(n):
    w = _w()
    wiring = w.wiring
    if n == wiring["cs"]:
        return w.chip.cs
    if n == wiring["relay_set"]:
        return w.set_pin
    if n == wiring["relay_reset"]:
        return w.reset_pin
    if n == wiring["led"]:
        return w.led
    if n == wiring["buzzer"]:
        return w.buzzer
    if n == wiring["modem_pwrkey"]:
        return w.modem_pwrkey
    from tools.sim.hw import SimPin

    return SimPin("gpio%d" % n, w.clock)


class SPI:
    MSB = 0
    LSB = 1

    def __init__(self, id, baudrate=1000000, *, polarity=0, phase=0, bits=8, firstbit=0, **kw):
        w = _w()
        self.id = id
        self._w = w
        self._bus = w.chip.spi if id == w.wiring["spi"] else emuworld.DeadBus()
        self.init(baudrate=baudrate, polarity=polarity, phase=phase, bits=bits, firstbit=firstbit)

    def init(self, baudrate=None, *, polarity=None, phase=None, bits=None, firstbit=None, **kw):
        self._w.poll()
        self._bus.init(
            baudrate=baudrate, polarity=polarity, phase=phase, bits=bits, firstbit=firstbit
        )

    def deinit(self):
        self._bus.deinit()

    def _check(self):
        w = self._w
        w.poll()
        while w.spi_hung():  # a hung bus: the call never returns (the watchdog's case)
            time.sleep_ms(20)

    def write(self, buf):
        self._check()
        return self._bus.write(buf)

    def read(self, n, write=0x00):
        self._check()
        return self._bus.read(n, write)

    def readinto(self, buf, write=0x00):
        self._check()
        return self._bus.readinto(buf, write)

    def write_readinto(self, wbuf, rbuf):
        if wbuf and wbuf[0] == 0xC0:  # a read of APenergy (40H): once per metering tick
            self._w.energy_reads += 1
        self._check()
        return self._bus.write_readinto(wbuf, rbuf)


SoftSPI = SPI


class I2C:
    """The world's I2C bus (every id and pin pair is the same bus): the device models
    the world puts there answer at their address; nothing else acknowledges
    (OSError ENODEV, as machine.I2C)."""

    def __init__(self, id=0, *, scl=None, sda=None, freq=400000, timeout=50000):
        self._w = _w()
        self.freq = freq

    def init(self, *args, **kw):
        pass

    def _dev(self, addr):
        w = self._w
        w.poll()
        w.i2c_transfers += 1
        dev = w.i2c_devices.get(addr)
        if dev is None:
            raise OSError(19)
        return dev

    def scan(self):
        self._w.poll()
        return sorted(self._w.i2c_devices)

    def writeto(self, addr, buf, stop=True):
        self._dev(addr).write(bytes(buf))
        return len(buf)

    def writevto(self, addr, vector, stop=True):
        data = b"".join([bytes(b) for b in vector])
        self._dev(addr).write(data)
        return len(data)

    def readfrom_into(self, addr, buf, stop=True):
        dev = self._dev(addr)
        data = dev.read(len(buf)) if hasattr(dev, "read") else b"\xff" * len(buf)
        buf[:] = data
        return None

    def readfrom(self, addr, n, stop=True):
        buf = bytearray(n)
        self.readfrom_into(addr, buf, stop)
        return bytes(buf)

    def writeto_mem(self, addr, memaddr, buf, *, addrsize=8):
        self._dev(addr).write(bytes((memaddr,)) + bytes(buf))

    def readfrom_mem_into(self, addr, memaddr, buf, *, addrsize=8):
        self.writeto(addr, bytes((memaddr,)), False)
        self.readfrom_into(addr, buf)

    def readfrom_mem(self, addr, memaddr, n, *, addrsize=8):
        buf = bytearray(n)
        self.readfrom_mem_into(addr, memaddr, buf)
        return bytes(buf)


SoftI2C = I2C


class UART:
    def __init__(self, id, baudrate=115200, **kw):
        w = _w()
        self.id = id
        self._w = w
        if id == w.wiring["modem_uart"] and w.uart is not None:
            self._port = w.uart
        else:
            self._port = emuworld.DeadUART()
        self.baudrate = baudrate

    def init(self, baudrate=None, **kw):
        if baudrate is not None:
            self.baudrate = baudrate

    def deinit(self):
        pass

    def any(self):
        self._w.poll()
        return self._port.any()

    def read(self, n=None):
        self._w.poll()
        return self._port.read(n)

    def readinto(self, buf, n=None):
        self._w.poll()
        return self._port.readinto(buf, n)

    def readline(self):
        self._w.poll()
        return self._port.read()

    def write(self, buf):
        self._w.poll()
        return self._port.write(buf)

    def flush(self):
        pass

    def txdone(self):
        return True


class WDT:
    def __init__(self, id=0, timeout=5000):
        if timeout < 1:
            raise ValueError("WDT timeout too short")
        self._w = _w()
        self._w.arm_watchdog(timeout)

    def feed(self):
        w = self._w
        w.poll()
        w.feed_watchdog()


class RTC:
    """datetime() from the host's local time (an offset once set), memory() as the
    world keeps it (it survives every reset but a power-on)."""

    _offset = 0

    def datetime(self, dt=None):
        if dt is None:
            t = time.localtime(time.time() + RTC._offset)
            return (t[0], t[1], t[2], t[6], t[3], t[4], t[5], 0)
        y, m, d, _, hh, mm, ss = dt[:7]
        RTC._offset = time.mktime((y, m, d, hh, mm, ss, 0, 0)) - time.time()
        return None

    def init(self, dt):
        self.datetime(dt)

    def memory(self, data=None):
        w = _w()
        if data is None:
            return w.rtc_memory
        if len(data) > 2048:
            raise ValueError("RTC memory: at most 2048 bytes")
        w.rtc_memory = bytes(data)
        return None


def reset():
    raise emuworld.MachineReset("machine.reset()")


def soft_reset():
    raise emuworld.SoftReset("machine.soft_reset()")


def reset_cause():
    return _w().reset_cause


def wake_reason():
    return 0


def unique_id():
    import binascii

    return binascii.unhexlify(_w().cfg.get("unique_id", "240ac4123456"))


def freq(hz=None):
    return 160000000 if hz is None else None


def idle():
    time.sleep_ms(1)


def lightsleep(ms=0):
    time.sleep_ms(ms)


def deepsleep(ms=0):
    raise emuworld.MachineReset("machine.deepsleep()")


def disable_irq():
    return 0


def enable_irq(state=0):
    return None
