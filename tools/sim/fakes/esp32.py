"""Fake `esp32` for the emulated board: the partitions of the world (tools/sim/emuworld.py).

The partitions are the world's partition table (the binary table at 0x8000, with the
port's "vfs" rule), in table order: `Partition.find(Partition.TYPE_DATA, label="vfs")` is
the file-backed image the emulator boots from, `label="journal"` the NOR flash model
holding the state journal (absent on a table without one, as on a stock table); the
others (nvs, phy_init, the app partitions) are listed for info() only. The block device calls (readblocks, writeblocks, ioctl) are the
backing device's, as esp32.Partition's with its 4096-byte blocks. Never in the image.
"""

from tools import parttable
from tools.sim import emuworld

_SECTOR = 4096


class Partition:
    BOOT = 0
    RUNNING = 1
    TYPE_APP = 0
    TYPE_DATA = 1

    def __init__(self, id, block_size=_SECTOR):
        if id in (Partition.BOOT, Partition.RUNNING):  # what a blank otadata boots
            id = parttable.first_app(emuworld.world().partitions).name
        for row in _table():
            if row[0] == id:
                break
        else:
            raise ValueError("partition not found")
        self.label = id
        self._type, self._subtype, self._addr, self._size, self._dev = row[1:]
        self.block_size = block_size

    @staticmethod
    def find(type=TYPE_APP, subtype=0xFF, label=None, block_size=_SECTOR):
        out = []
        for name, t, st, _, _, _ in _table():
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
    """[(label, type, subtype, address, size, device)] of the world's partition table,
    in table order (esp_partition_find's)."""
    w = emuworld.world()
    devices = {"vfs": w.vfs, "journal": w.journal}
    return [
        (p.name, p.type, p.subtype, p.offset, p.size, devices.get(p.name)) for p in w.partitions
    ]


def mcu_temperature():
    return 45


def idf_heap_info(capabilities=0):
    return []
