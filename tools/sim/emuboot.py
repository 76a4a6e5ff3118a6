"""Boot a built image on the emulated board, the way the ESP32 port boots (MicroPython).

    micropython -X heapsize=1024wk tools/sim/emuboot.py IMAGE [--world WORLD.json] [--repl]

(`python -m tools.sim.emu` drives it from the host: state directory, world file,
report.) What happens, in the ESP32 port's order:

1. The world (tools/sim/emuworld.py: chip, relay, pins, the partition table, watchdog)
   is made from WORLD.json with IMAGE in the table's "vfs" partition (its size is the
   partition's, as on the board), and the fake `machine` and `esp32`
   (tools/sim/fakes/) are imported from the host tree, before anything is mounted:
   they stay in sys.modules, as the built-in modules are on the board. Nothing of
   firmware/ or drivers/ may be imported from the host (checked).
2. `_boot.py`: `vfs.mount(esp32.Partition.find(TYPE_DATA, label="vfs")[0], "/")`
   replaces the host filesystem at "/" (the host is no longer reachable); if the mount
   fails, inisetup's rule: a blank block 0 is formatted, anything else prints the
   port's "filesystem appears to be corrupted" message (the board would loop there).
   cwd "/", `sys.path = ['', '.frozen', '/frozen', '/lib']`: the ESP32's
   `['', '.frozen', '/lib']` (its main.c appends /lib after the frozen modules), with
   the stock image's frozen micropython-lib modules that the unix port lacks (the
   world's `frozen` directory: tools/sim/stockfrozen, umqtt.simple among them) mounted
   read-only at /frozen, in the place of `.frozen`: before /lib, as on the board.
3. boot.py, then main.py, from the image, executed in one shared `__main__` namespace
   with `__file__` set (pyexec_file); modules boot.py imports stay in sys.modules.
4. The end: main.py returned (the board sits at the REPL; an armed watchdog then
   resets it), the run limit, a watchdog reset, machine.reset() or an exception. The
   relay contacts, reset cause and RTC memory go to the world's state file (the host
   is mounted at /host for it), the journal partition is already on its file, the
   image's writes are in IMAGE: the next boot finds all of it. The last line on stdout
   is `EMU-REPORT {json}`: end, uptime, relay, energy, ticks (energy register reads),
   watchdog feeds, heap after boot (sampled at the first watchdog feed: the meter
   built and its tasks started), the emulator's own allocation, the partitions, the
   state's newest record decoded by the image's firmware (from the journal, or from
   the littlefs state files on a table without one: "state_store" says which), and
   the MQTT client that loaded (`mqtt_client`: tech.version()'s, by the image's code)
   with the stock frozen stand-ins that were imported (`frozen_imports`).

Exit codes: 0 run limit reached or main.py returned, 1 exception, 2 interrupted,
3 watchdog reset, 4 machine.reset(), 5 soft reset, 6 filesystem corrupted.
`--repl` leaves the interpreter at the REPL when main.py returns (run it with
`micropython -i`), with the image mounted as "/": mpremote can talk to it over a pty.
"""

import gc
import json
import os
import sys
import time

import vfs

CODES = {
    "time_limit": 0,
    "repl": 0,
    "exception": 1,
    "interrupted": 2,
    "wdt_reset": 3,
    "machine_reset": 4,
    "soft_reset": 5,
    "fs_corrupted": 6,
}
CORRUPTED = (
    "The filesystem appears to be corrupted. If you had important data there, you may "
    "want to make a flash snapshot to try to recover it. Otherwise, perform factory "
    "reprogramming of MicroPython firmware (completely erase flash, followed by firmware "
    "programming)."
)


def _abs(path):
    return path if path.startswith("/") else os.getcwd() + "/" + path


def _dirname(path):
    i = path.rfind("/")
    return path[:i] if i > 0 else "/"


def _args(argv):
    opts = {"image": None, "world": None, "repl": False}
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--world":
            i += 1
            opts["world"] = _abs(argv[i])
        elif a == "--repl":
            opts["repl"] = True
        elif opts["image"] is None:
            opts["image"] = _abs(a)
        else:
            raise SystemExit("emuboot: unexpected argument " + a)
        i += 1
    if opts["image"] is None:
        raise SystemExit("usage: emuboot.py IMAGE [--world W.json] [--repl]")
    return opts


def _host_root():
    here = _dirname(_abs(__file__))  # .../tools/sim
    return _dirname(_dirname(here))


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def _blank(bdev):
    buf = bytearray(4096)
    bdev.readblocks(0, buf)
    for b in buf:
        if b != 0xFF:
            return False
    return True


def mount_root(esp32):
    """The ESP32's _boot.py and inisetup: the vfs partition at "/"; False if corrupted."""
    found = esp32.Partition.find(esp32.Partition.TYPE_DATA, label="vfs")
    bdev = found[0]
    vfs.umount("/")
    try:
        vfs.mount(bdev, "/")
    except OSError:
        if not _blank(bdev):
            print(CORRUPTED)
            return False
        print("Performing initial setup")
        vfs.VfsLfs2.mkfs(bdev)
        vfs.mount(vfs.VfsLfs2(bdev), "/")
    os.chdir("/")
    return True


def run_file(name, g):
    """pyexec_file_if_exists: run a file of the root in the shared namespace."""
    if not _exists(name):
        return
    with open(name) as f:
        src = f.read()
    g["__file__"] = name
    exec(compile(src, name, "exec"), g)


def mount_frozen(w, root):
    """The stock image's frozen modules the unix port lacks, read-only at /frozen."""
    d = w.frozen
    if d == "":
        d = root + "/tools/sim/stockfrozen"
    if not d:
        return []
    vfs.mount(vfs.VfsPosix(d), "/frozen", readonly=True)
    return ["/frozen"]


def journal_record(w):
    """The newest state record as {field: value}, read by the image's own code: from the
    journal partition, or (a table without one) the littlefs state files."""
    try:
        from firmware.app import STATE_FIELDS

        if w.journal is not None:
            from firmware.storage.journal import Journal

            fields = Journal(w.journal).load()
        else:
            from firmware.build import STATE_DIR
            from firmware.storage.statefile import StateFile

            fields = StateFile(STATE_DIR).load()
    except Exception as e:  # no firmware in the image, or it does not load
        return {"error": repr(e)}
    if fields is None:
        return {}
    out = {}
    for i in range(len(STATE_FIELDS)):
        out[STATE_FIELDS[i]] = fields[i]
    return out


def mqtt_client():
    """tech.version()'s "mqtt_client" (which umqtt.simple loaded, from which file, its
    version), asked of the image's own tech module; None when no firmware ran."""
    if "firmware.app" not in sys.modules:
        return None
    try:
        from firmware.service import tech

        return tech.version()["mqtt_client"]
    except Exception as e:
        return {"error": repr(e)}


def save_state(w, end, state_path):
    if not state_path:
        return
    d = _dirname(state_path)
    try:
        vfs.mount(vfs.VfsPosix(d), "/host")
        with open("/host/" + state_path[len(d) + 1 :], "w") as f:
            f.write(json.dumps(w.state_after(end)))
        vfs.umount("/host")
    except OSError as e:
        print("emuboot: state not saved: " + repr(e))


def main(argv):
    opts = _args(argv)
    root = _host_root()
    sys.path[:] = [root + "/tools/sim/fakes", root, ".frozen"]  # the host, until mounted
    from tools.sim import emuworld

    cfg = {}
    if opts["world"]:
        with open(opts["world"]) as f:
            cfg = json.load(f)
    cfg["vfs"] = opts["image"]
    for k in ("journal", "table"):  # files named relative to the world's directory
        if cfg.get(k) and "/" in cfg[k]:
            cfg[k] = _abs(cfg[k])
    state_path = cfg.get("state")
    if state_path:
        state_path = cfg["state"] = _abs(state_path)
    w = emuworld.load(cfg=cfg)
    import esp32
    import machine

    for m in (machine, esp32):
        if not m.__file__.startswith(root + "/tools/sim/fakes/"):
            raise SystemExit("emuboot: %s is not the emulator's fake" % m.__name__)
    for name in sys.modules:
        if name.split(".")[0] in ("firmware", "drivers"):
            raise SystemExit("emuboot: %s imported from the host tree" % name)
    gc.collect()
    emulator_alloc = gc.mem_alloc()  # the models, fakes and this script: not the board's

    if not mount_root(esp32):
        end = "fs_corrupted"
        g = None
    else:
        sys.path[:] = ["", ".frozen"] + mount_frozen(w, root) + ["/lib"]
        gc.collect()
        w.start()
        g = {"__name__": "__main__"}
        end = "repl"
        try:
            run_file("boot.py", g)
            run_file("main.py", g)
        except emuworld.EmuExit as e:
            end = e.end
            print("emuboot: " + end + ": " + str(e))
        except KeyboardInterrupt:
            end = "wdt_reset" if w.wdt_fired else "interrupted"
            if w.wdt_fired:
                print("emuboot: wdt_reset: watchdog not fed for %d ms (loop hung)" % w.wdt_ms)
        except Exception as e:
            sys.print_exception(e)
            end = "exception"
        if end in ("repl", "exception") and w.wdt_ms and not opts["repl"]:
            # the board sits at the REPL, nobody feeds the watchdog: it resets the board
            left = w.wdt_ms - time.ticks_diff(time.ticks_ms(), w.wdt_fed)
            if left > 0:
                time.sleep_ms(left)
            end = "wdt_reset"
            print("emuboot: wdt_reset: watchdog not fed for %d ms (at the REPL)" % w.wdt_ms)
    w.stop()
    if w.heap is None and end != "fs_corrupted":
        w.sample_heap()
    # the journal read by the firmware modules the run loaded; then the board is "off":
    # its RAM is free for the report
    journal = journal_record(w) if end != "fs_corrupted" else None
    client = mqtt_client() if end != "fs_corrupted" else None
    _release(g)
    report = w.report()
    report["end"] = end
    report["code"] = CODES[end]
    report["uptime_ms"] = time.ticks_diff(time.ticks_ms(), w.started) if w.started else 0
    report["emulator_alloc"] = emulator_alloc
    report["journal"] = journal
    report["mqtt_client"] = client
    report["state_store"] = "journal" if w.journal is not None else "statefile"
    report["safe_mode"] = _SAFE[0]
    save_state(w, end, state_path)
    print("EMU-REPORT " + json.dumps(report))
    if opts["repl"] and end == "repl":
        return  # micropython -i: the REPL, with the image as "/"
    sys.exit(CODES[end])


def _release(g):
    """Drop what the firmware left in RAM (its namespace, modules, asyncio's queue)."""
    safe = _safe_mode()
    if g is not None:
        g.clear()
    for name in list(sys.modules):
        if name.split(".")[0] in ("firmware", "drivers", "meterdeps", "umqtt", "tech"):
            del sys.modules[name]
    try:
        import asyncio

        asyncio.new_event_loop()  # new task and I/O queues
        core = sys.modules.get("asyncio.core")
        if core is not None:
            core.cur_task = None  # the task a reset or the run limit stopped, and its app
    except ImportError:
        pass
    gc.collect()
    _SAFE[0] = safe


_SAFE = [False]


def _safe_mode():
    m = sys.modules.get("firmware.service.safemode")
    return bool(m is not None and m.active)


main(sys.argv[1:])
