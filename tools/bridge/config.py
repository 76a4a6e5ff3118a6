"""The bridge's configuration: one JSON file, validated as a whole, errors naming the field.

    {
      "keystore": "keys/utility.json",          vending key store (tools/vend keygen)
      "state": "bridge-state.json",             (boot, seq) and recent token ids per meter
      "topic_prefix": "meters",                 the back office's topics (default "meters")
      "client_id": "lora-bridge",               MQTT client id (persistent sessions)
      "broker": {"host": "127.0.0.1", "port": 1883},         the back office's broker
      "servers": {                              network servers' MQTT (optional: without
        "cs": {"host": "...", "port": 1883,      one, a meter's network server publishes on
               "username": "...",                the back office's broker)
               "password_env": "CS_MQTT_PASSWORD"}
      },
      "meters": {
        "12345678901": {"network": "chirpstack", "application_id": "<uuid>",
                        "dev_eui": "70b3d57ed0000001", "region": "EU868", "dr": 0},
        "12345678902": {"network": "tts", "application_id": "meters", "tenant": "ttn",
                        "device_id": "meter-2", "dev_eui": "70B3D57ED0000002",
                        "region": "US915", "dr": "worst", "server": "cs"}
      }
    }

Per meter: `network` "chirpstack" (v4) or "tts" (The Things Stack v3); `application_id`
(ChirpStack: the application's UUID; TTS: the application id); `tenant` (TTS only,
optional: open-source deployments have none; TTN's is "ttn"); `device_id` (TTS only,
default "eui-" and the DevEUI in lower case, the console's default); `dev_eui` (16 hex
digits); `region` (a key of lorapayload.DOWNLINK_MAX); `dr` the downlink data rate, or
"worst" (default: the smallest downlink the region allows at any downlink DR);
`fopts_margin` bytes kept for MAC commands (default 0); `confirmed` (default false: the
meter's ack uplink is the confirmation); `priority` (TTS, default "NORMAL"); `decimals` of
the currency (default 2); `revision` of the meter key (default 0); `boot` the boot
number to search from when the state file has no record of the meter (default 0).
Passwords are never in the file: `password_env` names an environment variable.
"""

import json
import os

from firmware.comms.lora import payload as lp
from tools.vend import core

FLAVOURS = ("chirpstack", "tts")
_HEX = set("0123456789abcdefABCDEF")
_PRIORITIES = ("LOWEST", "LOW", "BELOW_NORMAL", "NORMAL", "ABOVE_NORMAL", "HIGH", "HIGHEST")


class ConfigError(ValueError):
    """A configuration the bridge refuses; the message names the field."""


class Server:
    """One MQTT connection: host, port, username, password (from the environment)."""

    def __init__(self, name, host, port, username=None, password=None):
        self.name = name
        self.host = host
        self.port = port
        self.username = username
        self.password = password

    @property
    def key(self):
        return (self.host, self.port, self.username)


class Meter:
    """A LoRaWAN meter as the bridge knows it."""

    def __init__(self, meter_id, d, where):
        self.meter_id = meter_id
        self.network = _choice(d, "network", FLAVOURS, where)
        self.application_id = _text(d, "application_id", where)
        eui = _text(d, "dev_eui", where)
        if len(eui) != 16 or not set(eui) <= _HEX:
            raise ConfigError("%s.dev_eui: 16 hex digits expected: %r" % (where, eui))
        self.dev_eui = eui.lower()
        self.tenant = None
        self.device_id = None
        self.priority = "NORMAL"
        if self.network == "tts":
            self.tenant = _text(d, "tenant", where, None)
            self.device_id = _text(d, "device_id", where, "eui-" + self.dev_eui)
            self.priority = _choice(d, "priority", _PRIORITIES, where, "NORMAL")
        else:
            for name in ("tenant", "device_id", "priority"):
                if name in d:
                    raise ConfigError("%s.%s: only for network tts" % (where, name))
        self.region = _choice(d, "region", tuple(lp.DOWNLINK_MAX), where)
        dr = d.get("dr", "worst")
        table = lp.DOWNLINK_MAX[self.region]
        if dr == "worst":
            self.dr = None
            self.max_bytes = min(n for n in table if n)
        elif type(dr) is int and lp.downlink_max(self.region, dr):
            self.dr = dr
            self.max_bytes = lp.downlink_max(self.region, dr)
        else:
            drs = [i for i, n in enumerate(table) if n]
            raise ConfigError(
                '%s.dr: a downlink data rate of %s (DR%d..DR%d) or "worst": %r'
                % (where, self.region, drs[0], drs[-1], dr)
            )
        margin = _int(d, "fopts_margin", where, 0, 0, 15)
        self.max_bytes -= margin
        self.confirmed = _bool(d, "confirmed", where, False)
        self.decimals = _int(d, "decimals", where, 2, 0, 6)
        self.revision = _int(d, "revision", where, 0, 0, 255)
        self.boot = _int(d, "boot", where, 0, 0, 0xFFFFFFFF)
        self.server = _text(d, "server", where, None)
        extra = set(d) - _METER_FIELDS
        if extra:
            raise ConfigError("%s: unknown field %s" % (where, ", ".join(sorted(extra))))

    @property
    def dr_text(self):
        return "worst case" if self.dr is None else "DR%d" % self.dr

    @property
    def ident(self):
        """(network, application, device) as the network server's uplink topics name it."""
        if self.network == "chirpstack":
            return self.network, self.application_id, self.dev_eui
        return self.network, self.app_path, self.device_id

    @property
    def app_path(self):
        """TTS: `<app>@<tenant>` (just `<app>` without a tenant)."""
        if self.tenant:
            return "%s@%s" % (self.application_id, self.tenant)
        return self.application_id


_METER_FIELDS = {
    "network",
    "application_id",
    "dev_eui",
    "tenant",
    "device_id",
    "priority",
    "region",
    "dr",
    "fopts_margin",
    "confirmed",
    "decimals",
    "revision",
    "boot",
    "server",
}
_TOP_FIELDS = {"keystore", "state", "topic_prefix", "client_id", "broker", "servers", "meters"}


class Config:
    """The whole configuration: keystore path, state path, prefix, broker, servers, meters
    (meter id (int) -> Meter)."""

    def __init__(self, doc, base_dir="."):
        if not isinstance(doc, dict):
            raise ConfigError("the configuration is a JSON object")
        extra = set(doc) - _TOP_FIELDS
        if extra:
            raise ConfigError("unknown field %s" % ", ".join(sorted(extra)))
        self.keystore = os.path.join(base_dir, _text(doc, "keystore", "config"))
        state = _text(doc, "state", "config", None)
        self.state = os.path.join(base_dir, state) if state else None
        self.prefix = _text(doc, "topic_prefix", "config", "meters")
        self.client_id = _text(doc, "client_id", "config", "lora-bridge")
        self.broker = _server("broker", doc.get("broker", {}))
        servers = doc.get("servers", {})
        if not isinstance(servers, dict):
            raise ConfigError("servers: an object of name -> connection")
        self.servers = {n: _server("servers." + n, s) for n, s in servers.items()}
        meters = doc.get("meters")
        if not isinstance(meters, dict) or not meters:
            raise ConfigError("meters: an object of meter id -> meter, at least one")
        self.meters = {}
        seen = {}
        for mid, d in meters.items():
            where = "meters.%s" % mid
            try:
                n = core.parse_meter_id(mid)
            except core.VendError as e:
                raise ConfigError("%s: %s" % (where, e)) from e
            if not isinstance(d, dict):
                raise ConfigError("%s: an object expected" % where)
            if n in self.meters:
                raise ConfigError("%s: meter %d appears twice" % (where, n))
            m = Meter(n, d, where)
            if m.server is not None and m.server not in self.servers:
                raise ConfigError("%s.server: no server named %r" % (where, m.server))
            ident = m.ident
            if ident in seen:
                raise ConfigError("%s: the same device as meter %d" % (where, seen[ident]))
            seen[ident] = n
            self.meters[n] = m

    def server_of(self, meter):
        """The connection a meter's network server publishes on."""
        return self.broker if meter.server is None else self.servers[meter.server]


def load(path):
    """The Config of a file; ConfigError naming what is wrong."""
    try:
        with open(path, "rb") as f:
            doc = json.loads(f.read().decode())
    except (OSError, ValueError) as e:
        raise ConfigError("cannot read %s: %s" % (path, e)) from e
    return Config(doc, os.path.dirname(os.path.abspath(path)))


def _server(where, d):
    if not isinstance(d, dict):
        raise ConfigError("%s: an object expected" % where)
    extra = set(d) - {"host", "port", "username", "password_env"}
    if extra:
        raise ConfigError("%s: unknown field %s" % (where, ", ".join(sorted(extra))))
    host = _text(d, "host", where, "127.0.0.1")
    port = _int(d, "port", where, 1883, 1, 65535)
    user = _text(d, "username", where, None)
    env = _text(d, "password_env", where, None)
    password = None
    if env is not None:
        password = os.environ.get(env)
        if password is None:
            raise ConfigError("%s.password_env: %s is not set" % (where, env))
    return Server(where, host, port, user, password)


def _text(d, name, where, default=ConfigError):
    v = d.get(name, default)
    if v is ConfigError:
        raise ConfigError("%s.%s: missing" % (where, name))
    if v is not None and (not isinstance(v, str) or not v):
        raise ConfigError("%s.%s: a non-empty string expected: %r" % (where, name, v))
    return v


def _int(d, name, where, default, lo, hi):
    v = d.get(name, default)
    if type(v) is not int or not lo <= v <= hi:
        raise ConfigError("%s.%s: an integer %d..%d expected: %r" % (where, name, lo, hi, v))
    return v


def _bool(d, name, where, default):
    v = d.get(name, default)
    if not isinstance(v, bool):
        raise ConfigError("%s.%s: true or false expected: %r" % (where, name, v))
    return v


def _choice(d, name, choices, where, default=ConfigError):
    v = d.get(name, default)
    if v is ConfigError:
        raise ConfigError("%s.%s: missing (one of %s)" % (where, name, ", ".join(choices)))
    if v not in choices:
        raise ConfigError("%s.%s: one of %s, not %r" % (where, name, ", ".join(choices), v))
    return v
