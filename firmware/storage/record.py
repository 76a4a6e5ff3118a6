"""The meter-state record, read and written by field name: header, fields, CRC-32.

Bytes (little-endian): magic b"PM", the layout's version (1 byte), its field count
(1 byte), a sequence number (u32), from version 2 on the record's size in bytes (1 byte),
the fields at the widths their layout gives, then the CRC-32 of everything before it
(u32). The layouts are firmware/storage/layouts.py: a record of any released one reads
into the newest one's fields by name (a field the record lacks takes the value its
layout names for that, 0 by default); only the newest is written. A record of a later
version than this firmware knows (written before a downgrade) is read for the fields
it knows: later layouts only append, and the size byte finds its CRC. A record whose
magic, layout or CRC does not hold is treated as absent, so a torn write can never be
mistaken for a state. A value that does not fit its field is refused (ValueError naming
it) before anything is written: struct would wrap it.
"""

import binascii
import struct

from firmware.storage import layouts

MAGIC = b"PM"
_HEAD = "<2sBBI"  # magic, version, count, sequence; then, from version 2, the size
# (lowest, highest) of each type code: one table, not a pair of numbers per field
_RANGE = {
    "b": (-(1 << 7), (1 << 7) - 1),
    "B": (0, (1 << 8) - 1),
    "h": (-(1 << 15), (1 << 15) - 1),
    "H": (0, (1 << 16) - 1),
    "i": (-(1 << 31), (1 << 31) - 1),
    "I": (0, (1 << 32) - 1),
    "q": (-(1 << 63), (1 << 63) - 1),
}


class Layout:
    """One released layout: (version, groups of "owner name:type[=value] ..."); parsed
    on first use (a layout no record in flash has is never parsed)."""

    def __init__(self, version, groups):
        self.version = version
        self.groups = groups
        self.count = 0
        for g in groups:
            self.count += g.count(":")
        self.names = None

    def parse(self):
        if self.names is not None:
            return self
        names, fmt, absent = [], "<", []
        for g in self.groups:
            words = g.split()
            for w in words[1:]:
                name, _, rest = w.partition(":")
                code, _, dflt = rest.partition("=")
                if code not in _RANGE or not name or name in names:
                    raise ValueError("record layout %d: bad field %s" % (self.version, w))
                names.append(name)
                fmt += code
                absent.append(int(dflt) if dflt else 0)
        self.names = tuple(names)
        self.fmt = fmt
        self.absent = tuple(absent)
        self.header = 8 if self.version == 1 else 9
        self.size = self.header + struct.calcsize(fmt) + 4
        if self.size > 255:
            raise ValueError("record layout %d: over 255 bytes" % self.version)
        return self

    def limits(self, name):
        """(lowest, highest) value the field `name` holds."""
        return _RANGE[self.fmt[1 + self.parse().names.index(name)]]


class Codec:
    """Writes the newest of `released` (Layouts, oldest first), reads any of them into
    its fields by name. Records of one version are told apart by their field count."""

    def __init__(self, released):
        self.released = released
        self.current = released[-1].parse()
        self.names = self.current.names
        self.size = self.current.size
        self._maps = {}

    def check(self, values):
        """ValueError naming the first value that does not fit its field (or the count)."""
        cur = self.current
        if len(values) != len(cur.names):
            raise ValueError("record: %d fields, not %d" % (len(values), len(cur.names)))
        fmt = cur.fmt
        for i in range(len(values)):
            v = values[i]
            lo, hi = _RANGE[fmt[i + 1]]
            if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
                raise ValueError("record: %s = %r does not fit %d..%d" % (cur.names[i], v, lo, hi))

    def pack(self, seq, values):
        """The record of `values` (the newest layout's fields, in order) as bytes;
        ValueError, and nothing packed, when one does not fit."""
        self.check(values)
        cur = self.current
        buf = bytearray(cur.size)
        end = cur.size - 4
        struct.pack_into(_HEAD, buf, 0, MAGIC, cur.version, cur.count, seq & 0xFFFFFFFF)
        if cur.header > 8:
            buf[8] = cur.size
        struct.pack_into(cur.fmt, buf, cur.header, *values)
        struct.pack_into("<I", buf, end, binascii.crc32(memoryview(buf)[:end]))
        return buf

    def find(self, version, count):
        for lay in self.released:
            if lay.version == version and lay.count == count:
                return lay
        return None

    def unpack(self, buf):
        """(seq, values in the newest layout's order) or None when not a valid record."""
        if len(buf) < 12:
            return None
        magic, version, count, seq = struct.unpack_from(_HEAD, buf, 0)
        if magic != MAGIC or not version:
            return None
        size = 12 if version == 1 else buf[8]
        lay = self.find(version, count)
        cur = self.current
        if lay is not None:
            size = lay.parse().size
            if version > 1 and buf[8] != size:
                return None
        elif version <= cur.version or version == 1 or count <= cur.count or size < cur.size:
            return None
        if len(buf) < size:
            return None
        end = size - 4
        if struct.unpack_from("<I", buf, end)[0] != binascii.crc32(memoryview(buf)[:end]):
            return None
        if lay is None:  # a later version: its first fields are the newest layout's here
            lay = cur
        got = struct.unpack_from(lay.fmt, buf, lay.header)
        if lay is cur:
            return seq, got
        where = self._maps.get(lay)
        if where is None:  # for each of the newest fields, its place in `lay` (-1: absent)
            where = tuple(lay.names.index(n) if n in lay.names else -1 for n in self.names)
            self._maps[lay] = where
        absent = self.current.absent
        return seq, tuple(got[k] if k >= 0 else absent[i] for i, k in enumerate(where))


def released():
    """The meter's layouts (firmware/storage/layouts.py) as Layout objects, oldest first."""
    return tuple(Layout(v, g) for v, g in layouts.RELEASED)


STATE = Codec(released())
