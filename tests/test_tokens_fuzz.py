"""Tampering and guessing, on both runtimes: every single-bit flip of an envelope, of a
compact token's 66 bits and every single-digit change, and 10,000 random 20-digit strings,
each with the reject code it must get (and none accepted).
"""

from firmware.tokens import compact, envelope, keys, gate as tokens
from tools.sim import tokenmint
from firmware.tokens import codes as rc
from firmware.tokens.cipher64 import Cipher64

VK = bytes(range(32))
METER = 12345678901
NOW = 850000000


def setup():
    mk = keys.MeterKey(keys.derive_meter_key(VK, METER))
    return mk, tokens.Tokens(METER, mk)


def envelope_flip_code(bit):
    byte = bit // 8
    if byte == 0:
        return rc.FORMAT  # version
    if byte == 1:
        return rc.KEY_TYPE  # key revision
    if byte < 10:
        return rc.WRONG_METER  # meter id
    return rc.CRC  # token id, times, IV, ciphertext, tag: the tag fails


def test_every_bit_flip_of_an_envelope_is_rejected():
    mk, t = setup()
    for e in (
        tokenmint.envelope_credit(mk, METER, 5, 1000, NOW - 5, expiry=NOW + 3600),
        tokenmint.envelope_key_change(mk, METER, 6, keys.key_material(VK, METER, 1), 9, NOW),
    ):
        assert t.check(e, NOW).accepted
        for bit in range(8 * envelope.SIZE):
            bad = bytearray(e)
            bad[bit // 8] ^= 0x80 >> (bit % 8)
            r = t.check(bytes(bad), NOW)
            assert r.code == envelope_flip_code(bit), (bit, r)
            assert r.amount == 0 and r.new_key is None
            if bit % 61 == 0:  # the hex form takes the same path
                assert t.check(envelope.to_hex(bad), NOW).code == r.code
    assert t.key.revision == 0


def expected_compact_code(cipher, n):
    """The code a 66-bit number must get when it is not a genuine token, or None when its
    CRC happens to hold (then it only must not be accepted)."""
    if n >= 1 << 66:
        return rc.FORMAT
    cls, block = compact.untranspose(n)
    if cls == compact.CLASS_RESERVED:
        return rc.FORMAT
    if cls != compact.CLASS_TEST:
        block = cipher.decrypt(block, cls)
    if compact.block_crc(cls, block >> 16) != block & 0xFFFF:
        return rc.CRC
    return rc.FUNCTION if cls == compact.CLASS_TEST else None


def test_every_bit_flip_and_digit_change_of_a_compact_token_is_rejected():
    mk, t = setup()
    cipher = Cipher64(mk.f64_key())
    tok = tokenmint.compact_credit(mk, 9, 16000)
    n = int(tok)
    assert t.check(tok, NOW).code == rc.ACCEPT
    variants = [compact.to_digits(n ^ (1 << bit)) for bit in range(66)]
    for pos in range(20):
        for d in "0123456789":
            if d != tok[pos]:
                variants.append(tok[:pos] + d + tok[pos + 1 :])
    assert len(variants) == 66 + 180
    for v in variants:
        r = t.check(v, NOW)
        want = expected_compact_code(cipher, int(v))
        assert want is not None, v  # no CRC collision among these
        assert r.code == want and r.counted, (v, r)
        assert r.amount == 0


def _lcg(state):
    return (state * 1103515245 + 12345) & 0x7FFFFFFF


def random_digit_strings(count, seed=2026):
    s = seed
    for _ in range(count):
        s = _lcg(s)
        a = s
        s = _lcg(s)
        b = s
        s = _lcg(s)
        n = (((a << 31) | b) << 31 | s) % 10**20
        yield compact.to_digits(n)


def test_10000_random_20_digit_strings_none_accepted():
    mk, t = setup()
    cipher = Cipher64(mk.f64_key())
    counts = {}
    collisions = 0
    for text in random_digit_strings(10000):
        r = t.check(text, NOW)
        assert r.code != rc.ACCEPT and r.code != rc.KCT2 and r.amount == 0, (text, r)
        want = expected_compact_code(cipher, int(text))
        if want is None:
            collisions += 1  # the 16-bit CRC held by chance (about 1 in 65,536 decrypts)
            assert r.code in (rc.FUNCTION, rc.RANGE, rc.KCT1), (text, r)
        else:
            assert r.code == want, (text, r, want)
        counts[r.code] = counts.get(r.code, 0) + 1
    assert counts.get(rc.FORMAT, 0) > 4000  # above 2**66 (26 %) or class 3 (a quarter of the rest)
    assert counts.get(rc.CRC, 0) > 5000
    assert collisions <= 2
    assert sum(counts.values()) == 10000
