"""SMS to the customer on low credit and on disconnection, rate-limited.

    sms = Notifier(app, link)            # link: drivers/cellular.Cellular (send_sms)
    asyncio.create_task(sms.run())

On with a 4G modem and a bound number (`sms_to`). The meter's low_credit and disconnect
events (the credit ones: a max-power trip or a remote open is not the customer's
balance) each leave one pending message, the latest replacing an unsent one of the same
kind; `run()` sends it when the modem is registered. Rate limit: per kind at most one
every `sms_min_interval_s` (default 6 h) and at most `sms_per_day` (3) in a calendar day
of the meter's clock, so a balance hovering at the threshold cannot flood the customer
(what a limit held back is counted in `suppressed`). A send that fails (no network, +CMS
ERROR) is retried after `retry_ms`, up to `tries` times, then dropped and counted. Sending
never touches metering: it is one AT command at a time between the MQTT socket's.
"""

from firmware.billing import events as ev
from firmware.billing import money
from firmware.billing.policy import OPEN_CREDIT

LOW = 0
CUT = 1
# registration <stat> of +CREG/+CGREG/+CEREG (3GPP TS 27.007, 7.2) the link keeps in .reg
_REG_HOME = 1
_REG_ROAMING = 5


class Notifier:
    def __init__(self, app, link, retry_ms=60000, tries=5, poll_ms=2000):
        self.app = app
        self.link = link
        self.retry_ms = retry_ms
        self.tries = tries
        self.poll_ms = poll_ms
        self.pending = [None, None]  # per kind: [text, tries left]
        self.last = [None, None]  # per kind: meter stamp of the last message sent
        self.day = -1
        self.today = 0
        self.sent = 0
        self.failed = 0
        self.suppressed = 0
        app.meter.log.listeners.append(self._on_event)

    def _on_event(self, stamp, kind, balance, value):
        if kind == ev.LOW_CREDIT:
            k, what = LOW, "low credit"
        elif kind == ev.DISCONNECT and value & OPEN_CREDIT:
            k, what = CUT, "supply disconnected, no credit"
        else:
            return
        m = self.app.meter
        text = "Meter %s: %s, balance %s. Please top up." % (
            m.settings.meter_id,
            what,
            money.format_decimal(balance, m.settings.currency_decimals),
        )
        self.pending[k] = [text, self.tries]

    def _allowed(self, k, stamp):
        s = self.app.meter.settings
        day = stamp // 86400
        if day != self.day:
            self.day, self.today = day, 0
        if self.today >= s.sms_per_day:
            return False
        last = self.last[k]
        return last is None or stamp - last >= s.sms_min_interval_s

    async def run(self):
        clk = self.app.board.clock
        while True:
            await clk.sleep_ms(self.poll_ms)
            to = self.app.meter.settings.sms_to
            for k in (CUT, LOW):
                p = self.pending[k]
                if p is None:
                    continue
                stamp = self.app.meter.clock.stamp()
                if not to or not self._allowed(k, stamp):
                    self.pending[k] = None
                    self.suppressed += 1
                    continue
                if self.link.reg != _REG_HOME and self.link.reg != _REG_ROAMING:
                    continue  # not registered: wait for the network
                try:
                    await self.link.send_sms(to, p[0])
                except Exception:
                    p[1] -= 1
                    if p[1] <= 0:
                        self.pending[k] = None
                        self.failed += 1
                    await clk.sleep_ms(self.retry_ms)
                    continue
                self.pending[k] = None
                self.last[k] = stamp
                self.today += 1
                self.sent += 1
