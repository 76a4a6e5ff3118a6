"""OpenPAYGO Token decoding for keypad top-ups: the code chain, the count window, money.

Owns the third top-up format: tokens an OpenPAYGO back office vends (the `openpaygo`
PyPI package is the reference generator), decoded with our own code. firmware/tokens/intake.py
(through firmware/tokens/openpaygo/intake.py) routes keypad digits here and journals what
`commit` changes.

Token (docs/tokens.md, "OpenPAYGO Token: the algorithm"). Device secrets: a 16-byte key
and a 9-digit starting code (by default SipHash-2-4(key, key) turned into a code). Next
code = SipHash-2-4(key, code as 4 bytes big-endian, twice); high XOR low 32 bits; drop the
2 low bits; above 999999999 subtract 73741825. A token for value V at count N: code_0 =
the starting code with its last 3 digits replaced by (starting code + V) mod 1000, hashed
N times, the last 3 digits replaced again (only for the comparison: the chain goes on from
the full code, as the reference code does). Even counts add, odd counts set; odd 998 =
disable PAYG, odd 999 = counter sync; 996 and 997 are reserved. Tokens are exactly 9 (12)
digits: the stock decoder also takes shorter strings (leading zeros dropped); we don't.
Shapes: 9 digits; 15 digits of 1-4 (restricted digit set, 2 bits a digit); extended
(optional, off by default): 12 digits, or 20 of 1-4, 40-bit codes (SipHash of the code
as 8 bytes big-endian, hash >> 24, above 999999999999 subtract 99511627777), 6-digit
value 0..999999; an extended set token of 998 or 999 reads as disable/sync (the
generator makes the same token for both), so a back office must not vend those two.

Count window (our rules; the state is two integers, STATE_FIELDS):
- `count` is the highest count accepted (0 at the start: count 0 is the starting code
  itself and is never a token); `used` bit i marks count - 1 - i as used (16 bits).
- Decode tries counts 0 .. count + 64 (count + 100 for counter sync). A match is
  accepted when its count is above `count`, or when it is an add token at most 15
  below `count`, not 0 and not marked used. Any other match is ALREADY_USED.
- Committing a set, disable or sync token marks the whole window used, so no older add
  token is accepted after it.

Upstream bugs (docs/tokens.md, the upstream bugs table) not repeated here: an exact bit test (HDK #10: an
older add token accepted after a set token); bad input of any length is a MALFORMED
result, never an exception (the extended decoder's UnboundLocalError, "Token is too
long"); odd-count 998/999 in extended mode decode as disable/sync, not set (python #24);
integer values, no float division (python #25); a counter-sync token is accepted only
when it moves the count forward (the stock decoders re-accept it down to count - 64,
and each replay re-marks the window, burning unused older add tokens); count 0 is never
accepted (the Python decoder accepts it as an add token); the used window never holds
negative counts and is always kept (never `None`).

Money: a token's value is an integer V (the back office's value x its value_divider).
amount = V x `value_unit`, in the currency's minor units: with currency_decimals 2,
value_unit=100 makes a standard token carry 0..995 whole units, value_unit=1 with
extended tokens carries 0.00..9999.99. ADD_CREDIT adds `amount`, SET_CREDIT sets the
balance to `amount` (OpenPAYGO's set time), DISABLE_PAYG and COUNTER_SYNC carry no
money (amount 0): what they do to the meter is the caller's decision (in the HDK,
disable means "never cut off" until the next add or set token re-enables PAYG).

Speed: the chain walk is `firmware.tokens.openpaygo.viper.chain` under MicroPython (SipHash on
32-bit halves, no allocation), or the same walk in plain Python (`chain_py`).
"""

import binascii
from array import array

try:
    from micropython import const
except ImportError:  # CPython, for host tests

    def const(x):
        return x


# the modes of the chain walk (viper.chain, chain_py), bits; viper.py names the same
CHAIN_EXTENDED = const(1)  # 40-bit codes (extended tokens)
CHAIN_SKIP_FIRST = const(2)  # do not test the first code: step past it
CHAIN_HASH = const(4)  # hash the 8-byte message in st[12,13] once into st[14,15]

try:
    from firmware.tokens.openpaygo.viper import chain as _chain_native
except Exception:  # CPython (no `micropython`), or a port without the native emitter
    _chain_native = None

# Result kinds: accepted ones first (numbered as openpaygo's TokenType), then rejects.
ADD_CREDIT = const(1)  # OpenPAYGO ADD_TIME
SET_CREDIT = const(2)  # OpenPAYGO SET_TIME
DISABLE_PAYG = const(3)
COUNTER_SYNC = const(4)
INVALID = const(10)  # no count in the window matches: wrong key, typo, forgery
ALREADY_USED = const(11)  # it matches, but at a count that is used or too old
MALFORMED = const(12)  # not a digit string of a length this decoder takes

STATE_FIELDS = ("opg_count", "opg_used")
MAX_TOKEN_JUMP = const(64)
MAX_TOKEN_JUMP_SYNC = const(100)
OLDER_WINDOW = const(16)  # an add token may be at most OLDER_WINDOW - 1 below count
MAX_COUNT = const(0x3FFFFF00)  # keeps every count a small int on the ESP32
_USED_MASK = const(0xFFFF)

MAX_VALUE = const(995)
MAX_VALUE_EXTENDED = const(999999)
PAYG_DISABLE_VALUE = const(998)
COUNTER_SYNC_VALUE = const(999)

_M32 = 0xFFFFFFFF
_M64 = 0xFFFFFFFFFFFFFFFF
_INVALID = (INVALID, 0, -1)
_MALFORMED = (MALFORMED, 0, -1)


def accepted(kind):
    """True for the kinds a decode accepts (a commit follows), False for rejects."""
    return ADD_CREDIT <= kind <= COUNTER_SYNC


def name(kind):
    if kind == ADD_CREDIT:
        return "ADD_CREDIT"
    if kind == SET_CREDIT:
        return "SET_CREDIT"
    if kind == DISABLE_PAYG:
        return "DISABLE_PAYG"
    if kind == COUNTER_SYNC:
        return "COUNTER_SYNC"
    if kind == INVALID:
        return "INVALID"
    if kind == ALREADY_USED:
        return "ALREADY_USED"
    if kind == MALFORMED:
        return "MALFORMED"
    return "?"


# --- SipHash-2-4 (plain Python, 64-bit integers) -------------------------------------


def _le(b, off, n):
    v = 0
    for i in range(n - 1, -1, -1):
        v = (v << 8) | b[off + i]
    return v


def _rounds(v0, v1, v2, v3, n):
    for _ in range(n):
        v0 = (v0 + v1) & _M64
        v1 = (((v1 << 13) | (v1 >> 51)) & _M64) ^ v0
        v0 = ((v0 << 32) | (v0 >> 32)) & _M64
        v2 = (v2 + v3) & _M64
        v3 = (((v3 << 16) | (v3 >> 48)) & _M64) ^ v2
        v0 = (v0 + v3) & _M64
        v3 = (((v3 << 21) | (v3 >> 43)) & _M64) ^ v0
        v2 = (v2 + v1) & _M64
        v1 = (((v1 << 17) | (v1 >> 47)) & _M64) ^ v2
        v2 = ((v2 << 32) | (v2 >> 32)) & _M64
    return v0, v1, v2, v3


def _keyed(key):
    k0 = _le(key, 0, 8)
    k1 = _le(key, 8, 8)
    return (
        k0 ^ 0x736F6D6570736575,
        k1 ^ 0x646F72616E646F6D,
        k0 ^ 0x6C7967656E657261,
        k1 ^ 0x7465646279746573,
    )


def siphash24(key, data):
    """SipHash-2-4 of `data` under the 16-byte `key`, as a 64-bit integer."""
    if len(key) != 16:
        raise ValueError("key: 16 bytes")
    v0, v1, v2, v3 = _keyed(key)
    n = len(data)
    full = n - (n & 7)
    for off in range(0, full, 8):
        m = _le(data, off, 8)
        v0, v1, v2, v3 = _rounds(v0, v1, v2, v3 ^ m, 2)
        v0 ^= m
    m = ((n & 0xFF) << 56) | _le(data, full, n - full)
    v0, v1, v2, v3 = _rounds(v0, v1, v2, v3 ^ m, 2)
    v0, v1, v2, v3 = _rounds(v0 ^ m, v1, v2 ^ 0xFF, v3, 4)
    return v0 ^ v1 ^ v2 ^ v3


def code_from_hash(h):
    """A 64-bit hash -> a 9-digit code (high XOR low, 30 bits, folded below 10**9)."""
    c = (((h >> 32) ^ h) & _M32) >> 2
    if c > 999999999:
        c -= 73741825
    return c


def starting_code(key):
    """The default starting code of a 16-byte key: SipHash-2-4(key, key) as a code."""
    return code_from_hash(siphash24(key, key))


_starting_code = starting_code  # the Decoder's argument shadows the name


def _bswap32(x):
    return ((x & 0xFF) << 24) | ((x & 0xFF00) << 8) | ((x >> 8) & 0xFF00) | (x >> 24)


def chain_py(st, n, mode):
    """`firmware.tokens.openpaygo.viper.chain` in plain Python: the same state array and results."""
    v0 = st[0] | (st[1] << 32)
    v1 = st[2] | (st[3] << 32)
    v2 = st[4] | (st[5] << 32)
    v3 = st[6] | (st[7] << 32)
    ext = mode & CHAIN_EXTENDED
    skip = mode & CHAIN_SKIP_FIRST
    i = 0
    while i < n:
        if mode == CHAIN_HASH:
            m = st[12] | (st[13] << 32)
        elif ext:
            code = (st[8] << 32) | st[9]
            if not skip:
                low = (st[10] << 32) | st[11]
                if low <= code < low + 1000000:
                    return i
            m = _bswap32(code >> 32) | (_bswap32(code & _M32) << 32)
        else:
            code = st[8]
            if not skip and st[10] <= code < st[10] + 1000:
                return i
            m = _bswap32(code) * 0x100000001
        skip = 0
        a, b, c, d = _rounds(v0, v1, v2, v3 ^ m, 2)
        a ^= m
        d ^= 8 << 56
        a, b, c, d = _rounds(a, b, c, d, 2)
        a, b, c, d = _rounds(a ^ (8 << 56), b, c ^ 0xFF, d, 4)
        h = a ^ b ^ c ^ d
        if mode == CHAIN_HASH:
            st[14] = h & _M32
            st[15] = h >> 32
            return 0
        if ext:
            x = h >> 24
            if x > 999999999999:
                x -= 99511627777
            st[8] = x >> 32
            st[9] = x & _M32
        else:
            st[8] = code_from_hash(h)
        i += 1
    return -1


# --- the count window (pure functions and the state object) ---------------------------


def kind_of(value, count, extended=False):
    """The kind a (value, count) match means, or 0 when no generator makes it."""
    if count & 1:
        if value == PAYG_DISABLE_VALUE:
            return DISABLE_PAYG
        if value == COUNTER_SYNC_VALUE:
            return COUNTER_SYNC
        if extended or value <= MAX_VALUE:
            return SET_CREDIT
        return 0
    if extended or value <= MAX_VALUE:
        return ADD_CREDIT
    return 0


def count_is_valid(last, used, count, kind):
    """May a token of `kind` at `count` be accepted, given the window (last, used)?"""
    if count <= 0 or count > MAX_COUNT or not accepted(kind):
        return False
    if (count & 1) == (1 if kind == ADD_CREDIT else 0):
        return False  # add tokens are even counts, all the others odd
    if count > last:
        jump = MAX_TOKEN_JUMP_SYNC if kind == COUNTER_SYNC else MAX_TOKEN_JUMP
        return count <= last + jump
    if kind != ADD_CREDIT or count == last or count <= last - OLDER_WINDOW:
        return False
    return not (used >> (last - 1 - count)) & 1


def mark_used(last, used, count, kind):
    """The window (last, used) after committing a token of `kind` at `count`."""
    if count > last:
        d = count - last
        if d < OLDER_WINDOW:
            used = ((used & ((1 << (OLDER_WINDOW - d)) - 1)) << d) | (1 << (d - 1))
        elif d == OLDER_WINDOW:
            used = 1 << (d - 1)
        else:
            used = 0
        last = count
    else:
        used |= 1 << (last - 1 - count)
    if kind != ADD_CREDIT:
        used = _USED_MASK
    return last, used


class CountWindow:
    """The anti-replay state: highest count accepted and the used-count bitmap."""

    def __init__(self, count=0, used=0):
        self.count = 0
        self.used = 0
        self.from_fields((count, used))

    def to_fields(self):
        return (self.count, self.used)

    def from_fields(self, fields):
        if len(fields) != len(STATE_FIELDS):
            raise ValueError("openpaygo state: %d fields" % len(STATE_FIELDS))
        count, used = fields
        if not 0 <= count <= MAX_COUNT:
            raise ValueError("opg_count: out of range")
        if not 0 <= used <= _USED_MASK:
            raise ValueError("opg_used: out of range")
        self.count = count
        self.used = used

    def is_valid(self, count, kind):
        return count_is_valid(self.count, self.used, count, kind)

    def commit(self, kind, count):
        if not count_is_valid(self.count, self.used, count, kind):
            raise ValueError("openpaygo commit: count %d is not valid now" % count)
        self.count, self.used = mark_used(self.count, self.used, count, kind)


# --- the decoder ---------------------------------------------------------------------


class Decoder:
    """OpenPAYGO Token decoder for one device: key, starting code, unit, shapes, window.

    key: 16 bytes, or 32 hex digits. starting_code: None for the default (derived from
    the key). value_unit: minor money units per token value step. restricted_digits:
    tokens use digits 1-4 only (15 digits; 20 extended). extended: also take extended
    tokens (12 digits; 20 restricted). window: a CountWindow (a fresh one by default).
    """

    def __init__(
        self,
        key,
        starting_code=None,
        value_unit=1,
        restricted_digits=False,
        extended=False,
        window=None,
        native=True,
    ):
        if isinstance(key, str):
            if len(key) != 32:
                raise ValueError("key: 32 hex digits")
            key = binascii.unhexlify(key)
        key = bytes(key)
        if len(key) != 16:
            raise ValueError("key: 16 bytes")
        if starting_code is None:
            starting_code = _starting_code(key)
        if not (isinstance(starting_code, int) and 0 <= starting_code <= 999999999):
            raise ValueError("starting_code: 0..999999999")
        if not (isinstance(value_unit, int) and value_unit >= 1):
            raise ValueError("value_unit: a positive integer")
        self.start = starting_code
        self.value_unit = value_unit
        self.restricted_digits = bool(restricted_digits)
        self.extended = bool(extended)
        self.window = window if window is not None else CountWindow()
        if self.restricted_digits:
            self._len, self._len_ext = 15, 20
        else:
            self._len, self._len_ext = 9, 12
        st = array("I", [0] * 16)
        v = _keyed(key)
        for i in range(4):
            st[2 * i] = v[i] & _M32
            st[2 * i + 1] = v[i] >> 32
        self._st = st
        if native and _chain_native is not None:
            self._chain = _chain_native
            self.backend = "viper"
        else:
            self._chain = chain_py
            self.backend = "python"

    # state, for the journal
    def to_fields(self):
        return self.window.to_fields()

    def from_fields(self, fields):
        self.window.from_fields(fields)

    def commit(self, kind, count):
        """Mark `count` used after the caller accepted a decode (kind, amount, count)."""
        self.window.commit(kind, count)

    def _parse(self, token):
        """(number, extended) from the token text; number -1 when malformed."""
        if isinstance(token, str):
            try:
                token = token.encode()
            except Exception:
                return -1, 0
        elif not isinstance(token, (bytes, bytearray)):
            return -1, 0
        n = len(token)
        if n == self._len:
            ext = 0
        elif n == self._len_ext and self.extended:
            ext = CHAIN_EXTENDED
        else:
            return -1, 0
        t = 0
        if self.restricted_digits:
            for ch in token:
                if ch < 49 or ch > 52:
                    return -1, 0
                t = (t << 2) | (ch - 49)
        else:
            for ch in token:
                if ch < 48 or ch > 57:
                    return -1, 0
                t = t * 10 + ch - 48
        return t, ext

    def decode(self, token):
        """(kind, amount, count) for an accepted token, (reject kind, 0, count) otherwise.

        Never raises and never changes the window: `commit(kind, count)` does that once
        the caller has journaled the result. Reject counts: -1, or for ALREADY_USED the
        count the token was made for.
        """
        try:
            return self._decode(token)
        except Exception:  # a bug must not become an exception on the keypad path
            return _INVALID

    def _decode(self, token):
        t, ext = self._parse(token)
        if t < 0:
            return _MALFORMED
        st = self._st
        start = self.start
        if ext:
            mod = 1000000
            base = t % mod
            value = (base - start % mod) % mod
            st[8] = 0
            st[9] = start - start % mod + base
            low = t - base
            st[10] = low >> 32
            st[11] = low & _M32
        else:
            base = t % 1000
            value = (base - start % 1000) % 1000
            if 995 < value < 998:
                return _INVALID  # reserved values: no generator makes them
            st[8] = start - start % 1000 + base
            st[10] = t - base
        win = self.window
        last = win.count
        top = last + (MAX_TOKEN_JUMP_SYNC if value == COUNTER_SYNC_VALUE else MAX_TOKEN_JUMP)
        if top > MAX_COUNT:
            top = MAX_COUNT
        chain = self._chain
        mode = ext  # 0 or CHAIN_EXTENDED
        count = 0
        old = -1
        while count <= top:
            i = chain(st, top - count + 1, mode)
            if i < 0:
                break
            count += i
            kind = kind_of(value, count, ext)
            if kind:
                if count_is_valid(last, win.used, count, kind):
                    if kind > SET_CREDIT:
                        return (kind, 0, count)
                    return (kind, value * self.value_unit, count)
                old = count
            mode = ext | CHAIN_SKIP_FIRST  # go on past this match
        if old >= 0:
            return (ALREADY_USED, 0, old)
        return _INVALID

    # for tests and the technician
    def next_code(self, code):
        """The standard (9-digit) chain step after `code`, on this decoder's backend."""
        st = self._st
        st[8] = code
        self._chain(st, 1, CHAIN_SKIP_FIRST)
        return st[8]

    def next_code_extended(self, code):
        st = self._st
        st[8] = code >> 32
        st[9] = code & _M32
        self._chain(st, 1, CHAIN_EXTENDED | CHAIN_SKIP_FIRST)
        return (st[8] << 32) | st[9]

    def hash8(self, msg):
        """SipHash-2-4 of an 8-byte message under this decoder's key, on its backend."""
        st = self._st
        st[12] = _le(msg, 0, 4)
        st[13] = _le(msg, 4, 4)
        self._chain(st, 1, CHAIN_HASH)
        return st[14] | (st[15] << 32)
