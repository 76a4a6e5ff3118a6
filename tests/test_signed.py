"""firmware/comms/signed.py: the meter's signed MQTT messages, on both interpreters.

The vector is the back office's (tests/test_host_messages.py: tools/vend/messages.py with
CPython's hmac), so the meter's HMAC and layout are checked against an independent
implementation under MicroPython too.
"""

import support

from firmware.comms import signed
from firmware.tokens.keys import MeterKey

KEY = MeterKey(bytes(range(32)))
VECTOR = (
    b'{"meter":"42","boot":1,"seq":2,"t":3,"event":"low_credit","balance":"1.99",'
    b'"value":199,"mac":"4d4d2dfd3697ea3c6a38bcf7dd9a3fe2"}'
)
PAIRS = [
    ("meter", "42"),
    ("boot", 1),
    ("seq", 2),
    ("t", 3),
    ("event", "low_credit"),
    ("balance", "1.99"),
    ("value", 199),
]


def test_the_meter_signs_the_back_offices_vector_byte_for_byte():
    assert signed.sign(KEY.msg_mac(), signed.body(PAIRS)) == VECTOR


def test_verify_returns_the_object():
    obj = signed.verify(KEY.msg_mac(), VECTOR)
    assert obj["event"] == "low_credit" and obj["value"] == 199 and obj["seq"] == 2


def test_every_byte_changed_is_refused():
    mac = KEY.msg_mac()
    for i in range(len(VECTOR)):
        bad = bytearray(VECTOR)
        bad[i] ^= 0x01
        support.raises(ValueError, signed.verify, mac, bytes(bad))


def test_other_key_and_shapes_are_refused_with_a_reason():
    mac = KEY.msg_mac()
    other = MeterKey(bytes(range(1, 33))).msg_mac()
    e = support.raises(ValueError, signed.verify, other, VECTOR)
    assert "verify" in str(e)
    for bad in (
        b"",
        b"{}",
        VECTOR[:-1],
        VECTOR + b" ",
        b"not json",
        VECTOR.replace(b',"mac"', b' "mac"'),
    ):
        support.raises(ValueError, signed.verify, mac, bad)
    support.raises(ValueError, signed.verify, mac, "a str")
    # a signed payload that is not an object
    arr = signed.sign(mac, "[1")
    support.raises(ValueError, signed.verify, mac, arr)
