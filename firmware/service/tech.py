"""What a field technician calls from the console (`import tech`) while the meter runs.

    tech.status()              balance, credit and supply state, power, price, comms
    tech.registers()           the ATM90E26's registers by name, live
    tech.calibrate(volts=, amps=, watts=, watts_half=, amps_n=)  new calibration from
                               a reference source (decimal strings), applied and stored
    tech.relay_test(confirm=True)  open the supply for `seconds`, then restore it
    tech.topup("20 digits")    a token through the one credit path
    tech.events(n), tech.journal(), tech.audit(n)
    tech.settings(), tech.set(key, value)   read / change a meter setting (validated)
    tech.version()             software identification: version and firmware hash
    tech.restart()             restart the meter (the relay keeps its journaled state)
    tech.show(value)           print a result as the console does (for `mpremote exec`)

Reading calls return plain dicts and lists (the console prints them a line each;
`mpremote eval` gets them as Python values). Every change (set, calibrate, relay test,
topup, restart), accepted or refused, is appended to the audit log (`audit.log`, JSON
lines: time, operation, old and new value, result) before the call returns. A refused
change raises ValueError with the reason naming the field and leaves everything as it
was. The running meter is bound by start-up (firmware/service/running.py); in safe mode only `version()`,
`audit()` and `safe_mode()` work, the rest say the meter is not running.
"""

import json
import os

from firmware.billing import money
from firmware.service import running
from firmware.storage.conffile import beside
from firmware.tokens import codes as rc
from firmware.storage.logfile import LineLog
from firmware.billing.policy import CONTROL_STATES, relay_word
from firmware.billing.wallclock import format_stamp

AUDIT_PATH = "audit.log"
RELAY_TEST_S = 5


def _audit():
    """The audit log of the bound meter: beside its settings file unless bound elsewhere."""
    path = running.audit_path
    if path is None:
        path = beside(running.settings_path or "", AUDIT_PATH)
    return LineLog(path)


def attach(app, settings_path=None, audit_path=None, restart=None):
    """Bind a meter (start-up binds the running one through firmware/service/running.py; tests
    call this). The audit log lives beside the settings file unless `audit_path` says
    otherwise."""
    running.bind(app, settings_path, restart, audit_path)


def _meter():
    if running.app is None:
        raise RuntimeError("tech: the meter is not running (safe mode?)")
    return running.app


def _now():
    if running.app is not None:
        return format_stamp(running.app.meter.clock.stamp())
    return ""


def _log(op, result, **fields):
    rec = {"t": _now(), "op": op, "result": result}
    rec.update(fields)
    _audit().append(json.dumps(rec))


def _fmt(app, units):
    return money.format_decimal(units, app.meter.settings.currency_decimals)


# -- reading -----------------------------------------------------------------------------
def status():
    """The meter now (App.status()) as the technician reads it."""
    app = _meter()
    now = app.status()
    dec = app.meter.settings.currency_decimals
    st = {
        "meter_id": now["meter_id"],
        "settings": now["settings"],
        "balance": money.format_decimal(now["balance"], dec),
        "debt": money.format_decimal(now["debt"], dec),
        "credit": now["credit_status"],
        "control_state": CONTROL_STATES[now["control_state"]],
        "open_reasons": now["open_reasons"],
        "relay": relay_word(now["relay"]),
        "power_w": now["power_w"],
        "price_per_kwh": money.format_price(now["price"], dec),
        "energy_kwh": money.format_decimal(now["energy_wh"], 3),
        "meter_lost_kwh": money.format_decimal(now["meter_lost_wh"], 3),
        "time": format_stamp(now["stamp"]),
        "ticks": now["ticks"],
        "late_ms_max": now["late_ms_max"],
        "errors": now["errors"],
        "boots": now["boots"],
        "postpaid": now["postpaid"],
    }
    tel = now["modem"]
    if tel is not None:  # a back-office transport
        st["online"] = now["online"]
        st["queued"] = now["queued"]
        for k in ("reg", "rssi_dbm", "state", "dr", "snr", "airtime_ms"):  # LoRa: the last 3
            if k in tel:
                st["modem_" + k] = tel[k]
    return st


def registers():
    src = _meter().board.source
    if not hasattr(src, "registers"):
        raise RuntimeError("tech: this energy source has no registers")
    out = src.registers()
    if hasattr(src, "readings"):
        out.update(src.readings())
    return out


def events(n=20):
    """The newest n events, oldest first: 'time kind balance=... value=...'."""
    app = _meter()
    out = []
    for stamp, kind, balance, value in app.meter.log.last(n):
        out.append(
            format_stamp(stamp)
            + " "
            + kind
            + " balance="
            + _fmt(app, balance)
            + " value="
            + str(value)
        )
    return out


def journal():
    """The record in force, field by field, and the store's counters."""
    app = _meter()
    from firmware.app import STATE_FIELDS

    fields = app.fields()
    out = {"fields": dict(zip(STATE_FIELDS, fields))}
    store = app.board.store
    out["store"] = type(store).__name__
    for k in ("seq", "slots", "saves", "erases", "newest"):
        if hasattr(store, k):
            out[k] = getattr(store, k)
    return out


def settings():
    return dict(_meter().meter.settings.raw)


def audit(n=20):
    """The newest n audit records, oldest first."""
    out = []
    for line in _audit().tail(n):
        try:
            out.append(json.loads(line))
        except ValueError:
            out.append({"unreadable": line})
    return out


def version():
    """The software identification, and the MQTT client that loaded ("mqtt_client":
    firmware/storage/version.py's library())."""
    from firmware.comms.mqtt.session import CLIENT
    from firmware.storage import version as ver

    out = ver.identify()
    out["mqtt_client"] = ver.library(CLIENT)
    return out


# -- changing ----------------------------------------------------------------------------
def set(key, value):
    """Change one meter setting (a JSON value as in settings.json, e.g. "5.00" for money);
    validated with the whole schema, applied at once and stored."""
    app = _meter()
    raw = app.meter.settings.raw
    old = raw.get(key)
    try:
        if key not in raw:
            raise ValueError(key + ": unknown setting")
        app.change_settings({key: value})
    except ValueError as e:
        _log("set", "refused", key=key, old=old, new=value, error=str(e))
        raise ValueError("refused: " + str(e))
    _log("set", "ok", key=key, old=old, new=app.meter.settings.raw.get(key))
    return {key: app.meter.settings.raw.get(key)}


def _units(text, decimals, name):
    if text is None:
        return None
    return money.parse_decimal(str(text), decimals, name)


MAX_CORRECTION_PERCENT = 20


def _plausible(name, ref, read):
    """A reference this far from the meter's own reading is a typo or a wiring fault, not
    a front-end error a calibration corrects."""
    if ref is None:
        return
    if read <= 0 or abs(ref - read) * 100 > read * MAX_CORRECTION_PERCENT:
        raise ValueError(
            "calibration: %s reference %d differs from the reading %d by more than %d %%;"
            " check the reference and the wiring" % (name, ref, read, MAX_CORRECTION_PERCENT)
        )


def calibrate(volts=None, amps=None, watts=None, watts_half=None, amps_n=None):
    """Calibrate the ATM90E26 against a reference source applying the given values now
    (decimal strings: volts to 0.01 V, amps to mA, watts to 1 W; `watts_half` at power
    factor 0.5 for the phase; `amps_n` on the neutral). The meter's own reading is taken
    now, the new registers are computed, loaded into the chip and stored in the settings
    file. No arguments: the calibration in force. A reference more than 20 % from the
    reading is refused (a wrong reference or wiring, not a calibration error)."""
    app = _meter()
    src = app.board.source
    if not hasattr(src, "cal"):
        raise RuntimeError("tech: this energy source takes no calibration")
    if volts is None and amps is None and watts is None and watts_half is None and amps_n is None:
        return dict(src.cal)
    old = dict(src.cal)
    try:
        r = src.readings()
        u, i, i_n = _units(volts, 2, "volts"), _units(amps, 3, "amps"), _units(amps_n, 3, "amps_n")
        p, p_half = _units(watts, 0, "watts"), _units(watts_half, 0, "watts_half")
        _plausible("volts", u, r["urms_cv"])
        _plausible("amps", i, r["irms_ma"])
        _plausible("amps_n", i_n, r["irms_n_ma"])
        _plausible("watts", p, r["p_w"])
        new = src.calibration_for(
            u_ref_cv=u,
            u_read_cv=r["urms_cv"],
            i_ref_ma=i,
            i_read_ma=r["irms_ma"],
            in_ref_ma=i_n,
            in_read_ma=r["irms_n_ma"],
            p_ref_w=p,
            p_read_w=r["p_w"],
            p_half_ref_w=p_half,
            p_half_read_w=r["p_w"],
        )
    except ValueError as e:
        _log("calibrate", "refused", old=old, error=str(e))
        raise ValueError("refused: " + str(e))
    src.cal = new
    src.begin()
    if running.settings_path is not None:
        from firmware.config import save_calibration

        save_calibration(new, running.settings_path)
    changed = {}
    for k in new:
        if new[k] != old.get(k):
            changed[k] = [old.get(k), new[k]]
    _log("calibrate", "ok", old=old, new=new)
    return changed


def relay_test(confirm=False, seconds=RELAY_TEST_S):
    """Open the supply for `seconds` (1..60) and close it again, to check the relay and
    its wiring. Guarded: it needs confirm=True, runs only while the supply is on (it
    never energises a house the meter has disconnected) and not during another relay
    operation. Runs in the background; its steps go to the audit log."""
    app = _meter()
    relay = app.board.relay
    if not confirm:
        return "relay_test opens the supply for %d s: call relay_test(confirm=True)" % seconds
    why = None
    if not 1 <= seconds <= 60:
        why = "seconds: 1..60"
    elif relay.closed is not True or not app.meter.relay_closed():
        why = "the supply is off: a test would energise the premises"
    elif relay.busy or app.relay_hold:
        why = "a relay operation is in progress"
    if why is not None:
        _log("relay_test", "refused", error=why)
        raise ValueError("refused: " + why)
    import asyncio

    app.relay_hold = True  # the relay task leaves the relay alone until the test ends
    _log("relay_test", "started", seconds=seconds)
    asyncio.create_task(_relay_test(app, seconds))
    return "relay test: open for %d s, then closed again" % seconds


async def _relay_test(app, seconds):
    relay = app.board.relay
    clk = app.board.clock
    result = "ok"
    try:
        await relay.drive(False)
        await clk.sleep_ms(seconds * 1000)
    except Exception as e:
        result = "failed: " + repr(e)
    finally:
        app.relay_hold = False
        app.request_relay()  # the relay task restores the commanded state
    _log("relay_test", result, seconds=seconds)


def topup(token):
    """Enter a token (20 digits, an OpenPAYGO code or an envelope's hex) as at the keypad."""
    app = _meter()
    text = str(token).replace(" ", "").replace("-", "")
    before = app.meter.ledger.balance
    r, balance = app.enter(text)
    out = {
        "result": rc.name(r.code),
        "answer": rc.word(r.code),
        "balance": _fmt(app, balance),
    }
    if r.token_id:
        out["token_id"] = r.token_id
    masked = ("*" * (len(text) - 4) + text[-4:]) if len(text) > 4 else text
    _log(
        "topup",
        out["result"],
        token=masked,
        old=_fmt(app, before),
        new=out["balance"],
    )
    return out


def restart():
    """Restart the meter now (logged); the relay keeps its journaled state."""
    app = _meter()
    _log("restart", "ok")
    app.save()
    if running.restart is None:
        raise RuntimeError("tech: no restart on this board")
    running.restart()


def safe_mode(on=True):
    """Create (or remove) the `safemode` file: at the next start the meter does not run
    and the console is MicroPython's own REPL, to repair a setting."""
    if on:
        with open("safemode", "w") as f:
            f.write("technician\n")
    else:
        try:
            os.remove("safemode")
        except OSError:
            pass
    _log("safe_mode", "ok", new=bool(on))
    return bool(on)


def show(value):
    """Print a result as the console's prompt does (for `mpremote exec`)."""
    from firmware.service.console import show as text

    print(text(value))


def help():
    return [
        "status()  registers()  events(n)  journal()  settings()  audit(n)  version()",
        "set(key, value)  calibrate(volts=, amps=, watts=, watts_half=, amps_n=)",
        "relay_test(confirm=True, seconds=5)  topup(token)  restart()  safe_mode(on)",
        "show(value): print a result a line an item (mpremote exec)",
    ]
