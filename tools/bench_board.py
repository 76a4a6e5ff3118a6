"""Heap figures on 32 bits, the board's object size, for tools/bench.py's "board" section.

The 64-bit unix port's heap figures do not halve on an ESP32: bytecode, qstrs and
constants keep their size. These run the same firmware on tools/mpy32's 32-bit MicroPython,
from the image's `.mpy` files and frozen into the interpreter from the project's own
manifest (tools/build.manifest_py with the unix port's default modules), as a frozen ESP32
image keeps its code in flash:

  boot_firmware_heap_bytes_32 / _frozen  heap the firmware holds once the meter is built
                     and its tasks run (a factory image booted on the emulated board,
                     sampled after gc.collect() at the first watchdog feed), less the
                     emulator's own allocation
  boot_wroom_starts_32 / _frozen  how many of 5 boots start when the GC heap beyond the
                     emulator's is WROOM_HEAP bytes (an ESP32 without PSRAM once its heap
                     has grown, docs/board.md); boot_wroom_free_32 / _frozen: the median
                     gc.mem_free() at the first watchdog feed then (None if none started);
                     boot_wroom_failure_32 / _frozen: what the first failed start said
  week_peak_heap_bytes_32 / _frozen  the largest live heap over a simulated week at 1 s
                     ticks on the ideal energy source, less the flash model's bytes
  week_heap_left_wroom_32 / _frozen  WROOM_HEAP less that peak

Usage: python tools/bench_board.py -> the figures as JSON (builds the interpreters the
first time: gcc-multilib and the source tarball, tools/mpy32.py).
"""

import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tools import build, mpy32  # noqa: E402
from tools.sim import emu, host  # noqa: E402

# MicroPython's ESP32 port starts the GC heap at 56 KB and adds areas on demand; after one
# growth it is 111,936 bytes with about 40 KB left to ESP-IDF (docs/board.md, "Heap").
WROOM_HEAP = 111936
TRIES = 5
FROZEN_OUT = mpy32.OUT.parent / "mpy32-frozen"


def interpreters(tmp):
    """(the 32-bit interpreter, the same with the firmware frozen in)."""
    plain = mpy32.build()
    manifest = tmp / "manifest.py"
    manifest.write_text(build.manifest_py("bench", tmp, build.UNIX_MANIFEST))
    frozen = mpy32.build(out=FROZEN_OUT, frozen=manifest)
    return plain, frozen


def gc_total(exe, heap_arg):
    """gc.mem_free() + gc.mem_alloc() of `exe` under -X heapsize=heap_arg (bytes)."""
    code = "import gc; gc.collect(); print(gc.mem_free() + gc.mem_alloc())"
    out = subprocess.run(
        [str(exe), "-X", "heapsize=%d" % heap_arg, "-c", code],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return int(out.strip())


def heap_arg_for(exe, gc_bytes):
    """The -X heapsize (bytes) that gives at least `gc_bytes` of GC heap (its tables are
    taken from the same bytes)."""
    probe = 1 << 20
    arg = gc_bytes * probe // gc_total(exe, probe) + 1
    while gc_total(exe, arg) < gc_bytes:
        arg += 64
    return arg


def factory(tmp, frozen):
    from tools.vend import core

    key = core.meter_key(bytes(range(32)), 4711000001)
    (tmp / "meter.key").write_bytes(core.meter_key_record(key, 0, 255))
    (tmp / "settings.json").write_text(json.dumps({"meter_id": "4711000001"}))
    out = tmp / ("factory-frozen" if frozen else "factory")
    build.build(out, settings=tmp / "settings.json", key=tmp / "meter.key", frozen=frozen)
    return out / "vfs.bin"


def boot(image, state, exe, heap, seconds=3, failures=None):
    """The boot's report, or None when it did not run to its time limit (the last line
    that names an error goes to `failures`)."""
    r = emu.boot(image, state, {"load_w": 1000}, seconds=seconds, heap=heap, fresh=True, exe=exe)
    rep = r["report"]
    if r["rc"] == 0 and rep is not None and rep["end"] == "time_limit" and rep["heap"]:
        return rep
    if failures is not None:
        lines = [ln for ln in (r["stdout"] + r["stderr"]).splitlines() if "Error" in ln]
        failures.append(lines[-1].strip() if lines else "exit %s, end %s" % (
            r["rc"], rep and rep.get("end")))  # fmt: skip
    return None


def boot_figures(tmp, exe, frozen, suffix):
    figures = {}
    image = factory(tmp, frozen)
    first = boot(image, tmp / "s1", exe, "4m")
    if first is None:
        raise RuntimeError("the %s image did not boot on %s" % (suffix or "mpy", exe))
    emulator = first["emulator_alloc"]
    figures["boot_firmware_heap_bytes_32" + suffix] = first["heap"]["alloc"] - emulator
    arg = str(heap_arg_for(exe, WROOM_HEAP + emulator))
    free, failures = [], []
    for _ in range(TRIES):
        rep = boot(image, tmp / "t", exe, arg, seconds=2, failures=failures)
        if rep is not None:
            free.append(rep["heap"]["free"])
    free.sort()
    figures["boot_wroom_starts_32" + suffix] = "%d/%d" % (len(free), TRIES)
    figures["boot_wroom_free_32" + suffix] = free[len(free) // 2] if free else None
    if failures:
        figures["boot_wroom_failure_32" + suffix] = failures[0]
    return figures


def week_figures(exe, mpy_dir, suffix):
    from tools.bench import week

    report = host.run(dict(week(), meter="ideal", flash_sectors=2), heap="4m", mpy_dir=mpy_dir,
                      exe=exe)  # fmt: skip
    fin = report["final"]
    peak = fin["live_heap_peak"] - fin["model_heap"]
    return {
        "week_peak_heap_bytes_32" + suffix: peak,
        "week_heap_left_wroom_32" + suffix: WROOM_HEAP - peak,
        "week_errors_32" + suffix: fin["errors"],
    }


def board_figures():
    figures = {"wroom_heap_bytes": WROOM_HEAP}
    with tempfile.TemporaryDirectory(prefix="meter-bench32-") as t:
        tmp = Path(t)
        plain, frozen = interpreters(tmp)
        figures.update(boot_figures(tmp, plain, False, ""))
        figures.update(boot_figures(tmp, frozen, True, "_frozen"))
        mpy = tmp / "mpy"
        host.compile_firmware(str(mpy), mpy_cross=plain.with_name("mpy-cross"), march="x86")
        figures.update(week_figures(plain, str(mpy), ""))
        figures.update(week_figures(frozen, ".frozen", "_frozen"))
    return figures


if __name__ == "__main__":
    print(json.dumps(board_figures(), indent=1, sort_keys=True))
