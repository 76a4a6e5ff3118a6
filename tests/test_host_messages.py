"""CPython only: the back office's signed MQTT messages (tools/vend/messages.py): the
format, a fixed test vector, tamper refusal byte by byte, the shapes refused, commands,
(boot, seq) freshness, and interworking with the firmware's own firmware/comms/signed.py.
"""

import hashlib
import hmac
import json

import pytest

from firmware.tokens import keys
from firmware.comms import signed
from tools.vend import core, messages

KEY = bytes(range(32))
OTHER = bytes(range(1, 33))
EVENT = {
    "meter": "42",
    "boot": 1,
    "seq": 2,
    "t": 3,
    "event": "low_credit",
    "balance": "1.99",
    "value": 199,
}
# sign(KEY, EVENT): a fixed vector for the firmware side to check against
VECTOR = (
    b'{"meter":"42","boot":1,"seq":2,"t":3,"event":"low_credit","balance":"1.99",'
    b'"value":199,"mac":"4d4d2dfd3697ea3c6a38bcf7dd9a3fe2"}'
)


def test_vector_and_format():
    assert messages.sign(KEY, EVENT) == VECTOR
    k_msg = hmac.new(KEY, b"PM1 msg", hashlib.sha256).digest()
    assert messages.msg_key(KEY) == k_msg
    signed_part = VECTOR[: VECTOR.rindex(b',"mac":"')]
    assert signed_part == json.dumps(EVENT, separators=(",", ":")).encode()[:-1]
    tag = hmac.new(k_msg, signed_part, hashlib.sha256).hexdigest()[:32]
    assert VECTOR.endswith(b',"mac":"' + tag.encode() + b'"}')
    assert list(json.loads(VECTOR)) == [*EVENT, "mac"]


def test_round_trip_keeps_order_and_values():
    obj = {"meter": "12345678901", "boot": 7, "seq": 0, "t": 800000000, "online": False}
    obj.update(balance="-3.20", relay="open", nested={"a": [1, 2, None]}, name="Zoë")
    payload = messages.sign(KEY, obj)
    assert isinstance(payload, bytes)
    got = messages.verify(KEY, payload)
    assert got == obj and list(got) == list(obj)
    assert messages.sign(KEY, got) == payload
    assert messages.verify(KEY, bytearray(payload)) == obj
    assert messages.verify(KEY, payload.decode()) == obj


def test_every_single_byte_change_is_refused():
    payload = messages.sign(KEY, EVENT)
    assert messages.verify(KEY, payload) == EVENT
    refused = 0
    for i in range(len(payload)):
        for v in range(256):
            if v == payload[i]:
                continue
            bad = payload[:i] + bytes([v]) + payload[i + 1 :]
            with pytest.raises(ValueError):
                messages.verify(KEY, bad)
            refused += 1
        with pytest.raises(ValueError):  # a byte left out
            messages.verify(KEY, payload[:i] + payload[i + 1 :])
        with pytest.raises(ValueError):  # a byte put in
            messages.verify(KEY, payload[:i] + b" " + payload[i:])
    assert refused == 255 * len(payload)
    with pytest.raises(ValueError):
        messages.verify(KEY, payload + b" ")


def test_another_key_is_refused():
    with pytest.raises(ValueError, match="mac does not verify"):
        messages.verify(OTHER, messages.sign(KEY, EVENT))


def _forge(text):
    """Payload with a correct tag over whatever comes before the last ,"mac":" of text."""
    data = text if isinstance(text, bytes) else text.encode()
    i = data.rindex(b',"mac":"')
    k = messages.msg_key(KEY)
    tag = hmac.new(k, data[:i], hashlib.sha256).hexdigest()[:32]
    return data[:i] + b',"mac":"' + tag.encode() + b'"}'


def test_shapes_refused_with_a_reason():
    good = messages.sign(KEY, EVENT)
    tag = good[-34:-2].decode()
    cases = {
        b'{"meter":"42","seq":1}': "no mac",
        b"": "no mac",
        good[:-3] + b'"}': "end with",  # 31 hex digits
        good[:-2] + b'0"}': "end with",  # 33
        good[:-34] + tag.upper().encode() + b'"}': "end with",
        good[:-1]: "end with",  # no closing brace
        good + b"\n": "end with",
        ('{"mac":"%s","meter":"42"}' % tag).encode(): "end with",  # mac not last
        ('{"meter":"42","x":{"mac":"%s"}}' % tag).encode(): "end with",  # nested
    }
    for payload, reason in cases.items():
        with pytest.raises(ValueError, match=reason):
            messages.verify(KEY, payload)
    # the tag holds but the text is not one JSON object with the mac last
    forged = {
        '{"meter":"42",,"mac":"x"}': "not JSON",
        '{"meter":NaN,"mac":"x"}': "not JSON",
        '{"mac":"%s","mac":"x"}' % tag: "appears twice",
        '{"meter":"42","seq":1,"mac":"x"}': None,  # the control: a good one
    }
    for text, reason in forged.items():
        payload = _forge(text)
        if reason is None:
            assert messages.verify(KEY, payload) == {"meter": "42", "seq": 1}
        else:
            with pytest.raises(ValueError, match=reason):
                messages.verify(KEY, payload)
    with pytest.raises(ValueError, match="not JSON"):
        messages.verify(KEY, _forge(b'{"a":"\xff","mac":"x"}'))  # not UTF-8
    with pytest.raises(ValueError, match="bytes expected"):
        messages.verify(KEY, 42)


def test_sign_refuses_what_it_cannot_sign():
    for obj in ({}, [], {"mac": "x"}, {"x": float("nan")}):
        with pytest.raises(ValueError):
            messages.sign(KEY, obj)
    with pytest.raises(ValueError, match="32 bytes"):
        messages.sign(KEY[:16], EVENT)


def test_make_cmd():
    vk = bytes(32)
    mk = core.meter_key(vk, "0012345678901")
    p = messages.make_cmd(mk, "0012345678901", 5, "relay", action="open")
    assert p.startswith(b'{"meter":"12345678901","id":5,"op":"relay","action":"open","mac":"')
    assert messages.verify(mk, p) == {
        "meter": "12345678901",
        "id": 5,
        "op": "relay",
        "action": "open",
    }
    tariff = {"type": "flat", "price_per_kwh": "0.2500"}
    p = messages.make_cmd(mk, 7, 6, "tariff", tariff=tariff, **{"from": "2026-01-01T00:00"})
    assert messages.verify(mk, p) == {
        "meter": "7",
        "id": 6,
        "op": "tariff",
        "tariff": tariff,
        "from": "2026-01-01T00:00",
    }
    p = messages.make_cmd(mk, 7, 8, "thresholds", low_credit="2.50", max_power_w=0, action=None)
    assert list(messages.verify(mk, p)) == ["meter", "id", "op", "low_credit", "max_power_w"]
    assert messages.verify(mk, messages.make_cmd(mk, 7, 9, "report"))["op"] == "report"
    bad = [
        ((7, 1, "reboot"), {}, "op: one of"),
        ((0, 1, "report"), {}, "meter id"),
        (("x", 1, "report"), {}, "meter id"),
        ((7, 0, "report"), {}, "cmd id"),
        ((7, True, "report"), {}, "cmd id"),
        ((7, 1, "relay"), {}, "needs action"),
        ((7, 1, "relay"), {"action": "toggle"}, "open or close"),
        ((7, 1, "report"), {"action": "open"}, "takes no fields"),
        ((7, 1, "tariff"), {}, "needs tariff"),
        ((7, 1, "tariff"), {"tariff": "flat"}, "tariff object"),
        ((7, 1, "tariff"), {"tariff": tariff, "from": "tomorrow"}, "YYYY-MM-DDTHH:MM"),
        ((7, 1, "thresholds"), {}, "at least one"),
        ((7, 1, "thresholds"), {"low_credit": 2.5}, "decimal string"),
        ((7, 1, "thresholds"), {"low_credit": "-1"}, "decimal string"),
        ((7, 1, "thresholds"), {"max_power_w": "5000"}, "integer"),
        ((7, 1, "thresholds"), {"max_power_w": -1}, "integer"),
        ((7, 1, "thresholds"), {"price": "1"}, "takes low_credit"),
    ]
    for args, fields, reason in bad:
        with pytest.raises(ValueError, match=reason):
            messages.make_cmd(mk, *args, **fields)


def test_freshness():
    f = messages.Freshness()
    assert f.last("42") is None
    msg = {"meter": "42", "boot": 3, "seq": 10}
    assert f.accept(msg) is msg
    assert f.last("42") == (3, 10)
    for boot, seq in ((3, 10), (3, 9), (2, 99), (0, 0)):
        with pytest.raises(ValueError, match="replayed"):
            f.accept({"meter": "42", "boot": boot, "seq": seq})
    assert f.last("42") == (3, 10)
    f.check({"meter": "42", "boot": 3, "seq": 11})  # check alone records nothing
    assert f.last("42") == (3, 10)
    f.accept({"meter": "42", "boot": 4, "seq": 0})  # a reboot restarts seq
    f.accept({"meter": "43", "boot": 0, "seq": 0})  # meters are apart
    assert f.last("42") == (4, 0) and f.last("43") == (0, 0)
    for bad in (
        {"boot": 1, "seq": 1},
        {"meter": "42", "boot": 5},
        {"meter": "42", "boot": 5, "seq": "6"},
        {"meter": "42", "boot": True, "seq": 6},
        {"meter": "42", "boot": 5, "seq": -1},
    ):
        with pytest.raises(ValueError):
            f.accept(bad)


def test_interworks_with_the_firmware():
    """Host and firmware implement the format apart; each verifies what the other signs."""
    mk = keys.MeterKey(core.meter_key(bytes(range(16)), 42))
    host = messages.sign(mk.key, EVENT)
    assert signed.verify(mk.msg_mac(), host)["seq"] == 2
    text = signed.body([("meter", "42"), ("boot", 1), ("seq", 3), ("cmd", 9)])
    from_meter = signed.sign(mk.msg_mac(), text)
    assert messages.verify(mk.key, from_meter) == {"meter": "42", "boot": 1, "seq": 3, "cmd": 9}
    with pytest.raises(ValueError):
        messages.verify(OTHER, from_meter)
    cmd = messages.make_cmd(mk.key, 42, 1, "relay", action="close")
    assert signed.verify(mk.msg_mac(), cmd)["action"] == "close"
