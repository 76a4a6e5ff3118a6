"""LoRaWAN modem model on a SimUART: RAK3172 (RUI3 AT) and Seeed Wio-E5, with a network side.

Answers the AT commands drivers/lorawan.py uses in either dialect, keeps the modem's
configuration, join state and class, and plays the network: a join accept after
`join_ms` (or a join failure), uplinks recorded (`uplinks`: (port, bytes, confirmed)) and
acknowledged or not, downlinks injected with `downlink(port, payload)` and emitted as
the dialect's URCs (RUI3: the one-line `+EVT:RX_C:...` or the older three lines). No task
of its own and never blocking: SimUART calls `poll()` on every firmware UART call, which
emits what is due by the injected clock (virtual or real).

Network and fault switches (attributes, change them any time) and actions:
    dialect = "rui3" | "e5";  rx_format = "one" | "multi" (RUI3 downlink URC lines)
    spaces = True           older RUI3 spelling: "+EVT:SEND CONFIRMED OK", "+EVT:JOIN FAILED"
    join_ms = n             join accept (or failure) this long after AT+JOIN
    join_fail = n           the next n joins fail (-1: every join fails)
    ack = True|False        the network acknowledges confirmed uplinks
    tx_ms = n               AT+SEND to TX_DONE / SEND_CONFIRMED_* (air time, RX windows)
    dr = n                  the data rate AT+DR=? reports (ADR's choice)
    duty = True             the modem enforces 1 % (EU868) itself: AT_DUTYCYLE_RESTRICTED
    refuse = ("APPKEY",)    these commands get a parameter error
    lose_event = n          the next n RUI3 result events (JOINED, TX_DONE...) are lost
    reboot_on_send = True   the next uplink is accepted, then the modem reboots before
                            its end event
    garbage_every_ms = n    a noise line every n ms
    downlink(port, payload, rssi=-61, snr=9, lost=False, dup=False)
                            class C: out now; class A: after the next uplink (RX1).
                            lost: never arrives; dup: arrives twice
    reboot(delay_ms=0)      modem resets: join state lost, banner after boot_ms
    garbage(data=None)      one noise line now
Counters: commands, reboots, joins, join_requests, airtime_ms, duty_refusals, oversize
(uplinks longer than the region allows that reached the modem: the driver must keep it 0),
lost, log (commands received; key commands are logged with the key elided).

The air (optional, `air=(host, port)`): the network side is then a network-server
stand-in in another process, over one real loopback TCP connection per device, JSON
lines (the shared protocol; tools/sim/netserver.py is the server):
    model -> server  {"join": {"dev_eui": "<16 hex>", "join_eui": "<16 hex>"}}
    server -> model  {"joined": true} | {"joined": false}
    model -> server  {"up": {"dev_eui": ..., "port": N, "data": "<hex>", "confirmed": b,
                      "fcnt": N, "dr": N}}
    server -> model  {"acked": N}        the fcnt of a confirmed uplink acknowledged
    server -> model  {"down": {"port": N, "data": "<hex>"}}   downlink(): class C at once
The connection opens at AT+JOIN (again at the next join or uplink after it dropped or a
modem reboot closed it); the join's result is the server's answer, and a join with no
answer within `join_ms` (no server, a dropped connection) fails. FCnt counts the uplinks
from 0 after each join. A confirmed uplink is acknowledged when the server's "acked"
for its fcnt comes before its end event (`tx_ms`); an uplink while the server is
unreachable is lost (unconfirmed: TX_DONE all the same; confirmed: not acknowledged).
Non-blocking sockets polled from the UART calls, as tools/sim/modem.py's, so it runs
under micropython too. Counters: air_opens, air_drops, air_lines, air_bad. Without
`air` the in-process network side above is the one.
"""

import binascii
import errno
import json
import select
import socket

from tools.sim.atmodel import GARBAGE, ATModel

_BUSY = (getattr(errno, "EINPROGRESS", 115), errno.EAGAIN, getattr(errno, "EWOULDBLOCK", 11))

_BANNER = (
    "RAKwireless RAK3172-E Example",
    "------------------------------------------------------",
)
# largest uplink per DR (docs/modems.md "Payload limits") for the bands the model knows
_MAX = {4: (51, 51, 51, 115, 242, 242, 242), 5: (11, 53, 125, 242, 242)}
_E5_BAND = {"EU868": 4, "US915": 5}
# SF per DR (125 kHz) for the model's own rough air time (its duty cycle and counters)
_SF = {4: (12, 11, 10, 9, 8, 7, 7), 5: (10, 9, 8, 7, 8)}


def _airtime_ms(band, dr, n):
    """A rough time on air for the model's duty cycle: symbols of 2^SF/125 kHz."""
    sf = _SF.get(band, _SF[4])[dr]
    tsym_us = (1 << sf) * 8
    symbols = 20 + (8 * (n + 13) * 5) // (4 * sf)
    return tsym_us * symbols // 1000 + 1


class LoRaModemModel(ATModel):
    GARBAGE = GARBAGE[:2] + (b"\r\n+EVT:???\r\n",)

    def __init__(
        self, uart, clock, dialect="rui3", boot_ms=500, join_ms=6000, tx_ms=2000, air=None
    ):
        if dialect not in ("rui3", "e5"):
            raise ValueError("dialect")
        self.air = air  # (host, port) of the network-server stand-in, or None
        self._sock = None
        self._poller = None
        self._connecting = False
        self._air_rx = bytearray()
        self._air_tx = bytearray()
        self._join_gen = 0  # the join request an answer belongs to
        self._acked = []  # fcnts the server acknowledged
        self.fcnt = 0
        self.air_opens = 0
        self.air_drops = 0
        self.air_lines = 0
        self.air_bad = 0
        self.uart = uart
        self.clock = clock
        self.dialect = dialect
        self.boot_ms = boot_ms
        self.join_ms = join_ms
        self.tx_ms = tx_ms
        self._start_output(clock)
        # network and faults
        self.rx_format = "one"
        self.spaces = False
        self.join_fail = 0
        self.ack = True
        self.dr = 5
        self.duty = False
        self.reboot_on_send = False
        self.refuse = ()  # command names answered with a parameter error
        self.lose_event = 0  # the next n RUI3 +EVT: result lines never arrive
        self._queued = []  # class A downlinks waiting for an uplink
        # counters
        self.commands = 0
        self.reboots = 0
        self.joins = 0
        self.join_requests = 0
        self.airtime_ms = 0
        self.duty_refusals = 0
        self.oversize = 0
        self.lost = 0
        self.uplinks = []
        self.uplink_times = []  # model ms of each uplink's start
        self.join_times = []  # model ms of each join request
        self.log = []
        self.nwm = 1
        self.band = 4
        self._reset_state()
        uart.attach(self)

    # -- state ------------------------------------------------------------------------

    def _reset_state(self):
        if getattr(self, "_sock", None) is not None:
            self._air_close(False)  # a reboot ends the session with the network
        self.booting = False
        self.joined = False
        self.joining = False
        self.sending = False
        self.cls = "A"
        self.cfm = 0
        self.port = 8
        self.adr = True
        self.keys = {}
        self._cmd = bytearray()
        self._out = []
        self._timers = []
        self._free_at = 0  # duty cycle: the band is free again at this time

    # -- output -----------------------------------------------------------------------

    def poll(self):
        if self._sock is not None:
            self._air_poll()
        now = self._now()
        self._garbage_due(now)
        while True:
            due = None
            for t in self._timers:
                if t[0] <= now:
                    due = t
                    break
            if due is None:
                break
            self._timers.remove(due)
            due[1]()  # may reset the timers (a reboot)
        self._flush_due()

    # -- the network ----------------------------------------------------------------

    def reboot(self, delay_ms=0):
        """The modem resets: join state and session lost, a banner after boot_ms."""
        if delay_ms:
            self._after(delay_ms, self.reboot)
            return
        self.reboots += 1
        self._reset_state()
        self.booting = True
        self._after(self.boot_ms, self._booted)

    def _booted(self):
        self.booting = False
        if self.dialect == "rui3":
            for i, b in enumerate(_BANNER):
                self._line(b, i * 5)
            self._line("Current Work Mode: LoRaWAN.", 10)

    def downlink(self, port, payload, rssi=-61, snr=9, lost=False, dup=False):
        """The network sends a downlink: class C at once, class A after the next uplink."""
        if lost:
            self.lost += 1
            return
        d = (port, bytes(payload), rssi, snr)
        n = 2 if dup else 1
        for _ in range(n):
            if self.cls == "C" and self.joined and not self.sending:
                self._rx(d, "RX_C")
            else:
                self._queued.append(d)

    def _rx(self, d, win, prefix="+MSG:"):
        port, payload, rssi, snr = d
        hexs = binascii.hexlify(payload).decode().upper()
        if self.dialect == "e5":
            self._line('%s PORT: %d; RX: "%s"' % (prefix, port, hexs))
            n = 0 if win == "RX_C" else 1
            self._line("%s RXWIN%d, RSSI %d, SNR %d.0" % (prefix, n, rssi, snr))
        elif self.rx_format == "one":
            self._line("+EVT:%s:%d:%d:UNICAST:%d:%s" % (win, rssi, snr, port, hexs))
        else:
            self._line("+EVT:%s, RSSI %d, SNR %d" % (win, rssi, snr))
            self._line("+EVT:UNICAST")
            self._line("+EVT:%d:%s" % (port, hexs))

    def _evt(self, name):
        if self.spaces:
            name = name.replace("_", " ")
        if self.lose_event:
            self.lose_event -= 1
            return
        self._line("+EVT:" + name)

    # -- input ------------------------------------------------------------------------

    def on_rx(self, data):
        if self.booting:
            return
        for b in data:
            if b == 13:
                try:
                    line = bytes(self._cmd).decode().strip()
                except UnicodeError:
                    line = "?"
                self._cmd = bytearray()
                if line:
                    self._command(line)
            elif b != 10 and len(self._cmd) < 600:
                self._cmd.append(b)

    def _command(self, line):
        self.commands += 1
        logged = line
        for k in ("APPKEY", "DEVEUI", "APPEUI", "ID=", "KEY="):
            if k in line.upper():
                logged = line.split("=", 1)[0] + "=<elided>"
        self.log.append(logged)
        if len(self.log) > 200:
            self.log = self.log[-100:]
        name = line[3:].partition("=")[0].upper()
        if name in self.refuse:
            self._line("AT_PARAM_ERROR" if self.dialect == "rui3" else "+%s: ERROR(-1)" % name)
        elif self.dialect == "rui3":
            self._rui3(line)
        else:
            self._e5(line)

    # -- RUI3 -------------------------------------------------------------------------

    def _ok(self):
        self._line("OK")

    def _rui3(self, line):
        u = line.upper()
        if u == "AT":
            return self._ok()
        if not u.startswith("AT+"):
            return self._line("AT_ERROR")
        name, _, arg = line[3:].partition("=")
        name = name.upper()
        if arg == "?":
            return self._get(name)
        if self.joining or self.sending:
            if name in ("JOIN", "SEND"):
                return self._line("AT_BUSY_ERROR")
        if name == "NWM":
            self.nwm = int(arg)
            return self._ok()
        if name in ("NJM", "ADR"):
            if name == "ADR":
                self.adr = arg == "1"
            return self._ok()
        if name == "CLASS":
            if arg not in ("A", "B", "C"):
                return self._line("AT_PARAM_ERROR")
            self.cls = arg
            return self._ok()
        if name == "BAND":
            self.band = int(arg)
            return self._ok()
        if name == "DR":
            self.dr = int(arg)
            return self._ok()
        if name == "MASK":
            return self._ok()
        if name in ("DEVEUI", "APPEUI", "APPKEY"):
            want = 32 if name == "APPKEY" else 16
            if len(arg) != want:
                return self._line("AT_PARAM_ERROR")
            self.keys[name] = arg
            return self._ok()
        if name == "CFM":
            self.cfm = int(arg)
            return self._ok()
        if name == "JOIN":
            self._ok()
            return self._start_join()
        if name == "SEND":
            port, _, hexs = arg.partition(":")
            try:
                payload = binascii.unhexlify(hexs)
            except ValueError:
                return self._line("AT_PARAM_ERROR")
            if not self.joined:
                return self._line("AT_NO_NETWORK_JOINED")
            return self._uplink(int(port), payload, bool(self.cfm))
        return self._line("AT_COMMAND_NOT_FOUND")

    def _get(self, name):
        v = {
            "NWM": self.nwm,
            "NJS": 1 if self.joined else 0,
            "DR": self.dr,
            "CLASS": self.cls,
            "BAND": self.band,
            "CFM": self.cfm,
        }.get(name)
        if v is None:
            return self._line("AT_COMMAND_NOT_FOUND")
        self._line("AT+%s=%s" % (name, v))
        self._ok()

    def _start_join(self):
        self.joining = True
        self.join_requests += 1
        self.join_times.append(self._now())
        if self.air is None:
            self._after(self.join_ms, self._join_result)
            return
        self._join_gen += 1
        gen = self._join_gen
        self._air_send(
            {
                "join": {
                    "dev_eui": self.keys.get("DEVEUI", ""),
                    "join_eui": self.keys.get("APPEUI", ""),
                }
            }
        )

        def timeout():
            if self.joining and gen == self._join_gen:
                self._join_result(False)  # no answer: the network is out of reach

        self._after(self.join_ms, timeout)

    def _join_result(self, ok=None):
        self.joining = False
        if ok is False or (ok is None and self.join_fail):
            if ok is None and self.join_fail > 0:
                self.join_fail -= 1
            if self.dialect == "rui3":
                self._evt("JOIN_FAILED_RX_TIMEOUT" if not self.spaces else "JOIN FAILED")
            else:
                self._line("+JOIN: Join failed")
                self._line("+JOIN: Done")
            return
        self.joined = True
        self.joins += 1
        self.fcnt = 0
        self._acked = []
        if self.dialect == "rui3":
            self._evt("JOINED")
        else:
            self._line("+JOIN: Network joined")
            self._line("+JOIN: NetID 000013 DevAddr 26:01:5F:66")
            self._line("+JOIN: Done")

    def _max(self):
        t = _MAX.get(self.band, _MAX[4])
        return t[self.dr] if 0 <= self.dr < len(t) else 0

    def _duty_refused(self):
        if self.duty and self._now() < self._free_at:
            self.duty_refusals += 1
            return True
        return False

    def _uplink(self, port, payload, confirmed, name=None):
        if len(payload) > self._max():
            self.oversize += 1
            if self.dialect == "rui3":
                return self._line("AT_PARAM_ERROR")
            return self._line("%s ERROR(-1)" % name)
        if self._duty_refused():
            if self.dialect == "rui3":
                return self._line("AT_DUTYCYLE_RESTRICTED")
            return self._line("%s No band in %dms" % (name, self._free_at - self._now()))
        if self.dialect == "rui3":
            self._ok()
        else:
            self._line(name + " Start")
            if confirmed:
                self._line(name + " Wait ACK")
        toa = _airtime_ms(self.band, self.dr, len(payload))
        self.airtime_ms += toa
        self._free_at = self._now() + toa * 100
        self.uplinks.append((port, payload, confirmed))
        self.uplink_times.append(self._now())
        self.sending = True
        fcnt = self.fcnt
        self.fcnt += 1
        if self.air is not None:
            self._air_send(
                {
                    "up": {
                        "dev_eui": self.keys.get("DEVEUI", ""),
                        "port": port,
                        "data": binascii.hexlify(payload).decode(),
                        "confirmed": bool(confirmed),
                        "fcnt": fcnt,
                        "dr": self.dr,
                    }
                }
            )
        if self.reboot_on_send:
            self.reboot_on_send = False
            self._after(self.tx_ms // 2, self.reboot)
            return
        self._after(self.tx_ms, lambda: self._tx_end(confirmed, name, fcnt))

    def _tx_end(self, confirmed, name, fcnt=None):
        self.sending = False
        acked = confirmed and self.ack
        if self.air is not None and acked:
            acked = fcnt in self._acked
        if self.dialect == "e5" and acked:
            self._line(name + " ACK Received")
        if self._queued:
            d = self._queued.pop(0)
            if self.dialect == "e5":
                self._rx(d, "RX_1", name)
            else:
                self._rx(d, "RX_1")
        if self.dialect == "rui3":
            if confirmed:
                self._evt("SEND_CONFIRMED_OK" if acked else "SEND_CONFIRMED_FAILED")
            else:
                self._evt("TX_DONE")
        else:
            self._line(name + " Done")
        if self.cls == "C":
            while self._queued:  # class C: the rest as soon as the radio listens again
                self._rx(self._queued.pop(0), "RX_C")

    # -- the air: a network-server stand-in over TCP ----------------------------------

    def _air_open(self):
        self.air_opens += 1
        self._air_rx = bytearray()
        try:
            addr = socket.getaddrinfo(self.air[0], self.air[1])[0][-1]
            s = socket.socket()
            s.setblocking(False)
        except OSError:
            return
        try:
            s.connect(addr)
        except OSError as e:
            if (e.args[0] if e.args else None) not in _BUSY:
                s.close()
                self.air_drops += 1
                return
        self._sock = s
        self._connecting = True
        p = select.poll()
        p.register(s, select.POLLOUT | select.POLLIN)
        self._poller = p

    def _air_close(self, dropped=True):
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
        self._sock = None
        self._poller = None
        self._connecting = False
        self._air_tx = bytearray()
        if dropped:
            self.air_drops += 1

    def _air_send(self, obj):
        if self._sock is None:
            self._air_open()  # the next join or uplink after a drop: try again
            if self._sock is None:
                return  # unreachable: the message is lost on the air
        self._air_tx.extend(json.dumps(obj).encode() + b"\n")
        self._air_poll()

    def _air_poll(self):
        ev = self._poller.poll(0)
        flags = ev[0][1] if ev else 0
        if flags & (select.POLLERR | select.POLLHUP) and not flags & select.POLLIN:
            return self._air_close()
        if self._connecting:
            if not flags & select.POLLOUT:
                return
            self._connecting = False
            self._poller.modify(self._sock, select.POLLIN)
        if self._air_tx:
            try:
                k = self._sock.send(self._air_tx)
            except OSError as e:
                if (e.args[0] if e.args else None) not in _BUSY:
                    return self._air_close()
                k = 0
            self._air_tx[:k] = b""
        if not flags & select.POLLIN:
            return
        try:
            d = self._sock.recv(2048)
        except OSError as e:
            if (e.args[0] if e.args else None) in _BUSY:
                return
            d = b""
        if not d:
            return self._air_close()
        rx = self._air_rx
        rx.extend(d)
        while True:
            i = rx.find(b"\n")
            if i < 0:
                break
            line = bytes(rx[:i])
            rx[: i + 1] = b""
            if line.strip():
                self._air_line(line)
        if len(rx) > 4096:
            self._air_rx = bytearray()  # a server without line ends: not ours to hold
            self.air_bad += 1

    def _air_line(self, line):
        self.air_lines += 1
        try:
            msg = json.loads(line)
            if "joined" in msg:
                if self.joining:
                    self._join_result(bool(msg["joined"]))
            elif "acked" in msg:
                self._acked.append(int(msg["acked"]))
                if len(self._acked) > 16:
                    self._acked.pop(0)
            elif "down" in msg:
                d = msg["down"]
                self.downlink(int(d["port"]), binascii.unhexlify(d["data"]))
            else:
                self.air_bad += 1
        except (ValueError, KeyError, TypeError):
            self.air_bad += 1

    # -- Wio-E5 -----------------------------------------------------------------------

    def _e5(self, line):
        u = line.upper()
        if u == "AT":
            return self._line("+AT: OK")
        if not u.startswith("AT+"):
            return self._line("+AT: ERROR(-10)")
        name, eq, arg = line[3:].partition("=")
        name = name.upper()
        tag = "+%s:" % name
        if name == "MODE":
            return self._line("%s %s" % (tag, arg))
        if name == "DR":
            if not eq:
                return self._line("%s DR%d" % (tag, self.dr))
            if arg.upper().startswith("DR"):
                self.dr = int(arg[2:])
                return self._line("%s DR%d" % (tag, self.dr))
            if arg.upper() not in _E5_BAND:
                return self._line(tag + " ERROR(-1)")
            self.band = _E5_BAND[arg.upper()]
            return self._line("%s %s" % (tag, arg.upper()))
        if name == "CLASS":
            self.cls = arg.upper()
            return self._line("%s %s" % (tag, self.cls))
        if name == "ADR":
            self.adr = arg.upper() == "ON"
            return self._line("%s %s" % (tag, arg.upper()))
        if name in ("ID", "KEY"):
            k, _, v = arg.partition(",")
            v = v.strip().strip('"')
            want = 32 if name == "KEY" else 16
            if len(v) != want:
                return self._line(tag + " ERROR(-1)")
            self.keys[k.upper()] = v
            return self._line("%s %s, %s" % (tag, k, "<set>"))
        if name == "PORT":
            self.port = int(arg)
            return self._line("%s %d" % (tag, self.port))
        if name == "JOIN":
            if self.joined:
                return self._line("+JOIN: Joined already")
            if self.joining or self.sending:
                return self._line("+JOIN: LoRaWAN modem is busy")
            self._line("+JOIN: Start")
            self._line("+JOIN: NORMAL")
            return self._start_join()
        if name in ("MSGHEX", "CMSGHEX"):
            if not self.joined:
                return self._line(tag + " Please join network first")
            if self.sending or self.joining:
                return self._line(tag + " LoRaWAN modem is busy")
            try:
                payload = binascii.unhexlify(arg.strip().strip('"'))
            except ValueError:
                return self._line(tag + " ERROR(-1)")
            return self._uplink(self.port, payload, name == "CMSGHEX", tag)
        return self._line("+AT: ERROR(-10)")
