"""The meter-state record: fixed size, sequence number and CRC-32.

Layout (little-endian): magic b"PM", version (1 byte), field count (1 byte), sequence
(u32), the state fields as signed 64-bit integers (meter.STATE_FIELDS order), CRC-32
of everything before it (u32). A record whose magic, version, count or CRC does not
hold is treated as absent: a torn write can never be mistaken for a state.
"""

import binascii
import struct

MAGIC = b"PM"
VERSION = 1


def size(nfields):
    return 8 + 8 * nfields + 4


def pack(seq, fields):
    n = len(fields)
    buf = bytearray(size(n))
    struct.pack_into("<2sBBI", buf, 0, MAGIC, VERSION, n, seq & 0xFFFFFFFF)
    struct.pack_into("<%dq" % n, buf, 8, *fields)
    struct.pack_into("<I", buf, 8 + 8 * n, binascii.crc32(memoryview(buf)[: 8 + 8 * n]))
    return buf


def unpack(buf, nfields):
    """(seq, fields) or None when the record is not valid.

    A record with fewer fields than `nfields` (written before fields were appended by
    a firmware update) is valid: the missing trailing fields read as 0.
    """
    if len(buf) < 8:
        return None
    magic, version, n, seq = struct.unpack_from("<2sBBI", buf, 0)
    if magic != MAGIC or version != VERSION or not 0 < n <= nfields or len(buf) < size(n):
        return None
    end = 8 + 8 * n
    (crc,) = struct.unpack_from("<I", buf, end)
    if crc != binascii.crc32(memoryview(buf)[:end]):
        return None
    fields = struct.unpack_from("<%dq" % n, buf, 8)
    if n < nfields:
        fields = fields + (0,) * (nfields - n)
    return seq, fields
