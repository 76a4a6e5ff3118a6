"""One MQTT session over a socket that never waits: umqtt.simple writes the packets,
this module waits for the answers with deadlines and reads every packet whole.

The socket is drivers/cellular.py's ModemSocket (or anything with its calls): `write`
queues, `read(n)` serves only buffered bytes, and the awaitable side is
`wait_packet(size, ms)` (a whole packet buffered, framed by packet.size: the one
Remaining Length parser), `drain(ms)`, `aclose(ms)`, `any()`, `peek(n)`. umqtt.simple
(micropython-lib, a dependency pinned to 1.3.4, imported under the project's own package
name `CLIENT` so that a stock image's frozen umqtt.simple never takes its place:
docs/board.md) is given that socket through its module global `socket` (`SocketModule`),
and is only ever called when it cannot block:

- before `connect()`, `subscribe()` and `publish(qos=1)` everything buffered is handled
  first (`_settle`), so their read of the answer finds nothing and raises
  OSError(ETIMEDOUT) at once, consuming nothing; the answer is then awaited here;
- `check_msg()` is called only for a PUBLISH of QoS 0 or 1, or a PINGRESP, that is
  already whole in the buffer; it calls `on_message(topic, msg)` and then writes the
  PUBACK, so a top-up is journaled before the broker hears it was delivered;
- every other packet (CONNACK, SUBACK, PUBACK, a QoS 2 PUBLISH, UNSUBACK, types a
  broker should never send) is read whole here, by its length: umqtt.simple would read
  only its first byte and lose step with the stream. Strays are counted.

Each of these answers a defect of the pinned version (tests/test_mqtt_client.py shows
them in it; docs/board.md, "The MQTT client", lists them).
"""

import errno

from firmware.comms.mqtt import packet

CONNACK = 0x20
PUBLISH = 0x30
PUBACK = 0x40
SUBACK = 0x90
PINGRESP = 0xD0
CLIENT = "meterdeps.umqtt.simple"  # the pinned umqtt.simple, as the build installs it
# MQTT 3.1.1, 2.2 and 3.2-3.9: the fixed header's type and PUBLISH QoS bits, CONNACK's
# session-present flag, SUBACK's failure
_TYPE = 0xF0
_QOS_BITS = 0x06
_QOS2 = 0x04
_SESSION_PRESENT = 0x01
_SUBACK_FAILURE = 0x80


class MQTTError(Exception):
    """The session failed: reason ("refused", "eof", "timeout", "suback"), detail."""

    def __init__(self, reason, detail=None):
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail


class SocketModule:
    """Stands in for umqtt.simple's `socket` module: socket() gives the one connection."""

    def __init__(self, sock):
        self.sock = sock

    def socket(self, *args):
        return self.sock

    def getaddrinfo(self, host, port, *args):
        return [(2, 1, 0, "", (host, port))]  # the modem resolves the name itself


def _timeout(e):
    return isinstance(e, OSError) and e.args and e.args[0] == errno.ETIMEDOUT


class Session:
    """client_id, keepalive_s: as MQTT; on_message(topic, msg) for PUBLISH (bytes);
    clock: ticks_ms/ticks_diff; timeout_ms: the deadline of each answer awaited."""

    def __init__(self, sock, client_id, keepalive_s, on_message, clock, timeout_ms=10000):
        self.sock = sock
        self.clock = clock
        self.timeout_ms = timeout_ms
        self.on_message = on_message
        from meterdeps.umqtt import simple as umqtt  # at first use: lib/ is on the path

        umqtt.socket = SocketModule(sock)
        c = umqtt.MQTTClient(client_id, "broker", keepalive=keepalive_s)
        c.set_callback(self._message)
        self.client = c
        self.strays = 0  # packets read and dropped: unexpected type, QoS 2, late acks
        self.last_rx = clock.ticks_ms()

    def _message(self, topic, msg):
        self.on_message(topic, msg)

    # -- reading ------------------------------------------------------------------------

    async def _packet(self, timeout_ms):
        """Wait for one whole packet and handle it; (type, body) of an ack, (type, None)
        for what was handled or dropped, None at the deadline."""
        try:
            k = await self.sock.wait_packet(packet.size, timeout_ms)
        except OSError as e:
            if _timeout(e):
                return None
            raise
        if k == 0:
            raise MQTTError("eof")
        self.last_rx = self.clock.ticks_ms()
        first = self.sock.peek(1)[0]
        kind = first & _TYPE
        if (kind == PUBLISH and first & _QOS_BITS < _QOS2) or first == PINGRESP:
            self.client.check_msg()
            return kind, None
        data = self.sock.read(k)
        body = data[packet.bounds(data)[0] :]
        if kind in (CONNACK, SUBACK, PUBACK):
            return kind, body
        self.strays += 1
        return kind, None

    async def _expect(self, kind, pid):
        """Handle packets until the ack `kind` (with packet id `pid`) arrives."""
        clk = self.clock
        start = clk.ticks_ms()
        while True:
            left = self.timeout_ms - clk.ticks_diff(clk.ticks_ms(), start)
            got = await self._packet(left if left > 0 else 0)
            if got is None:
                raise MQTTError("timeout", kind)
            t, body = got
            if body is None:
                continue  # a message, a PINGRESP or a stray: handled
            if t == kind and (pid is None or (len(body) >= 2 and (body[0] << 8 | body[1]) == pid)):
                return body
            self.strays += 1  # another ack: a late one of an earlier try, or nobody's

    async def _settle(self):
        """Handle whatever is buffered, so umqtt's next read finds nothing."""
        while self.sock.any():
            got = await self._packet(self.timeout_ms)
            if got is None:
                raise MQTTError("timeout", "partial packet")
            if got[1] is not None:
                self.strays += 1  # an ack nobody is waiting for

    async def _send(self, call, *args):
        await self._settle()
        try:
            call(*args)
        except OSError as e:
            if not _timeout(e):  # the read of the answer: awaited below
                raise
        await self.sock.drain(self.timeout_ms)

    # -- the conversation ---------------------------------------------------------------

    async def connect(self, will_topic=None, will_msg=None, clean=False):
        """CONNECT (will retained, QoS 1) and CONNACK; returns session-present."""
        if will_topic is not None:
            self.client.set_last_will(will_topic, will_msg, True, 1)
        await self._send(self.client.connect, clean)
        body = await self._expect(CONNACK, None)
        if len(body) != 2:
            raise MQTTError("refused", "malformed CONNACK")
        if body[1]:
            raise MQTTError("refused", body[1])
        return body[0] & _SESSION_PRESENT

    async def subscribe(self, topic, qos=1):
        await self._send(self.client.subscribe, topic, qos)
        body = await self._expect(SUBACK, self.client.pid)
        if len(body) < 3 or body[2] & _SUBACK_FAILURE:
            raise MQTTError("suback", topic)
        return body[2]

    async def publish(self, topic, msg, retain=False, qos=1):
        """PUBLISH; with QoS 1 returns once the broker's PUBACK is in."""
        await self._send(self.client.publish, topic, msg, retain, qos)
        if qos:
            await self._expect(PUBACK, self.client.pid)

    async def ping(self):
        self.client.ping()
        await self.sock.drain(self.timeout_ms)

    async def poll(self, timeout_ms):
        """Handle incoming packets for up to timeout_ms (returns at the first one)."""
        return await self._packet(timeout_ms) is not None

    async def close(self, clean=True):
        """DISCONNECT (a clean close: the broker drops the will) and close the socket."""
        try:
            if clean:
                self.client.disconnect()
                await self.sock.drain(self.timeout_ms)
        except OSError:
            pass
        await self.sock.aclose(self.timeout_ms)
