"""Start-up on the board: safe mode check, settings, board, app, run.

The settings file (settings.json) holds the meter settings (firmware/settings.py) plus
a "board" section (pins, drivers/board.py) and a "calibration" section (ATM90E26
registers). It is read and written through firmware/conffile.py: a file with a bad
value (any field the schema refuses, a bad calibration register, broken JSON) falls back
to the last good copy, and `build()` puts a `config_fallback` or `config_defaults` event
in the meter's log. `save_calibration()` stores a new calibration atomically. In safe mode
(firmware/safemode.py: a file named "safemode", or the strap pin, decided by boot.py)
the meter does not start, so a technician can repair a broken setting from the REPL.

`main()` is what main.py runs on the board: build the meter, arm the watchdog, attach
`tech`, start the technician's console on the REPL port and run the loop. An error that
escapes the loop (or the build) is written to `crash.log` with its traceback and the
board is reset: the meter starts again in the state its journal holds, relay included
(re-asserted in the journaled direction, never flipped). Start-ups that fail
MAX_BOOT_FAILS (3) times in a row, before the meter has metered HEALTHY_TICKS ticks
(a setting or a board value that crashes the build, a hang the watchdog resets), stop
there: the meter stays in the REPL like safe mode, its relay latched where it was,
until the file `bootfails` is removed. A boot loop never hides a fault.
"""

import asyncio
import json
import os

from firmware import conffile
from firmware import events as ev
from firmware import keys
from firmware import safemode
from firmware.logfile import LineLog
from firmware.app import App
from firmware.clock import Clock
from firmware.journal import Journal
from firmware.app import STATE_FIELDS
from firmware.settings import Settings
from firmware.statefile import StateFile

SETTINGS_PATH = "settings.json"
KEY_FILE = "meter.key"
LORA_KEY_FILE = "lora.key"
STATE_DIR = "state"
NON_METER_KEYS = ("board", "calibration")
CRASH_LOG = "crash.log"


def safe_mode():
    return safemode.is_active()


def validate_calibration(cal):
    """The ATM90E26 driver's own check of a calibration section (imported only when there
    is one to check: start-up stays light without it)."""
    from drivers.atm90e26 import validate

    return validate(cal)


def parse_settings(data):
    """Bytes of a settings file -> (Settings, board dict, calibration dict, raw dict).

    ValueError naming the field for anything the meter would refuse: the conffile parse
    step, so a bad file falls back to the last good one instead of stopping the meter.
    """
    raw = json.loads(data)
    if not isinstance(raw, dict):
        raise ValueError("settings: expected an object")
    meter = {}
    for key in raw:
        if key not in NON_METER_KEYS:
            meter[key] = raw[key]
    board = raw.get("board", {})
    cal = raw.get("calibration", {})
    if not isinstance(board, dict):
        raise ValueError("board: expected an object")
    if not isinstance(cal, dict):
        raise ValueError("calibration: expected an object")
    if cal:
        validate_calibration(cal)
    return Settings(meter), board, cal, raw


def load_settings(path=SETTINGS_PATH):
    """(meter Settings, board dict, calibration dict, report).

    report is None when `path` itself loaded; else (source, reason) from conffile.load:
    source conffile.NEW or BAK (a fallback copy is in use) or None (defaults), reason
    why `path` was not used. `report_config` turns it into an event.
    """
    got, source, reason = conffile.load(path, parse_settings)
    if got is None:
        got = (Settings({}), {}, {}, {})
    report = None if source == conffile.MAIN else (source, reason)
    return got[0], got[1], got[2], report


def report_config(meter, report, path=SETTINGS_PATH):
    """Emit the event for a load_settings report (and print it); returns its kind or None."""
    if report is None:
        return None
    source, reason = report
    if source is None:
        kind = ev.CONFIG_DEFAULTS
        value = 0 if reason == conffile.MISSING else 1
        using = "defaults"
    else:
        kind = ev.CONFIG_FALLBACK
        value = 1 if source == conffile.NEW else 2
        using = path + "." + source
    print("settings: " + path + ": " + reason + "; using " + using)
    meter.log.emit(meter.clock.stamp(), kind, meter.ledger.balance, value)
    return kind


def _edit_settings(path, edit):
    """Load the settings file (any usable copy), apply edit(raw dict), validate the
    result and save it atomically. Returns the report of the copy edited (None: the
    file itself); ValueError, nothing written, when no copy is usable or the result
    would not load (a fresh meter without a file gets a new one)."""
    got, source, reason = conffile.load(path, parse_settings)
    if got is None and reason != conffile.MISSING:
        raise ValueError("settings file unusable, not changed: " + reason)
    raw = dict(got[3]) if got is not None else {}
    edit(raw)
    data = json.dumps(raw).encode()
    parse_settings(data)  # never write a file that would not load
    conffile.save(path, data)
    return None if source == conffile.MAIN else (source, reason)


def save_calibration(cal, path=SETTINGS_PATH):
    """Store an ATM90E26 calibration dict (validated, stored in full) in the "calibration"
    section of the settings file, atomically, keeping every other setting (see
    _edit_settings for the answer and the errors)."""
    full = validate_calibration(cal)

    def edit(raw):
        raw["calibration"] = full

    return _edit_settings(path, edit)


def save_meter_settings(meter_raw, path=SETTINGS_PATH):
    """Store the meter settings (a Settings.raw dict: a management token's or a
    technician's change), keeping the board and calibration sections."""

    def edit(raw):
        for k in meter_raw:
            raw[k] = meter_raw[k]

    return _edit_settings(path, edit)


def key_path_for(settings_path):
    """The meter key file lives beside the settings file."""
    return conffile.beside(settings_path, KEY_FILE)


def load_meter_key(path):
    """(MeterKey or None, report) from the key file: a corrupt file falls back to the
    last good copy like the settings; no key at all: tokens answer NotReady."""
    got, source, reason = conffile.load(path, keys.load_key)
    return got, (None if source == conffile.MAIN else (source, reason))


def make_store(partition):
    """The state store: the journal on its raw partition, or (a partition table without
    one, e.g. a stock image) the A/B state files on littlefs."""
    if partition is not None:
        return Journal(partition, len(STATE_FIELDS))
    try:
        os.mkdir(STATE_DIR)
    except OSError:
        pass
    return StateFile(STATE_DIR, len(STATE_FIELDS))


def build(path=SETTINGS_PATH, board=None, tick_ms=1000):
    """The meter as main.py starts it: settings from `path`, then the board (the ESP32's
    unless one is given: the simulator passes its own), then the App."""
    settings, pins, cal, report = load_settings(path)
    if board is None:
        from drivers.board import Board

        part = Board.journal_partition()
        if part is None:
            print("storage: no 'journal' partition: state in littlefs files")
        board = Board(
            pins,
            make_store(part),
            Clock(),
            calibration=cal,
            relay_pulse_ms=settings.relay_pulse_ms,
            relay_min_ms=settings.relay_min_interval_ms,
        )
    key_path = key_path_for(path)
    key, key_report = load_meter_key(key_path)
    app = App(
        board,
        settings,
        tick_ms=tick_ms,
        key=key,
        key_path=key_path,
        on_settings=lambda raw: save_meter_settings(raw, path),
    )
    report_config(app.meter, report, path)  # the log exists only now
    if key_report is not None and key_report[0] is not None:
        report_config(app.meter, key_report, key_path)
    elif key is None:
        print("keys: no meter key in " + key_path + ": tokens answer NotReady")
    link = None
    if settings.transport == "lorawan":
        start_lorawan(app, board, settings, key, key_path)
    elif settings.mqtt_host:
        if key is None:
            print("comms: no meter key: MQTT off (messages are signed with it)")
        else:
            from firmware.comms import Comms

            try:  # a comms fault must never keep the meter from metering
                link = board.modem(settings)
                app.comms = Comms(app, link, key)
            except Exception as e:
                link = app.comms = None
                print("comms: not started: " + repr(e))
    if settings.sms_to:  # SMS to the customer: the modem runs for it, MQTT or not
        try:  # like comms: a fault here must never keep the meter from metering
            from firmware.sms import Notifier

            own = link is None
            if own:
                link = board.modem(settings)
            app.sms = Notifier(app, link)
            if own:
                app.extra_tasks.append(link.run())
            app.extra_tasks.append(app.sms.run())
        except Exception as e:
            app.sms = None
            print("sms: not started: " + repr(e))
    return app


def start_lorawan(app, board, settings, key, key_path):
    """The LoRaWAN transport (firmware/loracomms.py) as app.comms: the AppKey from
    lora.key beside meter.key. No meter key, no usable key file or any fault building it:
    printed, and the meter runs without LoRa (metering never depends on it). Returns
    the LoRaComms or None."""
    if key is None:
        print("lora: no meter key: LoRaWAN off (uplinks are signed with it)")
        return None
    from firmware import lorakey

    path = conffile.beside(key_path, LORA_KEY_FILE)
    try:  # a comms fault must never keep the meter from metering
        appkey, source, reason = conffile.load(path, lorakey.load)
        if appkey is None:
            print("lora: no usable AppKey in " + path + " (" + str(reason) + "): LoRaWAN off")
            return None
        if source != conffile.MAIN:
            print("lora: " + path + ": " + str(reason) + "; using " + path + "." + source)
        from firmware.loracomms import LoRaComms

        app.comms = LoRaComms(app, board.lorawan(settings, appkey), key)
    except Exception as e:
        app.comms = None
        print("lora: not started: " + repr(e))
    return app.comms


class LazyTech:
    """`tech` at the console before a technician uses it: the first attribute looked up
    imports firmware/tech.py (and puts it in sys.modules as `tech`), so a meter nobody
    services keeps that code out of its heap."""

    def __getattr__(self, name):
        import sys

        from firmware import tech

        sys.modules["tech"] = tech
        return getattr(tech, name)


def attach_console(app, path=SETTINGS_PATH, restart=None, reader=None, write=None):
    """The running meter bound for `tech` (firmware/running.py), `tech` importable at
    the console (`import tech`, loaded on first use) and the console task added to the
    app's tasks. Returns the Console."""
    import sys

    from firmware import console, running

    running.bind(app, path, restart)
    lazy = LazyTech()
    sys.modules["tech"] = lazy
    con = console.Console(write or console.port_writer(), {"tech": lazy, "app": app})
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

    from firmware.console import format_exception

    text = format_exception(exc)
    t = time.localtime()[:6]
    stamp = "%04d-%02d-%02dT%02d:%02d:%02d" % t
    print("crash: " + text)
    LineLog(path, 8192).append(stamp + " " + text.replace("\n", " | "))


def _reset():
    from drivers.board import Board

    Board.reset()


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
        asyncio.run(app.run())
    except Exception as e:
        log_crash(e)
    _reset()
