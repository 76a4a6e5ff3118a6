"""The two journal designs measured on the NOR flash model (runs under micropython).

  ring:  firmware/storage/journal.py, an append-only ring of 256-byte slots on a raw partition
         (16 sectors, 64 KB)
  lfs_ab / lfs_inplace: the same state record as a littlefs file (vfs.VfsLfs2 on the NOR
         model, 64 sectors): two alternating files (firmware/storage/statefile.py), or one file
         rewritten in place

For each: flash erases and program operations per save, bytes programmed per save, the
worst single save's flash busy time (datasheet typical and maximum, W25Q32JV), the
host time per save, and for the ring the time to find the state in a full ring.
Prints one JSON object.

Usage: MICROPYPATH=.:.frozen micropython -X heapsize=1024wk tools/bench_journal_mpy.py
"""

import gc
import json
import os
import time

import vfs

from firmware.storage.journal import Journal
from firmware.app import STATE_FIELDS
from firmware.storage.statefile import StateFile
from tools.sim.nor import NorFlash

N = len(STATE_FIELDS)
SAVES = 2048


def fields(i):
    return tuple((i * 7 + k) % 200 for k in range(N))  # every value fits every field


def measure(flash, save, saves=SAVES):
    e0, p0, b0 = sum(flash.erases), flash.programs, flash.bytes_programmed
    worst_typ = worst_max = 0
    t0 = time.ticks_us()
    for i in range(saves):
        a, m = flash.busy_typ_us, flash.busy_max_us
        save(fields(i))
        worst_typ = max(worst_typ, flash.busy_typ_us - a)
        worst_max = max(worst_max, flash.busy_max_us - m)
    us = time.ticks_diff(time.ticks_us(), t0) / saves
    return {
        "erases_per_save": round((sum(flash.erases) - e0) / saves, 4),
        "programs_per_save": round((flash.programs - p0) / saves, 3),
        "bytes_programmed_per_save": round((flash.bytes_programmed - b0) / saves, 1),
        "worst_save_flash_ms_typ": worst_typ / 1000,
        "worst_save_flash_ms_max": worst_max / 1000,
        "host_us_per_save": round(us, 1),
        "max_sector_erases": max(flash.erases),
        "sectors_used": sum(1 for e in flash.erases if e),
    }


def ring():
    flash = NorFlash(16)
    j = Journal(flash)
    j.load()
    out = measure(flash, j.save)
    # recovery: a full ring (every slot holds a valid record) read back at boot
    t0 = time.ticks_us()
    j2 = Journal(flash)
    got = j2.load()
    out["recovery_ms_full_ring"] = time.ticks_diff(time.ticks_us(), t0) / 1000
    out["recovery_slots"] = j2.slots
    assert got == fields(SAVES - 1)
    return out


def lfs(inplace):
    flash = NorFlash(64)
    vfs.VfsLfs2.mkfs(flash)
    vfs.mount(vfs.VfsLfs2(flash), "/bench")
    try:
        if inplace:
            from firmware.storage import record

            seq = [0]

            def save(f):
                seq[0] += 1
                with open("/bench/state", "wb") as fh:
                    fh.write(record.STATE.pack(seq[0], f))

            return measure(flash, save)
        os.mkdir("/bench/state")
        sf = StateFile("/bench/state")
        return measure(flash, sf.save)
    finally:
        vfs.umount("/bench")


def main():
    out = {"ring": ring()}
    gc.collect()
    out["lfs_ab"] = lfs(False)
    gc.collect()
    out["lfs_inplace"] = lfs(True)
    print(json.dumps(out))


main()
