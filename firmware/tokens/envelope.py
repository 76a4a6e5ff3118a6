"""The remote envelope (MQTT, LoRaWAN where 70 bytes fit): version 1, 70 bytes.

    offset size field (integers big-endian)
     0      1   version = 1
     1      1   key revision the envelope was made under
     2      8   meter id (u64)
    10      4   token id (u32, 1 ..)
    14      4   issue time (u32, seconds since 2000-01-01)
    18      4   expiry (u32, seconds since 2000-01-01; 0 = none)
    22     16   IV (random)
    38     16   AES-128-CBC(encryption key, IV, body)
    54     16   tag = HMAC-SHA256(MAC key, bytes 0..53), first 16 bytes

    body (16 bytes): kind (class << 4 | subclass, the compact token's numbering),
    aux (key expiry number for a key change, else 0), value (u32: minor units for money,
    W for power, ...), 10 bytes of key material for a key change, else zeros.

Encrypt-then-MAC: the tag covers the header and the ciphertext and is compared in constant
time before anything is decrypted. The header is readable by anyone (it routes and names the
token); the kind and value are not. The body is exactly one AES block, so there is no
padding to get wrong. It may travel as 70 raw bytes or as 140 hex digits.
"""

try:
    from micropython import const
except ImportError:  # CPython, for host tests and tools

    def const(x):
        return x


import struct

try:
    from cryptolib import aes as _aes
except ImportError:  # CPython (host tests): the same calls over `cryptography`

    class _aes:
        def __init__(self, key, mode, iv):
            from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

            self._c = Cipher(algorithms.AES(bytes(key)), modes.CBC(bytes(iv)))

        def encrypt(self, data):
            e = self._c.encryptor()
            return e.update(bytes(data)) + e.finalize()

        def decrypt(self, data):
            d = self._c.decryptor()
            return d.update(bytes(data)) + d.finalize()


from firmware.tokens import codes as rc
from firmware.tokens.keys import compare_digest, meter_id_bytes

VERSION = const(1)
SIZE = const(70)
HEADER_SIZE = const(22)
_IV = const(22)
_CT = const(38)
_TAG = const(54)
TAG_SIZE = const(16)
_MODE_CBC = const(2)
_HEX = "0123456789abcdef"


def seal(key, meter_id, token_id, issued, expiry, kind, value, aux=0, material=None, iv=None):
    """The 70-byte envelope. key: keys.MeterKey; iv: 16 bytes (random when None)."""
    if iv is None:
        import os

        iv = os.urandom(16)
    buf = bytearray(SIZE)
    buf[0] = VERSION
    buf[1] = key.revision
    buf[2:10] = meter_id_bytes(meter_id)
    struct.pack_into(">III", buf, 10, token_id, issued, expiry)
    buf[_IV:_CT] = iv
    body = bytearray(16)
    body[0] = kind
    body[1] = aux
    struct.pack_into(">I", body, 2, value)
    if material is not None:
        body[6:16] = material
    buf[_CT:_TAG] = _aes(key.enc_key(), _MODE_CBC, bytes(iv)).encrypt(bytes(body))
    buf[_TAG:] = key.mac().digest(memoryview(buf)[:_TAG])[:TAG_SIZE]
    return bytes(buf)


def to_hex(data):
    out = []
    for b in data:
        out.append(_HEX[b >> 4])
        out.append(_HEX[b & 15])
    return "".join(out)


def parse_hex(text):
    """Bytes of a hex string (upper or lower case, 140 digits), or None."""
    if isinstance(text, (bytes, bytearray, memoryview)):
        try:
            text = bytes(text).decode()
        except Exception:
            return None
    if not isinstance(text, str):
        return None
    text = text.strip()
    if len(text) != 2 * SIZE:
        return None
    out = bytearray(SIZE)
    for i in range(SIZE):
        hi = _HEX.find(text[2 * i].lower())
        lo = _HEX.find(text[2 * i + 1].lower())
        if hi < 0 or lo < 0:
            return None
        out[i] = (hi << 4) | lo
    return bytes(out)


def header(data):
    """(version, revision, meter id, token id, issued, expiry) of 70 bytes (not verified)."""
    return (data[0], data[1], int.from_bytes(bytes(data[2:10]), "big")) + struct.unpack_from(
        ">III", data, 10
    )


def open_envelope(key, meter_id8, data):
    """Verify and decrypt: (code, token id, issued, expiry, kind, aux, value, material).

    meter_id8: this meter's id as 8 bytes (keys.meter_id_bytes).

    code 0 means authentic and well formed; otherwise FORMAT (size, version, reserved
    bytes), WRONG_METER, NOT_READY (no key), KEY_TYPE (another key revision) or CRC (tag)."""
    if len(data) != SIZE or data[0] != VERSION:
        return rc.FORMAT, 0, 0, 0, 0, 0, 0, None
    if bytes(data[2:10]) != meter_id8:
        return rc.WRONG_METER, 0, 0, 0, 0, 0, 0, None
    if key is None:
        return rc.NOT_READY, 0, 0, 0, 0, 0, 0, None
    if data[1] != key.revision:
        return rc.KEY_TYPE, 0, 0, 0, 0, 0, 0, None
    mv = memoryview(data)
    if not compare_digest(key.mac().digest(mv[:_TAG])[:TAG_SIZE], mv[_TAG:]):
        return rc.CRC, 0, 0, 0, 0, 0, 0, None
    token_id, issued, expiry = struct.unpack_from(">III", data, 10)
    body = _aes(key.enc_key(), _MODE_CBC, bytes(mv[_IV:_CT])).decrypt(bytes(mv[_CT:_TAG]))
    kind = body[0]
    aux = body[1]
    (value,) = struct.unpack_from(">I", body, 2)
    material = bytes(body[6:16])
    return 0, token_id, issued, expiry, kind, aux, value, material
