"""Signed MQTT messages: JSON text whose last member is an HMAC tag, both directions.

    {"meter":"42","boot":3,"seq":17,...,"mac":"<32 hex>"}

The tag is HMAC-SHA256(K_msg, P)[:16] in lowercase hex, where P is the payload's bytes
before the final `,"mac":"` and K_msg = HMAC-SHA256(meter key, "PM1 msg")
(`MeterKey.msg_mac()`). Checking the exact bytes (not a re-serialised object) keeps
the two sides independent of JSON formatting. The meter signs its acks, events and
state (numbered by boot and sequence, so the back office can refuse a replayed
reading) and checks the back office's commands the same way.
"""

import binascii
import json

from firmware.tokens.keys import compare_digest

_MARK = b',"mac":"'
TAG_HEX = 32


def body(pairs):
    """'{"k":v,...' (no closing brace) from (key, value) pairs; values JSON-encoded."""
    parts = []
    for k, v in pairs:
        parts.append('"' + k + '":' + json.dumps(v))
    return "{" + ",".join(parts)


def sign(mac, text):
    """The payload (bytes) for `text`, an unclosed JSON object from body()."""
    data = text.encode()
    tag = binascii.hexlify(mac.digest(data)[:16])
    return data + _MARK + tag + b'"}'


def verify(mac, payload):
    """The object of a signed payload; ValueError (with the reason) when it is not one."""
    if not isinstance(payload, (bytes, bytearray)):
        raise ValueError("payload: expected bytes")
    i = bytes(payload).rfind(_MARK)
    n = len(payload)
    if i < 1 or n != i + len(_MARK) + TAG_HEX + 2 or payload[n - 2 :] != b'"}':
        raise ValueError("not a signed message (no trailing mac)")
    try:
        tag = binascii.unhexlify(payload[i + len(_MARK) : n - 2])
    except ValueError:
        raise ValueError("mac: not hex")
    if not compare_digest(mac.digest(payload[:i])[:16], tag):
        raise ValueError("mac: does not verify")
    try:
        obj = json.loads(payload)
    except ValueError:
        raise ValueError("not JSON")
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    return obj
