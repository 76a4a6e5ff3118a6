"""Meter keys: HMAC-SHA256, a constant-time compare, per-meter key derivation and the key
record the meter keeps (key, revision, expiry number).

The utility's vending key never reaches a meter. The meter key of revision 0 is
HMAC-SHA256(vending key, "PM1 meter key" || meter id (u64 BE) || 0x00); each later revision r
is HMAC-SHA256(previous meter key, "PM1 next key" || r || M_r), where the 80-bit M_r =
HMAC-SHA256(vending key, "PM1 key change" || meter id || r)[:10] travels to the meter in a key
change (two compact halves or one envelope), encrypted and authenticated under the previous
key. From a meter key the working keys are split off with their own labels: AES-128
(envelope encryption), HMAC-SHA256 (envelope tag), the compact tokens' Feistel key and
HMAC-SHA256 of the signed MQTT messages (label "PM1 msg", firmware/comms/signed.py).

Key expiry follows STS's key expiry number (KEN): a key is valid for times whose top 8 bits
(stamp >> 24: periods of 2^24 s, about 194 days, since 2000-01-01) are at most its KEN;
KEN 255 never expires. MicroPython has no `hmac` module, hence the 20 lines here.
"""

import binascii
import hashlib

from firmware.billing.settings import parse_meter_id
from firmware.storage.conffile import seal, sealed

try:
    from micropython import const
except ImportError:  # CPython, for host tests and tools

    def const(x):
        return x


_BLOCK = const(64)
KEY_BYTES = const(32)
MATERIAL_BYTES = const(10)
MAX_REVISION = const(255)
KEN_NEVER = const(255)
RECORD_MAGIC = b"PMK1"
RECORD_SIZE = const(44)

_LABEL_METER = b"PM1 meter key"
_LABEL_NEXT = b"PM1 next key"
_LABEL_MATERIAL = b"PM1 key change"
_LABEL_ENC = b"PM1 enc"
_LABEL_MAC = b"PM1 mac"
_LABEL_F64 = b"PM1 f64"
_LABEL_FINGERPRINT = b"PM1 fingerprint"
_LABEL_MSG = b"PM1 msg"


class Hmac:
    """HMAC-SHA256 with the padded keys computed once (the Feistel rounds reuse one key)."""

    def __init__(self, key):
        if len(key) > _BLOCK:
            key = hashlib.sha256(key).digest()
        ipad = bytearray(_BLOCK)
        opad = bytearray(_BLOCK)
        n = len(key)
        for i in range(_BLOCK):
            b = key[i] if i < n else 0
            ipad[i] = b ^ 0x36
            opad[i] = b ^ 0x5C
        self._ipad = bytes(ipad)
        self._opad = bytes(opad)

    def digest(self, msg, msg2=None):
        """HMAC-SHA256 of msg (followed by msg2 when given): 32 bytes."""
        inner = hashlib.sha256(self._ipad)
        inner.update(msg)
        if msg2 is not None:
            inner.update(msg2)
        outer = hashlib.sha256(self._opad)
        outer.update(inner.digest())
        return outer.digest()


def hmac_sha256(key, msg):
    return Hmac(key).digest(msg)


def compare_digest(a, b):
    """True when a == b, in a time that depends only on the length (no early exit)."""
    if len(a) != len(b):
        return False
    acc = 0
    for i in range(len(a)):
        acc |= a[i] ^ b[i]
    return acc == 0


def meter_id_bytes(meter_id):
    return parse_meter_id(meter_id).to_bytes(8, "big")


def key_material(vending_key, meter_id, revision):
    """The 80 bits a key change to `revision` carries (back office side)."""
    if not 1 <= revision <= MAX_REVISION:
        raise ValueError("key revision: 1..255 for a key change")
    msg = _LABEL_MATERIAL + meter_id_bytes(meter_id) + bytes((revision,))
    return hmac_sha256(vending_key, msg)[:MATERIAL_BYTES]


def next_key(current_key, revision, material):
    """The meter key of `revision` from the previous revision's key and the change material."""
    if len(material) != MATERIAL_BYTES:
        raise ValueError("key change material: 10 bytes")
    return hmac_sha256(current_key, _LABEL_NEXT + bytes((revision,)) + bytes(material))


def derive_meter_key(vending_key, meter_id, revision=0):
    """The meter key of `revision` (back office side: it holds the vending key)."""
    if not 0 <= revision <= MAX_REVISION:
        raise ValueError("key revision: 0..255")
    if len(vending_key) < 16:
        raise ValueError("vending key: at least 16 bytes")
    key = hmac_sha256(vending_key, _LABEL_METER + meter_id_bytes(meter_id) + b"\x00")
    for r in range(1, revision + 1):
        key = next_key(key, r, key_material(vending_key, meter_id, r))
    return key


class MeterKey:
    """What the meter holds: its 32-byte key, the key revision and the key expiry number."""

    def __init__(self, key, revision=0, ken=KEN_NEVER):
        if len(key) != KEY_BYTES:
            raise ValueError("meter key: 32 bytes")
        if not 0 <= revision <= MAX_REVISION:
            raise ValueError("key revision: 0..255")
        if not 0 <= ken <= 255:
            raise ValueError("key expiry number: 0..255")
        self.key = bytes(key)
        self.revision = revision
        self.ken = ken
        self._enc = None
        self._mac = None
        self._f64 = None
        self._msg = None

    def enc_key(self):
        """AES-128 key of the envelope."""
        if self._enc is None:
            self._enc = hmac_sha256(self.key, _LABEL_ENC)[:16]
        return self._enc

    def mac(self):
        """Hmac object keyed with the envelope's MAC key."""
        if self._mac is None:
            self._mac = Hmac(hmac_sha256(self.key, _LABEL_MAC))
        return self._mac

    def f64_key(self):
        """Key of the compact tokens' 64-bit Feistel cipher."""
        if self._f64 is None:
            self._f64 = hmac_sha256(self.key, _LABEL_F64)
        return self._f64

    def msg_mac(self):
        """Hmac object keyed for the signed MQTT messages (firmware/comms/signed.py)."""
        if self._msg is None:
            self._msg = Hmac(hmac_sha256(self.key, _LABEL_MSG))
        return self._msg

    def fingerprint(self):
        """8 hex digits that name the key without revealing it (for logs and support)."""
        return binascii.hexlify(hmac_sha256(self.key, _LABEL_FINGERPRINT)[:4]).decode()

    def expired(self, stamp):
        """True when `stamp` (seconds since 2000) is past this key's expiry number."""
        return stamp is not None and stamp >= 0 and (stamp >> 24) > self.ken

    def rotated(self, material, ken):
        """The key a key change with `material` and expiry number `ken` leads to."""
        if self.revision >= MAX_REVISION:
            raise ValueError("key revision 255 is the last")
        rev = self.revision + 1
        return MeterKey(next_key(self.key, rev, material), rev, ken)

    def to_bytes(self):
        """The 44-byte key record: b"PMK1", revision, KEN, 2 zero bytes, key, CRC-32 (LE)."""
        buf = bytearray(RECORD_SIZE)
        buf[0:4] = RECORD_MAGIC
        buf[4] = self.revision
        buf[5] = self.ken
        buf[8:40] = self.key
        return seal(buf)


def load_key(data):
    """A MeterKey from its 44-byte record; ValueError when the record is not valid."""
    if len(data) != RECORD_SIZE or bytes(data[0:4]) != RECORD_MAGIC:
        raise ValueError("not a meter key record")
    if data[6] or data[7]:
        raise ValueError("meter key record: reserved bytes set")
    if not sealed(data):
        raise ValueError("meter key record: CRC mismatch")
    return MeterKey(bytes(data[8:40]), data[4], data[5])
