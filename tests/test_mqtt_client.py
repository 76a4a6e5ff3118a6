"""The pinned umqtt.simple (1.3.4, lib/meterdeps/umqtt/simple.py) has the defects that
firmware/comms/mqtt/session.py works around, and the session loads it by the project's
own name. Portable: CPython and MicroPython.

Each defect is shown on the client itself, over a wire that behaves like the modem
socket (drivers/cellular.py's ModemSocket: a read of bytes that are not there raises
ETIMEDOUT at once and consumes nothing; non-blocking, it returns None). Should the pin
move to a version without one of them, its test fails and the workaround is to be
looked at again (docs/board.md, "The MQTT client").
"""

import errno
import sys

import support

from firmware.comms.mqtt import session as mqtt_session
from tools.sim.vclock import VirtualClock


class Wire:
    def __init__(self, data=b""):
        self.buf = bytearray(data)
        self.out = bytearray()
        self.blocking = True
        self.modes = []

    def write(self, b, n=None):
        if isinstance(b, str):
            b = b.encode()
        b = b if n is None else b[:n]
        self.out += b
        return len(b)

    def read(self, n):
        if len(self.buf) < n:
            if not self.blocking and not self.buf:
                return None
            raise OSError(errno.ETIMEDOUT)
        d = bytes(self.buf[:n])
        self.buf = self.buf[n:]
        return d

    def setblocking(self, flag):
        self.blocking = flag
        self.modes.append(flag)

    def settimeout(self, t):
        pass

    def connect(self, addr):
        pass

    def close(self):
        pass


def client(data=b""):
    simple = support.import_umqtt()
    wire = Wire(data)
    simple.socket = mqtt_session.SocketModule(wire)
    c = simple.MQTTClient("m1", "broker", keepalive=60)
    c.sock = wire
    got = []
    c.set_callback(lambda t, m: got.append((bytes(t), bytes(m))))
    return c, wire, got


def publish(topic, msg, qos=0, pid=7):
    body = bytes([len(topic) >> 8, len(topic) & 0xFF]) + topic
    if qos:
        body += bytes([pid >> 8, pid & 0xFF])
    body += msg
    return bytes([0x30 | qos << 1, len(body)]) + body


def test_the_session_loads_the_client_by_the_projects_name():
    support.import_umqtt()
    for name in ("umqtt.simple", "umqtt"):
        sys.modules.pop(name, None)
    s = mqtt_session.Session(Wire(), "m1", 60, lambda t, m: None, VirtualClock(), 1000)
    mod = sys.modules[mqtt_session.CLIENT]
    assert mqtt_session.CLIENT == "meterdeps.umqtt.simple"
    assert isinstance(s.client, mod.MQTTClient)
    assert "umqtt.simple" not in sys.modules  # never the name a stock image freezes


def test_connect_sends_connect_then_its_read_of_connack_raises_at_once():
    c, wire, _ = client()
    e = support.raises(OSError, c.connect, False)
    assert e.args[0] == errno.ETIMEDOUT  # the session awaits the CONNACK itself
    assert wire.out[0] == 0x10 and wire.out[4:8] == b"MQTT"


def test_a_malformed_connack_is_an_assertion_in_the_client():
    c, wire, _ = client(b"\x20\x03\x00\x00\x00")
    support.raises(AssertionError, c.connect, False)  # the session parses CONNACK itself


def test_check_msg_reads_past_the_first_byte_blocking():
    # only the first byte is there: the client goes blocking for the rest (on a real
    # socket it would wait for good), so the session calls it for a whole packet only
    c, wire, _ = client(b"\x30")
    support.raises(OSError, c.check_msg)
    assert wire.modes == [False, True]


def test_a_packet_other_than_publish_puts_the_client_out_of_step():
    # a late PUBACK (pid 0x0032), then a message: wait_msg reads the PUBACK's first byte
    # only, takes its 0x32 for a QoS 1 PUBLISH, and the message is lost in the stream
    c, wire, got = client(b"\x40\x02\x00\x32" + publish(b"t", b"hi"))
    for _ in range(8):
        if not wire.buf:
            break
        try:
            c.wait_msg()
        except Exception:
            break
    assert (b"t", b"hi") not in got
    # the same bytes read whole by their length (what the session does) keep step
    c2, wire2, got2 = client(publish(b"t", b"hi"))
    c2.wait_msg()
    assert got2 == [(b"t", b"hi")]


def test_a_qos2_publish_is_an_assertion_after_the_callback():
    c, wire, got = client(publish(b"t", b"x", qos=2))
    support.raises(AssertionError, c.wait_msg)
    assert got == [(b"t", b"x")]  # the session drops a QoS 2 PUBLISH whole instead


def test_subscribe_length_is_one_byte():
    # the Remaining Length is one byte: past 127 it sets the continuation bit, so the
    # settings keep topics to 122 bytes (topic_prefix at most 96 characters)
    for n, ok in ((122, True), (130, False)):
        c, wire, _ = client()
        support.raises(OSError, c.subscribe, b"t" * n, 1)  # the SUBACK read
        assert wire.out[0] == 0x82
        assert (wire.out[1] < 0x80) == ok, n
