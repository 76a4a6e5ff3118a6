"""The compact token: 20 decimal digits carrying 66 bits in the shape of an STS token.

Plain 64-bit block (bit 0 = least significant), as IEC 62055-41 lays it out:

    bits 63..60 subclass | 59..56 random | 55..32 token id (24) | 31..16 value | 15..0 CRC-16

The CRC is STS's CRC-16 (polynomial x^16+x^15+x^2+1, reflected 0xA001, initial 0xFFFF,
result byte-swapped) over the 50 bits class || subclass || random || token id || value,
packed right-aligned into 7 bytes big-endian. The block is encrypted with `Cipher64`
(tweak = class) except for class 1, which STS leaves in the clear. Then STS's transposition:
the class bits replace ciphertext bits 27 (class bit 0) and 28 (class bit 1), and the two
displaced ciphertext bits become bits 64 (was 27) and 65 (was 28) of the 66-bit number, so
the class is read before decryption. The number is written as 20 digits, zero-padded.

Classes: 0 credit, 1 non-meter-specific (none supported), 2 meter-specific management,
3 reserved. The value field of a credit (and of "set low-credit threshold") is money in
minor units with STS's exponent/mantissa encoding: e = top 2 bits, m = low 14 bits,
amount = m * 10**e + sum(2**14 * 10**(i-1), i = 1..e): exact from 0 to 16,383, then in
steps of 10 to 180,214, of 100 from 180,224 to 1,818,524 and of 1,000 from 1,818,624 to
18,201,624 minor units. A key change carries no token id: its 44 bits from the random, token
id and value fields are key material (first half) or KEN and key material (second half).
"""

try:
    from micropython import const
except ImportError:  # CPython, for host tests and tools

    def const(x):
        return x


from firmware.tokens import codes as rc

CLASS_CREDIT = const(0)
CLASS_TEST = const(1)
CLASS_MANAGEMENT = const(2)
CLASS_RESERVED = const(3)

SUB_CURRENCY = const(4)  # class 0: electricity credit in currency (minor units)
SUB_MAX_POWER = const(0)  # class 2: set maximum power, value in W, 0 = no limit
SUB_KEY_CHANGE_1 = const(3)  # class 2: key change, first half
SUB_KEY_CHANGE_2 = const(4)  # class 2: key change, second half
SUB_CLEAR_TAMPER = const(5)  # class 2: clear the tamper condition, value 0
SUB_LOW_CREDIT = const(10)  # class 2: set the low-credit threshold, money encoding
SUB_PAYMENT_MODE = const(11)  # class 2: 1 credit (prepayment disabled), 2 prepayment

TOKEN_ID_MAX = const(0xFFFFFF)
AMOUNT_MAX = 18201624
_OFFSETS = (0, 16384, 180224, 1818624)
_SCALES = (1, 10, 100, 1000)
_MASK64 = 0xFFFFFFFFFFFFFFFF
_CLEAR_27_28 = _MASK64 ^ (3 << 27)
_LIMIT66 = 1 << 66
_MASK36 = 0xFFFFFFFFF
_MASK44 = 0xFFFFFFFFFFF


def crc16(data):
    """STS CRC-16 of bytes: reflected 0xA001, initial 0xFFFF, result byte-swapped."""
    crc = 0xFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            if crc & 1:
                crc = (crc >> 1) ^ 0xA001
            else:
                crc >>= 1
    return ((crc & 0xFF) << 8) | (crc >> 8)


def block_crc(cls, data48):
    """CRC of class (2 bits) || subclass, random, token id, value (48 bits)."""
    return crc16(((cls << 48) | data48).to_bytes(7, "big"))


def encode_amount(units):
    """The 16-bit value field for `units` minor units, or None if not exactly representable."""
    if not isinstance(units, int) or units < 0 or units > AMOUNT_MAX:
        return None
    e = 3
    while units < _OFFSETS[e]:
        e -= 1
    m, rest = divmod(units - _OFFSETS[e], _SCALES[e])
    if rest or m > 0x3FFF:
        return None
    return (e << 14) | m


def decode_amount(field):
    e = field >> 14
    return (field & 0x3FFF) * _SCALES[e] + _OFFSETS[e]


def nearest_amounts(units):
    """(largest representable amount <= units, smallest >= units); None where there is none."""
    below = above = None
    for e in range(4):
        lo = _OFFSETS[e]
        hi = lo + 0x3FFF * _SCALES[e]
        if units >= lo:
            cand = lo + min((units - lo) // _SCALES[e], 0x3FFF) * _SCALES[e]
            if below is None or cand > below:
                below = cand
        if units <= hi:
            m = 0 if units <= lo else -((lo - units) // _SCALES[e])
            cand = lo + m * _SCALES[e]
            if above is None or cand < above:
                above = cand
    return below, above


def transpose(cls, ct):
    """66-bit number from the class and the 64-bit ciphertext."""
    b27 = (ct >> 27) & 1
    b28 = (ct >> 28) & 1
    ct = (ct & _CLEAR_27_28) | ((cls & 1) << 27) | (((cls >> 1) & 1) << 28)
    return (b28 << 65) | (b27 << 64) | ct


def untranspose(n):
    """(class, 64-bit ciphertext) from the 66-bit number."""
    cls = (((n >> 28) & 1) << 1) | ((n >> 27) & 1)
    ct = n & _MASK64
    ct = (ct & _CLEAR_27_28) | (((n >> 64) & 1) << 27) | (((n >> 65) & 1) << 28)
    return cls, ct


def to_digits(n):
    s = str(n)
    return "0" * (20 - len(s)) + s


def parse_digits(text):
    """The 66-bit number of a 20-digit token (spaces and dashes between digits allowed),
    or None when it is not 20 digits or is 2**66 or more."""
    if isinstance(text, (bytes, bytearray, memoryview)):
        try:
            text = bytes(text).decode()
        except Exception:
            return None
    if not isinstance(text, str) or len(text) > 64:
        return None
    n = 0
    count = 0
    for ch in text:
        if "0" <= ch <= "9":
            n = n * 10 + (ord(ch) - 48)
            count += 1
        elif ch != " " and ch != "-":
            return None
    if count != 20 or n >= _LIMIT66:
        return None
    return n


def encode(cipher, cls, subclass, rnd, token_id, field):
    """20 digits for the given fields (the caller checks what they mean)."""
    data48 = (subclass << 44) | (rnd << 40) | (token_id << 16) | field
    block = (data48 << 16) | block_crc(cls, data48)
    if cls != CLASS_TEST:
        block = cipher.encrypt(block, cls)
    return to_digits(transpose(cls, block))


def key_change_fields(material, ken):
    """(payload of the first half, payload of the second) for 10 bytes of key material:
    each a 44-bit number for the random || token id || value fields."""
    m = int.from_bytes(bytes(material), "big")
    return m >> 36, (ken << 36) | (m & _MASK36)


def key_change_material(p1, p2):
    """(material bytes, ken) from the two halves' 44-bit payloads."""
    m = (p1 << 36) | (p2 & _MASK36)
    return m.to_bytes(10, "big"), p2 >> 36


def encode_payload(cipher, cls, subclass, payload44):
    """20 digits for a token whose 44 bits after the subclass are one payload (key change)."""
    return encode(
        cipher,
        cls,
        subclass,
        payload44 >> 40,
        (payload44 >> 16) & TOKEN_ID_MAX,
        payload44 & 0xFFFF,
    )


def decode(cipher, n):
    """Decrypt and check a 66-bit number: (code, class, subclass, random, token id, value).

    code is 0 when the CRC holds (the fields then mean something), else FORMAT (class 3)
    or CRC; a valid class 1 token gives FUNCTION (none is supported)."""
    cls, block = untranspose(n)
    if cls == CLASS_RESERVED:
        return rc.FORMAT, cls, 0, 0, 0, 0
    if cls != CLASS_TEST:
        if cipher is None:
            return rc.NOT_READY, cls, 0, 0, 0, 0
        block = cipher.decrypt(block, cls)
    data48 = block >> 16
    if block_crc(cls, data48) != block & 0xFFFF:
        return rc.CRC, cls, 0, 0, 0, 0
    sub = data48 >> 44
    if cls == CLASS_TEST:
        return rc.FUNCTION, cls, sub, 0, 0, 0
    return 0, cls, sub, (data48 >> 40) & 0xF, (data48 >> 16) & TOKEN_ID_MAX, data48 & 0xFFFF


def payload(rnd, token_id, field):
    """The 44 bits of random || token id || value as one number (key change halves)."""
    return (rnd << 40) | (token_id << 16) | field
