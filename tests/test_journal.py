"""The flash journal (firmware/storage/journal.py) on the NOR flash model (portable).

Round trips, laps round the ring, even wear, and power cuts at every operation and at
byte offsets inside each: the record in force is always the last one whose save
completed (or the one being saved, when its last byte made it), never anything else.
"""

import support
from firmware.storage import record
from firmware.storage.journal import SLOT, Journal
from tools.sim.nor import SECTOR, NorFlash, PowerCut

N = 20  # fields per record in these tests, 64-bit each
PER = SECTOR // SLOT
OLD = record.Layout(1, ("test " + " ".join("f%d:q" % k for k in range(16)),))
NEW = record.Layout(2, ("test " + " ".join("f%d:q" % k for k in range(N)),))
CODEC = record.Codec((OLD, NEW))
SIZE = CODEC.size


def fields(i):
    return tuple(i * 1000 + k - 7 for k in range(N))


def fresh(sectors=4):
    flash = NorFlash(sectors)
    j = Journal(flash, CODEC)
    assert j.load() is None
    return flash, j


def test_blank_journal_loads_none_and_first_save_round_trips():
    flash, j = fresh()
    j.save(fields(1))
    assert Journal(flash, CODEC).load() == fields(1)
    assert flash.erases == [1, 0, 0, 0]  # the first sector was erased before use


def test_negative_and_large_values_round_trip():
    flash, j = fresh()
    big = tuple((-1) ** k * (2**62 + k) for k in range(N))
    j.save(big)
    assert Journal(flash, CODEC).load() == big


def test_newest_record_wins_over_many_laps():
    flash, j = fresh(3)
    total = 3 * PER * 5 + 7  # five laps and a bit
    for i in range(total):
        j.save(fields(i))
        if i % 13 == 0:
            j2 = Journal(flash, CODEC)
            assert j2.load() == fields(i)
            assert j2.seq == i + 1
    j2 = Journal(flash, CODEC)
    assert j2.load() == fields(total - 1)
    # a reloaded journal carries on where the old one stopped
    j2.save(fields(9999))
    assert Journal(flash, CODEC).load() == fields(9999)


def test_wear_is_even_and_one_erase_per_sector_of_records():
    flash, j = fresh(8)
    saves = 8 * PER * 10
    for i in range(saves):
        j.save(fields(i))
    assert sum(flash.erases) == saves // PER
    assert max(flash.erases) - min(flash.erases) <= 1
    assert j.erases == sum(flash.erases)


def test_each_save_programs_one_record_and_nothing_else():
    flash, j = fresh()
    j.save(fields(1))
    before = flash.snapshot()
    programs = flash.programs
    j.save(fields(2))
    after = flash.snapshot()
    assert flash.programs == programs + 1
    changed = [i for i in range(len(before)) if before[i] != after[i]]
    assert changed and changed[0] >= SLOT and changed[-1] < SLOT + SIZE


def test_older_shorter_records_load_with_new_fields_as_zero():
    flash = NorFlash(2)
    Journal(flash, record.Codec((OLD,))).save(fields(3)[:16])
    j = Journal(flash, CODEC)
    assert j.load() == fields(3)[:16] + (0,) * (N - 16)
    j.save(fields(4))
    assert Journal(flash, CODEC).load() == fields(4)


def test_garbage_partition_is_blank_and_usable():
    flash = NorFlash(3)
    x = 12345
    for i in range(len(flash.mem)):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        flash.mem[i] = x >> 16 & 0xFF
    j = Journal(flash, CODEC)
    assert j.load() is None
    for i in range(PER + 3):
        j.save(fields(i))
        assert Journal(flash, CODEC).load() == fields(i)


def test_too_many_fields_or_too_small_a_partition_refused():
    wide = record.Layout(3, ("test " + " ".join("f%d:q" % k for k in range(31)),))
    support.raises(ValueError, record.Codec, (wide,))  # over 255 bytes: no size byte holds it
    support.raises(ValueError, Journal, NorFlash(1), CODEC)


def _workload_ops(sectors, saves):
    """Operation count of each save in a fresh run: [(first_op, last_op, i)]."""
    flash, j = fresh(sectors)
    spans = []
    for i in range(saves):
        a = flash.ops
        j.save(fields(i))
        spans.append((a, flash.ops - 1, i))
    return spans


def _run_with_cut(sectors, saves, op, at_byte):
    """Run the saves with a cut at (op, at_byte); return (last completed i, loaded)."""
    flash = NorFlash(sectors, seed=op * 7 + at_byte + 1)
    j = Journal(flash, CODEC)
    j.load()
    flash.cut(op, at_byte)
    done = -1
    try:
        for i in range(saves):
            j.save(fields(i))
            done = i
    except PowerCut:
        pass
    flash.power_on()
    return done, flash


def test_cut_at_every_operation_and_inside_it_keeps_the_last_completed_state():
    sectors = 2
    saves = 2 * PER * 2 + 3  # more than two laps: erases of used sectors included
    spans = _workload_ops(sectors, saves)
    total_ops = spans[-1][1] + 1
    assert total_ops == saves + saves // PER + 1  # one program each, one erase per sector
    checked = 0
    for op in range(total_ops):
        for at in (0, 1, 7, 100, SIZE - 1, SIZE, SECTOR - 1):
            done, flash = _run_with_cut(sectors, saves, op, at)
            j = Journal(flash, CODEC)
            got = j.load()
            # the save in flight is in force only if its whole record was programmed
            # (a cut inside the last byte may happen to leave it complete)
            inflight = done + 1
            ok = [fields(done)] if done >= 0 else [None]
            if at >= SIZE - 1:
                ok.append(fields(inflight))
            assert got in ok, (op, at, done, got)
            # after the reboot the journal goes on working over the debris
            for k in range(PER + 2):
                j.save(fields(5000 + k))
                assert Journal(flash, CODEC).load() == fields(5000 + k), (op, at, k)
            checked += 1
    assert checked == total_ops * 7


def test_repeated_cuts_during_the_same_erase_never_lose_the_state():
    flash, j = fresh(2)
    for i in range(PER):  # fill sector 0: the next save erases sector 1
        j.save(fields(i))
    for at in (0, 10, 2000, 4095):
        flash.cut(flash.ops, at)
        try:
            j.save(fields(99))
        except PowerCut:
            pass
        flash.power_on()
        j = Journal(flash, CODEC)
        assert j.load() == fields(PER - 1)
    j.save(fields(100))
    assert Journal(flash, CODEC).load() == fields(100)


class StuckFlash(NorFlash):
    """A worn flash whose sector 1 no longer erases."""

    def erase(self, sector):
        if sector == 1:
            self.ops += 1
            self.erases[1] += 1
            return
        NorFlash.erase(self, sector)


def test_a_sector_that_will_not_erase_fails_loudly_and_keeps_the_state():
    flash = StuckFlash(2)
    for i in range(len(flash.mem)):
        flash.mem[i] = 0
    j = Journal(flash, CODEC)
    j.load()
    for i in range(PER):
        j.save(fields(i))
    e = support.raises(OSError, j.save, fields(77))
    assert e.args[0] == 5
    assert Journal(flash, CODEC).load() == fields(PER - 1)


def test_factory_erase_blanks_the_journal():
    flash, j = fresh(3)
    for i in range(20):
        j.save(fields(i))
    j.erase()
    assert Journal(flash, CODEC).load() is None
    j.save(fields(1))
    assert Journal(flash, CODEC).load() == fields(1)
