"""SPI NOR flash model behind MicroPython's block device protocol, with power cuts.

What it models (the ESP32's on-module flash, e.g. a W25Q32JV):
- 4096-byte sectors; erase sets a whole sector to 0xFF; programming can only clear
  bits (new = old AND data), so rewriting a programmed byte corrupts it, as on silicon;
- per-sector erase counters (wear) and operation counters;
- busy time per operation from the W25Q32JV datasheet's AC characteristics: page
  program tPP 0.4 ms typical / 3 ms max per 256-byte page, sector erase tSE 45 ms
  typical / 400 ms max;
- power-cut injection: `cut(op, at_byte)` makes program-or-erase operation number `op`
  (counted from 0 since the model was made) stop after `at_byte` bytes: bytes before it
  are done, the byte at it is half done (a program clears only some of its bits, an
  erase leaves it with some bits set), the rest untouched. The operation raises
  PowerCut and every later call raises it until `power_on()`.

The interface is esp32.Partition's: readblocks(block, buf, offset=0), writeblocks(block,
buf, offset=None) (no offset: erase the block first), ioctl(op, arg) with 1 init,
2 deinit, 3 sync, 4 block count, 5 block size, 6 erase block. Runs under MicroPython
and CPython.
"""

SECTOR = 4096
PAGE = 256
T_PROG_TYP_US = 400
T_PROG_MAX_US = 3000
T_ERASE_TYP_US = 45000
T_ERASE_MAX_US = 400000


class PowerCut(BaseException):
    """The supply failed. A BaseException so that the firmware's `except Exception`
    recovery paths cannot swallow it: nothing runs after a real power cut."""


class NorFlash:
    def __init__(self, sectors, seed=1):
        self.sectors = sectors
        self.mem = bytearray(sectors * SECTOR)  # no transient copy: the heap may be small
        self.reset(seed)

    def reset(self, seed=1):
        """A blank chip again (every byte 0xFF, counters zero), reusing the same memory:
        tests that need many fresh chips need not fragment a small heap."""
        blank = b"\xff" * SECTOR
        for i in range(self.sectors):
            self.mem[i * SECTOR : (i + 1) * SECTOR] = blank
        self.erases = [0] * self.sectors
        self.ops = 0  # program and erase operations started
        self.programs = 0
        self.bytes_programmed = 0
        self.busy_typ_us = 0
        self.busy_max_us = 0
        self.dead = False
        self.on_cut = None  # called with the PowerCut when a cut hits
        self._cut = None
        self._rand = seed or 1

    # -- power ---------------------------------------------------------------------
    def cut(self, op, at_byte=0):
        """Cut the power inside operation number `op` after `at_byte` bytes."""
        self._cut = (op, at_byte)

    def power_on(self):
        self.dead = False
        self._cut = None

    def _start(self, nbytes):
        """Count an operation; return how many bytes of it complete (None = all)."""
        if self.dead:
            raise PowerCut
        op = self.ops
        self.ops += 1
        if self._cut is not None and self._cut[0] == op:
            return min(self._cut[1], nbytes)
        return None

    def _noise(self):
        """Deterministic pseudo-random byte for half-done bits (xorshift32)."""
        x = self._rand
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        self._rand = x
        return x & 0xFF

    def _die(self):
        self.dead = True
        e = PowerCut()
        if self.on_cut is not None:
            self.on_cut(e)
        raise e

    # -- primitive operations -----------------------------------------------------
    def program(self, addr, data):
        n = len(data)
        if addr < 0 or addr + n > len(self.mem):
            raise OSError(22)  # EINVAL
        done = self._start(n)
        mem = self.mem
        upto = n if done is None else done
        for i in range(upto):
            mem[addr + i] &= data[i]
        self.programs += 1
        self.bytes_programmed += upto
        pages = (addr + n - 1) // PAGE - addr // PAGE + 1
        self.busy_typ_us += pages * T_PROG_TYP_US
        self.busy_max_us += pages * T_PROG_MAX_US
        if done is not None:
            if upto < n:  # the byte being programmed loses only some of its bits
                mem[addr + upto] &= data[upto] | self._noise()
            self._die()

    def erase(self, sector):
        if not 0 <= sector < self.sectors:
            raise OSError(22)
        done = self._start(SECTOR)
        base = sector * SECTOR
        upto = SECTOR if done is None else done
        mem = self.mem
        for i in range(base, base + upto):
            mem[i] = 0xFF
        self.erases[sector] += 1
        self.busy_typ_us += T_ERASE_TYP_US
        self.busy_max_us += T_ERASE_MAX_US
        if done is not None:
            if upto < SECTOR:  # the byte being erased gains only some of its bits
                mem[base + upto] |= self._noise()
            self._die()

    # -- block device protocol ----------------------------------------------------
    def readblocks(self, block, buf, offset=0):
        if self.dead:
            raise PowerCut
        addr = block * SECTOR + offset
        n = len(buf)
        if block < 0 or addr < 0 or addr + n > len(self.mem):
            raise OSError(22)
        buf[:] = memoryview(self.mem)[addr : addr + n]

    def writeblocks(self, block, buf, offset=None):
        if offset is None:  # the simple protocol: whole blocks, erased first
            if len(buf) % SECTOR:  # esp_partition_erase_range: ESP_ERR_INVALID_SIZE
                raise OSError(22)
            for i in range(len(buf) // SECTOR):
                self.erase(block + i)
            offset = 0
        self.program(block * SECTOR + offset, buf)

    def ioctl(self, op, arg):
        if op == 4:
            return self.sectors
        if op == 5:
            return SECTOR
        if op == 6:
            self.erase(arg)
            return 0
        if op in (1, 2, 3):
            if self.dead:
                raise PowerCut
            return 0
        return None

    # -- inspection -----------------------------------------------------------------
    def snapshot(self):
        return bytes(self.mem)
