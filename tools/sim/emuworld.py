"""The emulated board's world: the hardware behind the fake `machine` and `esp32` modules.

Runs under MicroPython (tools/sim/emuboot.py, or any script with tools/sim/fakes first on
MICROPYPATH and the tree after it). One `World` holds, in real (wall) time:
- the ATM90E26 chip model on the metering SPI bus and its CS pin, fed by the mains model
  with the configured load (drawn only while the relay contacts are closed);
- the latching relay model on the relay_set / relay_reset coil pins, the LED and buzzer;
- input pins: pulled up ones read 1 unless the world holds them low (the BOOT strap);
- the I2C bus with its device models (the SSD1306 display model by default; an address
  with nothing there does not acknowledge);
- the cellular modem model on the modem UART and its PWRKEY pin, when configured;
- the flash's partition table: the binary table flashed at 0x8000 (tools/flash writes
  the build's partitions.bin there), read as the port reads it, with its "vfs" rule
  (tools/parttable.py); of its partitions, "vfs" is the image (a file-backed block
  device with NOR flash rules: erase to 0xFF, programming only clears bits) and
  "journal", when the table has one, the NOR flash model tools/sim/nor.py written
  through to a file so the next boot finds it;
- the stock image's frozen micropython-lib modules (`frozen`: a host directory mounted
  read-only at /frozen, which emuboot puts on sys.path right after ".frozen": together
  they are the board's `.frozen`, before /lib);
- the watchdog: once armed, every hardware call checks it, and a watcher thread checks
  it while the firmware makes none (a hung loop): not fed within its timeout, the board
  "resets" (WatchdogReset, or KeyboardInterrupt raised by SIGINT from the thread);
- the run limit: after `run_s` seconds of wall time the next hardware call raises
  TimeLimit, so a meter that runs forever can be stopped and looked at.

Configuration: a JSON object (from `load(path)` or the file named by the environment
variable METER_EMU_WORLD), every key optional:
  run_s (0: no limit), load_w | load [{"at_s", "watts"}], volts (230), mc (3200),
  relay_closed (true; a state file overrides it), held_low [gpio...], inputs {gpio: 0/1},
  wiring {"spi", "cs", "relay_set", "relay_reset", "led", "buzzer", "modem_uart",
  "modem_pwrkey"} (default: drivers/board.py's DevKit wiring), vfs (image file),
  table (the binary partition table file, or the name of a table in tools/partitions/:
  default "4MB", the meter's), flash_size (bytes, for a table file: default 4 MB),
  journal (the file behind the journal partition; none: in RAM), frozen (a directory
  of the stock image's frozen modules: default tools/sim/stockfrozen; null: none), state (JSON file
  keeping the world across boots: relay contacts, reset cause, RTC memory), reset_cause,
  unique_id (hex), modem {"dialect", "boot_ms", "net_ms"}, i2c {address: "module:Class"}
  (device models on the I2C bus: write(bytes), optional read(n); default the DevKit's
  SSD1306 display at 60, {} for none), spi_hang_after_reads (the
  metering bus hangs for good after that many energy register reads, i.e. metering
  ticks: a fault for the watchdog).
"""

import json
import os
import time

from tools import parttable
from tools.sim.atm90e26 import ATM90E26Model
from tools.sim.hw import LatchingRelayModel, SimPin
from tools.sim.mains import Mains
from tools.sim.nor import SECTOR, NorFlash

# The DevKit wiring of drivers/board.py (the emulated PCB): GPIO numbers, bus ids.
WIRING = {
    "spi": 2,
    "cs": 5,
    "relay_set": 25,
    "relay_reset": 26,
    "led": 2,
    "buzzer": 4,
    "modem_uart": 2,
    "modem_pwrkey": 27,
}

# machine.reset_cause() values of the ESP32 port
PWRON_RESET = 1
HARD_RESET = 2
WDT_RESET = 3
DEEPSLEEP_RESET = 4
SOFT_RESET = 5


class EmuExit(BaseException):
    """The emulated board stops: `end` names why, `code` is the emulator's exit code.
    A BaseException: the firmware's `except Exception` recovery cannot swallow it."""

    end = "stop"
    code = 0


class TimeLimit(EmuExit):
    end = "time_limit"
    code = 0


class WatchdogReset(EmuExit):
    end = "wdt_reset"
    code = 3


class MachineReset(EmuExit):
    end = "machine_reset"
    code = 4


class SoftReset(EmuExit):
    end = "soft_reset"
    code = 5


def flash_partitions(table, flash_size=None):
    """The partitions the port sees: a named table of tools/partitions/, or a binary
    table file (as flashed at 0x8000) on a flash of `flash_size` bytes (4 MB), with the
    port's "vfs" rule applied."""
    if table in parttable.TABLES:
        parts, size = parttable.load(table)
    else:
        with open(table, "rb") as f:
            parts = parttable.from_binary(f.read())
        size = flash_size or 4 * parttable.MB
    return parttable.with_vfs(parts, size)


class HostTime:
    """Wall-clock milliseconds since the world began (`now`), with the clock calls the
    models use (ticks_ms, ticks_diff)."""

    def __init__(self):
        self._last = time.ticks_ms()
        self._base = 0

    @property
    def now(self):
        t = time.ticks_ms()
        self._base += time.ticks_diff(t, self._last)
        self._last = t
        return self._base

    def ticks_ms(self):
        return time.ticks_ms()

    def ticks_diff(self, a, b):
        return time.ticks_diff(a, b)


class FileBlocks:
    """A partition backed by a file, with NOR flash rules: ioctl(6) erases a 4096-byte
    block to 0xFF, writeblocks with an offset only clears bits (new = old AND data),
    without one it erases the blocks first. Blocks past the end of the file read 0xFF
    (a partition larger than the image flashed into it). esp32.Partition's protocol."""

    def __init__(self, path, blocks=None):
        self.f = open(path, "r+b")
        self.f.seek(0, 2)
        self.file_size = self.f.tell()
        self.blocks = blocks if blocks is not None else self.file_size // SECTOR
        self.reads = 0
        self.programs = 0
        self.erases = 0
        self._tmp = bytearray(SECTOR)

    def _read(self, addr, buf):
        n = len(buf)
        have = self.file_size - addr
        if have >= n:
            self.f.seek(addr)
            self.f.readinto(buf)
            return
        for i in range(n):
            buf[i] = 0xFF
        if have > 0:
            self.f.seek(addr)
            part = self.f.read(have)
            buf[:have] = part

    def _write(self, addr, data):
        if addr + len(data) > self.file_size:  # grow the file (blank flash) up to addr
            self.f.seek(self.file_size)
            gap = addr + len(data) - self.file_size
            while gap > 0:
                k = min(gap, SECTOR)
                self.f.write(b"\xff" * k)
                gap -= k
            self.file_size = addr + len(data)
        self.f.seek(addr)
        self.f.write(data)

    def readblocks(self, block, buf, offset=0):
        addr = block * SECTOR + offset
        if block < 0 or addr + len(buf) > self.blocks * SECTOR:
            raise OSError(22)
        self.reads += 1
        self._read(addr, buf)

    def writeblocks(self, block, buf, offset=None):
        if offset is None:
            if len(buf) % SECTOR:
                raise OSError(22)
            for i in range(len(buf) // SECTOR):
                self.erase(block + i)
            offset = 0
        addr = block * SECTOR + offset
        n = len(buf)
        if block < 0 or addr + n > self.blocks * SECTOR:
            raise OSError(22)
        self.programs += 1
        pos = 0
        while pos < n:  # NOR: programming only clears bits
            k = min(n - pos, SECTOR)
            old = memoryview(self._tmp)[:k]
            self._read(addr + pos, old)
            for i in range(k):
                old[i] &= buf[pos + i]
            self._write(addr + pos, old)
            pos += k

    def erase(self, block):
        if not 0 <= block < self.blocks:
            raise OSError(22)
        self.erases += 1
        self._write(block * SECTOR, b"\xff" * SECTOR)

    def ioctl(self, op, arg):
        if op == 4:
            return self.blocks
        if op == 5:
            return SECTOR
        if op == 6:
            self.erase(arg)
            return 0
        if op in (1, 2, 3):
            return 0
        return None

    def close(self):
        self.f.close()


class FileNor(NorFlash):
    """The NOR flash model (wear, busy time, bit rules) written through to a file: every
    program and erase lands in the file at once, so a reset at any point leaves there
    what the chip would hold."""

    def __init__(self, path, sectors):
        NorFlash.__init__(self, sectors)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            data = b""
        if len(data) == len(self.mem):
            self.mem[:] = data
        self.f = open(path, "wb" if len(data) != len(self.mem) else "r+b")
        if len(data) != len(self.mem):
            self.f.write(self.mem)

    def _sync(self, addr, n):
        self.f.seek(addr)
        self.f.write(memoryview(self.mem)[addr : addr + n])

    def program(self, addr, data):
        try:
            NorFlash.program(self, addr, data)
        finally:
            if 0 <= addr and addr + len(data) <= len(self.mem):
                self._sync(addr, len(data))

    def erase(self, sector):
        try:
            NorFlash.erase(self, sector)
        finally:
            if 0 <= sector < self.sectors:
                self._sync(sector * SECTOR, SECTOR)

    def close(self):
        self.f.close()


class DeadBus:
    """An SPI bus with nothing on it: MISO floats high."""

    def init(self, *args, **kw):
        pass

    def deinit(self):
        pass

    def write(self, buf):
        return None

    def readinto(self, buf, write=0):
        for i in range(len(buf)):
            buf[i] = 0xFF

    def read(self, n, write=0):
        return b"\xff" * n

    def write_readinto(self, wbuf, rbuf):
        for i in range(len(rbuf)):
            rbuf[i] = 0xFF


class DeadUART:
    """A UART with nothing on it: writes go nowhere, reads find nothing."""

    def __init__(self):
        self.written = 0

    def any(self):
        return 0

    def read(self, n=None):
        return None

    def readinto(self, buf, n=None):
        return None

    def write(self, buf):
        self.written += len(buf)
        return len(buf)


class World:
    def __init__(self, cfg=None):
        cfg = cfg or {}
        self.cfg = cfg
        self.clock = HostTime()
        self.t0 = time.ticks_ms()
        self.wiring = dict(WIRING)
        self.wiring.update(cfg.get("wiring") or {})
        self.state_path = cfg.get("state")
        st = self._load_state()
        self.state = st
        self.reset_cause = cfg.get("reset_cause", st.get("reset_cause", PWRON_RESET))
        self.rtc_memory = b""
        if self.reset_cause != PWRON_RESET and st.get("rtc_memory"):
            import binascii

            self.rtc_memory = binascii.unhexlify(st["rtc_memory"])
        # relay, indicators
        closed = st.get("relay_closed", cfg.get("relay_closed", True))
        self.set_pin = SimPin("relay_set", self.clock)
        self.reset_pin = SimPin("relay_reset", self.clock)
        self.relay = LatchingRelayModel(self.clock, self.set_pin, self.reset_pin, closed=closed)
        self.led = SimPin("led", self.clock)
        self.buzzer = SimPin("buzzer", self.clock)
        self.led_changes = 0
        self.buzzer_changes = 0
        self.led.watchers.append(self._count_led)
        self.buzzer.watchers.append(self._count_buzzer)
        # metering chip and the mains behind it
        self.chip = ATM90E26Model(self.clock, mc=cfg.get("mc", 3200))
        self.energy_reads = 0
        self.mains = Mains(self.chip, self.relay, volts=float(cfg.get("volts", 230)))
        steps = cfg.get("load")
        if steps is None:
            steps = [{"at_s": 0, "watts": cfg.get("load_w", 0)}]
        self._steps = sorted([(int(s["at_s"] * 1000), s["watts"]) for s in steps])
        self._step_i = 0
        self._apply_load()
        self.spi_hang_after = cfg.get("spi_hang_after_reads")
        self.held_low = list(cfg.get("held_low") or [])
        self.inputs = {}
        for k, v in (cfg.get("inputs") or {}).items():
            self.inputs[int(k)] = 1 if v else 0
        # the modem, if the board has one here
        self.uart = None
        self.modem = None
        self.modem_pwrkey = SimPin("modem_pwrkey", self.clock)
        if cfg.get("modem"):
            from tools.sim.modem import ModemModel
            from tools.sim.uart import SimUART

            m = cfg["modem"]
            self.uart = SimUART(self.clock)
            self.modem = ModemModel(
                self.uart,
                self.clock,
                dialect=m.get("dialect", "simcom"),
                powered=False,
                pwrkey=self.modem_pwrkey,
                boot_ms=m.get("boot_ms", 300),
                net_ms=m.get("net_ms", 20),
            )
        # devices on the I2C bus (a display...): {"60": "tools.sim.ssd1306:SSD1306Model"}
        self.i2c_devices = {}
        self.i2c_transfers = 0
        i2c = cfg.get("i2c")
        if i2c is None:  # the DevKit board's SSD1306 display at 3CH
            i2c = {"60": "tools.sim.ssd1306:SSD1306Model"}
        for addr, spec in i2c.items():
            mod, _, cls = spec.partition(":")
            m = __import__(mod, None, None, [cls])
            a = int(addr, 0) if isinstance(addr, str) else addr
            self.i2c_devices[a] = getattr(m, cls)(addr=a)
        # the flash: its partition table, the image in "vfs", the NOR model in "journal"
        self.partitions = flash_partitions(cfg.get("table") or "4MB", cfg.get("flash_size"))
        self.vfs = None
        vfs = parttable.find(self.partitions, "vfs")
        if cfg.get("vfs") and vfs is not None:
            self.vfs = FileBlocks(cfg["vfs"], vfs.size // SECTOR)
        self.journal = None
        part = parttable.find(self.partitions, "journal")
        if part is not None:
            n = part.size // SECTOR
            self.journal = FileNor(cfg["journal"], n) if cfg.get("journal") else NorFlash(n)
        self.frozen = cfg.get("frozen", "")
        self.frozen_imports = []  # stand-ins of the stock frozen modules that were imported
        # watchdog and run limit
        self.wdt_ms = 0
        self.wdt_fed = 0
        self.wdt_feeds = 0
        self.wdt_fired = False
        self.run_ms = int(cfg.get("run_s", 0) * 1000)
        self.started = None  # ticks when the firmware started (emuboot: boot.py)
        self.heap = None  # sampled at the first watchdog feed (the meter built)
        self.hardware_calls = 0
        self._watcher = False

    # -- state kept across boots --------------------------------------------------------
    def _load_state(self):
        if not self.state_path:
            return {}
        try:
            with open(self.state_path) as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    def state_after(self, end):
        """What the next boot finds: the contacts where they are, the reset cause this
        end means on an ESP32, RTC memory (kept over any reset but a power-on)."""
        import binascii

        cause = {
            "wdt_reset": WDT_RESET,
            "machine_reset": SOFT_RESET,
            "soft_reset": self.reset_cause,
        }.get(end, PWRON_RESET)
        return {
            "relay_closed": self.relay.closed,
            "reset_cause": cause,
            "rtc_memory": binascii.hexlify(self.rtc_memory).decode(),
        }

    # -- the world moving on ---------------------------------------------------------
    def _count_led(self, pin, v):
        self.led_changes += 1

    def _count_buzzer(self, pin, v):
        self.buzzer_changes += 1

    def _apply_load(self):
        now = self.clock.now
        while self._step_i < len(self._steps) and self._steps[self._step_i][0] <= now:
            self.mains.set_watts(self._steps[self._step_i][1])
            self._step_i += 1

    def start(self):
        """The firmware starts now: the run limit counts from here."""
        self.started = time.ticks_ms()

    def poll(self):
        """Every fake hardware call comes here first: watchdog, run limit, load steps."""
        self.hardware_calls += 1
        now = time.ticks_ms()
        if self.wdt_ms and time.ticks_diff(now, self.wdt_fed) > self.wdt_ms:
            self.fire_watchdog()
        if (
            self.run_ms
            and self.started is not None
            and time.ticks_diff(now, self.started) >= self.run_ms
        ):
            raise TimeLimit("run limit: %d ms" % self.run_ms)
        if self._step_i < len(self._steps):
            self._apply_load()

    def fire_watchdog(self):
        self.wdt_fired = True
        raise WatchdogReset("watchdog not fed for %d ms" % self.wdt_ms)

    def spi_hung(self):
        return self.spi_hang_after is not None and self.energy_reads > self.spi_hang_after

    # -- watchdog -----------------------------------------------------------------------
    def arm_watchdog(self, timeout_ms):
        """machine.WDT(timeout=...): arms (or, as on the ESP32, re-times) the watchdog."""
        self.wdt_ms = timeout_ms
        self.wdt_fed = time.ticks_ms()
        if not self._watcher:
            self._watcher = True
            try:
                import _thread

                _thread.start_new_thread(self._watch, ())
            except (ImportError, OSError):  # no threads: hardware calls still check
                pass

    def feed_watchdog(self):
        self.wdt_fed = time.ticks_ms()
        self.wdt_feeds += 1
        if self.heap is None:
            self.sample_heap()

    def _watch(self):
        # A thread (no allocation, no shared structures touched): when the firmware hangs
        # without touching the hardware, a SIGINT makes its main thread raise
        # KeyboardInterrupt (the console turns Ctrl-C off: it is turned back on first);
        # the emulator reads wdt_fired to tell it from a real Ctrl-C. The signal is sent
        # from the background: system() ignores SIGINT in this process while it waits.
        import micropython

        cmd = "(sleep 0.1; kill -INT $PPID) &"
        sent = 0
        while self._watcher:
            time.sleep_ms(50)
            if self.wdt_ms and time.ticks_diff(time.ticks_ms(), self.wdt_fed) > self.wdt_ms + 100:
                self.wdt_fired = True
                if sent < 3:
                    micropython.kbd_intr(3)
                    os.system(cmd)
                    sent += 1
                time.sleep_ms(500)

    def stop(self):
        self._watcher = False

    # -- heap -------------------------------------------------------------------------
    def sample_heap(self):
        import gc

        gc.collect()
        self.heap = {
            "free": gc.mem_free(),
            "alloc": gc.mem_alloc(),
            "at_ms": time.ticks_diff(time.ticks_ms(), self.started or self.t0),
        }

    # -- inspection -------------------------------------------------------------------
    def report(self):
        out = {
            "relay_closed": self.relay.closed,
            "relay_operations": self.relay.operations,
            "relay_faults": self.relay.faults,
            "relay_short_pulses": self.relay.short_pulses,
            "energy_wh": round(self.chip.true_wh_forward, 3),
            "energy_reads": self.energy_reads,
            "spi_transfers": self.chip.transfers,
            "led_changes": self.led_changes,
            "buzzer_changes": self.buzzer_changes,
            "watchdog": {"timeout_ms": self.wdt_ms, "feeds": self.wdt_feeds},
            "reset_cause": self.reset_cause,
            "heap": self.heap,
            "hardware_calls": self.hardware_calls,
            "i2c_transfers": self.i2c_transfers,
        }
        for dev in self.i2c_devices.values():
            if hasattr(dev, "view"):  # a display: is it lit, how many pixels show
                out["display_lit"] = bool(dev.lit())
                try:
                    out["display_pixels"] = sum(dev.view())
                except MemoryError:  # a tight heap (the bench's): the figures come first
                    out["display_pixels"] = None
        out["partitions"] = [[p.name, p.offset, p.size] for p in self.partitions]
        out["frozen_imports"] = self.frozen_imports
        if self.journal is not None:
            out["journal_erases"] = sum(self.journal.erases)
            out["journal_programs"] = self.journal.programs
        if self.modem is not None:
            out["modem"] = {"commands": self.modem.commands, "opens": self.modem.opens}
        return out


_world = None


def load(path=None, cfg=None):
    """Make the world (from a JSON file, a dict, or METER_EMU_WORLD) and return it."""
    global _world
    if cfg is None:
        path = path or os.getenv("METER_EMU_WORLD")
        cfg = {}
        if path:
            with open(path) as f:
                cfg = json.load(f)
    _world = World(cfg)
    return _world


def world():
    """The world the fakes are wired to (made from METER_EMU_WORLD on first use)."""
    if _world is None:
        load()
    return _world
