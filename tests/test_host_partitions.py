"""CPython-only: the partition tables (tools/partitions/*.csv) and their binary form
(tools/parttable.py), checked against an independent reader, and the layouts' rules.

The reader is mp-image-tool-esp32's PartitionTable (PyPI; it reads and writes the
tables of MicroPython ESP32 firmware files): it must find every entry and verify the
MD5 entry of every binary table made here, and reject a corrupted one. The layouts:
every meter table has the 64 KB (16-sector) journal the flash-life figures assume, the
app room of the stock table at least, and an explicit vfs that is the last partition and
runs to the end of the flash, so that the port's rule (main.c: "vfs" from the end of the
last partition to the end of the flash) would give the very same vfs without it.
"""

import pytest
from mp_image_tool_esp32.partition_table import PartitionError, PartitionTable

from tools import parttable as pt

METER = ("4MB", "8MB", "16MB", "8MB-ota")


@pytest.mark.parametrize("name", sorted(pt.TABLES))
def test_binary_table_reads_the_same_in_an_independent_reader(name):
    parts, flash = pt.load(name)
    data = pt.to_binary(parts)
    assert len(data) == 0xC00
    theirs = PartitionTable.from_bytes(data, flash)  # raises on a bad MD5
    theirs.check()
    got = sorted((p.name, p.type, p.subtype, p.offset, p.size, p.flags) for p in theirs)
    assert got == sorted(p.key() for p in parts)
    assert pt.from_binary(data) == parts
    # the bytes after the MD5 entry are FF; the MD5 entry is where the format puts it
    n = 32 * len(parts)
    assert data[n : n + 16] == b"\xeb\xeb" + b"\xff" * 14
    assert set(data[n + 32 :]) == {0xFF}


def test_a_corrupted_table_is_refused_by_both_readers():
    data = bytearray(pt.to_binary(pt.load("4MB")[0]))
    data[3 * 32 + 5] ^= 0x01  # the journal's offset, one bit
    with pytest.raises(PartitionError, match="Checksum"):
        PartitionTable.from_bytes(bytes(data), 0x400000)
    with pytest.raises(pt.TableError, match="MD5"):
        pt.from_binary(bytes(data))
    with pytest.raises(pt.TableError, match="no partition table"):
        pt.from_binary(b"\xff" * 0xC00)


@pytest.mark.parametrize("name", METER)
def test_meter_layouts(name):
    parts, flash = pt.load(name)
    journal = pt.find(parts, "journal")
    vfs = pt.find(parts, "vfs")
    assert (journal.type, journal.subtype, journal.size) == (pt.DATA, 0x06, 16 * 4096)
    assert vfs.end == flash and max(p.end for p in parts) == flash
    assert journal.end == vfs.offset  # the journal right below vfs, above the app(s)
    apps = [p for p in parts if p.type == pt.APP]
    assert all(a.end <= journal.offset for a in apps)
    assert min(a.size for a in apps) >= 0x1F0000  # stock ESP32_GENERIC's app room
    # the port's rule, had the table no vfs entry, gives the same partition
    without = [p for p in parts if p.name != "vfs"]
    assert pt.find(pt.with_vfs(without, flash), "vfs").key()[3:5] == (vfs.offset, vfs.size)
    assert pt.with_vfs(parts, flash) == parts  # and adds nothing to the table as it is


def test_stock_tables_get_their_vfs_from_the_ports_rule():
    parts, flash = pt.load("stock-4MB")
    assert pt.find(parts, "vfs") is None and pt.find(parts, "journal") is None
    vfs = pt.find(pt.with_vfs(parts, flash), "vfs")
    assert (vfs.offset, vfs.size, vfs.subtype) == (0x200000, 0x200000, 0x81)


def test_csv_refusals():
    head = "nvs, data, nvs, 0x9000, 0x6000,\n"
    cases = {
        "factory, app, factory, 0x18000, 0x100000,": "not on a 0x10000 boundary",
        "factory, app, factory, 0x10000, 0x100000,\nj, data, 6, 0x100000, 0x10000,": "overlaps",
        "factory, app, factory, 0x10000, 0x100800,": "whole number of 4 KB",
        "factory, app, factory, 0x10000, 0x100000,\nnvs, data, nvs, 0x200000, 0x1000,": "two partitions",
        "factory, app, bogus, 0x10000, 0x100000,": "is not a number",
        "averyveryverylongname, data, nvs, 0x20000, 0x1000,": "1 to 16 bytes",
        "factory, app, factory, 0x10000, 1M, secret": "unknown flag",
    }
    for text, why in cases.items():
        with pytest.raises(pt.TableError, match=why):
            pt.parse_csv(head + text)
    with pytest.raises(pt.TableError, match="below 0x9000"):
        pt.parse_csv("nvs, data, nvs, 0x8000, 0x1000,")
    with pytest.raises(pt.TableError, match="past the"):
        pt.check(pt.load("8MB")[0], 4 * pt.MB)
    # empty offsets follow the previous partition, an app on its 64 KB boundary; sizes in K/M
    parts = pt.parse_csv(head + "phy, data, phy, , 4K,\nfactory, app, factory, , 1M, readonly")
    assert [(p.offset, p.size) for p in parts] == [
        (0x9000, 0x6000),
        (0xF000, 0x1000),
        (0x10000, 0x100000),
    ]
    assert parts[2].flags == 2
