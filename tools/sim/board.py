"""The simulated board: the same object shape the firmware's app gets on an ESP32.

Clock is virtual, relay coils drive the relay model, the energy source is the real
ATM90E26 driver talking SPI to the chip model (or, with meter="ideal", an exact power
model for billing tests), the state is kept by the firmware's own StateFile.
"""

import gc

from drivers.indicator import Indicator
from drivers.relay import LatchingRelay
from firmware.meter import STATE_FIELDS
from firmware.statefile import StateFile
from tools.sim.hw import LatchingRelayModel, SimPin
from tools.sim.mains import Mains
from tools.sim.power import PowerSource
from tools.sim.vclock import VirtualClock


class SimBoard:
    def __init__(self, start, state_dir, settings, relay_closed=True, meter="chip", mc=3200):
        self.clock = VirtualClock()
        self._start = start  # (y, m, d, sod) at virtual time 0
        self.set_pin = SimPin("relay_set", self.clock)
        self.reset_pin = SimPin("relay_reset", self.clock)
        self.relay_model = LatchingRelayModel(
            self.clock, self.set_pin, self.reset_pin, closed=relay_closed
        )
        if meter == "chip":  # the ATM90E26 driver on the chip model, fed by the mains
            from drivers.atm90e26 import ATM90E26  # firmware: counted in the heap

            gc.collect()
            before = gc.mem_alloc()
            from tools.sim.atm90e26 import ATM90E26Model

            self.chip = ATM90E26Model(self.clock, mc=mc)
            gc.collect()
            self.model_heap = gc.mem_alloc() - before  # the model's code and state
            self.mains = Mains(self.chip, self.relay_model)
            self.source = ATM90E26(self.chip.spi, self.chip.cs, mc=mc, clock=self.clock)
        else:  # an ideal energy source: exact mWh, for billing tests
            self.chip = None
            self.model_heap = 0
            self.mains = self.source = PowerSource(self.clock, self.relay_model)
        self.relay = LatchingRelay(
            self.set_pin,
            self.reset_pin,
            self.clock,
            pulse_ms=settings.relay_pulse_ms,
            min_interval_ms=settings.relay_min_interval_ms,
        )
        self.led = SimPin("led", self.clock)
        self.buzzer = SimPin("buzzer", self.clock)
        self.indicator = Indicator(self.clock, led=self.led, buzzer=self.buzzer)
        self.store = StateFile(state_dir, len(STATE_FIELDS))

    def local_time(self):
        y, m, d, sod = self._start
        # whole seconds of virtual time since the start, carried into the date
        from firmware.wallclock import WallClock

        c = WallClock(y, m, d, sod)
        c.advance(self.clock.now // 1000)
        return c.year, c.month, c.day, c.sod
