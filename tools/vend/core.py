"""Host implementation of the token formats: key store, key derivation, the Feistel cipher,
STS CRC and amount encoding, compact tokens and envelopes, and an explainer.

Written apart from the firmware on purpose (stdlib `hmac`, `cryptography` for AES, a
table-driven CRC, byte-oriented Feistel) so each checks the other; the layouts are the
ones documented in firmware/tokens/compact.py, firmware/tokens/envelope.py and firmware/tokens/keys.py.
"""

import datetime
import hashlib
import hmac
import json
import os
import secrets
import struct
import zlib

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from tools import private

KEYSTORE_FORMAT = "prepaid-meter vending key store"
EPOCH = datetime.datetime(2000, 1, 1)
TOKEN_ID_MAX_COMPACT = (1 << 24) - 1
TOKEN_ID_MAX = (1 << 32) - 1
METER_ID_MAX = 10**19 - 1
ENVELOPE_SIZE = 70

CLASS_NAMES = {0: "credit", 1: "non-meter-specific", 2: "management", 3: "reserved"}
# (class, subclass) -> kind
KINDS = {
    (0, 4): "credit",
    (2, 0): "max_power",
    (2, 3): "key_change_1",
    (2, 4): "key_change_2",
    (2, 5): "clear_tamper",
    (2, 10): "low_credit",
    (2, 11): "payment_mode",
}
SUBCLASS = {v: k[1] for k, v in KINDS.items()}


class VendError(Exception):
    """A request the vending tool refuses, with a message for the operator."""


# --- time


def stamp_of(dt):
    """Meter stamp (seconds since 2000-01-01 local time) of a naive local datetime."""
    return int((dt - EPOCH).total_seconds())


def stamp_now():
    return stamp_of(datetime.datetime.now().replace(microsecond=0))


def date_of(stamp):
    return (EPOCH + datetime.timedelta(seconds=stamp)).isoformat(sep=" ")


# --- key store and meter key files


def _write_private(path, data, force=False):
    try:
        private.write_private(path, data, force)
    except private.PrivateFileExists as e:
        raise VendError(str(e)) from e


DECIMALS_MAX = 4  # the meter's currency_decimals: 0..4


def _check_decimals(decimals, what):
    if isinstance(decimals, bool) or not isinstance(decimals, int):
        raise VendError("%s: currency decimals must be an integer" % what)
    if not 0 <= decimals <= DECIMALS_MAX:
        raise VendError("%s: currency decimals 0..%d, not %d" % (what, DECIMALS_MAX, decimals))
    return decimals


def keygen(path, nbytes=32, force=False, decimals=None):
    """Create a key store with a fresh random vending key; return its fingerprint.

    decimals: the currency's decimals for the meters the store serves (recorded, so that
    an amount is never read with a guessed scale); None records none."""
    if nbytes not in (16, 32):
        raise VendError("vending key: 16 or 32 bytes")
    vk = secrets.token_bytes(nbytes)
    doc = {"format": KEYSTORE_FORMAT, "version": 1, "vending_key": vk.hex()}
    if decimals is not None:
        doc["currency_decimals"] = _check_decimals(decimals, "keygen")
    _write_private(path, (json.dumps(doc, indent=1) + "\n").encode(), force)
    return fingerprint(vk)


def load_keystore_doc(path):
    """The key store's whole document, checked; VendError naming what is wrong."""
    try:
        with open(path, "rb") as f:
            doc = json.loads(f.read().decode())
    except (OSError, ValueError) as e:
        raise VendError("cannot read key store %s: %s" % (path, e)) from e
    if not isinstance(doc, dict) or doc.get("format") != KEYSTORE_FORMAT:
        raise VendError("%s is not a vending key store" % path)
    if doc.get("version") != 1:
        raise VendError("%s: key store version %r not supported" % (path, doc.get("version")))
    try:
        vk = bytes.fromhex(doc["vending_key"])
    except (KeyError, TypeError, ValueError) as e:
        raise VendError("%s: vending_key missing or not hex" % path) from e
    if len(vk) not in (16, 32):
        raise VendError("%s: vending key of %d bytes" % (path, len(vk)))
    if "currency_decimals" in doc:
        _check_decimals(doc["currency_decimals"], path)
    meters = doc.get("meters", {})
    if not isinstance(meters, dict):
        raise VendError("%s: meters must be an object" % path)
    for mid, entry in meters.items():
        if not isinstance(entry, dict) or "currency_decimals" not in entry:
            raise VendError("%s: meters.%s: currency_decimals missing" % (path, mid))
        _check_decimals(entry["currency_decimals"], "%s: meters.%s" % (path, mid))
    return doc


def load_keystore(path):
    """The vending key of a key store file; VendError naming what is wrong."""
    return bytes.fromhex(load_keystore_doc(path)["vending_key"])


def meter_decimals(path, meter_id, given=None):
    """The currency decimals to read and print a meter's amounts with.

    The meter's own entry in the key store, else the store's, else `given`; refused when
    none is known (an amount read at the wrong scale credits 10^n times too much or too
    little) or when `given` disagrees with what the store records."""
    doc = load_keystore_doc(path)
    meter = str(parse_meter_id(meter_id))
    entry = doc.get("meters", {}).get(meter)
    known = entry["currency_decimals"] if entry else doc.get("currency_decimals")
    if given is not None:
        _check_decimals(given, "--decimals")
        if known is not None and given != known:
            raise VendError(
                "meter %s bills with %d currency decimals (key store %s), not %d"
                % (meter, known, path, given)
            )
        return given
    if known is None:
        raise VendError(
            "currency decimals of meter %s unknown: give --decimals, or record them in the "
            "key store (keygen --decimals, meter-key --decimals)" % meter
        )
    return known


def record_meter_decimals(path, meter_id, decimals):
    """Record a meter's currency decimals in the key store (replaced atomically, 0600)."""
    doc = load_keystore_doc(path)
    meter = str(parse_meter_id(meter_id))
    doc.setdefault("meters", {})[meter] = {"currency_decimals": _check_decimals(decimals, meter)}
    _write_private(path, (json.dumps(doc, indent=1) + "\n").encode(), force=True)


def keystore_mode_warning(path):
    mode = os.stat(path).st_mode & 0o777
    if mode & 0o077:
        return "warning: %s is readable by others (mode %o); chmod 600 it" % (path, mode)
    return None


def meter_key_record(key, revision, ken):
    """The 44-byte key file the meter loads (firmware keys.load_key)."""
    head = b"PMK1" + bytes((revision, ken, 0, 0)) + key
    return head + struct.pack("<I", zlib.crc32(head))


def write_meter_key(path, key, revision, ken, force=False):
    _write_private(path, meter_key_record(key, revision, ken), force)


# --- keys


def _hmac(key, msg):
    return hmac.new(key, msg, hashlib.sha256).digest()


def parse_meter_id(text):
    s = str(text).strip()
    if not s.isdigit() or not s.isascii() or len(s) > 19 or int(s) < 1:
        raise VendError("meter id: 1 to 19 digits, not zero: %r" % (text,))
    return int(s)


def _id8(meter_id):
    return parse_meter_id(meter_id).to_bytes(8, "big")


def key_material(vk, meter_id, revision):
    return _hmac(vk, b"PM1 key change" + _id8(meter_id) + bytes([revision]))[:10]


def meter_key(vk, meter_id, revision=0):
    """The meter key of a revision: revision 0 from the vending key, later ones chained."""
    if not 0 <= revision <= 255:
        raise VendError("key revision: 0..255")
    key = _hmac(vk, b"PM1 meter key" + _id8(meter_id) + b"\x00")
    for r in range(1, revision + 1):
        key = _hmac(key, b"PM1 next key" + bytes([r]) + key_material(vk, meter_id, r))
    return key


def subkeys(key):
    """(AES-128 key, MAC key, Feistel key) of a meter key."""
    return (
        _hmac(key, b"PM1 enc")[:16],
        _hmac(key, b"PM1 mac"),
        _hmac(key, b"PM1 f64"),
    )


def fingerprint(key):
    return _hmac(key, b"PM1 fingerprint")[:4].hex()


# --- the 64-bit Feistel cipher


def _round(fkey, tweak, i, half):
    return _hmac(fkey, bytes([tweak, i]) + half)[:4]


def _xor4(a, b):
    return bytes(x ^ y for x, y in zip(a, b))


def feistel_encrypt(fkey, block, tweak):
    data = block.to_bytes(8, "big")
    left, right = data[:4], data[4:]
    for i in range(8):
        left, right = right, _xor4(left, _round(fkey, tweak, i, right))
    return int.from_bytes(left + right, "big")


def feistel_decrypt(fkey, block, tweak):
    data = block.to_bytes(8, "big")
    left, right = data[:4], data[4:]
    for i in reversed(range(8)):
        left, right = _xor4(right, _round(fkey, tweak, i, left)), left
    return int.from_bytes(left + right, "big")


# --- STS CRC-16 and amounts


def _crc_table():
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0xA001 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE = _crc_table()


def sts_crc(data):
    crc = 0xFFFF
    for b in data:
        crc = (crc >> 8) ^ _CRC_TABLE[(crc ^ b) & 0xFF]
    return int.from_bytes(crc.to_bytes(2, "little"), "big")


def _amount_base(e):
    return sum((1 << 14) * 10 ** (i - 1) for i in range(1, e + 1))


AMOUNT_MAX = 0x3FFF * 1000 + _amount_base(3)


def amount_field(units):
    """STS exponent/mantissa field for an exact amount, or None."""
    for e in range(4):
        m, rest = divmod(units - _amount_base(e), 10**e)
        if rest == 0 and 0 <= m <= 0x3FFF:
            return (e << 14) | m
    return None


def amount_of_field(field):
    e = field >> 14
    return (field & 0x3FFF) * 10**e + _amount_base(e)


def representable_near(units):
    """(next representable amount below, above) for an operator's error message."""
    below = max((a for a in _candidates(units) if a <= units), default=None)
    above = min((a for a in _candidates(units) if a >= units), default=None)
    return below, above


def _candidates(units):
    for e in range(4):
        base, step = _amount_base(e), 10**e
        m = (units - base) // step
        for mm in (m, m + 1):
            if 0 <= mm <= 0x3FFF:
                yield base + mm * step


def parse_money(text, decimals):
    """Minor units of a decimal string such as "10.00" (ASCII digits only, no float)."""
    s = str(text).strip()
    if not s.isascii():  # "٣" and "²" are digits to str.isdigit, not amounts
        raise VendError("amount: ASCII digits expected: %r" % text)
    whole, _, frac = s.partition(".")
    if not whole.isdigit() and not (whole == "" and frac):
        raise VendError("amount: a decimal number expected: %r" % text)
    if frac and not frac.isdigit():
        raise VendError("amount: a decimal number expected: %r" % text)
    if len(frac.rstrip("0")) > decimals:
        raise VendError("amount %r has more than %d decimals" % (text, decimals))
    frac = (frac + "0" * decimals)[:decimals]
    return int(whole or "0") * 10**decimals + int(frac or "0")


def format_money(units, decimals):
    if decimals == 0:
        return str(units)
    s = str(units).rjust(decimals + 1, "0")
    return s[:-decimals] + "." + s[-decimals:]


# --- compact tokens


def _transpose(cls, ct):
    b27, b28 = (ct >> 27) & 1, (ct >> 28) & 1
    ct &= ~(3 << 27)
    ct |= (cls & 1) << 27 | (cls >> 1) << 28
    return b28 << 65 | b27 << 64 | ct


def _untranspose(n):
    cls = ((n >> 28) & 1) << 1 | ((n >> 27) & 1)
    ct = n & ((1 << 64) - 1) & ~(3 << 27)
    ct |= ((n >> 64) & 1) << 27 | ((n >> 65) & 1) << 28
    return cls, ct


def compact_token(fkey, cls, subclass, rnd, token_id, field):
    """20 digits for the fields (class 1 is not encrypted)."""
    data48 = subclass << 44 | rnd << 40 | token_id << 16 | field
    crc = sts_crc((cls << 48 | data48).to_bytes(7, "big"))
    block = data48 << 16 | crc
    if cls != 1:
        block = feistel_encrypt(fkey, block, cls)
    return "%020d" % _transpose(cls, block)


def compact_credit(key, token_id, units, rnd=None):
    if not 1 <= token_id <= TOKEN_ID_MAX_COMPACT:
        raise VendError("compact token id: 1..%d" % TOKEN_ID_MAX_COMPACT)
    field = amount_field(units)
    if field is None:
        below, above = representable_near(units)
        raise VendError(
            "%d minor units can't be carried exactly by a compact token (nearest: %s, %s); "
            "vend one of those or use --format envelope" % (units, below, above)
        )
    return compact_token(subkeys(key)[2], 0, 4, _rnd(rnd), token_id, field)


def compact_management(key, kind, token_id, value, rnd=None):
    if not 1 <= token_id <= TOKEN_ID_MAX_COMPACT:
        raise VendError("compact token id: 1..%d" % TOKEN_ID_MAX_COMPACT)
    field = value
    if kind == "low_credit":
        field = amount_field(value)
        if field is None:
            raise VendError("%d minor units can't be carried by a compact token" % value)
    if not 0 <= field <= 0xFFFF:
        raise VendError("value out of range for a compact token: %d" % value)
    return compact_token(subkeys(key)[2], 2, SUBCLASS[kind], _rnd(rnd), token_id, field)


def compact_key_change(key, material, ken):
    """The two halves (first, second) of a key change, each 20 digits."""
    m = int.from_bytes(material, "big")
    halves = (m >> 36, ken << 36 | (m & ((1 << 36) - 1)))
    fkey = subkeys(key)[2]
    out = []
    for sub, p in zip((3, 4), halves):
        out.append(compact_token(fkey, 2, sub, p >> 40, (p >> 16) & 0xFFFFFF, p & 0xFFFF))
    return tuple(out)


def _rnd(rnd):
    return secrets.randbelow(16) if rnd is None else rnd


def decode_compact(key, digits):
    """dict describing a 20-digit token under a meter key (key None: class only)."""
    s = "".join(ch for ch in digits if ch not in " -")
    if len(s) != 20 or not s.isdigit() or not s.isascii():
        return {"format": "compact", "valid": False, "error": "not 20 digits"}
    n = int(s)
    if n >> 66:
        return {"format": "compact", "valid": False, "error": "above 2**66 - 1"}
    cls, block = _untranspose(n)
    out = {"format": "compact", "class": cls, "class_name": CLASS_NAMES[cls]}
    if cls == 3:
        out.update(valid=False, error="class 3 is reserved")
        return out
    if cls != 1:
        block = feistel_decrypt(subkeys(key)[2], block, cls)
    data48 = block >> 16
    crc_ok = sts_crc((cls << 48 | data48).to_bytes(7, "big")) == block & 0xFFFF
    out["crc_ok"] = crc_ok
    if not crc_ok:
        out.update(valid=False, error="CRC fails: another meter or key, or a typing error")
        return out
    sub = data48 >> 44
    out.update(
        valid=True,
        subclass=sub,
        kind=KINDS.get((cls, sub), "unsupported"),
        random=(data48 >> 40) & 0xF,
        token_id=(data48 >> 16) & 0xFFFFFF,
        field=data48 & 0xFFFF,
    )
    if out["kind"] in ("key_change_1", "key_change_2"):
        del out["token_id"], out["field"], out["random"]  # key material: not shown
        if out["kind"] == "key_change_2":
            out["ken"] = data48 >> 36 & 0xFF
    elif out["kind"] in ("credit", "low_credit"):
        out["amount"] = amount_of_field(out["field"])
    if cls == 1:
        out["kind"] = "unsupported"
    return out


# --- envelopes


def envelope(
    key, revision, meter_id, token_id, issued, expiry, kind, value, aux=0, material=None, iv=None
):
    """The 70-byte envelope (layout in firmware/tokens/envelope.py); iv: 16 bytes, random if None."""
    if not 1 <= token_id <= TOKEN_ID_MAX:
        raise VendError("token id: 1..%d" % TOKEN_ID_MAX)
    if not 0 <= value <= 0xFFFFFFFF:
        raise VendError("value out of range: %d" % value)
    enc, mac, _ = subkeys(key)
    cls, sub = (0, 4) if kind == "credit" else (2, SUBCLASS[kind])
    header = struct.pack(">BB8sIII", 1, revision, _id8(meter_id), token_id, issued, expiry)
    body = struct.pack(">BBI10s", cls << 4 | sub, aux, value, material or bytes(10))
    iv = secrets.token_bytes(16) if iv is None else iv
    e = Cipher(algorithms.AES(enc), modes.CBC(iv)).encryptor()
    ct = e.update(body) + e.finalize()
    msg = header + iv + ct
    return msg + _hmac(mac, msg)[:16]


def decode_envelope(key, revision, meter_id, data):
    """dict describing an envelope under the meter key of `revision`."""
    out = {"format": "envelope"}
    if len(data) != ENVELOPE_SIZE:
        out.update(valid=False, error="%d bytes, not %d" % (len(data), ENVELOPE_SIZE))
        return out
    ver, rev, mid, tid, issued, expiry = struct.unpack(">BB8sIII", data[:22])
    out.update(
        version=ver,
        key_revision=rev,
        meter_id=int.from_bytes(mid, "big"),
        token_id=tid,
        issued=issued,
        expiry=expiry,
    )
    if ver != 1:
        out.update(valid=False, error="version %d not supported" % ver)
        return out
    if out["meter_id"] != parse_meter_id(meter_id):
        out.update(valid=False, error="addressed to meter %d" % out["meter_id"])
        return out
    if rev != revision:
        out.update(valid=False, error="made under key revision %d, not %d" % (rev, revision))
        return out
    enc, mac, _ = subkeys(key)
    if not hmac.compare_digest(_hmac(mac, data[:54])[:16], data[54:]):
        out.update(valid=False, mac_ok=False, error="tag fails: altered, or another key")
        return out
    d = Cipher(algorithms.AES(enc), modes.CBC(data[22:38])).decryptor()
    body = d.update(data[38:54]) + d.finalize()
    kind, aux, value, material = struct.unpack(">BBI10s", body)
    cls, sub = kind >> 4, kind & 15
    out.update(mac_ok=True, valid=True, subclass=sub, value=value)
    out["class"] = cls
    out["class_name"] = CLASS_NAMES.get(cls, "unknown")
    out["kind"] = KINDS.get((cls, sub), "unsupported")
    if out["kind"] == "key_change_1":
        out["kind"] = "key_change"
        out["ken"] = aux
    elif aux or any(material):
        out.update(valid=False, error="reserved body bytes set")
    if out["kind"] in ("credit", "low_credit"):
        out["amount"] = value
    return out


def parse_envelope_text(text):
    s = text.strip()
    if len(s) == 2 * ENVELOPE_SIZE:
        try:
            return bytes.fromhex(s)
        except ValueError:
            return None
    return None
