"""The compact tokens' 64-bit block cipher: a balanced Feistel network of 8 rounds whose
round function is HMAC-SHA256.

The block is two 32-bit halves L (bits 63..32) and R (bits 31..0). Round i (0..7) maps
(L, R) to (R, L xor F(i, R)) with F(i, R) = the first 4 bytes, big-endian, of
HMAC-SHA256(key, tweak || i || R as 4 bytes BE); tweak is one byte (the token class), so the
same block under another class decrypts to something unrelated. Decryption runs the rounds
backwards. With a pseudo-random round function, 4 rounds already give a strong
pseudo-random permutation (Luby-Rackoff); 8 leave a margin for the 32-bit halves.
"""

try:
    from micropython import const
except ImportError:  # CPython, for host tests and tools

    def const(x):
        return x


from firmware.tokens.keys import Hmac

ROUNDS = const(8)
_MASK32 = const(0xFFFFFFFF)


class Cipher64:
    def __init__(self, key):
        self._hmac = Hmac(key)
        self._msg = bytearray(6)

    def _f(self, tweak, i, half):
        msg = self._msg
        msg[0] = tweak
        msg[1] = i
        msg[2] = (half >> 24) & 0xFF
        msg[3] = (half >> 16) & 0xFF
        msg[4] = (half >> 8) & 0xFF
        msg[5] = half & 0xFF
        d = self._hmac.digest(msg)
        return (d[0] << 24) | (d[1] << 16) | (d[2] << 8) | d[3]

    def encrypt(self, block, tweak=0):
        """Encrypt a 64-bit block (int 0 .. 2**64-1) under a tweak byte (0..255)."""
        l = (block >> 32) & _MASK32
        r = block & _MASK32
        for i in range(ROUNDS):
            l, r = r, l ^ self._f(tweak, i, r)
        return (l << 32) | r

    def decrypt(self, block, tweak=0):
        l = (block >> 32) & _MASK32
        r = block & _MASK32
        for i in range(ROUNDS - 1, -1, -1):
            l, r = r ^ self._f(tweak, i, l), l
        return (l << 32) | r
