"""The meter's state journal: an append-only ring of fixed-size records on raw flash.

The flash is a block device with erase (esp32.Partition: readblocks(block, buf,
offset), writeblocks(block, buf, offset), ioctl(4) block count, ioctl(5) block size,
ioctl(6, block) erase). Each 4096-byte sector holds 16 slots of 256 bytes; a save
programs one record (record.py: magic, layout version, field count, sequence, fields,
CRC-32) into the next blank slot and never touches a programmed byte again.

Rules that make a power cut harmless:
- the newest record whose CRC holds is the state; a torn record fails its CRC and is
  ignored, so a cut during a save leaves the previous record in force;
- a slot is written only when it reads blank (all 0xFF): after a cut the writer skips
  whatever the torn write left;
- entering a sector erases it first. The ring order makes that sector the one holding
  the oldest records, never the newest, so a cut during the erase cannot reach the
  state in force (at least two sectors are required);
- the sequence number is 32-bit and only grows (4e9 saves: millions of years at the
  write policy in app.py).
Wear spreads evenly: every sector is erased once per trip round the ring.
"""

from firmware.storage import record

SLOT = 256  # bytes per record slot: the record (record.STATE.size) must fit


class Journal:
    def __init__(self, bdev, codec=record.STATE):
        if codec.size > SLOT:
            raise ValueError("journal: record larger than a slot")
        self.bdev = bdev
        self.codec = codec
        self.sectors = bdev.ioctl(4, 0)
        self.sector_size = bdev.ioctl(5, 0)
        if self.sectors < 2 or self.sector_size % SLOT:
            raise ValueError("journal: needs at least 2 sectors of a multiple of 256 bytes")
        self.per_sector = self.sector_size // SLOT
        self.slots = self.sectors * self.per_sector
        self.seq = 0
        self.pos = 0  # next slot to try
        self.saves = 0
        self.erases = 0
        self.newest = -1  # slot of the record in force, -1 when none
        self._buf = bytearray(SLOT)

    def _read(self, slot):
        self.bdev.readblocks(slot // self.per_sector, self._buf, (slot % self.per_sector) * SLOT)
        return self._buf

    def load(self):
        """Fields of the newest valid record (of any released layout, read by name into
        the newest one's fields: record.py), or None on a blank journal. Sets the write
        position after it."""
        best = None
        for slot in range(self.slots):
            got = self.codec.unpack(self._read(slot))
            if got is not None and (best is None or got[0] > best[0]):
                best = got
                self.newest = slot
        if best is None:
            self.seq = 0
            self.pos = 0
            self.newest = -1
            return None
        self.seq = best[0]
        self.pos = (self.newest + 1) % self.slots
        return best[1]

    def _blank(self, slot):
        for b in self._read(slot):
            if b != 0xFF:
                return False
        return True

    def save(self, fields):
        """Program `fields` (the newest layout's, in order) into the next blank slot.
        A value that does not fit its field raises ValueError before flash is touched."""
        data = self.codec.pack(self.seq + 1, fields)
        slot = self.pos
        keep = -1 if self.newest < 0 else self.newest // self.per_sector
        for _ in range(self.slots + 1):
            if slot % self.per_sector == 0:
                if slot // self.per_sector == keep:
                    break  # a whole lap without a blank slot: never erase the state
                self.bdev.ioctl(6, slot // self.per_sector)
                self.erases += 1
            if self._blank(slot):
                break
            slot = (slot + 1) % self.slots
        else:
            slot = -1
        if slot < 0 or not self._blank(slot):
            raise OSError(5)  # EIO: no slot erases to blank: the flash is worn out
        seq = self.seq + 1
        self.bdev.writeblocks(slot // self.per_sector, data, (slot % self.per_sector) * SLOT)
        self.seq = seq
        self.newest = slot
        self.pos = (slot + 1) % self.slots
        self.saves += 1

    def erase(self):
        """Factory reset: erase every sector."""
        for s in range(self.sectors):
            self.bdev.ioctl(6, s)
            self.erases += 1
        self.seq = 0
        self.pos = 0
        self.newest = -1
