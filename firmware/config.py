"""The settings and key files on flash: read with a last-good fallback, written atomically.

The settings file (settings.json) holds the meter settings (firmware/billing/settings.py)
plus a "board" section (pins, drivers/board.py) and a "calibration" section (ATM90E26
registers), sealed with a CRC-32 over its canonical form (firmware/storage/jsonseal.py).
It is read and written through firmware/storage/conffile.py: a copy with a bad seal, a bad
value (any field the schema refuses, a bad pin or calibration register, broken JSON) falls
back to the last good copy, and `report_config` puts a `config_fallback` or
`config_defaults` event in the meter's log. `save_calibration()` stores a new calibration
atomically, `save_meter_settings()` a management token's or a technician's change; every
save is sealed. The meter key (meter.key), the LoRaWAN AppKey (lora.key) and the meter's
own id (meter.id, firmware/tokens/meterid.py) live beside the settings file; their
fallbacks are reported by `report_key` (`key_fallback`, `key_bad`). docs/settings.md.
"""

from firmware.billing import events as ev
from firmware.billing.settings import Settings, with_meter_id
from firmware.storage import conffile, jsonseal
from firmware.tokens import keys, meterid

SETTINGS_PATH = "settings.json"
KEY_FILE = "meter.key"
LORA_KEY_FILE = "lora.key"
ID_FILE = "meter.id"
NON_METER_KEYS = ("board", "calibration")
# The "board" section's keys (drivers/board.py's DEFAULT_PINS; firmware imports nothing of
# drivers, tests/test_settings.py checks the two agree) by the type of their value.
BOARD_TEXT = ("lora_dialect", "display", "keypad_map")
BOARD_LISTS = ("keypad_rows", "keypad_cols")
BOARD_NULLABLE = ("lora_reset",)
BOARD_INTS = (
    "spi",
    "sck",
    "mosi",
    "miso",
    "cs",
    "spi_hz",
    "relay_set",
    "relay_reset",
    "led",
    "buzzer",
    "meter_constant",
    "max_w",
    "modem_uart",
    "modem_tx",
    "modem_rx",
    "modem_pwrkey",
    "modem_baud",
    "lora_uart",
    "lora_tx",
    "lora_rx",
    "lora_baud",
    "i2c",
    "sda",
    "scl",
    "i2c_hz",
    "display_addr",
)


def _whole(v):
    return isinstance(v, int) and not isinstance(v, bool)


def check_board(board):
    """Refuse an unknown or ill-typed key of the "board" section, naming it."""
    if not isinstance(board, dict):
        raise ValueError("board: expected an object")
    for key in board:
        v = board[key]
        f = "board." + key
        if key in BOARD_TEXT:
            if not isinstance(v, str):
                raise ValueError(f + ": expected a string, got " + repr(v))
        elif key in BOARD_LISTS:
            if not isinstance(v, list) or not all(_whole(x) for x in v):
                raise ValueError(f + ": expected a list of whole numbers, got " + repr(v))
        elif key in BOARD_INTS:
            if not _whole(v):
                raise ValueError(f + ": expected a whole number, got " + repr(v))
        elif key in BOARD_NULLABLE:
            if v is not None and not _whole(v):
                raise ValueError(f + ": expected a whole number or null, got " + repr(v))
        else:
            raise ValueError(f + ": unknown key")


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


def parse_settings(data, meter_id=None):
    """Bytes of a sealed settings file -> (Settings, board dict, calibration dict, raw
    dict without the seal). `meter_id`: the meter's own id (meter.id), which the file must
    name or leave out (with_meter_id).

    ValueError naming the field (or the seal) for anything the meter would refuse: the
    conffile parse step, so a bad file falls back to the last good one instead of
    stopping the meter.
    """
    raw = jsonseal.loads(data)
    meter = {}
    for key in raw:
        if key not in NON_METER_KEYS:
            meter[key] = raw[key]
    board = raw.get("board", {})
    cal = raw.get("calibration", {})
    check_board(board)
    if "lora_dialect" in board:
        check_dialect("lorawan", board["lora_dialect"], "board.lora_dialect")
    if not isinstance(cal, dict):
        raise ValueError("calibration: expected an object")
    if cal:
        validate_calibration(cal)
    if meter_id is not None:
        meter = with_meter_id(meter, meter_id)
    return Settings(meter), board, cal, raw


def seal_settings(raw):
    """The bytes of a settings file holding the dict `raw` (sealed); ValueError naming
    the field when the meter would refuse it."""
    data = jsonseal.dumps(raw)
    parse_settings(data)  # never write a file that would not load
    return data


def defaults(meter_id=None):
    """The default settings, for the meter `meter_id` (its meter.id) when known."""
    return Settings(None if meter_id is None else with_meter_id({}, meter_id))


def load_settings(path=SETTINGS_PATH, meter_id=None):
    """(meter Settings, board dict, calibration dict, report).

    report is None when `path` itself loaded; else (source, reason) from conffile.load:
    source conffile.NEW or BAK (a fallback copy is in use) or None (defaults, named for
    `meter_id` when known), reason why `path` was not used. `report_config` turns it
    into an event.
    """
    got, source, reason = conffile.load(path, lambda data: parse_settings(data, meter_id))
    if got is None:
        got = (defaults(meter_id), {}, {}, {})
    report = None if source == conffile.MAIN else (source, reason)
    return got[0], got[1], got[2], report


def id_path_for(settings_path):
    """The meter's own id file lives beside the settings file."""
    return conffile.beside(settings_path, ID_FILE)


def load_meter_id(path):
    """(meter id int or None, report) from meter.id, with the last-good fallback."""
    got, source, reason = conffile.load(path, meterid.load)
    return got, (None if source == conffile.MAIN else (source, reason))


def adopt_meter_id(path, settings):
    """A meter without meter.id takes its id from its (good) settings once: writes the
    file and returns the id; None when the settings name no valid meter id."""
    from firmware.billing.settings import parse_meter_id

    try:
        meter_id = parse_meter_id(settings.meter_id)
    except ValueError:
        return None
    try:
        conffile.save(path, meterid.to_bytes(meter_id))
    except OSError as e:
        print("meter id: " + path + " not written: " + repr(e))
    print("meter id: " + str(meter_id) + " kept in " + path)
    return meter_id


def report_key(meter, report, path):
    """Emit the event for a key file's (meter.key, opaygo.key, lora.key, meter.id)
    conffile report and print it: `key_fallback` (detail 1: the copy of a cut save, 2:
    the last good copy), `key_bad` (every copy damaged, detail 1); no file at all is
    printed only. Returns the kind or None."""
    if report is None:
        return None
    source, reason = report
    if source is None and reason == conffile.MISSING:
        return None
    if source is None:
        kind, value, using = ev.KEY_BAD, 1, "none"
    else:
        kind = ev.KEY_FALLBACK
        value = 1 if source == conffile.NEW else 2
        using = path + "." + source
    print("keys: " + path + ": " + reason + "; using " + using)
    meter.log.emit(meter.clock.stamp(), kind, meter.ledger.balance, value)
    return kind


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
    meter_id = load_meter_id(id_path_for(path))[0]
    got, source, reason = conffile.load(path, lambda data: parse_settings(data, meter_id))
    if got is None and reason != conffile.MISSING:
        raise ValueError("settings file unusable, not changed: " + reason)
    raw = dict(got[3]) if got is not None else {}
    edit(raw)
    data = jsonseal.dumps(raw)
    parse_settings(data, meter_id)  # never write a file that would not load
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
    last good copy like the settings (report_key); no key at all: tokens answer NotReady."""
    got, source, reason = conffile.load(path, keys.load_key)
    return got, (None if source == conffile.MAIN else (source, reason))
