"""Scenario files: validation with one-line errors naming the field, and normalisation.

A scenario holds the simulation's own keys (start, duration_s, step_s, balance, debt,
load, topups, actions, faults, relay_closed, meter) and, beside them, any meter setting
(firmware/billing/settings.py), validated by the firmware's own schema. `normalise()` turns
the decimal strings into the integers the MicroPython runner uses.
"""

from firmware.billing import money
from firmware.billing.settings import Settings
from firmware.billing.wallclock import parse_datetime

SIM_KEYS = ("start", "duration_s", "step_s", "balance", "debt", "load", "topups", "actions")
SIM_KEYS += ("relay_closed", "series_s", "faults", "meter", "meter_constant", "power_cuts")
SIM_KEYS += ("flash_sectors", "vending_key", "enter")
SIM_KEYS += ("screens", "keys")
KEYPAD = "0123456789*#"  # the 4x3 pad the simulated board carries
ACTIONS = ("button", "emergency_credit", "clear_lockout")
FAULTS = (
    "absent_high",
    "absent_low",
    "present",
    "miso_flip",
    "chip_reset",
    "corrupt_cs",
    "spi_garbage",
    "spi_clean",
)
METERS = ("chip", "ideal")


class ScenarioError(ValueError):
    pass


def _screen_name(v, f):
    """A `screens` step's label: it names the PNG file (letters, digits, - and _)."""
    ok = isinstance(v, str) and 0 < len(v) <= 40
    if ok:
        for ch in v:
            if not (ch.isalnum() and ch.isascii() or ch in "-_"):
                ok = False
    if not ok:
        raise ScenarioError(f + ": expected a label of letters, digits, - and _ (40 at most)")
    return v


def _int(sc, key, lo, hi, default=None, field=None):
    field = field or key
    v = sc.get(key, default)
    if v is None:
        raise ScenarioError(field + ": missing")
    if not isinstance(v, int) or isinstance(v, bool):
        raise ScenarioError(field + ": expected a whole number, got " + repr(v))
    if not lo <= v <= hi:
        raise ScenarioError(field + ": must be between " + str(lo) + " and " + str(hi))
    return v


def _steps(sc, key, value_key, duration, parse):
    items = sc.get(key, [])
    if not isinstance(items, list):
        raise ScenarioError(key + ": expected a list")
    out = []
    for i, item in enumerate(items):
        f = key + "[" + str(i) + "]"
        if not isinstance(item, dict):
            raise ScenarioError(f + ": expected an object")
        at = _int(item, "at_s", 0, duration, field=f + ".at_s")
        if value_key not in item:
            raise ScenarioError(f + "." + value_key + ": missing")
        out.append([at, parse(item[value_key], f + "." + value_key)])
    return out


def normalise(sc):
    """Validated scenario -> dict for tools/sim/runner.py. Raises ScenarioError."""
    if not isinstance(sc, dict):
        raise ScenarioError("scenario: expected a JSON object")
    raw = {k: v for k, v in sc.items() if k not in SIM_KEYS}
    try:
        settings = Settings(raw)
        start = parse_datetime(sc.get("start"), "start")
    except ValueError as e:
        raise ScenarioError(str(e))
    d = settings.currency_decimals
    duration = _int(sc, "duration_s", 1, 400 * 86400)
    step = _int(sc, "step_s", 1, 3600, default=1)
    series = _int(sc, "series_s", 1, 86400, default=60)

    def amount(v, f, allow_negative=False, positive=False):
        try:
            n = money.check_small(money.parse_money(v, d, f, allow_negative), f)
        except ValueError as e:
            raise ScenarioError(str(e))
        if positive and n <= 0:
            raise ScenarioError(f + ": must be above zero")
        return n

    def number(item, key, f, lo, hi, default=None):
        v = item.get(key, default)
        if v is None:
            raise ScenarioError(f + "." + key + ": missing")
        if isinstance(v, str):
            try:
                v = float(v)
            except ValueError:
                v = None
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ScenarioError(f + "." + key + ": expected a number, got " + repr(item[key]))
        if not lo <= v <= hi:
            raise ScenarioError(f + "." + key + ": must be between %s and %s" % (lo, hi))
        return v

    def load_step(i, item):
        """[at_s, volts, amps, pf, amps_n or None] from {watts} or {volts, amps, pf, amps_n}."""
        f = "load[" + str(i) + "]"
        if "watts" in item:
            w = number(item, "watts", f, 0, 100000)
            if meter == "ideal" and w != int(w):
                raise ScenarioError(f + ".watts: whole watts with the ideal meter")
            return [item["at_s"], 230.0, w / 230.0, 1.0, None, int(w)]
        if meter == "ideal":
            raise ScenarioError(f + ": the ideal meter takes watts steps only")
        volts = number(item, "volts", f, 0, 400)
        amps = number(item, "amps", f, 0, 100)
        pf = number(item, "pf", f, -1, 1, default=1.0)
        amps_n = number(item, "amps_n", f, 0, 100) if "amps_n" in item else None
        return [item["at_s"], volts, amps, pf, amps_n, int(volts * amps * pf)]

    def token_text(v, f):
        if not isinstance(v, str) or not v or len(v) > 400:
            raise ScenarioError(f + ": expected a token (20 digits or envelope hex)")
        return v

    def keys_text(v, f):
        ok = isinstance(v, str) and 0 < len(v) <= 200
        if ok:
            for ch in v:
                if ch not in KEYPAD:
                    ok = False
        if not ok:
            raise ScenarioError(f + ": expected keys of the pad " + KEYPAD)
        return v

    def fault(v, f):
        if v not in FAULTS:
            raise ScenarioError(f + ": unknown fault " + repr(v) + " (" + ", ".join(FAULTS) + ")")
        return v

    def action(v, f):
        if v not in ACTIONS:
            raise ScenarioError(
                f + ": unknown action " + repr(v) + " (" + ", ".join(ACTIONS) + ")"
            )
        return v

    meter = sc.get("meter", "chip")
    if meter not in METERS:
        raise ScenarioError("meter: expected 'chip' or 'ideal', got " + repr(meter))
    mc = _int(sc, "meter_constant", 100, 100000, default=3200)
    loads = sc.get("load", [])
    if not isinstance(loads, list):
        raise ScenarioError("load: expected a list")
    steps = []
    for i, item in enumerate(loads):
        if not isinstance(item, dict):
            raise ScenarioError("load[" + str(i) + "]: expected an object")
        _int(item, "at_s", 0, duration, field="load[" + str(i) + "].at_s")
        steps.append(load_step(i, item))
    cuts = sc.get("power_cuts", [])
    if not isinstance(cuts, list):
        raise ScenarioError("power_cuts: expected a list")
    power_cuts = []
    for i, item in enumerate(cuts):
        f = "power_cuts[" + str(i) + "]"
        if not isinstance(item, dict):
            raise ScenarioError(f + ": expected an object")
        at = _int(item, "at_s", 0, duration, field=f + ".at_s")
        power_cuts.append([at, _int(item, "for_s", 0, 400 * 86400, field=f + ".for_s")])
    power_cuts.sort()
    for i in range(1, len(power_cuts)):
        if power_cuts[i][0] < power_cuts[i - 1][0] + power_cuts[i - 1][1]:
            raise ScenarioError(
                "power_cuts: a cut at %d s starts before the previous outage ends"
                % power_cuts[i][0]
            )
    relay_closed = sc.get("relay_closed", True)
    if not isinstance(relay_closed, bool):
        raise ScenarioError("relay_closed: expected true or false")
    return {
        "settings": raw,
        "currency_decimals": d,
        "start": list(start),
        "duration_s": duration,
        "step_s": step,
        "series_s": series,
        "balance": amount(sc.get("balance", "0"), "balance", allow_negative=True),
        "debt": amount(sc.get("debt", "0"), "debt"),
        "load": steps,
        "meter": meter,
        "meter_constant": mc,
        "faults": _steps(sc, "faults", "fault", duration, fault),
        "topups": _steps(
            sc, "topups", "amount", duration, lambda v, f: amount(v, f, positive=True)
        ),
        "actions": _steps(sc, "actions", "do", duration, action),
        "relay_closed": relay_closed,
        "power_cuts": power_cuts,
        "flash_sectors": _int(sc, "flash_sectors", 2, 256, default=16),
        "enter": _steps(sc, "enter", "token", duration, token_text),
        "screens": _steps(sc, "screens", "name", duration, _screen_name),
        "keys": _steps(sc, "keys", "keys", duration, keys_text),
        "vending_key": sc.get("vending_key"),
    }
