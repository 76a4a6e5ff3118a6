"""mpremote shortcuts for the meter's technicians: the `tech` calls on a running meter.

Install: `python -m tools.deploy install-shortcuts` (copies this file to mpremote's user
config, ~/.config/mpremote/config.py or $XDG_CONFIG_HOME/mpremote/config.py). `meter`
connects to $METER_PORT (e.g. /dev/ttyUSB0, rfc2217://bench:4000; default: mpremote's
auto, the first USB serial port); a shortcut used alone connects with auto.

    mpremote status                 mpremote meter status
    mpremote meter events 50        mpremote meter topup 48313235137846774352
    mpremote meter set key="'low_credit'" value="'3.00'"

Every shortcut starts with `resume`: mpremote must not soft-reset the board (that would
stop the meter; the meter's console answers a soft-reset request "Ignored" anyway).
Shortcuts with arguments go after `meter` (connect + resume): mpremote injects the
arguments as `exec "name=value"` *before* the shortcut's own commands, and that exec
must not be the session's first command. Values are Python source: numbers as they
are; text (setting names, envelopes in hex, tokens starting with 0 or written with
dashes) quoted, e.g. token="'0123 4567 ...'". Results are printed a line per item
(firmware/service/console.py show()); `tech` is the technician's module (firmware/service/tech.py),
imported as `from firmware.service import tech` so version/audit/safe_mode work in safe mode.
"""

import os

PORT = os.environ.get("METER_PORT", "auto")

# Turn a numeric argument back into the decimal text tech's calls take (tokens padded
# to their 20 digits), leave text and None alone.
_PRELUDE = (
    "from firmware.service import tech\n"
    "from firmware.service.console import show as _show\n"
    "def _txt(v, digits=0):\n"
    "    if v is None or isinstance(v, str):\n"
    "        return v\n"
    "    if digits and isinstance(v, int):\n"
    "        return '%0*d' % (digits, v)\n"
    "    return repr(v)\n"
)


def _tech(call, help):
    return {"command": ["resume", "exec", _PRELUDE + "print(_show(" + call + "))"], "help": help}


commands = {
    "meter": {
        "command": ["connect", PORT, "resume"],
        "help": "connect to the meter ($METER_PORT) without restarting it",
    },
    "status": _tech("tech.status()", "balance, credit and supply state, power, price, comms"),
    "registers": _tech("tech.registers()", "the ATM90E26's registers by name, live"),
    "events n=20": _tech("tech.events(n)", "the last n meter events"),
    "journal": _tech("tech.journal()", "the state journal's newest record"),
    "settings": _tech("tech.settings()", "the meter settings in force"),
    "audit n=20": _tech("tech.audit(n)", "the last n technician changes"),
    "version": _tech("tech.version()", "software identification: version, firmware hash"),
    "set key value": _tech("tech.set(key, value)", "change a setting (validated, audited)"),
    "topup token": _tech("tech.topup(_txt(token, 20))", "enter a token as at the keypad"),
    "calibrate volts=None amps=None watts=None watts_half=None amps_n=None": _tech(
        "tech.calibrate(volts=_txt(volts), amps=_txt(amps), watts=_txt(watts),"
        " watts_half=_txt(watts_half), amps_n=_txt(amps_n))",
        "calibrate against a reference source (decimal values)",
    ),
    "relay-test": _tech("tech.relay_test(confirm=True)", "open the supply briefly, restore it"),
    "safe-mode on=True": _tech(
        "tech.safe_mode(on)", "safe mode at the next start (on=False: off)"
    ),
    "restart": _tech("tech.restart()", "restart the meter (relay keeps its journaled state)"),
}
