"""What the modem drivers on the AT engine share (drivers/cellular.py, drivers/lorawan.py).

A subclass provides `at` (drivers/at.ATEngine), `clock`, `poll_ms`, `backoff`
(drivers/backoff.Backoff), `state`, `last_error`, `next_retry_ms`, `_stop` and an async
`start()` that brings the modem up. Its service task then calls `_bring_up()` while the
modem is not up: one attempt, and on any failure the reason kept in `last_error`, the
state "down" (unless "off") and the next backoff wait slept in `_idle()`, which keeps
reading the modem (URCs, reboot banners) while it waits.
"""


class ATModem:
    async def _idle(self, ms):
        """Sleep ms in poll steps, still reading URCs and banners (until stop())."""
        clk = self.clock
        start = clk.ticks_ms()
        while not self._stop:
            left = ms - clk.ticks_diff(clk.ticks_ms(), start)
            if left <= 0:
                return
            self.at.poll()
            await clk.sleep_ms(left if left < self.poll_ms else self.poll_ms)

    async def _bring_up(self, timeout_reason):
        """True when start() brought the modem up; never raises (the task must not die)."""
        try:
            await self.start()
            self.backoff.reset()
            self.next_retry_ms = None
            return True
        except Exception as e:
            self.last_error = getattr(e, "reason", None) or timeout_reason
            if self.state != "off":
                self.state = "down"
            d = self.backoff.next_ms()
            self.next_retry_ms = d
            await self._idle(d)
            return False
