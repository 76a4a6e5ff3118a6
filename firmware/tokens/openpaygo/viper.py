"""OpenPAYGO Token chain walk in viper: SipHash-2-4 on 32-bit halves, no allocation.

MicroPython only (`firmware.tokens.openpaygo.decoder` falls back to pure Python elsewhere). `chain()`
is the one native entry point; its state lives in a caller-owned uint32 array `st`:

    st[0..7]   SipHash state after keying: v0 lo, v0 hi, v1 lo, v1 hi, v2 lo, v2 hi,
               v3 lo, v3 hi (never written here)
    st[8]      standard: the current 30-bit code      extended: code, high 8 bits
    st[9]      -                                      extended: code, low 32 bits
    st[10]     standard: lowest code that matches     extended: lowest match, high
    st[11]     -                                      extended: lowest match, low
    st[12,13]  mode 4: the 8-byte message, low/high 32 bits (little-endian words)
    st[14,15]  mode 4: the hash, low/high 32 bits

mode bit 0 (1): extended (40-bit codes); bit 1 (2): do not test the first code; mode 4
hashes st[12,13] once into st[14,15]. For modes 0..3: `n` times (test the current code
against [low, low + 1000) (1000000 extended), return the step index on a match, else
replace it by the next code in the chain); -1 when no code matched.

Written to give the same results with 32-bit (ESP32) and 64-bit (unix) machine words:
every sum and left shift is masked to 32 bits, every right shift is masked to the bits
it keeps (arithmetic or logical shift alike), carries and borrows use sign-free
formulas, and no comparison sees a value of 2**30 or more. No constant needs more
than 30 bits either, so nothing here is a heap object.
"""

# ruff: noqa: F821  (viper types: ptr32, uint)

import micropython

try:
    from micropython import const
except ImportError:  # CPython: the host tests run this source on modelled 32-bit words

    def const(x):
        return x


# the modes (bits): firmware.tokens.openpaygo.decoder's CHAIN_EXTENDED, _SKIP_FIRST, _HASH
_EXTENDED = const(1)
_SKIP_FIRST = const(2)
_HASH = const(4)


@micropython.viper
def chain(st: ptr32, n: int, mode: int) -> int:
    m32 = (uint(1) << 31) - 1
    m32 = (m32 << 1) | 1  # 0xFFFFFFFF on either word size
    ext = mode & _EXTENDED
    skip = mode & _SKIP_FIRST
    i = 0
    while i < n:
        ml = uint(0)
        mh = uint(0)
        if mode == _HASH:
            ml = uint(st[12])
            mh = uint(st[13])
        elif ext:
            ch = uint(st[8])
            cl = uint(st[9])
            if not skip:
                # d = code - low over 40 bits; match when 0 <= d < 1000000
                lh = uint(st[10])
                ll = uint(st[11])
                dl = (cl - ll) & m32
                bw = (((~cl & ll) | (~(cl ^ ll) & dl)) >> 31) & 1
                dh = (ch - lh - bw) & m32
                if dh == uint(0) and ((dl >> 20) & 0xFFF) == uint(0) and dl < uint(1000000):
                    return i
            # message: the 64-bit code big-endian, read as two little-endian words
            ml = ((ch & 0xFF) << 24) & m32
            mh = (
                (((cl & 0xFF) << 24) & m32)
                | ((cl & 0xFF00) << 8)
                | ((cl >> 8) & 0xFF00)
                | ((cl >> 24) & 0xFF)
            )
        else:
            c = uint(st[8])
            if not skip:
                lo = uint(st[10])
                if c >= lo and c < lo + 1000:
                    return i
            # message: the 32-bit code big-endian, twice
            ml = (((c & 0xFF) << 24) & m32) | ((c & 0xFF00) << 8) | ((c >> 8) & 0xFF00)
            ml = ml | ((c >> 24) & 0xFF)
            mh = ml
        skip = 0
        al = uint(st[0])
        ah = uint(st[1])
        bl = uint(st[2])
        bh = uint(st[3])
        cl = uint(st[4])
        ch = uint(st[5])
        dl = uint(st[6]) ^ ml
        dh = uint(st[7]) ^ mh
        r = 0
        while r < 8:
            # v0 += v1
            s = (al + bl) & m32
            ah = (ah + bh + ((((al & bl) | ((al | bl) & ~s)) >> 31) & 1)) & m32
            al = s
            # v1 = rotl(v1, 13) ^ v0
            t = bh
            bh = (((bh << 13) & m32) | ((bl >> 19) & 0x1FFF)) ^ ah
            bl = (((bl << 13) & m32) | ((t >> 19) & 0x1FFF)) ^ al
            # v0 = rotl(v0, 32)
            t = al
            al = ah
            ah = t
            # v2 += v3
            s = (cl + dl) & m32
            ch = (ch + dh + ((((cl & dl) | ((cl | dl) & ~s)) >> 31) & 1)) & m32
            cl = s
            # v3 = rotl(v3, 16) ^ v2
            t = dh
            dh = (((dh << 16) & m32) | ((dl >> 16) & 0xFFFF)) ^ ch
            dl = (((dl << 16) & m32) | ((t >> 16) & 0xFFFF)) ^ cl
            # v0 += v3
            s = (al + dl) & m32
            ah = (ah + dh + ((((al & dl) | ((al | dl) & ~s)) >> 31) & 1)) & m32
            al = s
            # v3 = rotl(v3, 21) ^ v0
            t = dh
            dh = (((dh << 21) & m32) | ((dl >> 11) & 0x1FFFFF)) ^ ah
            dl = (((dl << 21) & m32) | ((t >> 11) & 0x1FFFFF)) ^ al
            # v2 += v1
            s = (cl + bl) & m32
            ch = (ch + bh + ((((cl & bl) | ((cl | bl) & ~s)) >> 31) & 1)) & m32
            cl = s
            # v1 = rotl(v1, 17) ^ v2
            t = bh
            bh = (((bh << 17) & m32) | ((bl >> 15) & 0x1FFFF)) ^ ch
            bl = (((bl << 17) & m32) | ((t >> 15) & 0x1FFFF)) ^ cl
            # v2 = rotl(v2, 32)
            t = cl
            cl = ch
            ch = t
            if r == 1:
                # end of the message block; the final block is (8 << 56)
                al ^= ml
                ah ^= mh
                dh ^= 0x08000000
            elif r == 3:
                ah ^= 0x08000000
                cl ^= 0xFF
            r += 1
        hl = al ^ bl ^ cl ^ dl
        hh = ah ^ bh ^ ch ^ dh
        if mode == _HASH:
            st[14] = hl
            st[15] = hh
            return 0
        if ext:
            # 40 bits: hash >> 24; above 999999999999 (0xE8_D4A50FFF) subtract
            # 99511627777 (0x17_2B5AF001)
            xh = (hh >> 24) & 0xFF
            xl = ((hh << 8) & m32) | ((hl >> 24) & 0xFF)
            xu = (xl >> 16) & 0xFFFF
            xd = xl & 0xFFFF
            if xh > uint(0xE8) or (
                xh == uint(0xE8)
                and (xu > uint(0xD4A5) or (xu == uint(0xD4A5) and xd > uint(0x0FFF)))
            ):
                dl = (xl - 0x2B5AF001) & m32
                bw = (((~xl & 0x2B5AF001) | (~(xl ^ 0x2B5AF001) & dl)) >> 31) & 1
                xh = xh - 0x17 - bw
                xl = dl
            st[8] = xh
            st[9] = xl
        else:
            c = ((hl ^ hh) >> 2) & 0x3FFFFFFF
            if c > uint(999999999):
                c -= 73741825
            st[8] = c
        i += 1
    return -1
