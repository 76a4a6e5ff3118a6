"""Cellular modem model on a SimUART: SIMCom (A7670/SIM7600) and Quectel (BG95/BG96) TCP.

Answers the AT commands drivers/cellular.py uses, keeps power, echo, SIM, registration,
packet-data and socket state, and opens REAL non-blocking TCP connections (to 127.0.0.1
in the tests) for AT+CIPOPEN / AT+QIOPEN, forwarding data both ways with the receive
URCs (`+CIPRXGET: 1,<link>` once until the buffer is drained, `+QIURC: "recv",<id>`).
It runs under CPython and MicroPython's unix port (`socket`, `select.poll`), has no task
of its own and never blocks: SimUART calls `poll()` on every firmware UART call, which
emits the replies that are due by the injected clock and moves the network bytes. Use a
real-time clock (drivers.clock.Clock) when real sockets are involved; a VirtualClock is
fine for everything else (registration, SIM, faults without TCP).

Fault switches (attributes, change them any time) and actions:
    sim = "ready" | "absent" | "pin" | "puk";  sim_busy = n  (+CME ERROR: 14 n times)
    reg = 1 home | 5 roaming | 2 searching | 3 denied | 0 none   (or set_reg(stat): URCs)
    slow_ms = n         every reply n ms late
    mute = True         hung: reads nothing, answers nothing (PWRKEY off/on revives it)
    no_prompt = True    AT+CIPSEND / AT+QISEND never get their '>'
    reboot_on_send = True   the next send's payload is cut halfway by a modem reboot
    open_error = n      TCP opens fail with this code while it is set (0: they work)
    garbage_every_ms = n    a noise line (printable or not) every n ms, between replies
    urc_mid_read = n    in the next n binary reads the second half of the data arrives
                        from the network while the reply is on the wire: the read serves
                        the first half (nothing more in the buffer yet) and SIMCom's
                        `+CIPRXGET: 1,<link>` for the rest comes between the data and
                        the OK (Quectel's buffer mode sends no URC before the buffer is
                        drained; the driver reads until +QIRD: 0); counted in mid_reads
    drop_link(silent=False)  network lost: TCP connections die, +CIPEVENT / pdpdeact URC
    reboot(delay_ms=0)  modem resets: all state lost, boot banners after boot_ms
    garbage(data)       inject one noise line now
Counters: commands, reboots, opens, bytes_up, bytes_down.
"""

import errno
import select
import socket

from tools.sim.atmodel import ATModel

_SIMCOM_BANNERS = {
    "a7670": ("*ATREADY: 1", "+CPIN: READY", "SMS DONE", "PB DONE"),
    "sim7600": ("RDY", "+CPIN: READY", "SMS DONE", "PB DONE"),
}
_QUECTEL_BANNERS = ("RDY", "+CFUN: 1", "+CPIN: READY", "+QUSIM: 1", "+QIND: SMS DONE")
_BUSY = (getattr(errno, "EINPROGRESS", 115), errno.EAGAIN, getattr(errno, "EWOULDBLOCK", 11))


class _Conn:
    def __init__(self, link):
        self.link = link
        self.sock = None
        self.poller = None
        self.state = "connecting"  # "open", "closed"
        self.rx = bytearray()
        self.tx = bytearray()
        self.notified = False
        self.eof = False
        self.close_reported = False


class ModemModel(ATModel):
    def __init__(
        self,
        uart,
        clock,
        dialect="simcom",
        variant=None,
        powered=True,
        pwrkey=None,
        pwrkey_active=1,
        boot_ms=2000,
        net_ms=50,
        rx_cap=65536,
    ):
        self.uart = uart
        self.clock = clock
        self.dialect = dialect
        if dialect == "simcom":
            self.banners = _SIMCOM_BANNERS[variant or "a7670"]
            self.off_min_ms = 2500
        elif dialect == "quectel":
            self.banners = _QUECTEL_BANNERS
            self.off_min_ms = 650
        else:
            raise ValueError("dialect")
        self.on_min_ms = 100
        self.boot_ms = boot_ms
        self.net_ms = net_ms
        self.rx_cap = rx_cap
        self.pwrkey_active = pwrkey_active
        self._start_output(clock)
        self._pressed = None
        # faults
        self.sim = "ready"
        self.sim_pin = "1234"
        self.sim_busy = 0
        self.reg = 1
        self.csq = 20
        self.slow_ms = 0
        self.mute = False
        self.no_prompt = False
        self.reboot_on_send = False
        self.sms_error = 0  # +CMS ERROR code for the next AT+CMGS (0: sent)
        self.sms = []  # (number, text) of every SMS sent
        self._sms_to = None  # number of an AT+CMGS whose text is being received
        self._sms_text = None
        self.cmgf = 0
        self.open_error = 0
        self.urc_mid_read = 0
        # counters
        self.mid_reads = 0
        self.commands = 0
        self.reboots = 0
        self.opens = 0
        self.bytes_up = 0
        self.bytes_down = 0
        self.log = []  # commands received, for tests (last 200)
        self._reset_state()
        self.powered = powered
        self.booting = False
        uart.attach(self)
        if pwrkey is not None:
            pwrkey.watchers.append(self._pwrkey)

    # -- state ------------------------------------------------------------------------

    def _reset_state(self):
        for c in list(getattr(self, "conns", {}).values()):
            self._kill(c)
        self.conns = {}
        self.echo = True
        self.cmee = 0
        self.urc_reg = {"CREG": 0, "CGREG": 0, "CEREG": 0}
        self.apn = None
        self.net_open = False  # SIMCom NETOPEN / Quectel QIACT
        self.manual_rx = False
        self._cmd = bytearray()
        self._data_left = 0
        self._data = None
        self._data_done = None
        self._out = []
        self._timers = []
        self._pin_ok = self.sim != "pin"

    def _kill(self, c, flush=False):
        if flush and c.sock is not None and c.tx and c.state == "open":
            try:  # a local close sends what was accepted first (loopback: all of it)
                c.sock.send(c.tx)
            except OSError:
                pass
        if c.sock is not None:
            try:
                c.sock.close()
            except OSError:
                pass
            c.sock = None
        c.state = "closed"

    # -- output -----------------------------------------------------------------------

    def _ok(self):
        self._line("OK")

    def _error(self, code=None):
        if code is not None and self.cmee:
            self._line("+CME ERROR: %d" % code)
        else:
            self._line("ERROR")

    # -- power ------------------------------------------------------------------------

    def _pwrkey(self, pin, v):
        pressed = (v == 1) == (self.pwrkey_active == 1)
        now = self._now()
        if pressed:
            self._pressed = now
            return
        if self._pressed is None:
            return
        held = now - self._pressed
        self._pressed = None
        if self.powered and held >= self.off_min_ms:
            self._power_down()
        elif not self.powered and held >= self.on_min_ms:
            self.powered = True
            self.mute = False
            self._boot()

    def _power_down(self):
        self._line("NORMAL POWER DOWN" if self.dialect == "simcom" else "POWERED DOWN")
        self._flush_due(force=True)
        self._reset_state()
        self.powered = False
        self.booting = False

    def _boot(self):
        self._reset_state()
        self.booting = True
        self._after(self.boot_ms, self._booted)

    def _booted(self):
        self.booting = False
        step = 0
        for b in self.banners:
            if "CPIN" in b and self.sim != "ready":
                b = "+CPIN: SIM PIN" if self.sim == "pin" else None
            if b:
                self._line(b, step)
                step += 30

    def reboot(self, delay_ms=0):
        """The modem resets (brown-out, watchdog): all state lost, banners after boot_ms."""
        if delay_ms:
            self._after(delay_ms, self.reboot)
            return
        self.reboots += 1
        self.powered = True
        self._boot()

    def set_reg(self, stat):
        self.reg = stat
        for name, n in self.urc_reg.items():
            if n:
                self._line("+%s: %d" % (name, stat))

    def drop_link(self, silent=False):
        """Network lost: every TCP connection dies; the packet context is gone."""
        was = self.net_open
        self.net_open = False
        for c in self.conns.values():
            self._kill(c)
            c.close_reported = True
        if silent or not was:
            return
        if self.dialect == "simcom":
            self._line("+CIPEVENT: NETWORK CLOSED UNEXPECTEDLY")
        else:
            self._line('+QIURC: "pdpdeact",1')

    # -- input ------------------------------------------------------------------------

    def on_rx(self, data):
        if not self.powered or self.booting or self.mute:
            return
        i = 0
        n = len(data)
        while i < n:
            if self._sms_text is not None:  # AT+CMGS text: up to Ctrl-Z, ESC cancels
                b = data[i]
                i += 1
                if b == 0x1A:
                    self._sms_done(bytes(self._sms_text))
                elif b == 0x1B:
                    self._sms_text = self._sms_to = None
                    self._ok()
                elif len(self._sms_text) < 1024:
                    self._sms_text.append(b)
                continue
            if self._data_left:
                k = min(self._data_left, n - i)
                self._data.extend(data[i : i + k])
                self._data_left -= k
                i += k
                if self.reboot_on_send and len(self._data) * 2 >= self._data_total:
                    self.reboot_on_send = False
                    self._data_left = 0
                    self.reboot()
                    return
                if not self._data_left:
                    fn, d = self._data_done, bytes(self._data)
                    self._data_done = self._data = None
                    fn(d)
                continue
            b = data[i]
            i += 1
            if b == 13:
                try:
                    line = bytes(self._cmd).decode().strip()
                except UnicodeError:
                    line = "?"
                self._cmd = bytearray()
                if line:
                    if self.echo:
                        self._emit(line.encode() + b"\r")
                    self._command(line)
            elif b != 10:
                if len(self._cmd) < 1024:
                    self._cmd.append(b)

    def _expect_data(self, n, fn):
        if self.no_prompt:
            return  # the command is swallowed: no prompt, no reply
        self._data_left = n
        self._data_total = n
        self._data = bytearray()
        self._data_done = fn
        self._emit(b"\r\n> ")

    def _command(self, line):
        self.commands += 1
        self.log.append(line)
        if len(self.log) > 200:
            self.log = self.log[-100:]
        u = line.upper()
        if not u.startswith("AT"):
            return self._error()
        if u == "AT":
            return self._ok()
        if u in ("ATE0", "ATE1"):
            self.echo = u == "ATE1"
            return self._ok()
        name, arg = _split(line)
        fn = getattr(self, "_at_" + name.lstrip("+"), None)
        if fn is None:
            return self._error()
        fn(arg)

    # -- common commands --------------------------------------------------------------

    def _at_CMEE(self, arg):
        self.cmee = _ints(arg)[0] if arg else 0
        self._ok()

    def _at_CPIN(self, arg):
        if arg == "?":
            if self.sim == "absent":
                return self._error(10)
            if self.sim == "puk":
                self._line("+CPIN: SIM PUK")
                return self._ok()
            if self.sim_busy > 0:
                self.sim_busy -= 1
                return self._error(14)
            self._line("+CPIN: READY" if self._pin_ok else "+CPIN: SIM PIN")
            return self._ok()
        if self.sim != "pin" or self._pin_ok:
            return self._error(3)
        if arg.strip('"') != self.sim_pin:
            return self._error(16)
        self._pin_ok = True
        self._ok()
        self._line("+CPIN: READY", 20)
        self._line("SMS DONE", 40)

    def _sim_ok(self):
        return self.sim not in ("absent", "puk") and self._pin_ok

    def _at_CSQ(self, arg):
        self._line("+CSQ: %d,99" % (self.csq if self._sim_ok() else 99))
        self._ok()

    def _reg(self, name, arg):
        if arg == "?":
            stat = self.reg if self._sim_ok() else 0
            self._line("+%s: %d,%d" % (name, self.urc_reg[name], stat))
            return self._ok()
        self.urc_reg[name] = _ints(arg)[0] if arg else 0
        self._ok()

    def _at_CREG(self, arg):
        self._reg("CREG", arg)

    def _at_CGREG(self, arg):
        self._reg("CGREG", arg)

    def _at_CEREG(self, arg):
        self._reg("CEREG", arg)

    def _at_CGDCONT(self, arg):
        self.apn = arg
        self._ok()

    def _at_CGAUTH(self, arg):
        self._ok()

    def _registered(self):
        return self._sim_ok() and self.reg in (1, 5)

    # -- SIMCom -----------------------------------------------------------------------

    def _at_NETOPEN(self, arg):
        if self.dialect != "simcom":
            return self._error()
        if arg == "?":
            self._line("+NETOPEN: %d" % (1 if self.net_open else 0))
            return self._ok()
        if self.net_open:
            self._line("+IP ERROR: Network is already opened")
            return self._error()
        self._ok()

        def done():
            if self._registered():
                self.net_open = True
                self._line("+NETOPEN: 0")
            else:
                self._line("+NETOPEN: 1")

        self._after(self.net_ms, done)

    def _at_NETCLOSE(self, arg):
        if not self.net_open:
            self._line("+IP ERROR: Network is already closed")
            return self._error()
        for c in self.conns.values():
            self._kill(c)
        self.conns = {}
        self.net_open = False
        self._ok()
        self._line("+NETCLOSE: 0", self.net_ms)

    def _at_CIPRXGET(self, arg):
        v = _ints(arg)
        mode = v[0]
        if mode == 1:
            self.manual_rx = True
            return self._ok()
        if mode == 0:
            self.manual_rx = False
            return self._ok()
        c = self.conns.get(v[1]) if len(v) > 1 else None
        if c is None or (c.state != "open" and not c.rx):
            self._line("+IP ERROR: No data")
            return self._error()
        if mode == 4:
            self._line("+CIPRXGET: 4,%d,%d" % (c.link, len(c.rx)))
            return self._ok()
        if mode != 2:
            return self._error()
        n = min(v[2] if len(v) > 2 else 1460, len(c.rx), 1460)
        late = self._late_half(c, n)
        n -= len(late)
        data = bytes(c.rx[:n])
        c.rx[:n] = b""
        self.bytes_down += n
        rest = len(c.rx)
        head = b"\r\n+CIPRXGET: 2,%d,%d,%d\r\n" % (c.link, n, rest) + data
        if late:  # arrives now: its notice comes inside the reply, before the OK
            c.rx.extend(late)
            self._emit(head + b"\r\n+CIPRXGET: 1,%d\r\n\r\nOK\r\n" % c.link)
            return
        self._emit(head + b"\r\nOK\r\n")
        if not rest:
            c.notified = False
            self._report_close(c)

    def _late_half(self, c, n):
        """urc_mid_read: the second half of a read that takes the whole buffer is taken
        out of it (it is still on its way from the network); returned, else b""."""
        if not self.urc_mid_read or n < 2 or n != len(c.rx):
            return b""
        self.urc_mid_read -= 1
        self.mid_reads += 1
        k = n // 2
        late = bytes(c.rx[k:n])
        c.rx[k:n] = b""
        return late

    def _at_CIPOPEN(self, arg):
        v = _fields(arg)
        link = int(v[0])
        if not self.net_open:
            self._ok()
            self._line("+CIPOPEN: %d,2" % link, self.net_ms)  # network not opened
            return
        old = self.conns.get(link)
        if old is not None and old.state != "closed":
            self._line("+CIPOPEN: %d,4" % link)
            return self._error()
        self._ok()
        self._open(link, v[2].strip('"'), int(v[3]))

    def _at_CIPSEND(self, arg):
        v = _ints(arg)
        c = self.conns.get(v[0])
        if c is None or c.state != "open" or len(v) < 2 or not 0 < v[1] <= 1500:
            return self._error()

        def done(data):
            if c.state != "open":
                return self._error()
            c.tx.extend(data)
            self.bytes_up += len(data)
            self._ok()
            self._line("+CIPSEND: %d,%d,%d" % (c.link, len(data), len(data)))

        self._expect_data(v[1], done)

    # -- SMS, text mode (3GPP TS 27.005) ---------------------------------------------
    def _at_CMGF(self, arg):
        v = _ints(arg[1:] if arg.startswith("=") else arg)
        if not v or v[0] not in (0, 1):
            return self._error()
        self.cmgf = v[0]
        self._ok()

    def _at_CSCS(self, arg):
        self._ok()

    def _at_CMGS(self, arg):
        number = arg.lstrip("=").strip().strip('"')
        if self.cmgf != 1 or not number:
            return self._line("+CMS ERROR: 302")  # operation not allowed (PDU mode)
        if self.sim != "ready":
            return self._line("+CMS ERROR: 310")  # SIM not inserted
        self._sms_to = number
        self._sms_text = bytearray()
        self._emit(b"\r\n> ")

    def _sms_done(self, text):
        number = self._sms_to
        self._sms_to = self._sms_text = None
        if self.reg not in (1, 5):
            return self._after(200, lambda: self._line("+CMS ERROR: 331"))  # no network
        if self.sms_error:
            code, self.sms_error = self.sms_error, 0
            return self._after(200, lambda: self._line("+CMS ERROR: %d" % code))
        self.sms.append((number, text.decode()))

        def sent():
            self._line("+CMGS: %d" % len(self.sms))
            self._ok()

        self._after(300, sent)  # the network's answer takes a moment

    def _at_CIPCLOSE(self, arg):
        if arg == "?":
            st = ",".join(
                "1" if (i in self.conns and self.conns[i].state == "open") else "0"
                for i in range(10)
            )
            self._line("+CIPCLOSE: " + st)
            return self._ok()
        link = _ints(arg)[0]
        c = self.conns.pop(link, None)
        if c is None or c.state == "closed":
            self._line("+CIPCLOSE: %d,4" % link)
            return self._error()
        self._kill(c, flush=True)
        self._ok()
        self._line("+CIPCLOSE: %d,0" % link)

    def _at_CPOF(self, arg):
        self._ok()
        self._power_down()

    # -- Quectel ----------------------------------------------------------------------

    def _at_QURCCFG(self, arg):
        self._ok()

    def _at_QICSGP(self, arg):
        self.apn = arg
        self._ok()

    def _at_QIACT(self, arg):
        if arg == "?":
            if self.net_open:
                self._line('+QIACT: 1,1,1,"10.64.0.2"')
            return self._ok()

        def done():
            if self._registered():
                self.net_open = True
                self._ok()
            else:
                self._error()

        self._after(self.net_ms, done)

    def _at_QIDEACT(self, arg):
        for c in self.conns.values():
            self._kill(c)
        self.conns = {}
        self.net_open = False
        self._ok()

    def _at_QIOPEN(self, arg):
        v = _fields(arg)
        cid = int(v[1])
        if not self.net_open:
            self._ok()
            self._line("+QIOPEN: %d,561" % cid, self.net_ms)
            return
        old = self.conns.get(cid)
        if old is not None:
            return self._error()
        self._ok()
        self._open(cid, v[3].strip('"'), int(v[4]))

    def _at_QISEND(self, arg):
        v = _ints(arg)
        c = self.conns.get(v[0])
        if c is None or len(v) < 2 or not 0 < v[1] <= 1460:
            return self._error()
        if c.state != "open":
            return self._error()

        def done(data):
            if c.state != "open":
                return self._line("SEND FAIL")
            c.tx.extend(data)
            self.bytes_up += len(data)
            self._line("SEND OK")

        self._expect_data(v[1], done)

    def _at_QIRD(self, arg):
        v = _ints(arg)
        c = self.conns.get(v[0])
        if c is None:
            return self._error()
        if len(v) > 1 and v[1] == 0:
            self._line(
                "+QIRD: %d,%d,%d" % (self.bytes_down + len(c.rx), self.bytes_down, len(c.rx))
            )
            return self._ok()
        n = min(v[1] if len(v) > 1 else 1500, len(c.rx), 1500)
        late = self._late_half(c, n)
        n -= len(late)
        data = bytes(c.rx[:n])
        c.rx[:n] = b""
        self.bytes_down += n
        c.rx.extend(late)  # arrives now; buffer mode: no URC until drained to +QIRD: 0
        if n:
            self._emit(b"\r\n+QIRD: %d\r\n" % n + data + b"\r\nOK\r\n")
        else:
            self._line("+QIRD: 0")
            self._ok()
            c.notified = False

    def _at_QICLOSE(self, arg):
        c = self.conns.pop(_ints(arg)[0], None)
        if c is not None:
            self._kill(c, flush=True)
        self._ok()

    def _at_QPOWD(self, arg):
        self._ok()
        self._power_down()

    # -- TCP --------------------------------------------------------------------------

    def _open(self, link, host, port):
        self.opens += 1
        c = _Conn(link)
        self.conns[link] = c
        if self.open_error:
            return self._open_result(c, self.open_error)
        try:
            addr = socket.getaddrinfo(host, port)[0][-1]
        except OSError:
            return self._open_result(c, 11 if self.dialect == "simcom" else 565)
        s = socket.socket()
        s.setblocking(False)
        c.sock = s
        try:
            s.connect(addr)
        except OSError as e:
            if _errno(e) not in _BUSY:
                return self._open_result(c, 1 if self.dialect == "simcom" else 566)
        p = select.poll()
        p.register(s, select.POLLOUT)
        c.poller = p

    def _open_result(self, c, err):
        if err:
            self._kill(c)
            self.conns.pop(c.link, None)
        else:
            c.state = "open"
            c.poller.modify(c.sock, select.POLLIN)
        if self.dialect == "simcom":
            self._line("+CIPOPEN: %d,%d" % (c.link, err))
        else:
            self._line("+QIOPEN: %d,%d" % (c.link, err))

    def _report_close(self, c):
        # SIMCom: +IPCLOSE once the buffer is drained; Quectel: "closed" at once (the
        # host drains with QIRD, then QICLOSE)
        if c.eof and (not c.rx or self.dialect != "simcom") and not c.close_reported:
            c.close_reported = True
            if self.dialect == "simcom":
                self._line("+IPCLOSE: %d,1" % c.link)
                self.conns.pop(c.link, None)
            else:
                self._line('+QIURC: "closed",%d' % c.link)

    def _net(self):
        for c in list(self.conns.values()):
            if c.sock is None:
                continue
            if c.state == "connecting":
                ev = c.poller.poll(0)
                if not ev:
                    continue
                flags = ev[0][1]
                if flags & (select.POLLERR | select.POLLHUP):
                    self._open_result(c, 1 if self.dialect == "simcom" else 566)
                elif flags & select.POLLOUT:
                    self._open_result(c, 0)
                continue
            if c.state != "open":
                continue
            if c.tx:
                try:
                    k = c.sock.send(c.tx)
                except OSError as e:
                    k = 0 if _errno(e) in _BUSY else -1
                if k < 0:
                    self._peer_gone(c)
                    continue
                c.tx[:k] = b""
            if len(c.rx) >= self.rx_cap or c.eof:
                continue
            ev = c.poller.poll(0)
            if not ev or not ev[0][1] & (select.POLLIN | select.POLLHUP | select.POLLERR):
                continue
            try:
                d = c.sock.recv(min(2048, self.rx_cap - len(c.rx)))
            except OSError as e:
                if _errno(e) in _BUSY:
                    continue
                d = b""
            if not d:
                self._peer_gone(c)
                continue
            was_empty = not c.rx
            c.rx.extend(d)
            if was_empty and not c.notified:
                c.notified = True
                if self.dialect == "simcom":
                    self._line("+CIPRXGET: 1,%d" % c.link)
                else:
                    self._line('+QIURC: "recv",%d' % c.link)

    def _peer_gone(self, c):
        c.eof = True
        if c.sock is not None:
            try:
                c.sock.close()
            except OSError:
                pass
            c.sock = None
        self._report_close(c)

    # -- the clock --------------------------------------------------------------------

    def poll(self):
        now = self._now()
        if self._timers:
            due = [t for t in self._timers if t[0] <= now]
            if due:
                self._timers = [t for t in self._timers if t[0] > now]
                for t in due:
                    t[1]()
        if self.powered and not self.booting:
            self._net()
            self._garbage_due(now)
        if self.mute:
            self._out = []
            return
        self._flush_due()


def _errno(e):
    return e.args[0] if e.args else None


def _split(line):
    """'AT+CIPSEND=0,5' -> ('+CIPSEND', '0,5'); 'AT+CSQ' -> ('+CSQ', ''); '?' queries."""
    body = line[2:]
    i = 0
    while i < len(body) and body[i] not in "=?":
        i += 1
    name = body[:i].upper()
    rest = body[i:]
    if rest.startswith("=?"):
        return name, "=?"
    if rest.startswith("="):
        return name, rest[1:]
    return name, rest  # "?" or ""


def _fields(arg):
    return [f.strip() for f in arg.split(",")]


def _ints(arg):
    out = []
    for f in arg.split(","):
        f = f.strip().strip('"')
        try:
            out.append(int(f))
        except ValueError:
            out.append(None)
    return out
