"""Making tokens with the firmware's own primitives: for tests and the simulator, which run
under MicroPython where the host's vending tool can't. The meter itself never mints a token
(the board image may leave this file out); tools/vend is the back office's independent
implementation over `cryptography` and the standard `hmac`.
"""

import os

from firmware.tokens import compact, envelope
from firmware.tokens.cipher64 import Cipher64

_KIND_SUB = {
    "max_power": compact.SUB_MAX_POWER,
    "clear_tamper": compact.SUB_CLEAR_TAMPER,
    "low_credit": compact.SUB_LOW_CREDIT,
    "payment_mode": compact.SUB_PAYMENT_MODE,
}


def _rnd(rnd):
    return os.urandom(1)[0] & 0xF if rnd is None else rnd


def _money_field(amount):
    field = compact.encode_amount(amount)
    if field is None:
        raise ValueError("amount not representable in a compact token: " + str(amount))
    return field


def compact_credit(key, token_id, amount, rnd=None):
    """20 digits crediting `amount` minor units under token id 1..16,777,215."""
    if not 1 <= token_id <= compact.TOKEN_ID_MAX:
        raise ValueError("compact token id: 1..16777215")
    c = Cipher64(key.f64_key())
    return compact.encode(
        c, compact.CLASS_CREDIT, compact.SUB_CURRENCY, _rnd(rnd), token_id, _money_field(amount)
    )


def compact_management(key, kind, token_id, value, rnd=None):
    """20 digits for "max_power" (W), "low_credit" (minor units), "clear_tamper" (0) or
    "payment_mode" (1 credit, 2 prepayment)."""
    sub = _KIND_SUB[kind]
    field = _money_field(value) if kind == "low_credit" else value
    if not 0 <= field <= 0xFFFF or not 1 <= token_id <= compact.TOKEN_ID_MAX:
        raise ValueError("value or token id out of range")
    c = Cipher64(key.f64_key())
    return compact.encode(c, compact.CLASS_MANAGEMENT, sub, _rnd(rnd), token_id, field)


def compact_key_change(key, material, ken):
    """The two 20-digit halves of a key change to revision key.revision + 1."""
    c = Cipher64(key.f64_key())
    p1, p2 = compact.key_change_fields(material, ken)
    cls = compact.CLASS_MANAGEMENT
    return (
        compact.encode_payload(c, cls, compact.SUB_KEY_CHANGE_1, p1),
        compact.encode_payload(c, cls, compact.SUB_KEY_CHANGE_2, p2),
    )


def envelope_credit(key, meter_id, token_id, amount, issued, expiry=0, iv=None):
    kind = (compact.CLASS_CREDIT << 4) | compact.SUB_CURRENCY
    return envelope.seal(key, meter_id, token_id, issued, expiry, kind, amount, iv=iv)


def envelope_management(key, meter_id, token_id, kind, value, issued, expiry=0, iv=None):
    k = (compact.CLASS_MANAGEMENT << 4) | _KIND_SUB[kind]
    return envelope.seal(key, meter_id, token_id, issued, expiry, k, value, iv=iv)


def envelope_key_change(key, meter_id, token_id, material, ken, issued, expiry=0, iv=None):
    k = (compact.CLASS_MANAGEMENT << 4) | compact.SUB_KEY_CHANGE_1
    return envelope.seal(
        key, meter_id, token_id, issued, expiry, k, 0, aux=ken, material=material, iv=iv
    )
