"""The settings and key files on flash: read with a last-good fallback, written atomically.

The settings file (settings.json) holds the meter settings (firmware/billing/settings.py)
plus a "board" section (pins, drivers/board.py) and a "calibration" section (ATM90E26
registers). It is read and written through firmware/storage/conffile.py: a file with a bad
value (any field the schema refuses, a bad calibration register, broken JSON) falls back
to the last good copy, and `report_config` puts a `config_fallback` or `config_defaults`
event in the meter's log. `save_calibration()` stores a new calibration atomically,
`save_meter_settings()` a management token's or a technician's change. The meter key
(meter.key) and the LoRaWAN AppKey (lora.key) live beside the settings file.
"""

import json

from firmware.billing import events as ev
from firmware.billing.settings import Settings
from firmware.storage import conffile
from firmware.tokens import keys

SETTINGS_PATH = "settings.json"
KEY_FILE = "meter.key"
LORA_KEY_FILE = "lora.key"
NON_METER_KEYS = ("board", "calibration")


def validate_calibration(cal):
    """The ATM90E26 driver's own check of a calibration section (imported only when there
    is one to check: start-up stays light without it)."""
    from drivers.atm90e26 import validate

    return validate(cal)


def check_dialect(driver, name, field):
    """The drivers' own list of modem dialects (drivers/dialects.py, a few names: no
    driver code is loaded); ValueError naming the field and the known dialects."""
    from drivers.dialects import check

    return check(driver, name, field)


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
    if "lora_dialect" in board:
        check_dialect("lorawan", board["lora_dialect"], "board.lora_dialect")
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
