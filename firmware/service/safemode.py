"""Safe mode: the meter does not start and the REPL is left to a technician.

Decided once per start, by boot.py: a file named `safemode` in the root (made with
`tech.safe_mode()` or by hand), or the strap pin held at start-up (drivers/board.py
`strap_held`: the BOOT key, GPIO0, pressed from just after reset). boot.py and main.py
run one after the other in the same interpreter, so main.py (firmware/start.py) reads
the decision from this module; when boot.py did not decide (a host run), the file alone
decides. A broken setting can therefore never brick a meter: in safe mode nothing but
MicroPython's own REPL runs.
"""

from firmware.storage.conffile import exists

FLAG_FILE = "safemode"

active = None  # None until decided
reason = ""


def decide(strap=False):
    """Decide for this start (boot.py); True means safe mode."""
    global active, reason
    if exists(FLAG_FILE):
        active, reason = True, "file '" + FLAG_FILE + "'"
    elif strap:
        active, reason = True, "strap pin held"
    else:
        active, reason = False, ""
    return active


def is_active():
    if active is None:
        decide()
    return active
