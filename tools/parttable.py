"""ESP32 partition tables: the project's CSV files (tools/partitions/), their binary form
flashed at 0x8000, and MicroPython's "vfs" rule (CPython host tools and, for reading a
binary table, the emulated board under MicroPython).

The CSV is ESP-IDF's: `Name, Type, SubType, Offset, Size, Flags`, '#' comments, numbers
in hex (0x...), decimal or with a K/M suffix. The binary table (ESP-IDF Programming
Guide, API Guides, "Partition Tables", the format gen_esp32part.py writes):
- one 32-byte entry per partition, little-endian: magic AA 50, type (u8), subtype (u8),
  offset (u32), size (u32), label (16 bytes, NUL padded), flags (u32: bit 0 encrypted,
  bit 1 readonly);
- then the MD5 entry: EB EB, 14 bytes of FF, the MD5 of all the entries before it;
- then FF up to 0xC00 bytes, the table's length (the sector at 0x8000 holds nothing else).
Checks (the same guide): app partitions start on a 64 KB boundary, data partitions on a
4 KB one; nothing below 0x9000 (the bootloader and the table itself) and no overlap;
labels at most 16 bytes and unique.

The "vfs" rule (MicroPython ports/esp32/main.c, boardctrl_startup(), v1.26 and later):
a table with no data partition labelled "vfs" or "ffat" gets one at start-up, from the
end of the last partition to the end of the flash. `with_vfs()` applies it.

Named tables (`TABLES`): the meter's own (with the "journal" partition) and MicroPython's
stock ones (without it, the fallback). docs/board.md gives each layout and why.
"""

import hashlib
import struct

TABLE_OFFSET = 0x8000
TABLE_LEN = 0xC00
FIRST_OFFSET = 0x9000  # the table's sector ends here
ENTRY_LEN = 32
ENTRY_FMT = "<2sBBII16sI"
MAGIC = b"\xaa\x50"
MD5_MAGIC = b"\xeb\xeb"
APP = 0
DATA = 1
APP_ALIGN = 0x10000
DATA_ALIGN = 0x1000
MB = 0x100000

TYPES = {"app": APP, "data": DATA}
SUBTYPES = {
    APP: {"factory": 0x00, "test": 0x20},
    DATA: {
        "ota": 0x00,
        "phy": 0x01,
        "nvs": 0x02,
        "coredump": 0x03,
        "nvs_keys": 0x04,
        "efuse": 0x05,
        "undefined": 0x06,
        "esphttpd": 0x80,
        "fat": 0x81,
        "spiffs": 0x82,
        "littlefs": 0x83,
    },
}
for _i in range(16):
    SUBTYPES[APP]["ota_%d" % _i] = 0x10 + _i
FLAGS = {"encrypted": 1, "readonly": 2}

# name: (CSV file in tools/partitions/, flash size). The meter's tables end at the end
# of their flash; a stock table leaves the rest to the vfs rule.
TABLES = {
    "4MB": ("meter-4MB.csv", 4 * MB),
    "8MB": ("meter-8MB.csv", 8 * MB),
    "16MB": ("meter-16MB.csv", 16 * MB),
    "8MB-ota": ("meter-8MB-ota.csv", 8 * MB),
    "stock-4MB": ("stock-4MiBplus.csv", 4 * MB),
    "stock-8MB": ("stock-4MiBplus.csv", 8 * MB),
    "stock-16MB": ("stock-4MiBplus.csv", 16 * MB),
    "stock-4MB-ota": ("stock-4MiB-ota.csv", 4 * MB),
}


class TableError(ValueError):
    """A table that is not valid, with the reason (the partition named)."""


class Partition:
    """One partition: name, type, subtype, offset, size, flags (all int but name)."""

    def __init__(self, name, type, subtype, offset, size, flags=0):
        self.name = name
        self.type = type
        self.subtype = subtype
        self.offset = offset
        self.size = size
        self.flags = flags

    @property
    def end(self):
        return self.offset + self.size

    def key(self):
        return (self.name, self.type, self.subtype, self.offset, self.size, self.flags)

    def __eq__(self, other):
        return isinstance(other, Partition) and self.key() == other.key()

    def __repr__(self):
        return "Partition(%r, %d, 0x%02x, 0x%x, 0x%x, %d)" % self.key()


# -- CSV ---------------------------------------------------------------------------------
def _number(text, what):
    t = text.strip()
    scale = 1
    if t[-1:] in ("K", "k"):
        scale, t = 1024, t[:-1]
    elif t[-1:] in ("M", "m"):
        scale, t = MB, t[:-1]
    try:
        return int(t, 0) * scale
    except ValueError:
        raise TableError("%s: %r is not a number" % (what, text)) from None


def _kind(text, names, what):
    t = text.strip()
    if t in names:
        return names[t]
    n = _number(t, what)
    if not 0 <= n <= 0xFE:
        raise TableError("%s: %r is out of range" % (what, text))
    return n


def parse_csv(text):
    """[Partition] of an ESP-IDF partition CSV, checked (TableError naming the line)."""
    parts = []
    nxt = FIRST_OFFSET
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.split("#")[0].strip()
        if not line:
            continue
        cols = [c.strip() for c in line.split(",")]
        while len(cols) < 6:
            cols.append("")
        name, typ, sub, off, size, flags = cols[:6]
        where = "line %d (%s)" % (lineno, name)
        t = _kind(typ, TYPES, where + " type")
        if t in SUBTYPES:
            s = _kind(sub or "undefined", SUBTYPES[t], where + " subtype")
        else:
            s = _kind(sub, {}, where + " subtype")
        if off:
            o = _number(off, where + " offset")
        else:  # empty offset: right after the previous one (aligned for an app)
            align = APP_ALIGN if t == APP else DATA_ALIGN
            o = (nxt + align - 1) // align * align
        f = 0
        for flag in flags.split(":"):
            flag = flag.strip()
            if flag:
                if flag not in FLAGS:
                    raise TableError("%s: unknown flag %r" % (where, flag))
                f |= FLAGS[flag]
        p = Partition(name, t, s, o, _number(size, where + " size"), f)
        parts.append(p)
        nxt = p.end
    check(parts)
    return parts


def check(parts, flash_size=None):
    """TableError unless the table is one the bootloader accepts (see the docstring)."""
    if not parts:
        raise TableError("no partitions")
    seen = set()
    for p in parts:
        if not p.name or len(p.name.encode()) > 16:
            raise TableError("%r: a label is 1 to 16 bytes" % p.name)
        if p.name in seen:
            raise TableError("%s: two partitions with this label" % p.name)
        seen.add(p.name)
        align = APP_ALIGN if p.type == APP else DATA_ALIGN
        if p.offset % align:
            raise TableError(
                "%s: offset 0x%x is not on a 0x%x boundary" % (p.name, p.offset, align)
            )
        if p.size <= 0 or p.size % DATA_ALIGN:
            raise TableError("%s: size 0x%x is not a whole number of 4 KB" % (p.name, p.size))
        if p.offset < FIRST_OFFSET:
            raise TableError(
                "%s: 0x%x is below 0x%x (bootloader, table)" % (p.name, p.offset, FIRST_OFFSET)
            )
        if flash_size is not None and p.end > flash_size:
            raise TableError(
                "%s: ends at 0x%x, past the 0x%x of flash" % (p.name, p.end, flash_size)
            )
    ordered = sorted(parts, key=lambda q: q.offset)
    for a, b in zip(ordered, ordered[1:]):
        if b.offset < a.end:
            raise TableError("%s overlaps %s" % (b.name, a.name))
    if 32 * (len(parts) + 1) > TABLE_LEN:
        raise TableError("too many partitions")


# -- binary ------------------------------------------------------------------------------
def to_binary(parts):
    """The 0xC00 bytes flashed at 0x8000: the entries, the MD5 entry, FF padding."""
    check(parts)
    out = bytearray()
    for p in parts:
        label = p.name.encode()
        label += b"\x00" * (16 - len(label))
        out += struct.pack(ENTRY_FMT, MAGIC, p.type, p.subtype, p.offset, p.size, label, p.flags)
    digest = hashlib.md5(bytes(out)).digest()
    out += MD5_MAGIC + b"\xff" * 14 + digest
    out += b"\xff" * (TABLE_LEN - len(out))
    return bytes(out)


def from_binary(data):
    """[Partition] of a binary table (as read at 0x8000); TableError if it is not one:
    no entries, an MD5 that does not match, entries that do not end in FF."""
    parts = []
    pos = 0
    while pos + ENTRY_LEN <= len(data) and data[pos : pos + 2] == MAGIC:
        magic, t, s, o, size, label, f = struct.unpack(ENTRY_FMT, data[pos : pos + ENTRY_LEN])
        name = bytes(label).split(b"\x00")[0].decode()
        parts.append(Partition(name, t, s, o, size, f))
        pos += ENTRY_LEN
    if not parts:
        raise TableError("no partition table (no AA 50 entry at its start)")
    if data[pos : pos + 2] == MD5_MAGIC:
        if hashlib.md5(bytes(data[:pos])).digest() != bytes(data[pos + 16 : pos + 32]):
            raise TableError("partition table MD5 does not match its entries")
        pos += ENTRY_LEN
    rest = data[pos : pos + ENTRY_LEN]
    if len(rest) == ENTRY_LEN and rest != b"\xff" * ENTRY_LEN:
        raise TableError("partition table: an entry that is neither a partition nor FF")
    check(parts)
    return parts


# -- what the board makes of it ----------------------------------------------------------
def find(parts, name):
    for p in parts:
        if p.name == name:
            return p
    return None


def with_vfs(parts, flash_size):
    """The partitions as the ESP32 port sees them after start-up: the table's, plus the
    "vfs" that main.c adds when the table has neither "vfs" nor "ffat" (nothing added
    when the last partition reaches the end of the flash)."""
    out = list(parts)
    if find(parts, "vfs") is None and find(parts, "ffat") is None:
        end = max(p.end for p in parts)
        if flash_size > end:
            out.append(Partition("vfs", DATA, SUBTYPES[DATA]["fat"], end, flash_size - end))
    return out


def first_app(parts):
    """The app partition the bootloader starts with a blank otadata: factory, else ota_0."""
    apps = [p for p in parts if p.type == APP]
    for p in apps:
        if p.subtype == 0:
            return p
    return apps[0] if apps else None


def table_path(name):
    """The CSV file of a named table."""
    here = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
    return here + "/partitions/" + TABLES[name][0]


def load(name):
    """(partitions, flash size) of a named table (TableError for an unknown name)."""
    if name not in TABLES:
        raise TableError("table %r: one of %s" % (name, ", ".join(sorted(TABLES))))
    with open(table_path(name)) as f:
        parts = parse_csv(f.read())
    flash = TABLES[name][1]
    check(parts, flash)
    return parts, flash
