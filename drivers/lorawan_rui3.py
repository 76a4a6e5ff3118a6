"""The RUI3 dialect of drivers/lorawan.py: RAK3172 (RAKwireless Unified Interface V3).

`AT+NWM`, `AT+NJM`, `AT+CLASS`, `AT+BAND`, `AT+MASK`, `AT+DEVEUI`/`AT+APPEUI`/`AT+APPKEY`,
`AT+JOIN=1:0:8:1`, `AT+NJS=?`, `AT+DR=?`, `AT+CFM`, `AT+SEND=<port>:<hex>`; statuses `OK`
and `AT_...`; the `+EVT:` events (join, TX_DONE, SEND_CONFIRMED_OK/FAILED, downlinks in
the one-line and the older three-line forms). The facts and their manual:
docs/modems.md "RAK3172 (RUI3)"; the choices: drivers/lorawan.py's docstring. Loaded by
name (LoRaWAN(dialect="rui3")): a meter with a Wio-E5 never imports it.
"""

import binascii

from drivers.at import ATCommandError, ATTimeout
from drivers.lorawan import MODEM_RESET, TIMEOUT, LoRaError, parse_int, unhex


def _value(r, key):
    """The value of a RUI3 get reply: 'AT+NJS=1' -> '1', or a bare value line."""
    for line in r.lines:
        if line.startswith(key + "="):
            return line[len(key) + 1 :].strip()
    for line in r.lines:
        if not line.startswith("+"):
            return line.strip()
    return None


class Dialect:
    """RAK3172 RUI3 AT: AT+BAND, AT+JOIN, AT+SEND=port:hex, +EVT: events."""

    errors = ("AT_",)
    banners = ("RAKwireless", "Current Work Mode")

    def register(self, m):
        self.m = m
        m.at.urc("+EVT:", self._evt)

    async def sync(self, m):
        try:
            await m.at.sync(m.timeouts["sync"])
        except ATTimeout:
            raise LoRaError(TIMEOUT, "modem does not answer AT")

    async def configure(self, m):
        r = await m.cmd("AT+NWM=?")
        if _value(r, "AT+NWM") != "1":
            try:
                await m.cmd("AT+NWM=1")
            except LoRaError as e:
                if e.reason != MODEM_RESET:
                    raise
                await self.sync(m)  # RUI3 restarts to change the work mode
        await m.cmd("AT+NJM=1")
        await m.cmd("AT+CLASS=" + m.lora_class)
        await m.cmd("AT+BAND=%d" % m.band)
        if m.mask is not None:
            await m.cmd("AT+MASK=" + m.mask)
        await m.cmd("AT+ADR=%d" % (0 if m.fixed_dr is not None else 1))
        if m.fixed_dr is not None:
            await m.cmd("AT+DR=%d" % m.fixed_dr)
        await m.cmd("AT+DEVEUI=" + m._dev_eui, secret="AT+DEVEUI")
        await m.cmd("AT+APPEUI=" + m._app_eui, secret="AT+APPEUI")
        await m.cmd("AT+APPKEY=" + m._app_key, secret="AT+APPKEY")

    async def join(self, m):
        await m.cmd("AT+JOIN=1:0:8:1")
        return False

    async def join_state(self, m):
        """AT+NJS=? (docs/modems.md "RAK3172 (RUI3)"): True when the modem says it has joined."""
        try:
            return _value(await m.cmd("AT+NJS=?"), "AT+NJS") == "1"
        except (LoRaError, ATCommandError):
            return False

    async def query_dr(self, m):
        r = await m.cmd("AT+DR=?")
        v = _value(r, "AT+DR")
        return parse_int(v) if v else None

    async def send(self, m, port, data, confirmed):
        c = 1 if confirmed else 0
        if m._cfm != c:
            await m.cmd("AT+CFM=%d" % c)
            m._cfm = c
        hexs = binascii.hexlify(data).decode().upper()
        await m.cmd("AT+SEND=%d:%s" % (port, hexs))

    def _evt(self, line):
        m = self.m
        body = line[5:].strip()
        key = body.replace(" ", "_").upper()
        if key == "JOINED":
            m._joined(True)
        elif key.startswith("JOIN") and "FAIL" in key:
            m._joined(False)
        elif key == "TX_DONE":
            if not m._cfm:
                m._sent("done")
        elif key.startswith("SEND_CONFIRMED_OK"):
            m._sent("ok")
        elif key.startswith("SEND_CONFIRMED_FAIL"):
            m._sent("failed")
        elif body.startswith("RX_"):
            self._rx(body)
        elif key in ("UNICAST", "MULTICAST"):
            pass  # the second line of the older three-line downlink
        elif ":" in body and body.split(":", 1)[0].isdigit():
            port, hexs = body.split(":", 1)  # the older format's last line
            rs = self._old or (None, None)
            self._old = None
            payload = unhex(hexs)
            if payload is None:
                m.unknown_events += 1
            else:
                m._downlink(int(port), payload, rs[0], rs[1])
        else:
            m.unknown_events += 1

    _old = None

    def _rx(self, body):
        m = self.m
        if "RSSI" in body:  # older: "RX_1, RSSI -34, SNR 15" (the payload follows)
            rssi = snr = None
            for part in body.split(","):
                part = part.strip()
                if part.startswith("RSSI"):
                    rssi = parse_int(part[4:])
                elif part.startswith("SNR"):
                    snr = parse_int(part[3:])
            self._old = (rssi, snr)
            m.rssi, m.snr = rssi, snr
            return
        f = body.split(":")  # RX_1:<rssi>:<snr>:UNICAST:<port>:<hex>
        if len(f) < 5:
            m.unknown_events += 1
            return
        rssi, snr, port = parse_int(f[1]), parse_int(f[2]), parse_int(f[4])
        payload = unhex(f[5]) if len(f) > 5 and f[5] else b""
        if payload is None:
            m.unknown_events += 1
            return
        m._downlink(port, payload, rssi, snr)
