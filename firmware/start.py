"""Start-up on the board: safe mode check, settings, board, app, run.

The settings file (settings.json) holds the meter settings (firmware/settings.py) plus
a "board" section (pins, drivers/board.py) and a "calibration" section (ATM90E26
registers). With a file named "safemode" in the root the meter does not start, so a
technician can repair a broken setting from the REPL.
"""

import asyncio
import json
import os

from firmware.app import App
from firmware.clock import Clock
from firmware.meter import STATE_FIELDS
from firmware.settings import Settings
from firmware.statefile import StateFile

SETTINGS_PATH = "settings.json"
STATE_DIR = "state"
NON_METER_KEYS = ("board", "calibration")


def safe_mode():
    try:
        os.stat("safemode")
        return True
    except OSError:
        return False


def load_settings(path=SETTINGS_PATH):
    """(meter Settings, board dict, calibration dict); defaults when there is no file."""
    try:
        with open(path) as f:
            raw = json.load(f)
    except OSError:
        raw = {}
    extra = {k: raw.pop(k) for k in NON_METER_KEYS if k in raw}
    return Settings(raw), extra.get("board", {}), extra.get("calibration", {})


def build(path=SETTINGS_PATH):
    from drivers.board import Board

    settings, pins, cal = load_settings(path)
    try:
        os.mkdir(STATE_DIR)
    except OSError:
        pass
    store = StateFile(STATE_DIR, len(STATE_FIELDS))
    board = Board(
        pins,
        store,
        Clock(),
        calibration=cal,
        relay_pulse_ms=settings.relay_pulse_ms,
        relay_min_ms=settings.relay_min_interval_ms,
    )
    return App(board, settings)


def main():
    if safe_mode():
        print("safe mode: meter not started (remove the file 'safemode' and reset)")
        return
    app = build()
    asyncio.run(app.run())
