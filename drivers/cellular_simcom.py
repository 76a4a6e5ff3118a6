"""The SIMCom dialect of drivers/cellular.py: A7670/A76xx and SIM7600 TCP/IP toolkit.

AT+NETOPEN (packet data), AT+CIPOPEN, AT+CIPSEND with a fixed length (the modem confirms
with `+CIPSEND: <link>,<req>,<cnf>`), manual receive with AT+CIPRXGET=1 then
AT+CIPRXGET=2 (binary read) / =4 (unread count), AT+CIPCLOSE, AT+CPOF; URCs
`+CIPRXGET: 1,<link>` (data waiting), `+IPCLOSE`, `+CIPEVENT` (network lost),
`+CIPOPEN`, `+NETOPEN`. The facts and their manuals: docs/modems.md "SIMCom".
Loaded by name (Cellular(dialect="simcom")): a meter with a Quectel modem never
imports it.
"""

from drivers.at import ATCommandError, first_int, ints
from drivers.cellular import LINK_LOST, MODEM_RESET, PDP_FAILED, PEER_CLOSED, CellularError


class Dialect:
    """A7670/A76xx and SIM7600 TCP/IP toolkit: NETOPEN, CIPOPEN, CIPSEND, CIPRXGET."""

    links = 10
    power_off_cmd = "AT+CPOF"
    net_errors = (2,)  # +CIPOPEN: <link>,2 network not opened

    def register(self, m):
        at = m.at
        self.m = m
        at.urc("+CIPRXGET: 1,", self._urc_rx)
        at.urc("+IPCLOSE:", self._urc_ipclose)
        at.urc("+CIPEVENT:", self._urc_netlost)
        at.urc("+CIPOPEN:", self._urc_open)
        at.urc("+NETOPEN:", self._urc_netopen)
        at.urc("+CIPCLOSE:", _ignore)
        at.urc("+NETCLOSE:", self._urc_netopen)  # the result of AT+NETCLOSE, the same way
        at.urc("+CIPSEND:", _ignore)  # a late send confirmation
        at.urc("+CEREG:", m._urc_reg)
        at.urc("+CGREG:", m._urc_reg)
        at.urc("+CREG:", m._urc_reg)
        at.urc("+CPIN:", m._urc_cpin)

    def _urc_rx(self, line):
        s = self.m._socks.get(first_int(line.split(",", 1)[1]))
        if s is not None:
            s.rx_pending = True

    def _urc_ipclose(self, line):
        s, v = self.m._sock(line[9:])
        if s is not None:
            s.eof = True
            s.error = PEER_CLOSED if len(v) < 2 or v[1] == 1 else LINK_LOST

    def _urc_netlost(self, line):
        self.m._lost(LINK_LOST)

    def _urc_open(self, line):
        s, v = self.m._sock(line[9:])
        if len(v) > 1:
            self.m._opened(s, v[1])

    def _urc_netopen(self, line):
        # "+NETOPEN: <err>" / "+NETCLOSE: <err>": the result attach() waits for
        self.m._pdp_result = first_int(line[line.find(":") + 1 :])

    async def init(self, m):
        for cmd in ("AT+CREG=1", "AT+CGREG=1", "AT+CEREG=1"):
            try:
                await m.at.command(cmd, m.timeouts["at"])
            except ATCommandError:
                pass

    async def attach(self, m):
        at = m.at
        t = m.timeouts
        await at.command('AT+CGDCONT=1,"IP","%s"' % m.apn, t["at"])
        if m.user:
            await at.command('AT+CGAUTH=1,1,"%s","%s"' % (m.password, m.user), t["at"])
        r = await at.command("AT+NETOPEN?", t["at"])
        if first_int(r.first("+NETOPEN:") or "0") == 1:
            # left open from before a link loss: close it so the stack starts clean
            m._pdp_result = None
            try:
                await at.command("AT+NETCLOSE", t["pdp_close"], resp="")
                await _wait_result(m, t["pdp_close"])
            except (ATCommandError, CellularError):
                pass
        m._pdp_result = None
        await at.command("AT+NETOPEN", t["at"], resp="")
        err = await _wait_result(m, t["pdp"])
        if err != 0:
            raise CellularError(PDP_FAILED, "+NETOPEN: %s" % err)
        await at.command("AT+CIPRXGET=1", t["at"])

    async def open(self, m, s, timeout_ms):
        host, port = s.addr
        await m.at.command(
            'AT+CIPOPEN=%d,"TCP","%s",%d' % (s.link, host, port), timeout_ms, resp=""
        )

    async def send(self, m, s):
        n = len(s._tx)
        if n > m.max_chunk:
            n = m.max_chunk
        r = await m.at.command(
            "AT+CIPSEND=%d,%d" % (s.link, n),
            m.timeouts["send"],
            done="+CIPSEND:",
            data=bytes(s._tx[:n]),
            prompt_ms=m.timeouts["prompt"],
        )
        v = ints(r.first("+CIPSEND:") or "")
        cnf = v[2] if len(v) > 2 else None
        if cnf is None or cnf <= 0:
            raise ATCommandError(r.final, "SEND FAIL")
        s._tx[:cnf] = b""
        s.sent += cnf
        s.send_fails = 0

    async def recv(self, m, s):
        want = s.rx_max - len(s._rx)
        if want > m.max_chunk:
            want = m.max_chunk
        r = await m.at.command(
            "AT+CIPRXGET=2,%d,%d" % (s.link, want),
            m.timeouts["recv"],
            resp="+CIPRXGET: 2,",
            raw=_ciprxget_len,
        )
        v = ints(r.first("+CIPRXGET: 2,") or "")
        s._rx.extend(r.data)
        s.received += len(r.data)
        if len(v) > 2 and v[2] is not None and v[2] > 0:
            s.rx_pending = True

    async def unread(self, m, s):
        r = await m.at.command("AT+CIPRXGET=4,%d" % s.link, m.timeouts["at"], resp="+CIPRXGET: 4,")
        v = ints(r.first("+CIPRXGET: 4,") or "")
        return len(v) > 1 and v[1] is not None and v[1] > 0

    async def close(self, m, s):
        await m.at.command("AT+CIPCLOSE=%d" % s.link, m.timeouts["close"], resp="")


async def _wait_result(m, limit):
    clk = m.clock
    start = clk.ticks_ms()
    gen = m._gen
    while m._pdp_result is None:
        if gen != m._gen:
            raise CellularError(m.last_error or MODEM_RESET, "while attaching")
        if clk.ticks_diff(clk.ticks_ms(), start) >= limit:
            raise CellularError(PDP_FAILED, "no result")
        m.at.poll()
        await clk.sleep_ms(m.poll_ms)
    return m._pdp_result


def _ciprxget_len(line):
    v = ints(line.split(":", 1)[1])
    return v[2] if len(v) > 2 and v[2] is not None else 0


def _ignore(line):
    pass
