"""The simulated board: the same object shape the firmware's app gets on an ESP32.

Clock is virtual, relay coils drive the relay model, the energy source is the real
ATM90E26 driver talking SPI to the chip model (or, with meter="ideal", an exact power
model for billing tests), the state is kept by the firmware's own journal on the NOR
flash model (store="journal", the product's layout) or in A/B files (store="file").

The hardware models (clock, chip, relay, mains, flash) outlive a power cut; the
drivers are the meter's RAM and are made again by `boot()`, as on a real reboot.
`power_cut()` / `power_on()` model the supply failing and returning.
display=True adds the customer's OLED: the SSD1306 controller model (`display_model`) on
a simulated I2C bus (`i2c`) and the driver on it (`display`).
"""

import gc

from drivers.indicator import Indicator
from drivers.relay import LatchingRelay
from firmware.storage.journal import Journal
from firmware.storage.statefile import StateFile
from tools.sim.hw import LatchingRelayModel, SimPin
from tools.sim.mains import Mains
from tools.sim.nor import NorFlash
from tools.sim.power import PowerSource
from tools.sim.vclock import VirtualClock


JOURNAL_SECTORS = 16  # the journal partition: 64 KB (docs/storage.md)


class SimBoard:
    def __init__(
        self,
        start,
        state_dir,
        settings,
        relay_closed=True,
        meter="chip",
        mc=3200,
        store="journal",
        flash_sectors=JOURNAL_SECTORS,
        flash=None,
        clock=None,
        keypad=False,
        display=False,
    ):
        self.clock = clock if clock is not None else VirtualClock()
        self.modem_model = None
        self.modem_timeouts = None  # drivers/cellular.py TIMEOUTS overrides
        self.lora_model = None  # tools/sim/rak3172.py when the transport is LoRaWAN
        self.lora_air = None  # (host, port) of a network-server stand-in (the air), or None
        self.lora_kw = {}  # drivers/lorawan.LoRaWAN options (timeouts, backoff, duty_div...)
        self.lora_model_kw = {}  # the model's switches, set before anything runs
        self.settings = settings
        self.state_dir = state_dir
        self.mc = mc
        self.powered = True
        self._start = start  # (y, m, d, sod) at virtual time 0
        self.set_pin = SimPin("relay_set", self.clock)
        self.reset_pin = SimPin("relay_reset", self.clock)
        self.relay_model = LatchingRelayModel(
            self.clock, self.set_pin, self.reset_pin, closed=relay_closed
        )
        if meter == "chip":  # the ATM90E26 driver on the chip model, fed by the mains
            import drivers.atm90e26  # noqa: F401  firmware: counted in the heap

            alloc = getattr(gc, "mem_alloc", lambda: 0)  # CPython: no heap figure
            gc.collect()
            before = alloc()
            from tools.sim.atm90e26 import ATM90E26Model

            self.chip = ATM90E26Model(self.clock, mc=mc)
            gc.collect()
            self.model_heap = alloc() - before  # the model's code and state
            self.mains = Mains(self.chip, self.relay_model)
        else:  # an ideal energy source: exact mWh, for billing tests
            self.chip = None
            self.model_heap = 0
            self.mains = PowerSource(self.clock, self.relay_model)
        self.keypad_model = None  # tools/sim/keypad.py when the board has a keypad
        if keypad:
            from tools.sim.keypad import KeypadModel

            self.keypad_model = KeypadModel(self.clock)
        self.display_model = None  # tools/sim/ssd1306.py: the OLED on the I2C bus
        self.i2c = None
        if display:
            from tools.sim.ssd1306 import SimI2C, SSD1306Model

            self.display_model = SSD1306Model()
            self.i2c = SimI2C(self.display_model)
        self.led = SimPin("led", self.clock)
        self.buzzer = SimPin("buzzer", self.clock)
        self.flash = None
        if store == "journal":
            self.flash = flash if flash is not None else NorFlash(flash_sectors)
            self.model_heap += len(self.flash.mem)  # the flash chip is not the heap's
            self.flash.on_cut = self._cut_hit
            self._image = state_dir + "/flash.bin" if state_dir else None
            self.load_image()
        elif store != "file":
            raise ValueError("store: 'journal' or 'file'")
        self.boot()

    def boot(self):
        """Make the drivers afresh: what the meter's RAM holds after a reset."""
        settings = self.settings
        if self.chip is not None:
            from drivers.atm90e26 import ATM90E26

            self.source = ATM90E26(self.chip.spi, self.chip.cs, mc=self.mc, clock=self.clock)
        else:
            self.source = self.mains
        self.relay = LatchingRelay(
            self.set_pin,
            self.reset_pin,
            self.clock,
            pulse_ms=settings.relay_pulse_ms,
            min_interval_ms=settings.relay_min_interval_ms,
        )
        self.indicator = Indicator(self.clock, led=self.led, buzzer=self.buzzer)
        self.keypad = None
        if self.keypad_model is not None:
            from drivers.keypad import MatrixKeypad

            km = self.keypad_model
            self.keypad = MatrixKeypad(km.rows, km.cols, km.keymap, self.clock, scan_ms=20)
        self.display = None  # drivers/ssd1306.py on the model's bus
        if self.display_model is not None:
            from drivers.ssd1306 import SSD1306

            self.display = SSD1306(self.i2c)
        if self.flash is not None:
            self.store = Journal(self.flash)
        else:
            self.store = StateFile(self.state_dir)

    def modem(self, settings):
        """The cellular modem model (SIMCom or Quectel AT over the simulated UART, real
        TCP to the broker) and the firmware's driver for it. Faults: self.modem_model."""
        from drivers.backoff import Backoff
        from drivers.cellular import Cellular
        from tools.sim.modem import ModemModel
        from tools.sim.uart import SimUART

        uart = SimUART(self.clock)
        pwr = SimPin("modem_pwrkey", self.clock)
        self.modem_model = ModemModel(
            uart,
            self.clock,
            dialect=settings.modem,
            powered=False,
            pwrkey=pwr,
            boot_ms=300,
            net_ms=20,
        )
        return Cellular(
            uart,
            self.clock,
            dialect=settings.modem,
            apn=settings.apn,
            pwrkey=pwr,
            baud=0,
            timeouts=self.modem_timeouts,
            backoff=Backoff(200, 5000),
        )

    def lorawan(self, settings, appkey):
        """The LoRaWAN modem model (tools/sim/rak3172.py, RAK3172 RUI3 AT on a SimUART;
        with `lora_air` its network side is a real TCP connection to a network-server
        stand-in, else the model's own) and the firmware's driver for it. Faults:
        self.lora_model."""
        from drivers.lorawan import from_settings
        from tools.sim.rak3172 import LoRaModemModel
        from tools.sim.uart import SimUART

        uart = SimUART(self.clock)
        self.lora_model = LoRaModemModel(uart, self.clock, air=self.lora_air)
        for k in self.lora_model_kw:
            setattr(self.lora_model, k, self.lora_model_kw[k])
        return from_settings(uart, self.clock, settings, appkey, **self.lora_kw)

    def _cut_hit(self, exc):
        self.clock.halt = exc  # the whole meter stops, whichever task hit the cut

    def power_cut(self):
        """The supply fails: coils drop, the chip and the load lose their supply."""
        self.powered = False
        self.set_pin.value(0)
        self.reset_pin.value(0)
        self.mains.power(False)
        if self.display_model is not None:
            self.display_model.power_off()

    def power_on(self):
        """The supply returns: flash usable again, the chip starts from its reset state."""
        self.powered = True
        self.clock.halt = None
        if self.flash is not None:
            self.flash.power_on()
        if self.chip is not None:
            self.chip.reset()
        if self.display_model is not None:
            self.display_model.power_on()  # RAM noise, dark until the meter draws
        self.mains.power(True)

    def load_image(self):
        """Flash contents from the state directory (a meter that ran before), if any."""
        if self._image is None:
            return
        try:
            with open(self._image, "rb") as f:
                data = f.read()
        except OSError:
            return
        if len(data) == len(self.flash.mem):
            self.flash.mem[:] = data

    def save_image(self):
        if self.flash is not None and self._image is not None:
            with open(self._image, "wb") as f:
                f.write(self.flash.mem)

    def local_time(self):
        y, m, d, sod = self._start
        # whole seconds of virtual time since the start, carried into the date
        from firmware.billing.wallclock import WallClock

        c = WallClock(y, m, d, sod)
        c.advance(self.clock.now // 1000)
        return c.year, c.month, c.day, c.sod
