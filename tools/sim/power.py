"""An ideal energy source: exact mWh from a power step function (billing tests).

The load is a step function of true watts drawn while the relay contacts are closed
(zero when open). Energy is integrated exactly in watt-milliseconds over virtual time
and handed to the meter in whole mWh (1 mWh = 3600 W·ms) with the remainder kept, like
a metering chip's pulse accumulator. `true_mwh` is the model's exact total.
"""


class PowerSource:
    def __init__(self, clock, relay):
        self.clock = clock
        self.relay = relay
        self.watts = 0
        self.mwh = 0  # energy since the previous poll (what the meter reads)
        self.power_w = 0
        self.true_mwh = 0
        self._pending_mwh = 0
        self._rem = 0  # W·ms below one mWh
        self._t = clock.now
        self.powered = True  # False during a supply failure: nothing is drawn
        relay.before_change = self.integrate

    def set_watts(self, watts):
        self.integrate()
        self.watts = watts

    def power(self, on):
        self.integrate()
        self.powered = on

    def watts_now(self):
        return self.watts if self.relay.closed and self.powered else 0

    def integrate(self):
        now = self.clock.now
        if self.relay.closed and self.powered and self.watts:
            acc = self._rem + self.watts * (now - self._t)
            q = acc // 3600
            self._rem = acc - q * 3600
            self._pending_mwh += q
            self.true_mwh += q
        self._t = now

    def poll(self):
        self.integrate()
        self.mwh = self._pending_mwh
        self._pending_mwh = 0
        self.power_w = self.watts_now()
