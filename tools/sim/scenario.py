"""Scenario files: validation with one-line errors naming the field, and normalisation.

A scenario holds the simulation's own keys (start, duration_s, step_s, balance, debt,
load, topups, actions, relay_closed) and, beside them, any meter setting
(firmware/settings.py), validated by the firmware's own schema. `normalise()` turns
the decimal strings into the integers the MicroPython runner uses.
"""

from firmware import money
from firmware.settings import Settings
from firmware.wallclock import parse_datetime

SIM_KEYS = ("start", "duration_s", "step_s", "balance", "debt", "load", "topups", "actions")
SIM_KEYS += ("relay_closed", "series_s")
ACTIONS = ("button", "emergency_credit", "clear_lockout")


class ScenarioError(ValueError):
    pass


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

    def watts(v, f):
        if isinstance(v, bool) or not isinstance(v, (int, str)):
            raise ScenarioError(f + ": expected whole watts, got " + repr(v))
        try:
            return money.parse_decimal(v, 0, f)
        except ValueError as e:
            raise ScenarioError(str(e))

    def action(v, f):
        if v not in ACTIONS:
            raise ScenarioError(
                f + ": unknown action " + repr(v) + " (" + ", ".join(ACTIONS) + ")"
            )
        return v

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
        "load": _steps(sc, "load", "watts", duration, watts),
        "topups": _steps(
            sc, "topups", "amount", duration, lambda v, f: amount(v, f, positive=True)
        ),
        "actions": _steps(sc, "actions", "do", duration, action),
        "relay_closed": relay_closed,
    }
