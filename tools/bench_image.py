"""Image and emulated-boot figures for tools/bench.py's "image" section (CPython host tool).

  image_files        files in the software image (tools/build defaults: boot.py, main.py,
                     the .mpy of firmware/ and drivers/, umqtt.simple, version.json)
  image_mpy_bytes    bytes of .mpy code in it (mpy-cross -march=xtensawin)
  image_used_bytes   bytes of the LittleFS vfs partition in use (blocks x 4096)
  boot_firmware_heap_bytes  heap the firmware holds once the meter is built and its
                     tasks run (boot.py + main.py of a factory image on the emulated board,
                     sampled after gc.collect() at the first watchdog feed), less the
                     emulator's own allocation (models, fakes, NOR flash bytes)
  boot_110wk_starts  how many of 5 boots of it start when the heap beyond the emulator's
                     allocation is 110 K words (an ESP32 WROOM's ~110 KB in 64-bit words:
                     `-X heapsize=110wk` is 222,592 bytes of GC heap here)
  boot_heap_free_110wk  gc.mem_free() then, at the first watchdog feed (median of the
                     boots that started; None if none did); boot_110wk_failure: the
                     error a failed start stopped with
  boot_heap_needed_bytes  that heap (beyond the emulator's allocation) when all 5 start,
                     else the first 4 KB step above it in which two boots in a row start:
                     the start-up peak's need, against 222,592

Usage: python tools/bench_image.py -> the figures as JSON.
"""

import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tools import build  # noqa: E402
from tools.sim import emu  # noqa: E402

HEAP_110WK = 222592  # gc.mem_free() + gc.mem_alloc() under -X heapsize=110wk (x86-64)
HEAP_110WK_ARG = 110 * 1024 * 2  # the bytes -X heapsize=110wk asks for (GC tables inside)
TRIES = 5


def _factory(tmp):
    from tools.vend import core

    key = core.meter_key(bytes(range(32)), 4711000001)
    (tmp / "meter.key").write_bytes(core.meter_key_record(key, 0, 255))
    (tmp / "settings.json").write_text(json.dumps({"meter_id": "4711000001"}))
    build.build(tmp / "factory", settings=tmp / "settings.json", key=tmp / "meter.key")
    return tmp / "factory/vfs.bin"


def _boot(image, state, heap, must=True, seconds=3):
    """(report, run) of a short boot; (None, run) when it did not run (must=False)."""
    r = emu.boot(image, state, {"load_w": 1000}, seconds=seconds, heap=heap, fresh=True)
    rep = r["report"]
    ok = r["rc"] == 0 and rep is not None and rep["end"] == "time_limit" and rep["heap"]
    if ok:
        return rep, r
    if not must:
        return None, r
    raise RuntimeError("emulated boot failed (heap %s):\n%s%s" % (heap, r["stdout"], r["stderr"]))


def _args_for(beyond, emulator):
    """-X heapsize bytes giving `beyond` bytes of GC heap past the emulator's own."""
    return str((beyond + emulator) * HEAP_110WK_ARG // HEAP_110WK + 1)


def image_figures():
    figures = {}
    with tempfile.TemporaryDirectory(prefix="meter-bench-") as t:
        tmp = Path(t)
        s = build.build(tmp / "software")
        figures["image_files"] = s["files"]
        figures["image_mpy_bytes"] = s["code_bytes"]
        figures["image_used_bytes"] = s["bytes_used"]
        image = _factory(tmp)
        first, _ = _boot(image, tmp / "s1", "1024wk")
        emulator = first["emulator_alloc"]
        figures["boot_firmware_heap_bytes"] = first["heap"]["alloc"] - emulator
        # the same boot in a heap whose part beyond the emulator is 110 K words, a few
        # times: at the edge the outcome depends on where the GC leaves holes
        free = []
        failure = None
        for i in range(TRIES):
            rep, r = _boot(image, tmp / "t", _args_for(HEAP_110WK, emulator), False, 2)
            if rep is not None:
                free.append(rep["heap"]["free"])
            elif failure is None:
                crash = [
                    ln
                    for ln in r["stdout"].splitlines()
                    if "Error" in ln and not ln.startswith("EMU-REPORT")
                ]
                failure = crash[-1].strip() if crash else r["stdout"][-200:]
        free.sort()
        figures["boot_110wk_starts"] = "%d/%d" % (len(free), TRIES)
        figures["boot_heap_free_110wk"] = free[len(free) // 2] if free else None
        if failure is not None:
            figures["boot_110wk_failure"] = failure
        # the heap (beyond the emulator's) it does start in: 110 K words, else the first
        # 4 KB step above that starts it twice in a row
        size = HEAP_110WK
        while len(free) < TRIES and size < 2 * HEAP_110WK:
            size += 4096
            runs = [_boot(image, tmp / "u", _args_for(size, emulator), False, 2)[0] for _ in "ab"]
            if None not in runs:
                break
        figures["boot_heap_needed_bytes"] = size
    return figures


if __name__ == "__main__":
    print(json.dumps(image_figures(), indent=1, sort_keys=True))
