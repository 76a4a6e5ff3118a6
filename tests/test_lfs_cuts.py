"""Portable tests: littlefs (vfs.VfsLfs2) over the NOR flash model, cut at every operation.

A file is written (rewritten in place, or written to a new name and renamed over the old
one); the write is cut at every program and erase operation it makes, at several bytes
inside each; the same NorFlash is powered on and remounted with a new VfsLfs2. The
filesystem must mount, the file must hold exactly the old or the new contents, and the
next write must work. Generations of writes are run so that the swept writes include
littlefs's metadata compaction and block allocation (erases), not only appends.

The harness (Port, mount, sweep) is reused by test_conffile.py. vfs exists only under
MicroPython: under CPython these tests skip, the proof is the MicroPython run.

Why a Port between the filesystem and the flash: littlefs file objects have finalisers.
A file left open by the cut would be closed by a later garbage collection, through the
dead mount, onto the powered-on flash: writes from a filesystem that no longer exists,
which nothing on real hardware could make (seen: one program operation per cut). The
Port sends the dead mount to a private copy of the flash instead, so what is checked is
only what the flash held at the cut.
"""

import gc

import support
from tools.sim.nor import SECTOR, NorFlash, PowerCut

try:
    import vfs
except ImportError:
    vfs = None

SECTORS = 8


def need_vfs():
    if vfs is None:
        support.skip("vfs.VfsLfs2 exists only under MicroPython; proven there")


class _Ghost:
    """Where a detached mount's late calls go: a private copy, no allocation."""

    def __init__(self, mem):
        self.mem = mem

    def readblocks(self, block, buf, offset=0):
        a = block * SECTOR + offset
        m = self.mem
        for i in range(len(buf)):
            buf[i] = m[a + i]

    def writeblocks(self, block, buf, offset=None):
        a = block * SECTOR + (offset or 0)
        m = self.mem
        for i in range(len(buf)):
            m[a + i] = buf[i]

    def ioctl(self, op, arg):
        if op == 4:
            return len(self.mem) // SECTOR
        if op == 5:
            return SECTOR
        if op == 6:
            m = self.mem
            for i in range(arg * SECTOR, arg * SECTOR + SECTOR):
                m[i] = 0xFF
        return 0


class Port:
    """The block device one mount sees: the flash, until the flash dies or detach().

    From the first call after a cut on, everything goes to `ghost` (a bytearray the size
    of the flash, allocated up front: finalisers run with the heap locked) holding a
    copy of the flash as it was then, so the unwinding and the finalisers of the dead
    mount can neither touch the flash nor raise again.
    """

    def __init__(self, flash, ghost=None):
        self.flash = flash
        self.dev = flash
        self.ghost = ghost

    def detach(self):
        if self.dev is self.flash and self.ghost is not None:
            self.ghost[:] = self.flash.mem
            self.dev = _Ghost(self.ghost)

    def _device(self):
        if self.dev is self.flash and self.flash.dead:
            self.detach()
        return self.dev

    def readblocks(self, block, buf, offset=0):
        self._device().readblocks(block, buf, offset)

    def writeblocks(self, block, buf, offset=None):
        self._device().writeblocks(block, buf, offset)

    def ioctl(self, op, arg):
        return self._device().ioctl(op, arg)


class Recorder(NorFlash):
    """NorFlash that lists its program/erase operations as (kind, bytes)."""

    def __init__(self, sectors, seed=1):
        NorFlash.__init__(self, sectors, seed)
        self.log = []

    def program(self, addr, data):
        self.log.append(("program", len(data)))
        NorFlash.program(self, addr, data)

    def erase(self, sector):
        self.log.append(("erase", SECTOR))
        NorFlash.erase(self, sector)


def flash_from(image, cls=NorFlash, seed=1):
    gc.collect()  # a whole-flash buffer each time: keep the heap unfragmented
    f = cls(len(image) // SECTOR, seed)
    f.mem[:] = image
    return f


def mount(flash, point, ghost=None):
    """Mount flash at point through a Port (with a ghost buffer: one that outlives a cut)."""
    port = Port(flash, ghost)
    vfs.mount(vfs.VfsLfs2(port), point)
    return port


def formatted(point, setup=None):
    """Image of a fresh littlefs, after setup() ran on it mounted at point."""
    f = NorFlash(SECTORS)
    vfs.VfsLfs2.mkfs(f)
    mount(f, point)
    if setup is not None:
        setup()
    vfs.umount(point)
    return f.snapshot()


def offsets(n):
    """Bytes to cut an n-byte operation at (n: it completes, then the power fails)."""
    out = []
    for at in (0, 1, n // 2, n - 1, n):
        if 0 <= at <= n and at not in out:
            out.append(at)
    return out


def sweep(image, action, check, point, keep_after=True):
    """Cut action() at every program/erase op it makes on `image`, at offsets() of each.

    After each cut: power on, remount (OSError if littlefs cannot), outcome = check(flash)
    (the powered-on NorFlash, mounted at point); returns (list of (kind, op, at, outcome),
    image after an uncut action, ops log). One flash and one ghost buffer serve all the
    cuts: the heap is too small for a new pair each time.
    """
    f, ghost = _take(image)
    try:
        return _sweep(f, ghost, image, action, check, point, keep_after)
    finally:
        _POOL.append((f, ghost))


# (flash, ghost) pairs free for sweeps: a sweep run inside another's check (a cut during
# the repair of a cut) takes the second pair instead of two fresh whole-flash buffers
# each time, which would fragment a small heap
_POOL = []


def reserve(image, n):
    """Put n (flash, ghost) pairs the size of `image` in the pool now, while the heap is
    still whole (nested sweeps need two)."""
    got = [_take(image) for _ in range(n)]
    _POOL.extend(got)


def _take(image):
    for i in range(len(_POOL)):
        f, ghost = _POOL[i]
        if len(f.mem) == len(image):
            _POOL.pop(i)
            f.reset()
            f.mem[:] = image
            f.log = []
            return f, ghost
    f = flash_from(image, Recorder)
    return f, bytearray(len(image))


def _sweep(f, ghost, image, action, check, point, keep_after):
    mount(f, point)
    f.log = []  # what mounting did is not part of the action
    action()
    vfs.umount(point)
    log = f.log
    after = f.snapshot() if keep_after else None  # keep_after=False: no 32 KB copy
    outcomes = []
    for k in range(len(log)):
        kind, n = log[k]
        for at in offsets(n):
            f.mem[:] = image
            f.log = []
            port = mount(f, point, ghost)
            f.cut(f.ops + k, at)
            try:
                action()
            except PowerCut:
                pass
            else:
                raise AssertionError(
                    "op %d of %d never reached: not deterministic" % (k, len(log))
                )
            assert f.dead
            vfs.umount(point)
            port.detach()
            port = None
            gc.collect()  # the dead mount's finalisers run now, on the ghost
            f.power_on()
            mount(f, point)
            try:
                outcomes.append((kind, k, at, check(f)))
            finally:
                vfs.umount(point)
    return outcomes, after, log


_read = support.read_file
_write = support.write_file


def _content(gen, size):
    head = ("gen %04d|" % gen).encode()
    return (head * (size // len(head) + 1))[:size]


def _generations(point, size, gens, write, sweep_gens):
    """Write generations 1..gens; sweep the first sweep_gens and the first two that erase."""
    path = point + "/f"
    old = _content(0, size)
    image = formatted(point, lambda: _write(path, old))
    tally = {"cuts": 0, "old": 0, "new": 0, "ops": 0, "erase_cuts": 0, "swept": 0}
    erasing = 0
    for gen in range(1, gens + 1):
        new = _content(gen, size)
        rec = flash_from(image, Recorder)
        mount(rec, point)
        rec.log = []
        write(path, new)
        vfs.umount(point)
        has_erase = False
        for kind, _ in rec.log:
            if kind == "erase":
                has_erase = True
        if gen > sweep_gens and not (has_erase and erasing < 2):
            image = rec.snapshot()
            old = new
            continue
        erasing += 1 if has_erase else 0

        def check(flash):
            got = _read(path)
            if got == old:
                outcome = "old"
            elif got == new:
                outcome = "new"
            else:
                raise AssertionError("gen %d: %r is neither old nor new" % (gen, got))
            nxt = _content(gen + 1000, size)  # the filesystem still takes a write
            write(path, nxt)
            assert _read(path) == nxt
            return outcome

        outcomes, image, log = sweep(image, lambda: write(path, new), check, point)
        tally["swept"] += 1
        tally["ops"] += len(log)
        for kind, k, at, outcome in outcomes:
            tally["cuts"] += 1
            tally[outcome] += 1
            if kind == "erase":
                tally["erase_cuts"] += 1
        # the commit point is inside the write: the last op, completed, gives new
        assert outcomes[-1][3] == "new" and outcomes[0][3] == "old", (gen, outcomes)
        old = new
    return tally


def _in_place(path, data):
    _write(path, data)


def _new_then_rename(path, data):
    import os

    _write(path + ".new", data)
    os.rename(path + ".new", path)


def test_small_file_rewritten_in_place_is_old_or_new_at_every_cut():
    need_vfs()
    t = _generations("/lfs_cut_a", 24, 200, _in_place, 4)
    print("lfs in-place 24 B:", t)
    assert t["erase_cuts"] > 0  # metadata compaction was swept too
    assert t["old"] > 0 and t["new"] > 0 and t["cuts"] == t["old"] + t["new"]


def test_small_file_written_new_then_renamed_is_old_or_new_at_every_cut():
    need_vfs()
    t = _generations("/lfs_cut_b", 24, 200, _new_then_rename, 4)
    print("lfs new+rename 24 B:", t)
    assert t["erase_cuts"] > 0
    assert t["old"] > 0 and t["new"] > 0 and t["cuts"] == t["old"] + t["new"]


def test_block_sized_file_in_place_and_renamed_is_old_or_new_at_every_cut():
    # 700 bytes: too big to live inline in the metadata, so each write allocates a block
    need_vfs()
    for name, write in (("in-place", _in_place), ("new+rename", _new_then_rename)):
        t = _generations("/lfs_cut_c", 700, 4, write, 4)
        print("lfs " + name + " 700 B:", t)
        assert t["erase_cuts"] > 0
        assert t["old"] > 0 and t["new"] > 0 and t["cuts"] == t["old"] + t["new"]


def test_sweep_catches_a_write_that_is_not_atomic():
    # the sweep must be able to fail: a file written in two commits (write, then append)
    # is torn by a cut between them, and check() sees neither old nor new
    need_vfs()
    point = "/lfs_cut_d"
    path = point + "/f"
    old, new = b"o" * 40, b"n" * 40
    image = formatted(point, lambda: _write(path, old))

    def two_commits():
        _write(path, new[:20])
        with open(path, "ab") as f:
            f.write(new[20:])

    def check(flash):
        got = _read(path)
        assert got in (old, new), got
        return got

    e = support.raises(AssertionError, sweep, image, two_commits, check, point)
    assert "n" * 20 in str(e)
    for p in vfs_mounts(point):
        vfs.umount(p)


def vfs_mounts(point):
    """[point] when something is still mounted there (after a failed sweep), else []."""
    try:
        import os

        os.stat(point)
        return [point]
    except OSError:
        return []
