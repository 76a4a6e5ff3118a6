"""The meter's settings: one schema, validated on load and on every change.

Settings arrive as a dict of JSON values (money as decimal strings, times as "HH:MM",
dates as "YYYY-MM-DD") and become a `Settings` object of integers that the tick uses
without parsing. Every error names the field, e.g. "tariff.bands[0].from: ...".
"""

from firmware.billing import money, tariff
from firmware.billing.wallclock import (
    days_from_2000,
    parse_date,
    parse_datetime,
    parse_days,
    parse_hhmm,
)

METER_ID_MAX = 9999999999999999999  # 19 digits: fits an unsigned 64-bit field
NO_METER_ID = "00000000"  # the default: settings that name no meter


def parse_meter_id(meter_id):
    """A meter id as an int: 1 .. 10**19 - 1, given as an int or a string of digits."""
    if isinstance(meter_id, str):
        s = meter_id.strip()
        if not s or len(s) > 19:
            raise ValueError("meter id: 1 to 19 digits expected: " + repr(meter_id))
        for ch in s:
            if ch < "0" or ch > "9":
                raise ValueError("meter id: digits only: " + repr(meter_id))
        meter_id = int(s)
    if not isinstance(meter_id, int) or isinstance(meter_id, bool):
        raise ValueError("meter id: expected an integer: " + repr(meter_id))
    if meter_id < 1 or meter_id > METER_ID_MAX:
        raise ValueError("meter id out of range: " + str(meter_id))
    return meter_id


def with_meter_id(raw, meter_id):
    """Raw settings for the meter whose own id (meter.id) is `meter_id`: settings that name
    no meter (NO_METER_ID or none) get it; ValueError when they name another
    (a file copied from another meter, a change that would rename this one)."""
    given = raw.get("meter_id", NO_METER_ID)
    if given == NO_METER_ID:
        raw = dict(raw)
        raw["meter_id"] = str(meter_id)
        return raw
    try:
        same = parse_meter_id(given) == meter_id
    except ValueError:
        same = False
    if not same:
        raise ValueError(
            "meter_id: " + repr(given) + " is not this meter (" + str(meter_id) + ", meter.id)"
        )
    return raw


# key: (kind, default, minimum, maximum) -- bounds apply to int kinds
SCHEMA = {
    "meter_id": ("str", NO_METER_ID, None, None),
    "currency_decimals": ("int", 2, 0, 4),
    "tariff": ("tariff", {"type": "flat", "price_per_kwh": "0.2000"}, None, None),
    # The passive tariff (DLMS): becomes `tariff` at `tariff_next_from` (local time).
    "tariff_next": ("tariff_opt", None, None, None),
    "tariff_next_from": ("datetime", "", None, None),
    "standing_charge_per_day": ("money", "0", None, None),
    "standing_charge_when_off": ("bool", True, None, None),
    "low_credit": ("money", "2.00", None, None),
    "low_credit_repeat_s": ("int", 3600, 0, 7 * 86400),
    "reconnect_min": ("money", "1.00", None, None),
    "emergency_credit": ("money", "0", None, None),
    "friendly": ("windows", [], None, None),
    # The buzzer stays silent for unsolicited warnings (low credit, disconnected) here.
    "quiet_hours": ("windows", [{"from": "21:00", "to": "07:00"}], None, None),
    "holidays": ("dates", [], None, None),
    "debt_recovery_percent": ("int", 0, 0, 100),
    "reconnect_needs_button": ("bool", False, None, None),
    "max_power_w": ("int", 0, 0, 1000000),
    "postpaid": ("bool", False, None, None),
    "max_power_trip_s": ("int", 30, 1, 3600),
    "max_power_retry_s": ("int", 120, 1, 86400),
    "max_power_lockout_trips": ("int", 4, 1, 50),
    "max_power_lockout_window_s": ("int", 1800, 1, 86400),
    "relay_pulse_ms": ("int", 80, 10, 1000),
    "relay_min_interval_ms": ("int", 1000, 0, 600000),
    "persist_money": ("money", None, None, None),  # default: 10 minor units
    "persist_s": ("int", 900, 10, 86400),
    "persist_min_s": ("int", 60, 1, 3600),
    # The hardware watchdog (main.py): reset when the metering loop stops this long.
    "watchdog_s": ("int", 30, 5, 600),
    # The back office over MQTT (firmware/comms/mqtt/conversation.py); no host: no MQTT at all.
    "mqtt_host": ("text", "", None, None),
    "mqtt_port": ("int", 1883, 1, 65535),
    "mqtt_keepalive_s": ("int", 60, 10, 3600),
    "topic_prefix": ("str", "meters", None, None),
    "state_period_s": ("int", 900, 10, 86400),
    "modem": ("str", "simcom", None, None),
    "apn": ("text", "", None, None),
    # SMS to the customer (4G modem only) on low credit and on disconnection: the bound
    # number ("" = none), and the rate limit: per kind at most one every
    # sms_min_interval_s, and at most sms_per_day in a calendar day.
    "sms_to": ("text", "", None, None),
    "sms_min_interval_s": ("int", 21600, 60, 7 * 86400),
    "sms_per_day": ("int", 3, 1, 20),
    # The transport to the back office: "cellular" (MQTT over the 4G modem,
    # firmware/comms/mqtt/conversation.py) or "lorawan" (firmware/comms/lora/conversation.py; the AppKey is in lora.key
    # beside meter.key, never here).
    "transport": ("str", "cellular", None, None),
    "lora_region": ("str", "EU868", None, None),
    "lora_class": ("str", "C", None, None),
    "lora_dev_eui": ("text", "", None, None),
    "lora_join_eui": ("text", "", None, None),
    "lora_dr": ("int_opt", None, 0, 15),  # null: ADR; else the fixed uplink data rate
    # state + meter reading at least this often: 2 uplinks of 11 bytes take at most
    # 297 s of EU868's 1 % at SF12 (2 x 148 s), so 600 s leaves half of the band free
    "lora_state_period_s": ("int", 3600, 600, 86400),
}

MODEMS = ("simcom", "quectel")
TRANSPORTS = ("cellular", "lorawan")
# drivers/lorawan.py's regions and the number of uplink data rates in each (firmware
# imports nothing of drivers; tests/test_loracomms.py checks the two agree)
LORA_REGIONS = {"EU868": 7, "US915": 5, "AU915": 7, "AS923": 7, "IN865": 6}
LORA_CLASSES = ("A", "C")


class Settings:
    """Validated settings; attributes are the schema keys with integer values."""

    def __init__(self, raw=None):
        raw = {} if raw is None else raw
        if not isinstance(raw, dict):
            raise ValueError("settings: expected an object")
        for key in raw:
            if key not in SCHEMA:
                raise ValueError(key + ": unknown setting")
        self.raw = {}
        for key in SCHEMA:
            self.raw[key] = raw[key] if key in raw else SCHEMA[key][1]
        # currency_decimals first: every money field depends on it.
        self._set("currency_decimals", self.raw["currency_decimals"])
        for key in SCHEMA:
            if key != "currency_decimals":
                self._set(key, self.raw[key])
        if self.reconnect_min < 1:
            raise ValueError("reconnect_min: must be above zero (hysteresis against chatter)")
        if self.low_credit < self.reconnect_min:
            raise ValueError("low_credit: must not be below reconnect_min")
        if (self.tariff_next is None) != (self.tariff_next_from == 0):
            raise ValueError("tariff_next: needs tariff_next_from (and the other way round)")
        if self.modem not in MODEMS:
            raise ValueError("modem: one of " + ", ".join(MODEMS))
        if self.mqtt_host:
            self._need_meter_number("MQTT")
        if len(self.topic_prefix) > 96:
            raise ValueError("topic_prefix: at most 96 characters (MQTT topics <= 122 bytes)")
        self._check_lora()
        n = self.sms_to
        digits = n[1:] if n.startswith("+") else n
        if n and not (3 <= len(digits) <= 15 and all("0" <= c <= "9" for c in digits)):
            raise ValueError("sms_to: a phone number: + and 3 to 15 digits, or empty")

    def _check_lora(self):
        if self.transport not in TRANSPORTS:
            raise ValueError("transport: one of " + ", ".join(TRANSPORTS))
        if self.lora_region not in LORA_REGIONS:
            raise ValueError("lora_region: one of " + ", ".join(sorted(LORA_REGIONS)))
        if self.lora_class not in LORA_CLASSES:
            raise ValueError("lora_class: A or C")
        n = LORA_REGIONS[self.lora_region]
        if self.lora_dr is not None and self.lora_dr >= n:
            raise ValueError(
                "lora_dr: 0.." + str(n - 1) + " in " + self.lora_region + ", or null for ADR"
            )
        for key in ("lora_dev_eui", "lora_join_eui"):
            v = getattr(self, key)
            if v and not _hex16(v):
                raise ValueError(key + ": 16 hex digits")
            if not v and self.transport == "lorawan":
                raise ValueError(key + ": LoRaWAN needs it (16 hex digits)")
        if self.transport == "lorawan":
            self._need_meter_number("LoRaWAN")

    def _need_meter_number(self, what):
        """Messages to the back office are keyed by the meter's number."""
        try:
            parse_meter_id(self.meter_id)
        except ValueError as e:
            raise ValueError("meter_id: " + what + " needs the meter's number (" + str(e) + ")")

    def _set(self, key, value):
        kind, _, lo, hi = SCHEMA[key]
        d = getattr(self, "currency_decimals", 2)
        if kind == "int" or (kind == "int_opt" and value is not None):
            if not isinstance(value, int) or isinstance(value, bool):
                what = "a whole number" if kind == "int" else "a whole number or null"
                raise ValueError(key + ": expected " + what + ", got " + repr(value))
            if value < lo or value > hi:
                raise ValueError(key + ": must be between " + str(lo) + " and " + str(hi))
        elif kind == "bool":
            if not isinstance(value, bool):
                raise ValueError(key + ": expected true or false, got " + repr(value))
        elif kind == "str":
            if not isinstance(value, str) or not value:
                raise ValueError(key + ": expected a non-empty string")
        elif kind == "text":
            if not isinstance(value, str):
                raise ValueError(key + ": expected a string")
        elif kind == "money":
            if value is None:
                value = 10
            else:
                value = money.check_small(money.parse_money(value, d, key), key)
        elif kind == "tariff":
            value = tariff.from_config(value, d, key)
        elif kind == "tariff_opt":
            value = None if value is None else tariff.from_config(value, d, key)
        elif kind == "datetime":
            value = parse_stamp(value, key) if value else 0
        elif kind == "windows":
            value = parse_windows(value, key)
        elif kind == "dates":
            value = parse_holidays(value, key)
        setattr(self, key, value)

    def changed(self, key, value):
        """A copy of these settings with one field changed (validated as a whole)."""
        raw = dict(self.raw)
        raw[key] = value
        return Settings(raw)


def _hex16(text):
    if len(text) != 16:
        return False
    for c in text:
        if c not in "0123456789abcdefABCDEF":
            return False
    return True


def parse_stamp(text, field):
    """'YYYY-MM-DDTHH:MM[:SS]' local time -> meter stamp (seconds since 2000-01-01)."""
    if isinstance(text, str) and len(text) == 16:
        text += ":00"
    y, m, d, sod = parse_datetime(text, field)
    return days_from_2000(y, m, d) * 86400 + sod


_WINDOW_KEYS = ("days", "from", "to")


def parse_windows(items, field):
    """[{"days": "sat,sun", "from": "00:00", "to": "24:00"}] -> [(mask, start, end)]."""
    if not isinstance(items, list):
        raise ValueError(field + ": expected a list")
    out = []
    for i, w in enumerate(items):
        f = field + "[" + str(i) + "]"
        tariff.check_keys(w, _WINDOW_KEYS, f)
        start = parse_hhmm(w.get("from"), f + ".from")
        end = parse_hhmm(w.get("to"), f + ".to", allow_24=True)
        if start == end:
            raise ValueError(f + ": empty window (from == to)")
        out.append((parse_days(w.get("days", "all"), f + ".days"), start, end))
    return out


def parse_holidays(items, field):
    """["2026-12-25", ...] -> tuple of date codes yyyymmdd."""
    if not isinstance(items, list):
        raise ValueError(field + ": expected a list of dates")
    out = []
    for i, text in enumerate(items):
        y, m, d = parse_date(text, field + "[" + str(i) + "]")
        out.append(y * 10000 + m * 100 + d)
    return tuple(out)
