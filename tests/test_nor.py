"""Portable tests of tools/sim/nor.py: the NOR flash model and its power-cut injection.

Erase sets a sector to 0xFF and counts wear, programming only clears bits, the block
device protocol (simple and extended writeblocks, readblocks, ioctl 1-6), bounds, busy
time from the W25Q32JV timings, and `cut(op, at_byte)`: the bytes before the cut are
done, the byte at it partly, the rest untouched, and every call raises PowerCut until
`power_on()`.
"""

import support
from tools.sim import nor
from tools.sim.nor import PAGE, SECTOR, NorFlash, PowerCut


def _pattern(n, salt=0):
    return bytes((i * 7 + salt) & 0xFF for i in range(n))


def f_on(f):
    """Power the flash back on and return it (for reading after a cut)."""
    f.power_on()
    return f


def _read(flash, addr, n):
    buf = bytearray(n)
    flash.readblocks(addr // SECTOR, buf, addr % SECTOR)
    return bytes(buf)


def test_fresh_flash_is_erased_and_unworn():
    f = NorFlash(3)
    assert len(f.mem) == 3 * SECTOR
    assert f.snapshot() == b"\xff" * (3 * SECTOR)
    assert f.erases == [0, 0, 0]
    assert (f.ops, f.programs, f.bytes_programmed, f.busy_typ_us, f.busy_max_us) == (0, 0, 0, 0, 0)


def test_erase_sets_ff_and_counts_wear_per_sector():
    f = NorFlash(3)
    f.program(SECTOR, b"\x00" * SECTOR)
    f.program(2 * SECTOR, b"\x12\x34")
    f.erase(1)
    assert _read(f, SECTOR, SECTOR) == b"\xff" * SECTOR
    assert _read(f, 2 * SECTOR, 2) == b"\x12\x34"  # other sectors untouched
    f.erase(1)
    f.erase(2)
    assert f.erases == [0, 2, 1]
    assert f.ops == 5  # two programs, three erases


def test_program_only_clears_bits():
    f = NorFlash(1)
    f.program(0, b"\x0f\xf0\x00\xaa")
    assert _read(f, 0, 4) == b"\x0f\xf0\x00\xaa"
    f.program(0, b"\xff\xff\xff\xff")  # 1 bits cannot be programmed back
    assert _read(f, 0, 4) == b"\x0f\xf0\x00\xaa"
    f.program(0, b"\xf0\x0f\xff\x55")  # new = old AND data
    assert _read(f, 0, 4) == b"\x00\x00\x00\x00"
    assert f.programs == 3 and f.bytes_programmed == 12
    f.erase(0)
    f.program(0, b"\x5a")
    assert _read(f, 0, 2) == b"\x5a\xff"


def test_simple_writeblocks_erases_whole_blocks_first():
    f = NorFlash(4)
    f.program(SECTOR, b"\x00" * (2 * SECTOR))
    data = _pattern(2 * SECTOR, 3)
    f.writeblocks(1, data)
    assert _read(f, SECTOR, 2 * SECTOR) == data  # not ANDed with the old zeros
    assert f.erases == [0, 1, 1, 0]
    assert _read(f, 3 * SECTOR, 4) == b"\xff" * 4
    # the simple protocol takes whole blocks only, as esp32.Partition does
    assert support.raises(OSError, f.writeblocks, 0, b"\x00" * 100).args[0] == 22
    assert support.raises(OSError, f.writeblocks, 0, b"\x00" * (SECTOR + 1)).args[0] == 22
    assert f.erases == [0, 1, 1, 0]


def test_extended_writeblocks_programs_without_erasing():
    f = NorFlash(2)
    f.writeblocks(1, b"\x0f\x0f", 10)
    assert _read(f, SECTOR + 10, 2) == b"\x0f\x0f"
    f.writeblocks(1, b"\xf1\xff", 10)
    assert _read(f, SECTOR + 10, 2) == b"\x01\x0f"
    assert f.erases == [0, 0]
    assert f.ioctl(6, 1) == 0  # the explicit erase of the extended protocol
    assert _read(f, SECTOR + 10, 2) == b"\xff\xff"
    assert f.erases == [0, 1]


def test_ioctl_geometry_and_control():
    f = NorFlash(7)
    assert f.ioctl(4, 0) == 7
    assert f.ioctl(5, 0) == SECTOR
    assert f.ioctl(1, 0) == 0 and f.ioctl(2, 0) == 0 and f.ioctl(3, 0) == 0
    assert f.ioctl(99, 0) is None
    assert f.ops == 0


def test_readblocks_with_offsets_and_into_a_memoryview():
    f = NorFlash(2)
    data = _pattern(SECTOR + 100)
    f.program(0, data)
    buf = bytearray(8)
    f.readblocks(0, buf, SECTOR - 4)  # reads may run across a sector boundary
    assert bytes(buf) == data[SECTOR - 4 : SECTOR + 4]
    big = bytearray(16)
    f.readblocks(1, memoryview(big)[4:12], 2)
    assert bytes(big[4:12]) == data[SECTOR + 2 : SECTOR + 10]
    assert bytes(big[:4]) == b"\x00" * 4


def test_bounds_are_errors():
    f = NorFlash(2)
    assert support.raises(OSError, f.readblocks, 2, bytearray(1)).args[0] == 22
    assert support.raises(OSError, f.readblocks, 1, bytearray(2), SECTOR - 1).args[0] == 22
    assert support.raises(OSError, f.readblocks, -1, bytearray(1)).args[0] == 22
    assert support.raises(OSError, f.readblocks, 0, bytearray(1), -1).args[0] == 22
    assert support.raises(OSError, f.program, 2 * SECTOR - 1, b"\x00\x00").args[0] == 22
    assert support.raises(OSError, f.program, -1, b"\x00").args[0] == 22
    assert support.raises(OSError, f.writeblocks, 1, b"\x00", SECTOR).args[0] == 22
    assert support.raises(OSError, f.erase, 2).args[0] == 22
    assert support.raises(OSError, f.erase, -1).args[0] == 22
    assert support.raises(OSError, f.ioctl, 6, 5).args[0] == 22
    assert f.ops == 0 and f.erases == [0, 0]  # refused operations are not started
    assert f.snapshot() == b"\xff" * (2 * SECTOR)
    f.readblocks(1, bytearray(1), SECTOR - 1)  # the last byte is fine


def test_busy_time_follows_the_datasheet():
    f = NorFlash(2)
    f.program(0, b"\x00")  # one page
    assert (f.busy_typ_us, f.busy_max_us) == (nor.T_PROG_TYP_US, nor.T_PROG_MAX_US)
    f.program(PAGE - 1, b"\x00\x00")  # straddles two pages
    assert f.busy_typ_us == 3 * nor.T_PROG_TYP_US
    f.program(PAGE * 4, b"\x00" * PAGE)  # exactly one aligned page
    assert f.busy_typ_us == 4 * nor.T_PROG_TYP_US
    f.erase(1)
    assert f.busy_typ_us == 4 * nor.T_PROG_TYP_US + nor.T_ERASE_TYP_US
    assert f.busy_max_us == 4 * nor.T_PROG_MAX_US + nor.T_ERASE_MAX_US
    assert (nor.T_PROG_TYP_US, nor.T_PROG_MAX_US) == (400, 3000)  # W25Q32JV tPP
    assert (nor.T_ERASE_TYP_US, nor.T_ERASE_MAX_US) == (45000, 400000)  # W25Q32JV tSE


def test_power_cut_is_not_an_exception():
    # `except Exception` recovery paths in the firmware must not swallow it
    assert issubclass(PowerCut, BaseException)
    assert not issubclass(PowerCut, Exception)


def _cut_program(at, old, new, seed=1):
    f = NorFlash(1, seed=seed)
    f.program(0, old)  # op 0
    f.cut(1, at)
    e = support.raises(PowerCut, f.program, 0, new)
    assert isinstance(e, PowerCut)
    return f


def test_cut_inside_a_program_tears_it_at_the_byte():
    n = 64
    old = bytes(0xF0 | (i & 0x0F) for i in range(n))  # low bits vary, high bits set
    new = b"\x0f" * n
    for at in (0, 1, 17, n - 1):
        for seed in (1, 5, 77, 1234):
            f = _cut_program(at, old, new, seed)
            got = _read(f_on(f), 0, n)
            for i in range(n):
                done = old[i] & new[i]
                if i < at:
                    assert got[i] == done, (at, i)
                elif i > at:
                    assert got[i] == old[i], (at, i)
                else:  # half done: only bits the program clears may be cleared
                    assert got[i] & done == done and got[i] | old[i] == old[i], (at, seed)
            assert f.bytes_programmed == n + at


def test_a_torn_byte_can_be_partly_programmed():
    # over many seeds the byte at the cut ends up fully, partly and not programmed
    kinds = set()
    for seed in range(1, 60):
        f = _cut_program(3, b"\xff" * 8, b"\x00" * 8, seed)
        v = f_on(f).mem[3]
        kinds.add("none" if v == 0xFF else ("all" if v == 0 else "part"))
    assert "part" in kinds and len(kinds) >= 2


def test_cut_past_the_end_completes_the_operation_then_dies():
    f = _cut_program(100, b"\xff" * 8, b"\x00" * 8)
    assert bytes(f_on(f).mem[:8]) == b"\x00" * 8


def test_cut_inside_an_erase_tears_it_at_the_byte():
    for at in (0, 1, 1000, SECTOR - 1):
        for seed in (3, 99):
            f = NorFlash(2, seed=seed)
            f.program(0, b"\x00" * (2 * SECTOR))  # op 0
            f.cut(1, at)
            support.raises(PowerCut, f.erase, 0)
            assert f.erases == [1, 0]  # a torn erase still wears the sector
            f.power_on()
            mem = f.mem
            assert bytes(mem[:at]) == b"\xff" * at
            assert bytes(mem[at + 1 : SECTOR]) == b"\x00" * (SECTOR - at - 1)
            assert bytes(mem[SECTOR:]) == b"\x00" * SECTOR  # the next sector is untouched


def test_erase_cut_byte_only_gains_bits():
    for seed in range(1, 40):
        f = NorFlash(1, seed=seed)
        f.program(0, b"\x81" * 4)
        f.cut(1, 2)
        support.raises(PowerCut, f.ioctl, 6, 0)  # the same cut through the erase ioctl
        f.power_on()
        assert bytes(f.mem[:2]) == b"\xff\xff" and f.mem[3] == 0x81
        assert f.mem[2] & 0x81 == 0x81


def test_after_a_cut_every_call_raises_until_power_on():
    f = NorFlash(2)
    f.cut(0, 0)
    support.raises(PowerCut, f.program, 0, b"\x00\x00")
    assert f.dead
    ops = f.ops
    buf = bytearray(4)
    support.raises(PowerCut, f.readblocks, 0, buf)
    support.raises(PowerCut, f.writeblocks, 0, b"\x00", 0)
    support.raises(PowerCut, f.writeblocks, 0, b"\x00" * SECTOR)
    support.raises(PowerCut, f.erase, 1)
    support.raises(PowerCut, f.ioctl, 6, 1)
    support.raises(PowerCut, f.ioctl, 3, 0)  # sync
    support.raises(PowerCut, f.ioctl, 1, 0)
    assert f.ops == ops  # calls on a dead device are not started
    assert f.erases == [0, 0]
    f.power_on()
    assert not f.dead
    f.readblocks(0, buf)
    assert bytes(buf[1:]) == b"\xff" * 3  # cut at byte 0: only byte 0 may be torn
    f.program(4, b"\x00")  # the cut is cleared: later operations complete
    f.erase(1)
    assert f.erases == [0, 1]


def test_cut_counts_operations_from_the_start():
    f = NorFlash(2)
    f.cut(3, 1)
    f.program(0, b"\x00\x00")  # op 0
    f.erase(1)  # op 1
    f.writeblocks(0, b"\x00\x00", 8)  # op 2
    support.raises(PowerCut, f.writeblocks, 0, b"\x00\x00\x00", 16)  # op 3
    f.power_on()
    assert f.ops == 4
    assert bytes(f.mem[:2]) == b"\x00\x00" and bytes(f.mem[8:10]) == b"\x00\x00"
    assert f.mem[16] == 0x00 and f.mem[18] == 0xFF  # op 3 torn at its byte 1
    # the simple protocol counts its erases as operations too
    f.cut(f.ops + 1, 0)
    support.raises(PowerCut, f.writeblocks, 1, b"\x11" * SECTOR)  # erase ok, program cut
    f.power_on()
    assert f.erases == [0, 2]
    assert bytes(f.mem[SECTOR + 1 : 2 * SECTOR]) == b"\xff" * (SECTOR - 1)
