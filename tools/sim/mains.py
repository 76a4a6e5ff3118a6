"""The supply and the household behind the meter: what the metering chip's inputs see.

Holds the load as volts, live and neutral amps, power factor and frequency; while the
relay contacts are open no current flows (the voltage stays: the chip is on the supply
side). Every change is pushed to the ATM90E26 model at the virtual instant it happens,
so the chip integrates exact energy between changes.
"""


class Mains:
    def __init__(self, chip, relay, volts=230.0, freq=50.0):
        self.chip = chip
        self.relay = relay
        self.volts = volts
        self.freq = freq
        self.amps = 0.0
        self.amps_n = None  # None: the neutral carries the live current (no tamper)
        self.pf = 1.0
        self.powered = True  # False during a supply failure: nothing is metered
        relay.after_change = self.apply
        self.apply()

    def set_load(self, volts=None, amps=None, pf=None, amps_n=None, freq=None):
        if volts is not None:
            self.volts = volts
        if amps is not None:
            self.amps = amps
        if pf is not None:
            self.pf = pf
        self.amps_n = amps_n
        if freq is not None:
            self.freq = freq
        self.apply()

    def set_watts(self, watts, volts=230.0):
        self.set_load(volts=volts, amps=watts / volts, pf=1.0)

    def power(self, on):
        self.powered = on
        self.apply()

    def apply(self):
        on = self.relay.closed and self.powered
        a = self.amps if on else 0.0
        n = (self.amps if self.amps_n is None else self.amps_n) if on else 0.0
        volts = self.volts if self.powered else 0.0
        self.chip.set_load(volts, a, self.pf, amps_n=n, freq=self.freq)

    def watts_now(self):
        """True active power drawn now (live line), 0 with the contacts open."""
        if not (self.relay.closed and self.powered):
            return 0
        return int(self.volts * self.amps * self.pf)
