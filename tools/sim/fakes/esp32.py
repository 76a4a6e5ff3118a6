"""Fake `esp32` for the emulated board: the partitions of the world (tools/sim/emuworld.py).

`Partition.find(Partition.TYPE_DATA, label="vfs")` is the file-backed image the
emulator boots from, `label="journal"` the NOR flash model holding the state journal
(absent when the world has none, as on a stock partition table); the app partition is
listed for info() only. The block device calls (readblocks, writeblocks, ioctl) are the
backing device's, as esp32.Partition's with its 4096-byte blocks. Never in the image.
"""

from tools.sim import emuworld

_SECTOR = 4096


class Partition:
    BOOT = 0
    RUNNING = 1
    TYPE_APP = 0
    TYPE_DATA = 1

    def __init__(self, id, block_size=_SECTOR):
        if id in (Partition.BOOT, Partition.RUNNING):
            id = "factory"
        table = _table()
        if id not in table:
            raise ValueError("partition not found")
        self.label = id
        self._type, self._subtype, self._addr, self._size, self._dev = table[id]
        self.block_size = block_size

    @staticmethod
    def find(type=TYPE_APP, subtype=0xFF, label=None, block_size=_SECTOR):
        out = []
        table = _table()
        for name in table:
            t, st, _, _, _ = table[name]
            if t != type or (subtype != 0xFF and st != subtype):
                continue
            if label is not None and name != label:
                continue
            out.append(Partition(name, block_size))
        return out

    def info(self):
        return (self._type, self._subtype, self._addr, self._size, self.label, False)

    # No watchdog or run-limit check in here: these run inside littlefs (C) as well.
    def readblocks(self, block, buf, offset=0):
        self._device().readblocks(block, buf, offset)

    def writeblocks(self, block, buf, offset=None):
        self._device().writeblocks(block, buf, offset)

    def ioctl(self, op, arg):
        if op == 5:
            return self.block_size
        return self._device().ioctl(op, arg)

    def _device(self):
        if self._dev is None:
            raise OSError(19)  # ENODEV: not a data partition of the world
        return self._dev

    def set_boot(self):
        raise OSError(1)

    def get_next_update(self):
        raise OSError(2)

    @staticmethod
    def mark_app_valid_cancel_rollback():
        return None

    def __repr__(self):
        return "<Partition type=%d, subtype=%d, address=%d, size=%d, label=%s, encrypted=0>" % (
            self._type,
            self._subtype,
            self._addr,
            self._size,
            self.label,
        )


def _table():
    """label: (type, subtype, address, size, device) of the world's partition table."""
    w = emuworld.world()
    app_end = w.vfs_offset  # the app ends where vfs begins (ESP32_GENERIC: 0x200000)
    t = {}
    if w.journal is not None:  # a custom table: the journal carved from the app's tail
        size = w.journal.sectors * _SECTOR
        app_end -= size
        t["journal"] = (Partition.TYPE_DATA, 0x40, app_end, size, w.journal)
    t["factory"] = (Partition.TYPE_APP, 0, 0x10000, app_end - 0x10000, None)
    if w.vfs is not None:
        t["vfs"] = (Partition.TYPE_DATA, 0x81, w.vfs_offset, w.vfs.blocks * _SECTOR, w.vfs)
    return t


def mcu_temperature():
    return 45


def idf_heap_info(capabilities=0):
    return []
