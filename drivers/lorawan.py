"""LoRaWAN over an AT modem: RAK3172 (RUI3) first, Seeed Wio-E5 behind the same calls.

Owns the LoRaWAN modem on drivers/at.py's engine: configuration (region, class, OTAA
identities and key), the join with retries (exponential backoff with jitter: Backoff from
drivers/backoff.py), uplinks with their confirmation, downlinks (class A after an uplink,
class C at any time), the payload-size limit per region and data rate, a duty-cycle budget,
modem reboots, and telemetry:

    lora = LoRaWAN(uart, clock, region="EU868", dev_eui="70B3...", app_eui="...",
                   app_key="<32 hex>", dialect="rui3")
    asyncio.create_task(lora.run())        # configure, join, rejoin after a reboot
    ok = await lora.send(2, b"\\x01...", confirmed=True)   # True: acknowledged
    d = lora.take()                        # (port, payload, rssi, snr) or None
    lora.telemetry()                       # joined, dr, rssi, snr, uplinks, airtime_ms...

The dialects are modules of their own, loaded by name (drivers/dialects.py): "rui3"
(drivers/lorawan_rui3.py) and "e5" (drivers/lorawan_e5.py); a meter holds only the code of
its modem. What comes from the modems' manuals (docs/modems.md), and what is chosen here:

- RUI3 facts (docs/modems.md "RAK3172 (RUI3)"): `AT+NWM=1`, `AT+NJM=1`, `AT+CLASS=C`,
  `AT+BAND=<n>` (4 EU868, 5 US915, 6 AU915, 3 IN865, 8 AS923-1), `AT+MASK=`, `AT+DEVEUI=`,
  `AT+APPEUI=`, `AT+APPKEY=`, `AT+CFM=0|1`, `AT+JOIN=w:x:y:z`, `AT+SEND=<port>:<hex>`;
  statuses `OK` and `AT_...` (`AT_BUSY_ERROR`, `AT_NO_NETWORK_JOINED`,
  `AT_DUTYCYLE_RESTRICTED`, ...); events `+EVT:JOINED`, `+EVT:JOIN FAILED` /
  `+EVT:JOIN_FAILED_RX_TIMEOUT`, `+EVT:TX_DONE`, `+EVT:SEND_CONFIRMED_OK|FAILED` (older
  firmware: spaces instead of underscores), the one-line downlink
  `+EVT:RX_1:<rssi>:<snr>:UNICAST:<port>:<hex>` (RX_2, RX_C, RX_3) and the older three
  lines `+EVT:RX_1, RSSI r, SNR s` / `+EVT:UNICAST` / `+EVT:<port>:<hex>`. Get replies
  echo the key (`AT+NJS=1`); a bare value line is accepted as well. The manual asks to
  wait for a command's asynchronous event before the next command: the driver holds its
  own lock from `AT+JOIN` / `AT+SEND` until the event (or deadline).
- RUI3 choices: `AT+JOIN=1:0:8:1` (one attempt, no auto-join: the retries and their
  backoff are the driver's); `AT+NWM` is only set when `AT+NWM=?` says otherwise; the
  engine is not sent `ATE0`/`AT+CMEE` (not RUI3 commands). The boot banner text is not in
  the manual: lines starting with "RAKwireless" or "Current Work Mode" are taken for one
  [unverified, configurable: banners=].
- Wio-E5 facts (docs/modems.md "Wio-E5"): replies prefixed with the command
  (`+MODE: LWOTAA`), errors `+<CMD>: ERROR(-n)`; `AT+JOIN` -> `+JOIN: Start` ...
  `Network joined` | `Join failed` ... `Done`, `Joined already`, `LoRaWAN modem is busy`;
  `AT+MSGHEX="<hex>"` / `AT+CMSGHEX=` on the port of `AT+PORT`, then `Start`, `Wait ACK`,
  `ACK Received`, `PORT: p; RX: "<hex>"`, `RXWIN1, RSSI r, SNR s`, `Done`; "Please join
  network first"; class C downlinks as `+MSG: PORT: ...` / `+MSG: RXWIN...`. Choices: a
  confirmed uplink whose `Done` comes without `ACK Received` is unacknowledged; a
  downlink is delivered at its `PORT:` line (the RSSI/SNR line that follows updates the
  telemetry); "No band in <n>ms" is read as the duty-cycle refusal and `AT+DR` (query) as
  giving `DR<n>` [both unverified]; no E5 boot banner is known.
- Payload limits (docs/modems.md "Payload limits", LoRaMac-node `MaxPayloadOfDatarate`):
  the tables below, by region and data rate (AU915/AS923 with dwell time 0 or 1). MAC
  commands in FOpts reduce the room; `fopts_margin` (default 0) reserves bytes for them.
  An oversized uplink is refused with LoRaError(TOO_LONG) and never reaches the modem.
- Time on air: Semtech's LoRa formula (AN1200.13, docs/lorawan.md "Sources") with
  LoRaWAN's framing (13 bytes of MHDR, FHDR, FPort and MIC around the payload, 8 preamble
  symbols, explicit header, CRC on, coding rate 4/5, low-data-rate optimisation at
  SF11/SF12 on 125 kHz). The SF/bandwidth of each DR are the LoRaWAN Regional
  Parameters'.
- Duty cycle (docs/modems.md "Duty cycle and timing"): EU868's sub-bands are 1 % (0.1 %
  and 10 % for others); after an uplink of time on air T the band is off for T/duty - T
  (Toff). The driver cannot see which channel the modem picks, so it applies 1 % to every
  uplink in EU868 (the default channels' band: conservative); US915/AU915/AS923/IN865 have
  no duty cycle by default (override with duty_div=). Optionally a daily airtime budget
  (TTN's fair use: daily_airtime_ms=30000) as a leaky bucket. An uplink that must wait is
  held (the loop runs on) when the wait fits its deadline, else refused with
  LoRaError(DUTY_CYCLE). Only the first transmission of a confirmed uplink is charged
  (retransmissions are the modem's and invisible); join requests are left to the modem's
  own duty cycle.
- Keys: the AppKey (and EUIs) go only into the configuration commands; an error in one
  of them is reported without the command's text, and telemetry never holds them.

Every await has a deadline (TIMEOUTS); the UART is polled between short sleeps, so the
loop never blocks. `run()` catches every failure, backs off and tries again; a modem
reboot (banner) fails the command or uplink in flight with LoRaError(MODEM_RESET), and
run() configures and joins again.
"""

import binascii

from drivers.at import ATCommandError, ATEngine, ATError, ATReset, ATTimeout
from drivers import dialects
from drivers.atmodem import ATModem
from drivers.backoff import Backoff

# States
OFF = "off"
CONFIGURING = "configuring"
JOINING = "joining"
JOINED = "joined"
DOWN = "down"

# LoRaError reasons
NOT_JOINED = "not_joined"
TOO_LONG = "too_long"
DUTY_CYCLE = "duty_cycle"
BUSY = "busy"
TIMEOUT = "timeout"
MODEM_RESET = "modem_reset"
JOIN_FAILED = "join_failed"
CONFIG = "config"
SEND_FAILED = "send_failed"

TIMEOUTS = {
    "at": 5000,  # simple commands
    "sync": 10000,  # modem answering AT
    "join": 30000,  # AT+JOIN to its result (join accept delays 5/6 s: docs/modems.md)
    "tx": 20000,  # AT+SEND to +EVT:TX_DONE (air time plus RX1/RX2 at 1/2 s)
    "tx_confirmed": 45000,  # to SEND_CONFIRMED_OK/FAILED (the modem's retries)
    "hold": 300000,  # longest duty-cycle hold an uplink waits by default
    "lock": 60000,  # waiting for the driver's lock (another join/uplink)
}

# Regional data: SF/bandwidth (kHz) per uplink DR (LoRaWAN Regional Parameters), the
# largest FRMPayload per DR (docs/modems.md "Payload limits"; dwell time 1 where it
# applies), RUI3 AT+BAND, the duty-cycle divisor (100 = 1 %; 0 = none).
_EU_DRS = ((12, 125), (11, 125), (10, 125), (9, 125), (8, 125), (7, 125), (7, 250))
REGIONS = {
    "EU868": (_EU_DRS, (51, 51, 51, 115, 242, 242, 242), None, 4, 100),
    "US915": (
        ((10, 125), (9, 125), (8, 125), (7, 125), (8, 500)),
        (11, 53, 125, 242, 242),
        None,
        5,
        0,
    ),
    "AU915": (
        _EU_DRS[:6] + ((8, 500),),
        (51, 51, 51, 115, 242, 242, 242),
        (0, 0, 11, 53, 125, 242, 242),
        6,
        0,
    ),
    "AS923": (_EU_DRS, (51, 51, 115, 115, 242, 242, 242), (0, 0, 11, 53, 125, 242, 242), 8, 0),
    "IN865": (_EU_DRS[:6], (51, 51, 51, 115, 242, 242), None, 3, 0),
}


class LoRaError(Exception):
    """A join or uplink failure; `reason` is one of the module's reason constants."""

    def __init__(self, reason, detail=None):
        super().__init__(reason if detail is None else reason + ": " + str(detail))
        self.reason = reason


def time_on_air_us(sf, bw_khz, n):
    """Time on air (microseconds) of an uplink with an n-byte FRMPayload (see the module
    docstring for the parameters)."""
    pl = n + 13
    de = 1 if sf >= 11 and bw_khz == 125 else 0
    tsym = (1 << sf) * 1000 // bw_khz  # us (exact for 125/250/500 kHz)
    num = 8 * pl - 4 * sf + 28 + 16
    den = 4 * (sf - 2 * de)
    k = (num + den - 1) // den if num > 0 else 0
    symbols = 8 + k * 5
    return tsym * (49 + 4 * symbols) // 4  # (8 + 4.25) preamble symbols + payload


def _hex_ok(text, n):
    if not isinstance(text, str) or len(text) != n:
        return False
    for c in text:
        if c not in "0123456789abcdefABCDEF":
            return False
    return True


def from_settings(uart, clock, settings, appkey, **kw):
    """The driver configured from the meter's settings (lora_region, lora_dev_eui,
    lora_join_eui, lora_class, lora_dr) and its AppKey (an object whose hex() gives the
    32 digits: firmware/lorakey.LoRaKey); kw: the board's own (dialect, timeouts...)."""
    return LoRaWAN(
        uart,
        clock,
        region=settings.lora_region,
        dev_eui=settings.lora_dev_eui,
        join_eui=settings.lora_join_eui,
        app_key=appkey.hex(),
        lora_class=settings.lora_class,
        dr=settings.lora_dr,
        **kw,
    )


class LoRaWAN(ATModem):
    """The LoRaWAN modem: configuration, join, uplinks, downlinks, duty cycle, telemetry.

    uart: machine.UART-like (write, read, any) with timeout=0. clock: ticks_ms,
    ticks_diff, async sleep_ms. dev_eui/app_eui (or join_eui): 16 hex digits; app_key:
    32 hex digits.
    dr: None for ADR, else the fixed uplink data rate. on_downlink(port, payload, rssi,
    snr) is called from the UART poll (keep it short); without it downlinks wait in an
    inbox of `inbox` entries (the oldest is dropped, counted in `dropped`).
    on_event(kind): "joined", "join_failed", "reset".
    """

    def __init__(
        self,
        uart,
        clock,
        region="EU868",
        dev_eui="",
        app_eui="",
        app_key="",
        dialect="rui3",
        lora_class="C",
        dr=None,
        dwell=0,
        mask=None,
        duty_div=None,
        daily_airtime_ms=None,
        fopts_margin=0,
        timeouts=None,
        backoff=None,
        rand=None,
        poll_ms=10,
        at=None,
        banners=None,
        on_downlink=None,
        on_event=None,
        inbox=8,
        join_eui=None,
    ):
        if join_eui is not None:
            app_eui = join_eui  # LoRaWAN 1.0.4/1.1's name for the AppEUI
        if region not in REGIONS:
            raise ValueError("region: one of " + ", ".join(sorted(REGIONS)))
        if not _hex_ok(dev_eui, 16) or not _hex_ok(app_eui, 16):
            raise ValueError("dev_eui/app_eui: 16 hex digits")
        if not _hex_ok(app_key, 32):
            raise ValueError("app_key: 32 hex digits")
        if lora_class not in ("A", "C"):
            raise ValueError("lora_class: A or C")
        self.region = region
        drs, maxes, maxes_dwell, band, div = REGIONS[region]
        self._drs = drs
        self._max = maxes_dwell if (dwell and maxes_dwell) else maxes
        self.band = band
        self.duty_div = div if duty_div is None else duty_div
        if dr is not None and not 0 <= dr < len(drs):
            raise ValueError("dr: 0..%d in %s" % (len(drs) - 1, region))
        self.fixed_dr = dr
        self.mask = mask
        self.lora_class = lora_class
        self.fopts_margin = fopts_margin
        self.daily_airtime_ms = daily_airtime_ms
        self._dev_eui = dev_eui.upper()
        self._app_eui = app_eui.upper()
        self._app_key = app_key.upper()
        self.clock = clock
        self.poll_ms = poll_ms
        t = dict(TIMEOUTS)
        if timeouts:
            t.update(timeouts)
        self.timeouts = t
        self.backoff = backoff or Backoff(8000, 600000, rand=rand)  # join retries
        self.dialect = dialects.load("lorawan", dialect)
        self.at = at or ATEngine(
            uart,
            clock,
            poll_ms=poll_ms if poll_ms < 5 else 5,
            errors=self.dialect.errors,
            banners=self.dialect.banners if banners is None else banners,
        )
        self.at.on_reset = self._on_reset
        self.on_downlink = on_downlink
        self.on_event = on_event
        self.inbox_size = inbox
        self._inbox = []
        self.state = OFF
        self.dr = dr
        self.rssi = None  # of the last downlink
        self.snr = None
        self.fpending = False  # the network has more downlinks queued (E5 FPENDING)
        self.last_error = None
        self.next_retry_ms = None
        # counters
        self.joins = 0
        self.join_failures = 0
        self.resets = 0
        self.uplinks = 0  # accepted by the modem
        self.tx_done = 0
        self.confirmed = 0
        self.failed = 0  # confirmed without ack, no end event, cut by a reboot
        self.refused = 0  # too long or duty cycle: never sent
        self.downlinks = 0
        self.dropped = 0
        self.airtime_us = 0
        self.unknown_events = 0
        # internal
        self._gen = 0
        self._reset_t = None
        self._configured = False
        self._lock = False
        self._stop = False
        self._join_result = None  # None waiting, True joined, False failed
        self._tx_result = None  # None waiting, "done", "ok", "failed"
        self._old_rx = None  # (rssi, snr) of an older three-line downlink header
        self._dc_start = None  # ticks of the last uplink (duty cycle)
        self._dc_len = 0  # ms the band is then busy (ToA + Toff)
        self._bucket = 0  # ms of the daily budget in use
        self._bucket_t = None
        self._cfm = None
        self._port = None
        self.dialect.register(self)

    # -- telemetry --------------------------------------------------------------------

    def telemetry(self):
        return {
            "state": self.state,
            "joined": self.state == JOINED,
            "region": self.region,
            "dr": self.dr,
            "rssi": self.rssi,
            "rssi_dbm": self.rssi,  # the cellular driver's name: the screens and tech read it
            "snr": self.snr,
            "uplinks": self.uplinks,
            "confirmed": self.confirmed,
            "failed": self.failed,
            "refused": self.refused,
            "downlinks": self.downlinks,
            "airtime_ms": self.airtime_us // 1000,
            "joins": self.joins,
            "join_failures": self.join_failures,
            "resets": self.resets,
            "last_error": self.last_error,
        }

    @property
    def joined(self):
        return self.state == JOINED

    # -- limits -----------------------------------------------------------------------

    def max_payload(self, dr=None):
        """Largest uplink FRMPayload at dr (default: the current one, DR0 if unknown)."""
        if dr is None:
            dr = self.dr if self.dr is not None else 0
        if not 0 <= dr < len(self._max):
            return 0
        n = self._max[dr] - self.fopts_margin
        return n if n > 0 else 0

    def airtime_ms(self, n, dr=None):
        """Time on air (ms, rounded up) of an n-byte uplink at dr."""
        if dr is None:
            dr = self.dr if self.dr is not None else 0
        sf, bw = self._drs[dr]
        return (time_on_air_us(sf, bw, n) + 999) // 1000

    def hold_ms(self, n, dr=None):
        """How long an n-byte uplink at dr must wait for the duty cycle and daily budget."""
        clk = self.clock
        now = clk.ticks_ms()
        wait = 0
        if self._dc_start is not None:
            el = clk.ticks_diff(now, self._dc_start)
            if 0 <= el < self._dc_len:
                wait = self._dc_len - el
        cap = self.daily_airtime_ms
        if cap:
            level = self._drained(now)
            toa = self.airtime_ms(n, dr)
            if toa > cap:
                return -1  # never fits
            over = level + toa - cap
            if over > 0:
                w = over * 86400000 // cap + 1
                if w > wait:
                    wait = w
        return wait

    def _drained(self, now):
        cap = self.daily_airtime_ms
        if self._bucket_t is None:
            return 0
        el = self.clock.ticks_diff(now, self._bucket_t)
        if el < 0:
            el = 86400000
        level = self._bucket - el * cap // 86400000
        return level if level > 0 else 0

    def _charge(self, toa_us):
        clk = self.clock
        now = clk.ticks_ms()
        toa = (toa_us + 999) // 1000
        self.airtime_us += toa_us
        if self.duty_div:
            self._dc_start = now
            self._dc_len = toa * self.duty_div  # ToA + Toff = ToA / duty
        if self.daily_airtime_ms:
            self._bucket = self._drained(now) + toa
            self._bucket_t = now

    # -- events (URC handlers: synchronous) ------------------------------------------

    def _on_reset(self, line):
        clk = self.clock
        now = clk.ticks_ms()
        last = self._reset_t
        self._reset_t = now
        if last is not None and 0 <= clk.ticks_diff(now, last) < 2000:
            return  # another line of the same boot's banner
        self.resets += 1
        self._gen += 1
        self._configured = False
        self._cfm = self._port = None
        if self.state != OFF:
            self.state = DOWN
        self.last_error = MODEM_RESET
        self._event("reset")

    def _event(self, kind):
        if self.on_event is not None:
            try:
                self.on_event(kind)
            except Exception:
                pass

    def _joined(self, ok):
        self._join_result = ok

    def _sent(self, result):
        self._tx_result = result

    def _downlink(self, port, payload, rssi, snr):
        if rssi is not None:
            self.rssi = rssi
            self.snr = snr
        if port is None or port <= 0 or not payload:
            return  # an empty frame (an ack, MAC commands): nothing for the application
        self.downlinks += 1
        if self.on_downlink is not None:
            self.on_downlink(port, payload, rssi, snr)
            return
        if len(self._inbox) >= self.inbox_size:
            self._inbox.pop(0)
            self.dropped += 1
        self._inbox.append((port, payload, rssi, snr))

    def take(self):
        """The oldest downlink waiting, (port, payload, rssi, snr), or None."""
        self.at.poll()
        return self._inbox.pop(0) if self._inbox else None

    async def recv(self, timeout_ms):
        """The next downlink, waiting up to timeout_ms; None when none came."""
        clk = self.clock
        start = clk.ticks_ms()
        while True:
            d = self.take()
            if d is not None or clk.ticks_diff(clk.ticks_ms(), start) >= timeout_ms:
                return d
            await clk.sleep_ms(self.poll_ms)

    # -- helpers ----------------------------------------------------------------------

    async def _wait(self, done, limit_ms, gen, what):
        """Poll until done() is true; LoRaError on a reboot or at the deadline."""
        clk = self.clock
        start = clk.ticks_ms()
        while True:
            self.at.poll()
            if gen != self._gen:
                raise LoRaError(MODEM_RESET, what)
            if done():
                return
            if clk.ticks_diff(clk.ticks_ms(), start) >= limit_ms:
                raise LoRaError(TIMEOUT, what)
            await clk.sleep_ms(self.poll_ms)

    async def _hold(self, ms, gen):
        """Wait ms for the duty cycle; a reboot or a lost join ends the wait early."""
        clk = self.clock
        start = clk.ticks_ms()
        while gen == self._gen and self.state == JOINED:
            left = ms - clk.ticks_diff(clk.ticks_ms(), start)
            if left <= 0:
                return
            self.at.poll()
            await clk.sleep_ms(left if left < self.poll_ms else self.poll_ms)

    async def _acquire(self, limit_ms):
        clk = self.clock
        start = clk.ticks_ms()
        while self._lock:
            if clk.ticks_diff(clk.ticks_ms(), start) >= limit_ms:
                raise LoRaError(BUSY, "another join or uplink in progress")
            self.at.poll()
            await clk.sleep_ms(self.poll_ms)
        self._lock = True

    async def cmd(self, text, timeout_ms=None, secret=None, **kw):
        """One AT command; secret: a name to report instead of the command's text."""
        try:
            return await self.at.command(text, timeout_ms or self.timeouts["at"], **kw)
        except ATReset:
            raise LoRaError(MODEM_RESET, secret or text) from None
        except ATTimeout:
            raise LoRaError(TIMEOUT, secret or text) from None
        except ATCommandError as e:
            if secret is not None:  # the engine's error holds the command: drop it
                raise LoRaError(CONFIG, secret + " refused: " + e.text) from None
            raise

    # -- bring-up ---------------------------------------------------------------------

    async def start(self):
        """Sync, configure (once per modem boot) and join once. Raises LoRaError."""
        gen = self._gen
        if not self._configured:
            self.state = CONFIGURING
            try:
                await self.dialect.sync(self)
                await self.dialect.configure(self)
            except ATCommandError as e:
                raise LoRaError(CONFIG, e.text)
            if gen != self._gen:
                raise LoRaError(MODEM_RESET, "during configuration")
            self._configured = True
        self.state = JOINING
        await self._acquire(self.timeouts["lock"])
        try:
            gen = self._gen
            self._join_result = None
            already = await self.dialect.join(self)
            if not already:
                try:
                    await self._wait(
                        lambda: self._join_result is not None, self.timeouts["join"], gen, "join"
                    )
                except LoRaError as e:
                    # the result event may have been lost on the line: ask the modem
                    if e.reason != TIMEOUT or not await self.dialect.join_state(self):
                        raise
                    self._join_result = True
                if not self._join_result:
                    raise LoRaError(JOIN_FAILED, "no join accept")
        except LoRaError as e:
            if e.reason in (JOIN_FAILED, TIMEOUT):
                self.join_failures += 1
                self._event("join_failed")
            if self.state == JOINING:
                self.state = DOWN
            raise
        except ATCommandError as e:
            self.join_failures += 1
            self.state = DOWN
            raise LoRaError(JOIN_FAILED, e.text)
        finally:
            self._lock = False
        self.state = JOINED
        self.joins += 1
        self.last_error = None
        self._event("joined")
        try:
            await self.query_dr()
        except (LoRaError, ATError):
            pass

    async def query_dr(self):
        """Ask the modem for its uplink data rate (ADR changes it); keeps it in .dr."""
        if self.fixed_dr is not None:
            self.dr = self.fixed_dr
            return self.dr
        dr = await self.dialect.query_dr(self)
        if dr is not None and 0 <= dr < len(self._drs):
            self.dr = dr
        return self.dr

    async def run(self):
        """Keep the modem joined; runs until stop() (or cancel) and never dies."""
        self._stop = False
        clk = self.clock
        while not self._stop:
            if self.state != JOINED:
                await self._bring_up(TIMEOUT)
                continue
            self.at.poll()
            await clk.sleep_ms(self.poll_ms)

    def stop(self):
        self._stop = True

    # -- uplink -----------------------------------------------------------------------

    async def send(self, port, data, confirmed=False, timeout_ms=None):
        """Send one uplink; True when it went (and, confirmed, was acknowledged), False
        for a confirmed uplink the network did not acknowledge. timeout_ms covers the
        duty-cycle hold and the modem's end event. Raises LoRaError: NOT_JOINED,
        TOO_LONG, DUTY_CYCLE (the wait would pass the deadline), BUSY, TIMEOUT,
        MODEM_RESET, SEND_FAILED."""
        if not 1 <= port <= 223:
            raise ValueError("port: 1..223")
        data = bytes(data)
        t = self.timeouts
        end_ms = t["tx_confirmed"] if confirmed else t["tx"]
        if timeout_ms is None:
            timeout_ms = t["hold"] + end_ms
        if self.state != JOINED:
            raise LoRaError(NOT_JOINED)
        clk = self.clock
        start = clk.ticks_ms()
        await self._acquire(timeout_ms if timeout_ms < t["lock"] else t["lock"])
        try:
            gen = self._gen
            if self.fixed_dr is None:
                try:
                    await self.query_dr()
                except (LoRaError, ATCommandError):
                    pass  # the last one known (DR0 before any: the smallest room)
            dr = self.dr if self.dr is not None else 0
            n = len(data)
            room = self.max_payload(dr)
            if n > room:
                self.refused += 1
                raise LoRaError(TOO_LONG, "%d bytes > %d at %s DR%d" % (n, room, self.region, dr))
            wait = self.hold_ms(n, dr)
            left = timeout_ms - clk.ticks_diff(clk.ticks_ms(), start)
            if wait < 0 or wait > left - end_ms:
                self.refused += 1
                if wait < 0:
                    raise LoRaError(DUTY_CYCLE, "longer than the daily airtime budget")
                raise LoRaError(DUTY_CYCLE, "%d ms to wait" % wait)
            if wait:
                await self._hold(wait, gen)
                if gen != self._gen or self.state != JOINED:
                    raise LoRaError(MODEM_RESET if gen != self._gen else NOT_JOINED)
            self._tx_result = None
            try:
                await self.dialect.send(self, port, data, confirmed)
            except ATCommandError as e:
                raise self._send_error(e.text)
            self.uplinks += 1
            sf, bw = self._drs[dr]
            self._charge(time_on_air_us(sf, bw, n))
            try:
                await self._wait(lambda: self._tx_result is not None, end_ms, gen, "uplink")
            except LoRaError:
                self.failed += 1
                raise
            r = self._tx_result
            if r == "failed":
                self.failed += 1
                return False
            if r == "ok":
                self.confirmed += 1
            else:
                self.tx_done += 1
            return True
        finally:
            self._lock = False

    def _send_error(self, text):
        if "NO_NETWORK" in text or "join" in text:
            if self.state == JOINED:
                self.state = DOWN  # run() joins again
            return LoRaError(NOT_JOINED, text)
        if "BUSY" in text or "busy" in text:
            return LoRaError(BUSY, text)
        if "DUTY" in text or "No band" in text:
            self.refused += 1
            return LoRaError(DUTY_CYCLE, text)
        return LoRaError(SEND_FAILED, text)


def parse_int(text):
    text = text.strip()
    neg = text.startswith("-")
    if neg:
        text = text[1:]
    if "." in text:
        text = text.split(".")[0]
    if not text or not text.isdigit():
        return None
    return -int(text) if neg else int(text)


def unhex(text):
    try:
        return binascii.unhexlify(text.strip())
    except (ValueError, TypeError):
        return None
