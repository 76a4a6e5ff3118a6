"""Signed JSON messages between the back office and a meter (MQTT `cmd`, `ack`, `event`,
`state`): signing, verification, commands and the (boot, seq) freshness check.

A signed payload is the UTF-8 JSON text of one object whose last member is the tag:

    {"meter":"12345678901","boot":3,"seq":41,...,"mac":"<32 lowercase hex>"}

    K_msg = HMAC-SHA256(meter_key, b"PM1 msg")
    mac   = HMAC-SHA256(K_msg, P)[:16]      P: the payload's bytes before the final ,"mac":"

meter_key is the 32-byte per-meter key (core.meter_key). The tag covers the bytes as sent,
so verification needs no canonical form; the text is parsed only once the tag holds.
Written with the standard `hmac` apart from the firmware, like the rest of tools/vend.
"""

import hashlib
import hmac
import json
import re

MSG_LABEL = b"PM1 msg"
MAC_BYTES = 16
_MARK = b',"mac":"'
_TAIL = re.compile(rb',"mac":"([0-9a-f]{32})"\}\Z')

# op -> {field: kind}; kinds: "tariff" (an object), "local_time" ("YYYY-MM-DDTHH:MM[:SS]"),
# "money" (a decimal string), "int", "action" ("open" or "close")
OPS = {
    "tariff": {"tariff": "tariff", "from": "local_time"},
    "thresholds": {
        "low_credit": "money",
        "reconnect_min": "money",
        "emergency_credit": "money",
        "max_power_w": "int",
        "low_credit_repeat_s": "int",
    },
    "relay": {"action": "action"},
    "report": {},
}
REQUIRED = {"tariff": ("tariff",), "relay": ("action",)}
_MONEY = re.compile(r"\A[0-9]+(\.[0-9]+)?\Z")
_LOCAL_TIME = re.compile(r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(:[0-9]{2})?\Z")


def msg_key(meter_key):
    """K_msg: the message key of a meter key (32 bytes)."""
    if not isinstance(meter_key, (bytes, bytearray)) or len(meter_key) != 32:
        raise ValueError("meter key: 32 bytes expected")
    return hmac.new(bytes(meter_key), MSG_LABEL, hashlib.sha256).digest()


def _tag(meter_key, signed_part):
    return hmac.new(msg_key(meter_key), signed_part, hashlib.sha256).digest()[:MAC_BYTES]


def sign(meter_key, obj):
    """The signed payload (bytes) of a JSON object: compact JSON, members in insertion
    order, then the "mac" member appended last."""
    if not isinstance(obj, dict):
        raise ValueError("a signed message is a JSON object, not %s" % type(obj).__name__)
    if not obj:
        raise ValueError("a signed message needs at least one member besides the mac")
    if "mac" in obj:
        raise ValueError('the object already has a "mac" member')
    text = json.dumps(obj, separators=(",", ":"), allow_nan=False)
    signed_part = text[:-1].encode()  # without the closing brace
    return signed_part + _MARK + _tag(meter_key, signed_part).hex().encode() + b'"}'


def _no_duplicates(pairs):
    seen = {}
    for k, v in pairs:
        if k in seen:
            raise ValueError("member %r appears twice" % k)
        seen[k] = v
    return seen


def _no_constant(name):
    raise ValueError("%s is not JSON" % name)


def verify(meter_key, payload):
    """The object of a signed payload, without its "mac" member.

    ValueError names the reason: not bytes, no mac, a mac that is not the last member or
    not 32 lowercase hex digits, a tag that does not verify, or text that is not one JSON
    object. The tag is checked (in constant time) before the text is parsed.
    """
    if isinstance(payload, str):
        payload = payload.encode()
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise ValueError("payload: bytes expected, not %s" % type(payload).__name__)
    payload = bytes(payload)
    m = _TAIL.search(payload)
    if m is None:
        if b'"mac"' not in payload:
            raise ValueError("not a signed message: no mac")
        raise ValueError(
            'not a signed message: the payload must end with ,"mac":"<32 lowercase hex>"} '
            "(the mac last)"
        )
    signed_part = payload[: m.start()]
    if not hmac.compare_digest(_tag(meter_key, signed_part), bytes.fromhex(m.group(1).decode())):
        raise ValueError("mac does not verify: altered, or another meter's key")
    try:
        obj = json.loads(
            payload.decode("utf-8"),
            object_pairs_hook=_no_duplicates,
            parse_constant=_no_constant,
        )
    except ValueError as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise ValueError("signed payload is not JSON text: %s" % e) from e
    if not isinstance(obj, dict) or list(obj)[-1] != "mac":
        raise ValueError("signed payload is not one JSON object with the mac last")
    del obj["mac"]
    return obj


def _check_field(op, name, kind, value):
    where = "%s %s" % (op, name)
    if kind == "money":
        if not isinstance(value, str) or not _MONEY.match(value):
            raise ValueError('%s: a decimal string such as "2.50" expected: %r' % (where, value))
    elif kind == "int":
        if type(value) is not int or value < 0:
            raise ValueError("%s: a non-negative integer expected: %r" % (where, value))
    elif kind == "action":
        if value not in ("open", "close"):
            raise ValueError("%s: open or close, not %r" % (where, value))
    elif kind == "local_time":
        if not isinstance(value, str) or not _LOCAL_TIME.match(value):
            raise ValueError("%s: local time YYYY-MM-DDTHH:MM[:SS] expected: %r" % (where, value))
    elif kind == "tariff":
        if not isinstance(value, dict) or not isinstance(value.get("type"), str):
            raise ValueError('%s: a tariff object with a "type" expected' % where)


def make_cmd(meter_key, meter_id, cmd_id, op, **fields):
    """A signed command: {"meter","id","op", ...op fields..., "mac"}.

    Fields whose value is None are left out; `from` (a Python keyword) can be passed as
    **{"from": "2025-01-01T00:00"}. The meter checks the values against its own settings
    schema; this only refuses what can never be right (unknown op or field, wrong type).
    """
    if op not in OPS:
        raise ValueError("op: one of %s, not %r" % (", ".join(OPS), op))
    mid = str(meter_id).strip()
    if not mid.isdigit() or not mid.isascii() or int(mid) < 1 or len(mid) > 19:
        raise ValueError("meter id: 1 to 19 digits, not zero: %r" % (meter_id,))
    if type(cmd_id) is not int or cmd_id < 1:
        raise ValueError("cmd id: a positive integer, increasing per meter: %r" % (cmd_id,))
    allowed = OPS[op]
    obj = {"meter": str(int(mid)), "id": cmd_id, "op": op}
    for name, value in fields.items():
        if value is None:
            continue
        if name not in allowed:
            raise ValueError(
                "op %s takes %s, not %r" % (op, ", ".join(allowed) or "no fields", name)
            )
        _check_field(op, name, allowed[name], value)
        obj[name] = value
    missing = [n for n in REQUIRED.get(op, ()) if n not in obj]
    if missing:
        raise ValueError("op %s needs %s" % (op, ", ".join(missing)))
    if op == "thresholds" and len(obj) == 3:
        raise ValueError("op thresholds needs at least one of %s" % ", ".join(allowed))
    return sign(meter_key, obj)


class Freshness:
    """(boot, seq) of the last message accepted from each meter, held in memory only.

    A meter's messages must come with (boot, seq) strictly increasing; one that does not
    is a replay (or a reordering) and is refused, so an old state or ack can't be passed
    off as new. A back office service keeps these pairs in its database; this tracker
    lasts as long as the process.
    """

    def __init__(self):
        self._last = {}

    def last(self, meter):
        """The (boot, seq) last accepted from a meter, or None."""
        return self._last.get(str(meter))

    def check(self, msg):
        """Raise ValueError unless msg's (boot, seq) is above the last accepted; no change."""
        meter = msg.get("meter")
        boot, seq = msg.get("boot"), msg.get("seq")
        if not isinstance(meter, str) or not meter:
            raise ValueError('message without a "meter" id')
        for name, v in (("boot", boot), ("seq", seq)):
            if type(v) is not int or v < 0:
                raise ValueError(
                    "message from meter %s: %s must be an integer >= 0" % (meter, name)
                )
        last = self._last.get(meter)
        if last is not None and (boot, seq) <= last:
            raise ValueError(
                "replayed or out-of-order message from meter %s: (boot, seq) (%d, %d) is not "
                "above (%d, %d)" % (meter, boot, seq, last[0], last[1])
            )
        return meter, (boot, seq)

    def accept(self, msg):
        """Check msg and remember its (boot, seq) as the meter's last; return msg."""
        meter, pair = self.check(msg)
        self._last[meter] = pair
        return msg
