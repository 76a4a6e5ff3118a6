"""Token primitives on both runtimes: HMAC-SHA256, AES (cryptolib under MicroPython), the STS
CRC and amount encoding, the Feistel cipher, key derivation and the key record, result codes.

Known-answer values marked "host" were computed by tools/vend/core.py (stdlib hmac and
`cryptography`, written apart from the firmware), so under MicroPython these tests hold the
firmware's crypto against an independent implementation.
"""

import binascii

import support

from firmware.tokens import compact, envelope, keys, codes as tokencodes
from firmware.tokens.cipher64 import Cipher64

VK = bytes(range(32))
METER = 12345678901


def h(s):
    return binascii.unhexlify(s)


def hx(b):
    return binascii.hexlify(b).decode()


def test_hmac_rfc4231_vectors():
    # RFC 4231 test cases 1, 2 and 6 (a key longer than the block)
    assert hx(keys.hmac_sha256(b"\x0b" * 20, b"Hi There")) == (
        "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
    )
    assert hx(keys.hmac_sha256(b"Jefe", b"what do ya want for nothing?")) == (
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    )
    msg = b"Test Using Larger Than Block-Size Key - Hash Key First"
    assert hx(keys.hmac_sha256(b"\xaa" * 131, msg)) == (
        "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
    )
    hm = keys.Hmac(b"Jefe")
    assert hm.digest(b"what do ya ", b"want for nothing?") == keys.hmac_sha256(
        b"Jefe", b"what do ya want for nothing?"
    )


def test_compare_digest():
    assert keys.compare_digest(b"abc", b"abc")
    assert not keys.compare_digest(b"abc", b"abd")
    assert not keys.compare_digest(b"abc", b"ab")
    assert keys.compare_digest(memoryview(b"xyz")[1:], b"yz")


def test_aes_128_vectors():
    # FIPS-197 C.1 (one CBC block under a zero IV is the ECB result)
    a = envelope._aes(h("000102030405060708090a0b0c0d0e0f"), 2, bytes(16))
    assert hx(a.encrypt(h("00112233445566778899aabbccddeeff"))) == (
        "69c4e0d86a7b0430d8cdb78070b4c55a"
    )
    # NIST SP 800-38A F.2.1 CBC-AES128.Encrypt, first two blocks
    key = h("2b7e151628aed2a6abf7158809cf4f3c")
    iv = h("000102030405060708090a0b0c0d0e0f")
    pt = h("6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51")
    ct = envelope._aes(key, 2, iv).encrypt(pt)
    assert hx(ct) == "7649abac8119b246cee98e9b12e9197d5086cb9b507219ee95db113a917678b2"
    assert envelope._aes(key, 2, iv).decrypt(ct) == pt


def test_sts_crc_published_example():
    # sts.org.za TID page: class 0, subclass 0, RND 0101, TID 110000000010101001010101,
    # amount 0x2710 -> CRC 0x1970
    data48 = (0b0101 << 40) | (0b110000000010101001010101 << 16) | 0x2710
    assert compact.block_crc(0, data48) == 0x1970


def test_amount_encoding():
    assert compact.decode_amount(0x2710) == 10000  # the STS example: e=0, m=10000
    assert compact.encode_amount(0) == 0
    assert compact.encode_amount(16383) == 0x3FFF
    assert compact.encode_amount(16384) == 1 << 14
    assert compact.encode_amount(16385) is None  # steps of 10 from 16,384
    assert compact.encode_amount(180214) == (1 << 14) | 0x3FFF
    assert compact.encode_amount(180215) is None
    assert compact.encode_amount(180224) == 2 << 14
    assert compact.encode_amount(1818624) == 3 << 14
    assert compact.encode_amount(compact.AMOUNT_MAX) == 0xFFFF
    assert compact.decode_amount(0xFFFF) == 18201624 == compact.AMOUNT_MAX
    assert compact.encode_amount(compact.AMOUNT_MAX + 1) is None
    assert compact.encode_amount(-1) is None
    for field in range(0, 0x10000, 97):
        assert compact.encode_amount(compact.decode_amount(field)) == field
    assert compact.nearest_amounts(25005) == (25004, 25014)
    assert compact.nearest_amounts(1000) == (1000, 1000)
    assert compact.nearest_amounts(180219) == (180214, 180224)
    assert compact.nearest_amounts(compact.AMOUNT_MAX + 5) == (compact.AMOUNT_MAX, None)


def test_transposition_round_trip():
    for cls in range(4):
        for ct in (0, (1 << 64) - 1, 0x0123456789ABCDEF, 3 << 27, 1 << 27):
            n = compact.transpose(cls, ct)
            assert n < 1 << 66
            assert compact.untranspose(n) == (cls, ct)
            assert (n >> 27) & 3 == cls


def test_digits():
    n = (1 << 66) - 1
    assert compact.to_digits(n) == "73786976294838206463"
    assert compact.parse_digits("73786976294838206463") == n
    assert compact.parse_digits("73786976294838206464") is None  # 2**66
    assert compact.parse_digits("0000 0000 0000 0000 0042") == 42
    assert compact.parse_digits(b"0000-0000-0000-0000-0042") == 42
    assert compact.parse_digits("1234") is None
    assert compact.parse_digits("1234567890123456789a") is None
    assert compact.parse_digits("123456789012345678901") is None
    assert compact.parse_digits(None) is None
    assert compact.parse_digits(b"\xff" * 20) is None


def test_feistel_known_answer_and_inverse():
    f64 = h("95fe54655ac883f89e4695e8375025981697d2ff800c106dbc92b27a548f5eb4")  # host
    c = Cipher64(f64)
    assert c.encrypt(0x0123456789ABCDEF, 0) == 0xA8AD9437E7071E57  # host
    assert c.encrypt(0x0123456789ABCDEF, 2) == 0x0B57BF7A53629A53  # host
    x = 1
    seen = set()
    for _ in range(50):
        x = (x * 6364136223846793005 + 1442695040888963407) & ((1 << 64) - 1)
        for tweak in (0, 2):
            y = c.encrypt(x, tweak)
            assert c.decrypt(y, tweak) == x
            assert y < 1 << 64
            seen.add(y)
    assert len(seen) == 100


def test_key_derivation_known_answers():
    k0 = keys.derive_meter_key(VK, METER)
    assert hx(k0) == "5d152d3d8a4bb640a91cb03e486099c50a5effacef04a0506b8d9bc441e47638"  # host
    assert hx(keys.derive_meter_key(VK, str(METER), 2)) == (
        "f9a3358baad7aef5313aefda93faec6c0e103cde401adad44c5d3654b49cc001"  # host
    )
    assert hx(keys.key_material(VK, METER, 1)) == "298834fac77c7a3e04bd"  # host
    mk = keys.MeterKey(k0)
    assert hx(mk.enc_key()) == "7c6e483a55e26f35d1a584ca298b79c4"  # host
    assert hx(mk.f64_key()) == (
        "95fe54655ac883f89e4695e8375025981697d2ff800c106dbc92b27a548f5eb4"  # host
    )
    assert mk.fingerprint() == "f0dd5956"  # host
    # the meter's own rotation reaches the back office's revision 1 and 2 keys
    k1 = mk.rotated(keys.key_material(VK, METER, 1), 200)
    assert k1.revision == 1 and k1.ken == 200
    assert k1.key == keys.derive_meter_key(VK, METER, 1)
    k2 = k1.rotated(keys.key_material(VK, METER, 2), 255)
    assert hx(k2.key) == "f9a3358baad7aef5313aefda93faec6c0e103cde401adad44c5d3654b49cc001"
    assert keys.derive_meter_key(VK, METER) != keys.derive_meter_key(VK, METER + 1)


def test_meter_ids():
    assert keys.parse_meter_id("0042") == 42
    assert keys.parse_meter_id(9999999999999999999) == 9999999999999999999
    for bad in (0, -1, "", "12a", "12345678901234567890", 10**19, 1.5, None, True):
        support.raises(ValueError, keys.parse_meter_id, bad)
    assert keys.meter_id_bytes(1) == b"\x00" * 7 + b"\x01"


def test_key_record_round_trip_and_corruption():
    rec_hex = (  # host: tools.vend.core.meter_key_record
        "504d4b3100ff00005d152d3d8a4bb640a91cb03e486099c50a5effacef04a0506b8d9bc441e476381589cdf9"
    )
    mk = keys.load_key(h(rec_hex))
    assert mk.revision == 0 and mk.ken == 255
    assert mk.key == keys.derive_meter_key(VK, METER)
    assert hx(mk.to_bytes()) == rec_hex
    mk2 = keys.load_key(keys.MeterKey(bytes(32), 7, 9).to_bytes())
    assert (mk2.revision, mk2.ken, mk2.key) == (7, 9, bytes(32))
    rec = bytearray(h(rec_hex))
    for i in (0, 4, 6, 20, 43):
        bad = bytearray(rec)
        bad[i] ^= 1
        support.raises(ValueError, keys.load_key, bytes(bad))
    support.raises(ValueError, keys.load_key, bytes(rec[:40]))
    support.raises(ValueError, keys.MeterKey, bytes(31))
    support.raises(ValueError, keys.MeterKey, bytes(32), 256)
    support.raises(ValueError, keys.MeterKey(bytes(32), 255).rotated, bytes(10), 1)


def test_key_expiry_number():
    mk = keys.MeterKey(bytes(32), 0, 50)
    assert not mk.expired(None)
    assert not mk.expired(0)
    assert not mk.expired((51 << 24) - 1)
    assert mk.expired(51 << 24)
    assert not keys.MeterKey(bytes(32)).expired(0xFFFFFFFF)  # KEN 255: never


def test_result_codes_have_names_words_and_dlms():
    names = set()
    for code in tokencodes.CODES:
        n = tokencodes.name(code)
        assert n != "none" and n not in names
        names.add(n)
        assert 0 < len(tokencodes.word(code)) <= 11
        assert 0 <= tokencodes.dlms_status(code) <= 8
    assert tokencodes.CODES == tuple(range(1, 18))
    assert tokencodes.dlms_status(tokencodes.ACCEPT) == tokencodes.DLMS_EXECUTION_OK
    assert tokencodes.dlms_status(tokencodes.FORMAT) == tokencodes.DLMS_FORMAT_FAILURE
    assert tokencodes.dlms_status(tokencodes.CRC) == tokencodes.DLMS_AUTH_FAILURE
    assert tokencodes.dlms_status(tokencodes.USED) == tokencodes.DLMS_VALIDATION_FAILURE
    assert tokencodes.dlms_status(tokencodes.LOCKOUT) == tokencodes.DLMS_EXECUTION_FAILURE
    assert tokencodes.name(0) == "none" and tokencodes.word(99) == "?"
    assert tokencodes.accepted(tokencodes.KCT1) and not tokencodes.accepted(tokencodes.USED)
