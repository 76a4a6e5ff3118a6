"""firmware/comms/lora/payload.py: the 11-byte signed uplinks and the top-up downlinks (portable).

Every uplink fits 11 bytes and round-trips through the receiver; a changed byte, another
meter's key, a replay or a reordered uplink is refused; the number forms round as the
module docstring says; downlinks are told apart and reach the credit path as the keypad's
20 digits or the envelope's bytes.
"""

import support

from firmware.tokens import keys
from firmware.comms.lora import payload as lp
from firmware.tokens import codes as rc
from tools.sim import tokenmint as mint

METER_ID = 4711002
VK = bytes(range(32))
KEY = keys.MeterKey(keys.derive_meter_key(VK, METER_ID))
OTHER = keys.MeterKey(keys.derive_meter_key(VK, METER_ID + 1))
ID8 = keys.meter_id_bytes(METER_ID)


def _pair(boot=3, key=KEY):
    return lp.Uplinks(key.msg_mac(), ID8, boot), lp.Receiver(KEY.msg_mac(), ID8, boot - 1)


def _all(up):
    return [
        up.ack(rc.ACCEPT, 0x123456, 123456),
        up.state(-2500, "emergency_credit", "connected", True, 4321),
        up.event("topup", 1000000, 100000),
        up.meter(98765432, 9, 3),
        up.ack(rc.USED, 7, 0),
        up.state(0, "out_of_credit", "disconnected", "open", 0),
        up.event("disconnect", -1, 8),
    ]


def test_every_uplink_is_11_bytes_and_round_trips():
    up, rx = _pair()
    msgs = _all(up)
    for m in msgs:
        assert len(m) == lp.SIZE == 11
    got = [rx.decode(m) for m in msgs]
    assert [g["seq"] for g in got] == [1, 2, 3, 4, 5, 6, 7] and got[0]["boot"] == 3
    a = got[0]
    assert a["type"] == "ack" and a["code"] == rc.ACCEPT and a["token16"] == 0x3456
    assert a["balance"] == 123456
    s = got[1]
    assert s["type"] == "state" and s["balance"] == -2500 and s["power_w"] == 4321
    assert s["credit_status"] == "emergency_credit" and s["control_state"] == "connected"
    assert s["relay"] == "closed"
    e = got[2]
    assert e["type"] == "event" and e["event"] == "topup"
    assert e["value"] == 99994  # the 16-bit form steps by 10 from 16,384: rounded down
    assert e["balance"] == 1000000
    m = got[3]
    assert m == {"type": "meter", "open_reasons": 9, "energy_wh": 98765432, "errors": 3,
                 "boot": 3, "seq": 4}  # fmt: skip
    assert got[5]["relay"] == "open" and got[5]["credit_status"] == "out_of_credit"
    assert got[6]["event"] == "disconnect" and got[6]["balance"] == -1 and got[6]["value"] == 8


def test_a_changed_byte_or_another_meters_key_is_refused():
    up, rx = _pair()
    m = up.ack(rc.ACCEPT, 42, 5000)
    for i in range(lp.SIZE):
        bad = bytearray(m)
        bad[i] ^= 0x01
        support.raises(ValueError, rx.decode, bytes(bad))
    other = lp.Uplinks(OTHER.msg_mac(), ID8, 3)
    support.raises(ValueError, rx.decode, other.ack(rc.ACCEPT, 42, 5000))
    elsewhere = lp.Uplinks(KEY.msg_mac(), keys.meter_id_bytes(METER_ID + 1), 3)
    support.raises(ValueError, rx.decode, elsewhere.ack(rc.ACCEPT, 42, 5000))
    support.raises(ValueError, rx.decode, m[:10])
    assert rx.decode(m)["token16"] == 42  # the genuine one still verifies


def test_replays_and_reordering_are_refused_lost_uplinks_and_reboots_are_not():
    up, rx = _pair()
    a, b = up.event("boot", 0), up.event("low_credit", 100)
    assert rx.decode(b)["seq"] == 2
    support.raises(ValueError, rx.decode, a)  # older than the last accepted
    support.raises(ValueError, rx.decode, b)  # a replay
    for _ in range(150):  # 150 lost on the way: more than the 6 bits sent
        up.state(1, "in_credit", "connected", True, 1)
    assert rx.decode(up.state(7, "in_credit", "connected", True, 1))["seq"] == 153
    up2 = lp.Uplinks(KEY.msg_mac(), ID8, 5)  # two boots later (one sent nothing)
    got = rx.decode(up2.ack(rc.ACCEPT, 1, 9))
    assert (got["boot"], got["seq"]) == (5, 1)
    support.raises(ValueError, rx.decode, up.state(7, "in_credit", "connected", True, 1))


def test_number_forms_round_toward_zero_and_saturate():
    for v in (0, 1, -1, 2097151, -2097151, 16383):
        assert lp.unmoney24(lp.money24(v)) == v
    assert lp.unmoney24(lp.money24(2097159)) == 2097150
    assert lp.unmoney24(lp.money24(-123456789)) == -123456700
    assert lp.unmoney24(lp.money24(10**12)) == 2097151000
    for v in (0, 1, 16383, 16384, 180214, 18201624):
        assert lp.unamount16(lp.amount16(v)) == v
    assert lp.unamount16(lp.amount16(16389)) == 16384
    assert lp.unamount16(lp.amount16(10**9)) == 18201624
    assert lp.amount16(-5) == 0
    support.raises(ValueError, _pair()[0].state, 0, "rich", "connected", True, 0)


def test_unknown_event_kind_is_code_0_and_power_saturates():
    up, rx = _pair()
    e = rx.decode(up.event("something_new", 5, 1))
    assert e["code"] == 0 and e["event"] is None
    s = rx.decode(up.state(0, "in_credit", "connected", None, 100000))
    assert s["power_w"] == 65535 and s["relay"] == "unknown"


def test_downlink_kinds_and_tokens():
    tok = mint.compact_credit(KEY, 77, 1500)
    nine = lp.compact_bytes(tok)
    bcd = lp.compact_bcd(tok)
    envl = mint.envelope_credit(KEY, METER_ID, 78, 2500, 800000000)
    assert len(nine) == 9 and len(bcd) == 10 and len(envl) == 70
    assert lp.downlink_kind(nine) == lp.COMPACT
    assert lp.downlink_kind(bcd) == lp.COMPACT_BCD
    assert lp.downlink_kind(envl) == lp.ENVELOPE
    assert lp.downlink_token(nine) == tok and lp.downlink_token(bcd) == tok
    assert lp.downlink_token(envl) == envl
    assert lp.downlink_kind(b"\x04" + nine[1:]) is None  # more than 66 bits
    assert lp.downlink_kind(b"\x0a" * 10) is None  # not decimal digits
    assert lp.downlink_kind(b"\x02" + envl[1:]) is None  # envelope version 2
    assert lp.downlink_kind(b"") is None and lp.downlink_token(b"\x00" * 5) is None
    assert lp.token_id_of(envl) == 78
    support.raises(ValueError, lp.compact_bytes, "12345")
    # the largest 66-bit number fits 9 bytes
    top = "73786976294838206463"
    assert lp.downlink_token(lp.compact_bytes(top)) == top


def test_downlink_size_per_region_and_dr():
    assert lp.downlink_max("EU868", 0) == 51 and lp.downlink_max("EU868", 3) == 115
    assert lp.downlink_max("US915", 8) == 53 and lp.downlink_max("US915", 9) == 129
    assert lp.downlink_max("US915", 0) == 0 and lp.downlink_max("XX", 0) == 0
    # the envelope needs 70: not at EU868 DR0-2 nor at US915's RX2 (DR8)
    assert lp.downlink_max("EU868", 2) < 70 <= lp.downlink_max("EU868", 3)
    assert lp.downlink_max("US915", 8) < 70 <= lp.downlink_max("US915", 9)
