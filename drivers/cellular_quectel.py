"""The Quectel dialect of drivers/cellular.py: BG95/BG96 TCP/IP (the QI commands).

AT+QICSGP / AT+QIACT (packet data), AT+QIOPEN in buffer access mode, AT+QISEND, AT+QIRD
drained until it returns 0, AT+QICLOSE, AT+QPOWD; URCs `+QIURC: "recv"`, `"closed"`,
`"pdpdeact"` and `+QIOPEN`. The facts and their manuals: docs/modems.md "Quectel".
Loaded by name (Cellular(dialect="quectel")): a meter with a SIMCom modem never
imports it.
"""

from drivers.at import ATCommandError, ints
from drivers.cellular import LINK_LOST, PEER_CLOSED


class Dialect:
    """BG95/BG96 TCP/IP: QICSGP, QIACT, QIOPEN (buffer access mode), QISEND, QIRD."""

    links = 12
    power_off_cmd = "AT+QPOWD"
    net_errors = (561, 570)  # open PDP context failed, PDP context broken down

    def register(self, m):
        at = m.at
        self.m = m
        at.urc('+QIURC: "recv",', self._urc_rx)
        at.urc('+QIURC: "closed",', self._urc_closed)
        at.urc('+QIURC: "pdpdeact",', self._urc_netlost)
        at.urc("+QIURC:", _ignore)
        at.urc("+QIOPEN:", self._urc_open)
        at.urc("+CEREG:", m._urc_reg)
        at.urc("+CGREG:", m._urc_reg)
        at.urc("+CREG:", m._urc_reg)
        at.urc("+CPIN:", m._urc_cpin)
        at.urc("+QIND:", _ignore)
        at.urc("+QUSIM:", _ignore)
        at.urc("+CFUN:", _ignore)
        self._deact = False

    def _urc_rx(self, line):
        s, v = self.m._sock(line[15:])
        if s is not None:
            s.rx_pending = True

    def _urc_closed(self, line):
        s, v = self.m._sock(line[17:])
        if s is not None:
            s.eof = True
            s.error = PEER_CLOSED
            s.rx_pending = True  # drain what is left, then QICLOSE (docs/modems.md "Quectel")

    def _urc_netlost(self, line):
        self._deact = True
        self.m._lost(LINK_LOST)

    def _urc_open(self, line):
        s, v = self.m._sock(line[8:])
        if len(v) > 1:
            self.m._opened(s, v[1])

    async def init(self, m):
        for cmd in ('AT+QURCCFG="urcport","uart1"', "AT+CREG=1", "AT+CGREG=1", "AT+CEREG=1"):
            try:
                await m.at.command(cmd, m.timeouts["at"])
            except ATCommandError:
                pass

    async def attach(self, m):
        at = m.at
        t = m.timeouts
        await at.command(
            'AT+QICSGP=1,1,"%s","%s","%s",%d' % (m.apn, m.user, m.password, 1 if m.user else 0),
            t["at"],
        )
        if self._deact:
            self._deact = False
            try:
                await at.command("AT+QIDEACT=1", t["pdp_close"])
            except ATCommandError:
                pass
        r = await at.command("AT+QIACT?", t["at"])
        for l in r.lines:
            v = ints(l[7:])
            if len(v) > 1 and v[0] == 1 and v[1] == 1:
                return  # context 1 active
        await at.command("AT+QIACT=1", t["pdp"])

    async def open(self, m, s, timeout_ms):
        host, port = s.addr
        await m.at.command(
            'AT+QIOPEN=1,%d,"TCP","%s",%d,0,0' % (s.link, host, port), timeout_ms, resp=""
        )

    async def send(self, m, s):
        n = len(s._tx)
        if n > m.max_chunk:
            n = m.max_chunk
        await m.at.command(
            "AT+QISEND=%d,%d" % (s.link, n),
            m.timeouts["send"],
            data=bytes(s._tx[:n]),
            prompt_ms=m.timeouts["prompt"],
        )
        s._tx[:n] = b""
        s.sent += n
        s.send_fails = 0

    async def recv(self, m, s):
        want = s.rx_max - len(s._rx)
        if want > m.max_chunk:
            want = m.max_chunk
        r = await m.at.command("AT+QIRD=%d,%d" % (s.link, want), m.timeouts["recv"], raw=_qird_len)
        n = len(r.data)
        s._rx.extend(r.data)
        s.received += n
        if n > 0:  # buffer mode: drain until +QIRD: 0; after it a new URC says there is more
            s.rx_pending = True

    async def unread(self, m, s):
        r = await m.at.command("AT+QIRD=%d,0" % s.link, m.timeouts["at"])
        v = ints(r.first("+QIRD:") or "")
        return len(v) > 2 and v[2] is not None and v[2] > 0

    async def close(self, m, s):
        await m.at.command("AT+QICLOSE=%d" % s.link, m.timeouts["close"])


def _qird_len(line):
    v = ints(line.split(":", 1)[1])
    return v[0] if len(v) == 1 and v[0] is not None else 0


def _ignore(line):
    pass
