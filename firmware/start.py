"""Start-up on the board: what main.py runs.

`main()`: unless in safe mode (firmware/service/safemode.py: a file named "safemode", or
the strap pin, decided by boot.py), build the meter (firmware/build.py), arm the
watchdog, attach `tech`, start the technician's console on the REPL port and run the
loop. An error that escapes the loop (or the build) is written to `crash.log` with its
traceback and the board is reset: the meter starts again in the state its journal
holds, relay included (re-asserted in the journaled direction, never flipped).
Start-ups that fail MAX_BOOT_FAILS (3) times in a row, before the meter has metered
HEALTHY_TICKS ticks (a setting or a board value that crashes the build, a hang the
watchdog resets), stop there: the meter stays in the REPL like safe mode, its relay
latched where it was, until the file `bootfails` is removed. A boot loop never hides a
fault.
"""

import asyncio
import os

from firmware import config
from firmware.billing import events as ev
from firmware.build import build
from firmware.service import safemode
from firmware.storage.logfile import LineLog

CRASH_LOG = "crash.log"


def safe_mode():
    return safemode.is_active()


class LazyTech:
    """`tech` at the console before a technician uses it: the first attribute looked up
    imports firmware/service/tech.py (and puts it in sys.modules as `tech`), so a meter nobody
    services keeps that code out of its heap."""

    def __getattr__(self, name):
        import sys

        from firmware.service import tech

        sys.modules["tech"] = tech
        return getattr(tech, name)


def attach_console(app, path=config.SETTINGS_PATH, restart=None, reader=None, write=None):
    """The running meter bound for `tech` (firmware/service/running.py), `tech` importable at
    the console (`import tech`, loaded on first use) and the console task added to the
    app's tasks. Returns the Console."""
    import sys

    from firmware.service import console, running

    running.bind(app, path, restart)
    lazy = LazyTech()
    sys.modules["tech"] = lazy
    m = app.meter

    def session():
        m.log.emit(m.clock.stamp(), ev.CONSOLE_SESSION, m.ledger.balance, 0)

    con = console.Console(write or console.port_writer(), {"tech": lazy, "app": app}, session)
    app.extra_tasks.append(con.run(reader or console.port_reader()))
    return con


def arm_watchdog(app):
    """The board's watchdog at `watchdog_s` (none on a board without one)."""
    make = getattr(app.board, "watchdog", None)
    if make is None:
        return None
    ms = app.meter.settings.watchdog_s * 1000
    app.watchdog_ms = ms
    app.watchdog = make(ms)
    return app.watchdog


def log_crash(exc, path=CRASH_LOG):
    """Append the error and its traceback to the crash log (and print them)."""
    import time

    from firmware.service.console import format_exception

    text = format_exception(exc)
    t = time.localtime()[:6]
    stamp = "%04d-%02d-%02dT%02d:%02d:%02d" % t
    print("crash: " + text)
    LineLog(path, 8192).append(stamp + " " + text.replace("\n", " | "))


def _reset():
    from drivers.board import Board

    Board.reset()


BOOT_GC_BYTES = 8192  # main.py's gc.threshold while the code loads and the meter is built


def end_boot_gc():
    """Start-up is over: back to the GC's default (a collection only when the heap is
    full); collect first so the loop starts with start-up's garbage gone."""
    import gc

    gc.collect()
    gc.threshold(-1)


BOOT_FAILS = "bootfails"
MAX_BOOT_FAILS = 3
HEALTHY_TICKS = 10


def boot_fails(path=BOOT_FAILS):
    """Start-ups in a row that never reached steady metering (crash, hang, reset)."""
    try:
        with open(path) as f:
            return int(f.read().strip() or "0")
    except (OSError, ValueError):
        return 0


def _set_boot_fails(n, path=BOOT_FAILS):
    try:
        if n:
            with open(path, "w") as f:
                f.write(str(n))
        else:
            os.remove(path)
    except OSError:
        pass


async def _healthy(app, path=BOOT_FAILS):
    """Clears the failed start-up count once the meter has metered HEALTHY_TICKS ticks."""
    while app.ticks < HEALTHY_TICKS:
        await app.board.clock.sleep_ms(app.tick_ms)
    _set_boot_fails(0, path)


def main():
    if safe_mode():
        print("safe mode (" + safemode.reason + "): meter not started; remove the file")
        print("'safemode' (tech.safe_mode(False)) and reset to start it")
        return
    fails = boot_fails()
    if fails >= MAX_BOOT_FAILS:
        print("start-up failed %d times in a row (crash.log): safe mode; fix the cause," % fails)
        print("then remove the file '" + BOOT_FAILS + "' and reset")
        return
    _set_boot_fails(fails + 1)  # until the meter has metered a while
    try:
        app = build()
        arm_watchdog(app)
        attach_console(app, restart=_reset)
        app.extra_tasks.append(_healthy(app))
        end_boot_gc()
        asyncio.run(app.run())
    except Exception as e:
        log_crash(e)
    _reset()
