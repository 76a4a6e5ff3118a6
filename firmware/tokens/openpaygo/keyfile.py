"""The OpenPAYGO key file (`opaygo.key`, beside `meter.key`): the operator's OpenPAYGO
Token secrets for this meter, as one fixed 36-byte record (little-endian):

    0..3    b"OPG1"
    4       flags: bit 0 extended tokens, bit 1 restricted digit set (1-4); others 0
    5..7    reserved, 0
    8..11   starting code, 0..999,999,999 (u32)
    12..15  value unit: minor money units per token value step, 1..2**30 - 1 (u32)
    16..31  the 16-byte OpenPAYGO secret key
    32..35  CRC-32 of bytes 0..31

    save(path, key, starting_code, value_unit, extended)   # build tools and tests
    got, source, reason = conffile.load(path, opaygokey.load)  # the meter (intake.py)

`load(data)` raises ValueError naming what is wrong; `save` checks its arguments the
same way before anything is written and replaces the file atomically
(firmware/storage/conffile.py). No file means OpenPAYGO is off: the meter answers such digits
Format like any other string that is not a token.
"""

import binascii
import struct

from firmware.storage import conffile
from firmware.billing.money import SMALL_INT_MAX

MAGIC = b"OPG1"
SIZE = 36
FLAG_EXTENDED = 1
FLAG_RESTRICTED = 2
MAX_STARTING_CODE = 999999999
MAX_VALUE_UNIT = SMALL_INT_MAX


class OpaygoKey:
    """The secrets and shape of one meter's OpenPAYGO tokens."""

    def __init__(self, key, starting_code=None, value_unit=1, extended=False, restricted=False):
        if isinstance(key, str):
            if len(key) != 32:
                raise ValueError("opaygo key: key: 32 hex digits")
            try:
                key = binascii.unhexlify(key)
            except Exception:
                raise ValueError("opaygo key: key: 32 hex digits")
        if not isinstance(key, (bytes, bytearray)) or len(key) != 16:
            raise ValueError("opaygo key: key: 16 bytes")
        key = bytes(key)
        if starting_code is None:
            from firmware.tokens.openpaygo.decoder import starting_code as default_code

            starting_code = default_code(key)
        if not isinstance(starting_code, int) or not 0 <= starting_code <= MAX_STARTING_CODE:
            raise ValueError("opaygo key: starting_code: 0..999999999")
        if not isinstance(value_unit, int) or not 1 <= value_unit <= MAX_VALUE_UNIT:
            raise ValueError("opaygo key: value_unit: 1..%d" % MAX_VALUE_UNIT)
        self.key = key
        self.starting_code = starting_code
        self.value_unit = value_unit
        self.extended = bool(extended)
        self.restricted = bool(restricted)

    def lengths(self):
        """Token lengths in digits: standard, then extended when it is on."""
        std, ext = (15, 20) if self.restricted else (9, 12)
        return (std, ext) if self.extended else (std,)

    def decoder(self):
        """A firmware.tokens.openpaygo.decoder.Decoder for these secrets (fresh count window)."""
        from firmware.tokens.openpaygo import decoder as openpaygo

        return openpaygo.Decoder(
            self.key,
            starting_code=self.starting_code,
            value_unit=self.value_unit,
            restricted_digits=self.restricted,
            extended=self.extended,
        )

    def to_bytes(self):
        buf = bytearray(SIZE)
        buf[0:4] = MAGIC
        buf[4] = (FLAG_EXTENDED if self.extended else 0) | (
            FLAG_RESTRICTED if self.restricted else 0
        )
        struct.pack_into("<II", buf, 8, self.starting_code, self.value_unit)
        buf[16:32] = self.key
        return conffile.seal(buf)


def load(data):
    """An OpaygoKey from its 36-byte record; ValueError saying what is wrong."""
    if len(data) != SIZE or bytes(data[0:4]) != MAGIC:
        raise ValueError("opaygo key: not an OpenPAYGO key record")
    if not conffile.sealed(data):
        raise ValueError("opaygo key: CRC mismatch")
    flags = data[4]
    if flags & ~(FLAG_EXTENDED | FLAG_RESTRICTED) or data[5] or data[6] or data[7]:
        raise ValueError("opaygo key: reserved bits set")
    start, unit = struct.unpack_from("<II", data, 8)
    return OpaygoKey(
        bytes(data[16:32]), start, unit, flags & FLAG_EXTENDED, flags & FLAG_RESTRICTED
    )


def save(path, key, starting_code=None, value_unit=1, extended=False, restricted=False):
    """Write the key file (atomic); key: 16 bytes or 32 hex digits; starting_code None:
    the key's default (SipHash of the key, as OpenPAYGO makes it). Returns the OpaygoKey."""
    k = OpaygoKey(key, starting_code, value_unit, extended, restricted)
    conffile.save(path, k.to_bytes())
    return k
