"""The Wio-E5 dialect of drivers/lorawan.py: Seeed Wio-E5 / LoRa-E5 (RisingHF-style AT).

Replies prefixed with the command (`+MODE: LWOTAA`), errors `+<CMD>: ERROR(-n)`;
`AT+MODE`, `AT+DR`, `AT+CLASS`, `AT+ADR`, `AT+ID`, `AT+KEY`, `AT+JOIN` (`+JOIN: Start` ...
`Network joined` | `Join failed` ... `Done`), `AT+PORT`, `AT+MSGHEX` / `AT+CMSGHEX` and
their `+MSG...:` lines (`ACK Received`, `PORT: p; RX: "<hex>"`, `RXWIN...`, `Done`). The
facts and their manual: docs/modems.md "Wio-E5"; the choices: drivers/lorawan.py's
docstring. Loaded by name (LoRaWAN(dialect="e5")): a meter with a RAK3172 never
imports it.
"""

import binascii

from drivers.at import ATCommandError
from drivers.lorawan import BUSY, CONFIG, TIMEOUT, LoRaError, parse_int, unhex


class Dialect:
    """Seeed Wio-E5 / LoRa-E5 (RisingHF-style AT): +CMD: replies, AT+MSGHEX, +MSG: URCs."""

    errors = ()
    banners = ()

    def register(self, m):
        self.m = m
        self._acked = False
        self._seen = False
        at = m.at
        at.urc("+JOIN:", self._join)
        for p in ("+CMSGHEX:", "+MSGHEX:", "+MSG:", "+CMSG:"):
            at.urc(p, self._msg)

    async def _cmd(self, m, text, name, secret=None, timeout_ms=None):
        r = await m.cmd(text, timeout_ms, resp=name, done=name, secret=secret)
        line = r.lines[0] if r.lines else ""
        # lines of the same read after the first belong to the asynchronous part
        handler = self._join if name == "+JOIN:" else self._msg
        for later in r.lines[1:]:
            if name in ("+JOIN:", "+MSGHEX:", "+CMSGHEX:"):
                handler(later)
        if "ERROR(" in line:
            if secret is not None:
                raise LoRaError(CONFIG, secret + " refused: " + line[len(name) :].strip())
            raise ATCommandError(secret or text, line)
        return line[len(name) :].strip()

    async def sync(self, m):
        clk = m.clock
        start = clk.ticks_ms()
        while True:
            try:
                await self._cmd(m, "AT", "+AT:", timeout_ms=1000)
                return
            except (LoRaError, ATCommandError):
                if clk.ticks_diff(clk.ticks_ms(), start) >= m.timeouts["sync"]:
                    raise LoRaError(TIMEOUT, "modem does not answer AT")
                await m._idle(200)

    async def configure(self, m):
        await self._cmd(m, "AT+MODE=LWOTAA", "+MODE:")
        await self._cmd(m, "AT+DR=" + m.region, "+DR:")
        await self._cmd(m, "AT+CLASS=" + m.lora_class, "+CLASS:")
        await self._cmd(m, "AT+ADR=" + ("OFF" if m.fixed_dr is not None else "ON"), "+ADR:")
        if m.fixed_dr is not None:
            await self._cmd(m, "AT+DR=DR%d" % m.fixed_dr, "+DR:")
        await self._cmd(m, 'AT+ID=DevEui,"%s"' % m._dev_eui, "+ID:", secret="DevEui")
        await self._cmd(m, 'AT+ID=AppEui,"%s"' % m._app_eui, "+ID:", secret="AppEui")
        await self._cmd(m, 'AT+KEY=APPKEY,"%s"' % m._app_key, "+KEY:", secret="APPKEY")

    async def join(self, m):
        self._seen = False
        first = await self._cmd(m, "AT+JOIN", "+JOIN:")
        if "already" in first:
            return True
        if "busy" in first:
            raise LoRaError(BUSY, first)
        return False

    async def join_state(self, m):
        return False  # no join-state query in the spec's E5 command set

    def _join(self, line):
        text = line[6:].strip()
        if "joined" in text and "already" not in text:
            self._seen = True
        elif "failed" in text:
            self.m._joined(False)
        elif text == "Done" and self._seen:
            self.m._joined(True)

    async def query_dr(self, m):
        text = await self._cmd(m, "AT+DR", "+DR:")
        i = text.find("DR")
        return parse_int(text[i + 2 : i + 3]) if i >= 0 else None

    async def send(self, m, port, data, confirmed):
        if m._port != port:
            await self._cmd(m, "AT+PORT=%d" % port, "+PORT:")
            m._port = port
        name = "+CMSGHEX:" if confirmed else "+MSGHEX:"
        m._cfm = 1 if confirmed else 0
        self._acked = False
        hexs = binascii.hexlify(data).decode().upper()
        first = await self._cmd(m, 'AT%s="%s"' % (name[:-1], hexs), name)
        if first != "Start":
            raise ATCommandError(name[1:-1], first)

    def _msg(self, line):
        m = self.m
        i = line.find(":")
        text = line[i + 1 :].strip()
        if text == "Done":
            if m._cfm:
                m._sent("ok" if self._acked else "failed")
            else:
                m._sent("done")
        elif text.startswith("ACK Received"):
            self._acked = True
        elif text.startswith("FPENDING"):
            m.fpending = True
        elif text.startswith("PORT:"):
            # PORT: 15; RX: "48656C6C6F"
            j = text.find(";")
            port = parse_int(text[5:j]) if j > 0 else None
            q = text.find('"')
            payload = unhex(text[q + 1 : text.rfind('"')]) if q >= 0 else None
            if port is None or payload is None:
                m.unknown_events += 1
            else:
                m._downlink(port, payload, None, None)
        elif text.startswith("RXWIN"):
            rssi = snr = None
            for part in text.split(","):
                part = part.strip()
                if part.startswith("RSSI"):
                    rssi = parse_int(part[4:])
                elif part.startswith("SNR"):
                    snr = parse_int(part[3:])
            m.rssi, m.snr = rssi, snr
        elif text.startswith("Start") or text.startswith("Wait ACK"):
            pass
        else:
            m.unknown_events += 1
