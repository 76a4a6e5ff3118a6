"""TCP over a cellular modem's AT socket commands, as a socket for umqtt.simple.

Owns the modem: power-on (PWRKEY pulse), SIM and PIN, registration (CREG/CGREG/CEREG,
roaming accepted), the packet data context, TCP sockets, signal quality, and getting all
of it back after a link drop or a modem reboot, with exponential backoff and jitter.

    cell = Cellular(uart, clock, dialect="simcom", apn="iot.apn", pwrkey=Pin(4, Pin.OUT))
    asyncio.create_task(cell.run())          # bring-up, reconnect, data pump, telemetry
    sock = await cell.connect("broker.example", 1883, 60000)  # open() + backoff, jitter
    # then firmware/comms/mqtt/session.py's Session speaks MQTT over it
    cell.telemetry()  # state, reg (+roaming), csq, rssi_dbm, resets, drops, last_error

Dialects, each in its own module loaded by the name the settings give (drivers/dialects.py),
so a meter holds only the code of its modem: "simcom"
(drivers/cellular_simcom.py: A7670/A76xx, SIM7600) and "quectel"
(drivers/cellular_quectel.py: BG95/BG96). A dialect is a `Dialect` object with `links`,
`power_off_cmd`, `net_errors` and `register(m)` (its URCs), `init`, `attach`, `open`,
`send`, `recv`, `unread`, `close` (awaitables taking the Cellular). The AT facts each
relies on, with their manuals: docs/modems.md.

The socket and umqtt.simple (why it is shaped like this). umqtt.simple is synchronous:
`connect()`, `subscribe()` and `publish(qos=1)` write a packet and then read the answer
in the same call, and after the first `wait_msg()` its reads have no timeout at all.
Over a modem the answer needs AT commands (CIPRXGET), which need the asyncio loop, so a
read that waited for the network would stall the meter. So the socket never waits:
`write(buf[, n])` appends to a send buffer (`OSError(ENOBUFS)` past `tx_max`) that
`run()` sends with AT+CIPSEND, and `read(n)` serves only bytes `run()` has already
fetched: exactly n bytes when they are buffered, `None` (non-blocking, nothing there),
`b""` at end of stream, and otherwise `OSError(ETIMEDOUT)` at once, consuming nothing.
That is the socket enforcing its own deadline (zero), and it is the same error a real
socket with a timeout raises, so umqtt cannot block forever. The MQTT layer therefore
calls umqtt only when the bytes are there:

- `await sock.wait_packet(size, ms)` (a whole packet buffered, framed by the caller's
  `size`: the MQTT session's Remaining Length parser), then `client.check_msg()` for
  PUBLISH/PINGRESP, or read the packet itself with `sock.read(n)` for the acks umqtt
  would desynchronise on (docs/modems.md "umqtt.simple");
- `publish(qos=0)`, `ping()`, `disconnect()` only write; `await sock.drain(ms)` after;
- `connect()`, `subscribe()`, `publish(qos=1)` (call them with nothing buffered) write
  their packet and then raise `OSError(ETIMEDOUT)` from the read of the answer (nothing
  consumed); the MQTT layer then waits for CONNACK/SUBACK/PUBACK (pid `client.pid`) with
  `wait_packet` and reads it itself.

`socket.getaddrinfo` returns the host name as is (the modem resolves it) and
`sock.connect(addr)` only checks that `open()` connected it. Every async wait of the
socket and the modem has a deadline; the AT engine polls the UART between short sleeps.
"""

import errno

from drivers.at import ATBusy, ATCommandError, ATEngine, ATError, ATReset, ATTimeout, ints
from drivers import dialects
from drivers.atmodem import ATModem
from drivers.backoff import Backoff

# Modem states
OFF = "off"
STARTING = "starting"
ONLINE = "online"
DOWN = "down"

# CellularError reasons
NO_MODEM = "no_modem"
NO_SIM = "no_sim"
SIM_PIN = "sim_pin"
SIM_PUK = "sim_puk"
SIM_FAILURE = "sim_failure"
NOT_REGISTERED = "not_registered"
DENIED = "denied"
PDP_FAILED = "pdp_failed"
OPEN_FAILED = "open_failed"
LINK_LOST = "link_lost"
MODEM_RESET = "modem_reset"
MODEM_TIMEOUT = "modem_timeout"
SEND_FAILED = "send_failed"
PEER_CLOSED = "peer_closed"

# Socket states
_OPENING = 0
_OPEN = 1
_CLOSING = 2  # close() called: flush, then AT close
_CLOSED = 3

# Defaults in ms (docs/modems.md "Timeouts"); override any with Cellular(timeouts={...})
TIMEOUTS = {
    "at": 5000,  # simple commands
    "probe": 1500,  # is the modem on already?
    "boot": 20000,  # power-on to answering AT
    "pwrkey_on": 500,  # PWRKEY pulse to switch on (A7670/SIM7600 >= 100 ms, BG95 >= 500)
    "pwrkey_off": 3000,  # PWRKEY held to switch off (SIMCom >= 2.5 s, BG95 >= 650 ms)
    "off_wait": 3000,  # after the off pulse, before switching on again
    "sim": 10000,  # SIM busy (+CME 14 / 515) retries
    "reg": 180000,  # registration
    "reg_poll": 2000,
    "pdp": 150000,  # AT+NETOPEN result / AT+QIACT
    "pdp_close": 60000,  # AT+NETCLOSE / AT+QIDEACT
    "open": 75000,  # TCP open result (SIMCom 75 s, Quectel up to 150 s)
    "prompt": 5000,  # '>' after AT+CIPSEND / AT+QISEND / AT+CMGS
    "sms": 60000,  # AT+CMGS: the network's answer (+CMGS: <mr>)
    "send": 15000,
    "recv": 10000,
    "close": 10000,
    "rx_check": 10000,  # ask for unread data if no URC came for this long
    "telemetry": 60000,  # CSQ and registration refresh while online
}


class CellularError(Exception):
    """A bring-up or socket failure; `reason` is one of the module's reason constants."""

    def __init__(self, reason, detail=None):
        super().__init__(reason if detail is None else reason + ": " + str(detail))
        self.reason = reason


def sms_number_ok(number):
    """+ (optional) and 3..15 digits: an E.164 number or a short code."""
    if not isinstance(number, str):
        return False
    digits = number[1:] if number.startswith("+") else number
    return 3 <= len(digits) <= 15 and all("0" <= c <= "9" for c in digits)


def csq_to_dbm(rssi):
    """AT+CSQ <rssi> 0..31 -> dBm (-113 + 2 rssi); 99 (unknown) or out of range -> None."""
    if rssi is None or rssi < 0 or rssi > 31:
        return None
    return -113 + 2 * rssi


class ModemSocket:
    """One TCP connection through the modem, with umqtt.simple's socket calls.

    Synchronous calls never wait (see the module docstring); `wait_readable`,
    `wait_packet`, `drain` and `aclose` are the awaitable side, each with a deadline.
    """

    def __init__(self, modem, link, host, port, rx_max=4096, tx_max=4096):
        self._modem = modem
        self.link = link
        self.addr = (host, port)
        self.rx_max = rx_max
        self.tx_max = tx_max
        self._rx = bytearray()
        self._tx = bytearray()
        self._blocking = True
        self.timeout = None  # settimeout() value, seconds; the default for the waits
        self.state = _OPENING
        self.error = None  # reason the connection ended (PEER_CLOSED, LINK_LOST, ...)
        self.open_error = None
        self.rx_pending = False  # the modem holds unread data for us
        self.eof = False
        self.last_rx_ms = None
        self.sent = 0
        self.received = 0
        self.send_fails = 0

    # -- what umqtt.simple calls ------------------------------------------------------

    def settimeout(self, t):
        self.timeout = t

    def setblocking(self, flag):
        self._blocking = bool(flag)

    def connect(self, addr):
        if self.state != _OPEN:
            raise OSError(errno.ENOTCONN)

    def write(self, buf, n=None):
        if self.state != _OPEN:
            raise OSError(errno.ECONNRESET if self.error else errno.ENOTCONN)
        if isinstance(buf, str):
            buf = buf.encode()
        if n is None:
            n = len(buf)
        if len(self._tx) + n > self.tx_max:
            raise OSError(errno.ENOBUFS)
        self._tx.extend(memoryview(buf)[:n])
        return n

    def read(self, n):
        rx = self._rx
        have = len(rx)
        if have >= n:
            return self._take(n)
        if self._ended():
            if have:
                return self._take(have)
            if self.eof and self.error == PEER_CLOSED:
                return b""
            raise OSError(errno.ECONNRESET if self.error else errno.ENOTCONN)
        if not self._blocking:
            return self._take(have) if have else None
        raise OSError(errno.ETIMEDOUT)

    def readinto(self, buf, n=None):
        if n is None:
            n = len(buf)
        have = len(self._rx)
        k = n if n < have else have
        if not k:
            d = self.read(n)  # raises or returns b"" / None like read()
            return None if d is None else 0
        buf[:k] = self._rx[:k]
        self._rx[:k] = b""
        return k

    def close(self):
        if self.state == _OPEN or self.state == _OPENING:
            self.state = _CLOSING

    # -- awaitable side ---------------------------------------------------------------

    @property
    def is_open(self):
        return self.state == _OPEN

    def any(self):
        """Bytes buffered for read()."""
        return len(self._rx)

    def peek(self, n=None):
        return bytes(self._rx if n is None else self._rx[:n])

    def pending_tx(self):
        return len(self._tx)

    def _ended(self):
        # no more bytes will come: closed, or the peer closed and the modem has no more
        return self.state == _CLOSED or (self.eof and not self.rx_pending)

    def _take(self, n):
        d = bytes(self._rx[:n])
        self._rx[:n] = b""
        return d

    def _deadline(self, timeout_ms):
        if timeout_ms is None:
            if self.timeout is not None:
                return int(self.timeout * 1000)
            return self._modem.timeouts["recv"]
        return timeout_ms

    async def wait_readable(self, n=1, timeout_ms=None):
        """Wait until n bytes are buffered (or the stream ended); returns the count
        buffered. Raises OSError(ETIMEDOUT) at the deadline."""
        limit = self._deadline(timeout_ms)
        clk = self._modem.clock
        start = clk.ticks_ms()
        while len(self._rx) < n:
            if self._ended():
                return len(self._rx)
            if clk.ticks_diff(clk.ticks_ms(), start) >= limit:
                raise OSError(errno.ETIMEDOUT)
            await clk.sleep_ms(self._modem.poll_ms)
        return len(self._rx)

    async def wait_packet(self, size, timeout_ms=None):
        """Wait until a whole packet is buffered; returns its length. size(buf): the
        protocol's framing, the length of the first whole packet in buf or 0 while it is
        incomplete, ValueError when it cannot be framed (then OSError(EIO)); the MQTT
        session gives firmware/comms/mqtt/packet.size, so the Remaining Length has one
        parser and this driver knows nothing of MQTT. At the end of the stream raises
        OSError(ECONNRESET) (or returns 0 after a clean peer close with nothing left);
        OSError(ETIMEDOUT) at the deadline."""
        limit = self._deadline(timeout_ms)
        clk = self._modem.clock
        start = clk.ticks_ms()
        while True:
            try:
                k = size(self._rx)
            except ValueError:
                raise OSError(errno.EIO)
            if k:
                return k
            if self._ended():
                if not self._rx and self.error == PEER_CLOSED:
                    return 0
                raise OSError(errno.ECONNRESET)
            if clk.ticks_diff(clk.ticks_ms(), start) >= limit:
                raise OSError(errno.ETIMEDOUT)
            await clk.sleep_ms(self._modem.poll_ms)

    async def drain(self, timeout_ms=None):
        """Wait until everything written has been handed to the modem."""
        limit = self._deadline(timeout_ms)
        clk = self._modem.clock
        start = clk.ticks_ms()
        while self._tx:
            if self.state == _CLOSED:
                raise OSError(errno.ECONNRESET if self.error else errno.ENOTCONN)
            if clk.ticks_diff(clk.ticks_ms(), start) >= limit:
                raise OSError(errno.ETIMEDOUT)
            await clk.sleep_ms(self._modem.poll_ms)

    async def aclose(self, timeout_ms=None):
        """close(), then wait until the modem has closed the link (or the deadline)."""
        self.close()
        limit = self._deadline(timeout_ms)
        clk = self._modem.clock
        start = clk.ticks_ms()
        while self.state != _CLOSED and clk.ticks_diff(clk.ticks_ms(), start) < limit:
            await clk.sleep_ms(self._modem.poll_ms)
        if self.state != _CLOSED:
            self._modem._forget(self, None)

    def _fail(self, reason):
        if self.state != _CLOSED:
            self.state = _CLOSED
            if self.error is None:
                self.error = reason


class Cellular(ATModem):
    """The modem: bring-up, reconnect with backoff, sockets, telemetry.

    uart: machine.UART-like (write, read, any) with timeout=0 and rxbuf >= 2048; `baud`
    paces data writes so uart.write never waits for the TX FIFO (0: no pacing, the sim).
    clock: ticks_ms, ticks_diff, async sleep_ms. pwrkey: machine.Pin-like output that
    presses PWRKEY when set to pwrkey_active (1 through the usual NPN stage), or None.
    """

    def __init__(
        self,
        uart,
        clock,
        dialect="simcom",
        apn="",
        user="",
        password="",
        pin=None,
        pwrkey=None,
        pwrkey_active=1,
        timeouts=None,
        backoff=None,
        poll_ms=10,
        baud=115200,
        max_chunk=1460,
        rx_max=4096,
        tx_max=4096,
        at=None,
        rand=None,
    ):
        self.clock = clock
        self.poll_ms = poll_ms
        self.apn = apn
        self.user = user
        self.password = password
        self.pin = pin
        self.pwrkey = pwrkey
        self.pwrkey_active = 1 if pwrkey_active else 0
        if pwrkey is not None:
            pwrkey.value(1 - self.pwrkey_active)
        t = dict(TIMEOUTS)
        if timeouts:
            t.update(timeouts)
        self.timeouts = t
        self.backoff = backoff or Backoff(rand=rand)  # modem bring-up retries
        self.open_backoff = Backoff(1000, 60000, rand=rand)  # connect() retries
        self.max_chunk = max_chunk
        self.rx_max = rx_max
        self.tx_max = tx_max
        self.at = at or ATEngine(uart, clock, poll_ms=poll_ms if poll_ms < 5 else 5, baud=baud)
        self.at.on_reset = self._on_reset
        self.dialect = dialects.load("cellular", dialect)
        self.state = OFF
        self.reg = None  # registration <stat> 0..5 (best of CREG/CGREG/CEREG)
        self.roaming = False
        self.csq = None
        self.rssi_dbm = None
        self.last_error = None  # reason of the last failure
        self.resets = 0  # modem reboots seen
        self.drops = 0  # link losses while online
        self.sms_sent = 0
        self.bringups = 0
        self.next_retry_ms = None
        self._socks = {}  # link id -> ModemSocket
        self._gen = 0  # bumped by every reboot / link loss
        self._pdp_result = None
        self._regs = {}  # "CREG"/"CGREG"/"CEREG" -> last <stat>
        self._powering = False
        self._pin_rejected = False
        self._timeouts_in_row = 0
        self._open_fails = 0
        self._last_tel = None
        self._stop = False
        self.dialect.register(self)

    # -- telemetry --------------------------------------------------------------------

    def telemetry(self):
        return {
            "state": self.state,
            "reg": self.reg,
            "roaming": self.roaming,
            "csq": self.csq,
            "rssi_dbm": self.rssi_dbm,
            "resets": self.resets,
            "drops": self.drops,
            "bringups": self.bringups,
            "last_error": self.last_error,
        }

    async def signal(self):
        """AT+CSQ -> dBm (None when unknown); also kept in .csq / .rssi_dbm."""
        r = await self.at.command("AT+CSQ", self.timeouts["at"])
        v = ints(r.first("+CSQ:") or "")
        self.csq = v[0] if v else None
        self.rssi_dbm = csq_to_dbm(self.csq)
        return self.rssi_dbm

    async def send_sms(self, number, text):
        """Send a text-mode SMS (3GPP TS 27.005, the same on SIMCom and Quectel):
        AT+CMGF=1, AT+CSCS="IRA", AT+CMGS="<number>", the `>` prompt, the text and
        Ctrl-Z; returns the message reference of `+CMGS: <mr>`. `number` is +digits
        (3..15), `text` printable ASCII of at most 160 characters (one GSM 7-bit
        message). Needs registration, not a data connection. Raises ValueError for a
        bad number or text, ATCommandError (+CMS ERROR n) or ATTimeout from the modem."""
        if not sms_number_ok(number):
            raise ValueError("sms: bad number " + repr(number))
        if not 0 < len(text) <= 160 or not all(32 <= ord(c) < 127 for c in text):
            raise ValueError("sms: text must be 1..160 printable ASCII characters")
        at = self.at
        t = self.timeouts
        await at.command("AT+CMGF=1", t["at"])
        await at.command('AT+CSCS="IRA"', t["at"])
        r = await at.command(
            'AT+CMGS="%s"' % number,
            t["sms"],
            done="+CMGS:",
            data=text.encode() + b"\x1a",
            prompt_ms=t["prompt"],
        )
        v = ints(r.first("+CMGS:") or "")
        self.sms_sent += 1
        return v[0] if v else None

    async def registration(self):
        """Best registration <stat> of AT+CREG?/CGREG?/CEREG? (1 home, 5 roaming,
        2 searching, 3 denied, 0 not searching, 4 unknown); kept in .reg."""
        for name in ("CEREG", "CGREG", "CREG"):
            try:
                r = await self.at.command("AT+" + name + "?", self.timeouts["at"])
            except ATCommandError:
                continue  # not supported on this RAT / module
            v = ints(r.first("+" + name + ":") or "")
            self._regs[name] = v[1] if len(v) > 1 else (v[0] if v else None)
            if self._regs[name] in (1, 5):
                break
        return self._best()

    def _best(self):
        best = None
        for stat in self._regs.values():
            if stat == 1 or stat == 5:
                best = stat
                break
            if stat is not None and (best is None or stat == 3 or best == 0 or best == 4):
                best = stat
        self.reg = best
        self.roaming = best == 5
        return best

    def _urc_reg(self, line):
        # "+CEREG: <stat>[,<tac>,<ci>,<AcT>]" (URC form: the first field is the stat)
        i = line.find(":")
        v = ints(line[i + 1 :])
        if v and v[0] is not None:
            self._regs[line[1:i]] = v[0]
            self._best()

    def _urc_cpin(self, line):
        # "+CPIN: READY" is a boot banner for the engine; anything else unsolicited while
        # online means the SIM went away ("+CPIN: SIM REMOVED", "+CPIN: NOT READY")
        if self.state == ONLINE:
            self._lost(NO_SIM)

    # -- state changes (called from URC handlers: synchronous) -----------------------

    def _on_reset(self, line):
        if self._powering:
            return  # the boot we asked for
        self.resets += 1
        self._lost(MODEM_RESET)

    def _lost(self, reason):
        self._gen += 1
        if self.state == ONLINE:
            self.drops += 1
        if self.state != OFF:
            self.state = DOWN
        self.last_error = reason
        for s in list(self._socks.values()):
            s.open_error = reason
            s._fail(reason)
        self._socks = {}

    def _forget(self, sock, reason):
        if reason is not None:
            sock._fail(reason)
        else:
            sock.state = _CLOSED
        if self._socks.get(sock.link) is sock:
            del self._socks[sock.link]

    # -- power ------------------------------------------------------------------------

    async def _pulse(self, ms):
        self.pwrkey.value(self.pwrkey_active)
        try:
            await self.clock.sleep_ms(ms)
        finally:
            self.pwrkey.value(1 - self.pwrkey_active)

    async def power_on(self):
        """Make the modem answer AT: probe, else PWRKEY on; if still silent (hung), PWRKEY
        off, wait, on again. Raises CellularError(NO_MODEM)."""
        self._powering = True
        try:
            await self._power_on()
        finally:
            self._powering = False

    async def _power_on(self):
        t = self.timeouts
        try:
            await self.at.sync(t["probe"])
            return
        except ATTimeout:
            pass
        if self.pwrkey is None:
            raise CellularError(NO_MODEM, "no answer to AT and no PWRKEY pin")
        await self._pulse(t["pwrkey_on"])
        try:
            await self.at.sync(t["boot"])
            return
        except ATTimeout:
            pass
        await self._pulse(t["pwrkey_off"])
        await self._idle(t["off_wait"])
        await self._pulse(t["pwrkey_on"])
        try:
            await self.at.sync(t["boot"])
        except ATTimeout:
            raise CellularError(NO_MODEM, "no answer after power cycle")

    async def power_off(self):
        """Switch the modem off with its AT command (PWRKEY long press if it is silent)."""
        self._stop = True
        self._lost(OFF)
        try:
            await self.at.command(self.dialect.power_off_cmd, self.timeouts["at"])
        except ATError:
            if self.pwrkey is not None:
                await self._pulse(self.timeouts["pwrkey_off"])
        self.state = OFF

    # -- bring-up ---------------------------------------------------------------------

    async def start(self):
        """One bring-up: power, AT init, SIM, registration, packet data. Raises
        CellularError (or ATError) on failure; leaves the modem ONLINE on success."""
        self.state = STARTING
        self.bringups += 1
        try:
            await self.power_on()
            await self.at.init(self.timeouts["at"])
            gen = self._gen  # a reboot from here on undoes the bring-up
            await self.dialect.init(self)
            await self._check_sim()
            await self._wait_registered()
            await self.signal()
            await self.dialect.attach(self)
        except ATReset:
            raise CellularError(MODEM_RESET, "during bring-up")
        except ATTimeout as e:
            raise CellularError(MODEM_TIMEOUT, e)
        except ATCommandError as e:
            raise CellularError(PDP_FAILED, e)
        if gen != self._gen:  # a reboot or link loss went by between two commands
            raise CellularError(self.last_error or MODEM_RESET, "during bring-up")
        self.state = ONLINE
        self.last_error = None
        self._timeouts_in_row = 0
        self._last_tel = self.clock.ticks_ms()

    async def _check_sim(self):
        clk = self.clock
        start = clk.ticks_ms()
        wait = 200
        tried_pin = False
        while True:
            try:
                r = await self.at.command("AT+CPIN?", self.timeouts["at"])
                st = r.first("+CPIN:")
            except ATCommandError as e:
                if e.code == 10:
                    raise CellularError(NO_SIM, "SIM not inserted")
                if e.code == 13 or e.code == 15:
                    raise CellularError(SIM_FAILURE, e.text)
                st = None  # 14 SIM busy, 515 init in progress, plain ERROR: wait
            if st == "READY":
                return
            if st == "SIM PIN":
                if self.pin is None or self._pin_rejected or tried_pin:
                    raise CellularError(SIM_PIN, "PIN required")
                tried_pin = True
                try:
                    await self.at.command('AT+CPIN="%s"' % self.pin, self.timeouts["at"])
                except ATCommandError:
                    self._pin_rejected = True  # never retry a wrong PIN: that locks the SIM
                    raise CellularError(SIM_PIN, "PIN rejected")
                self.at.hold_banners()  # "+CPIN: READY", "SMS DONE" follow: not a reboot
                continue
            if st is not None and "PUK" in st:
                raise CellularError(SIM_PUK, st)
            if clk.ticks_diff(clk.ticks_ms(), start) >= self.timeouts["sim"]:
                raise CellularError(NO_SIM, st or "SIM not ready")
            await self._idle(wait)
            wait = wait * 2 if wait < 2000 else 2000

    async def _wait_registered(self):
        clk = self.clock
        start = clk.ticks_ms()
        while True:
            stat = await self.registration()
            if stat == 1 or stat == 5:
                return
            if clk.ticks_diff(clk.ticks_ms(), start) >= self.timeouts["reg"]:
                if stat == 3:
                    raise CellularError(DENIED, "registration denied")
                raise CellularError(NOT_REGISTERED, "stat %s" % stat)
            await self._idle(self.timeouts["reg_poll"])

    async def wait_online(self, timeout_ms):
        clk = self.clock
        start = clk.ticks_ms()
        while self.state != ONLINE:
            if clk.ticks_diff(clk.ticks_ms(), start) >= timeout_ms:
                raise CellularError(self.last_error or NOT_REGISTERED, "not online")
            await clk.sleep_ms(self.poll_ms)

    # -- the service task -------------------------------------------------------------

    async def run(self):
        """Keep the modem online and move socket data; runs until stop() (or cancel)."""
        self._stop = False
        clk = self.clock
        while not self._stop:
            if self.state != ONLINE:
                await self._bring_up(MODEM_TIMEOUT)
                continue
            try:
                await self._service()
            except ATReset:
                pass  # _on_reset already took the state down
            except ATBusy:
                pass  # another task's command: not the modem's fault
            except ATTimeout:
                self._timeouts_in_row += 1
                if self._timeouts_in_row >= 3:
                    self._lost(MODEM_TIMEOUT)  # hung: the next bring-up power-cycles it
                continue
            except ATCommandError:
                pass  # a telemetry query refused
            except Exception:  # e.g. a reply that does not parse
                self._timeouts_in_row += 1
            await clk.sleep_ms(self.poll_ms)

    def stop(self):
        self._stop = True

    async def _service(self):
        self.at.poll()
        if self.at.busy:
            return  # open() or a query is using the engine: URCs were read above
        clk = self.clock
        now = clk.ticks_ms()
        for s in list(self._socks.values()):
            if self.state != ONLINE:
                return
            await self._pump(s, now)
        if (
            self._last_tel is None
            or clk.ticks_diff(now, self._last_tel) >= self.timeouts["telemetry"]
        ):
            self._last_tel = now
            await self.signal()
            await self.registration()
        self._timeouts_in_row = 0

    async def _pump(self, s, now):
        d = self.dialect
        clk = self.clock
        if s.state == _OPEN or s.state == _CLOSING:
            if s._tx:
                try:
                    await d.send(self, s)
                except ATCommandError as e:
                    if e.kind == "SEND FAIL" and s.send_fails < 5:
                        s.send_fails += 1  # modem send buffer full: later
                    else:
                        await self._close_link(s, SEND_FAILED)
                        return
            if not s.rx_pending and s.state == _OPEN:
                last = s.last_rx_ms
                if last is None or clk.ticks_diff(now, last) >= self.timeouts["rx_check"]:
                    s.last_rx_ms = now
                    try:
                        if await d.unread(self, s):
                            s.rx_pending = True
                    except ATCommandError:
                        pass
        if s.rx_pending and len(s._rx) < s.rx_max:
            # Cleared before the read, not after: a URC that comes while the read is on
            # its way (new data behind it) sets it again and must not be lost.
            s.rx_pending = False
            try:
                await d.recv(self, s)
            except ATCommandError:
                pass
            s.last_rx_ms = now
        if s.state == _CLOSING and not s._tx:
            await self._close_link(s, None)
        elif s.eof and not s.rx_pending and self._socks.get(s.link) is s:
            await self._close_link(s, PEER_CLOSED)

    async def _close_link(self, s, reason):
        try:
            await self.dialect.close(self, s)
        except ATCommandError:
            pass
        self._forget(s, reason)

    # -- sockets ----------------------------------------------------------------------

    async def open(self, host, port, timeout_ms=None):
        """Open a TCP connection; returns a connected ModemSocket. Waits for the modem to
        be online first (within the same deadline). Raises CellularError."""
        clk = self.clock
        limit = self.timeouts["open"] if timeout_ms is None else timeout_ms
        start = clk.ticks_ms()
        await self.wait_online(limit)
        link = None
        for i in range(self.dialect.links):
            if i not in self._socks:
                link = i
                break
        if link is None:
            raise CellularError(OPEN_FAILED, "no free link")
        s = ModemSocket(self, link, host, port, self.rx_max, self.tx_max)
        self._socks[link] = s
        gen = self._gen
        try:
            await self.dialect.open(self, s, self.timeouts["at"])
            while s.state == _OPENING:
                if gen != self._gen:
                    raise CellularError(self.last_error or LINK_LOST, "while opening")
                if clk.ticks_diff(clk.ticks_ms(), start) >= limit:
                    raise CellularError(OPEN_FAILED, "timeout")
                self.at.poll()
                await clk.sleep_ms(self.poll_ms)
            if s.state != _OPEN:
                raise CellularError(OPEN_FAILED, s.open_error)
        except (CellularError, ATError) as e:
            if self._socks.get(link) is s:
                try:
                    await self.dialect.close(self, s)
                except ATError:
                    pass
            self._forget(s, OPEN_FAILED)
            if isinstance(e, CellularError):
                raise
            raise CellularError(OPEN_FAILED, e)
        s.last_rx_ms = clk.ticks_ms()
        return s

    async def connect(self, host, port, timeout_ms):
        """open() again and again with exponential backoff and jitter until it works or
        timeout_ms passes (then the last CellularError is raised)."""
        clk = self.clock
        start = clk.ticks_ms()
        while True:
            left = timeout_ms - clk.ticks_diff(clk.ticks_ms(), start)
            try:
                s = await self.open(host, port, left if left > 0 else 1)
                self.open_backoff.reset()
                return s
            except CellularError as e:
                d = self.open_backoff.next_ms()
                left = timeout_ms - clk.ticks_diff(clk.ticks_ms(), start)
                if left <= d:
                    raise e
                await self._idle(d)

    def _sock(self, line_tail):
        v = ints(line_tail)
        if not v or v[0] is None:
            return None, v
        return self._socks.get(v[0]), v

    def _opened(self, s, err):
        if s is None or s.state != _OPENING:
            return
        if err == 0:
            s.state = _OPEN
            self._open_fails = 0
            return
        s.open_error = err
        s.state = _CLOSED
        s.error = OPEN_FAILED
        self._open_fails += 1
        if err in self.dialect.net_errors or self._open_fails >= 3:
            self._lost(LINK_LOST)  # the packet context is gone: attach again
