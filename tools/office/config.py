"""The office's settings: a TOML file (`--config office.toml`), then OFFICE_<NAME>
environment variables, then command-line options, each over the one before.

Every setting, its default and meaning is listed in docs/office.md ("Configuration").
"""

import dataclasses
import json
import os
import tomllib


@dataclasses.dataclass
class Config:
    db_url: str = "sqlite:///office.db"
    keystore: str = "vend.key"  # the vending key store (tools/vend keygen)
    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = 1883
    topic_prefix: str = "meters"
    client_id: str = "office"  # the worker's MQTT session (persistent: kept while down)
    listen_host: str = "127.0.0.1"
    listen_port: int = 8080
    api_key: str = ""  # bearer token of /payments and the read endpoints ("" = open)
    webhook_secrets: dict = dataclasses.field(default_factory=dict)  # provider -> secret
    mpesa_token: str = ""  # secret path segment of the M-Pesa C2B URLs ("" = disabled)
    resend_first_s: float = 30.0  # first re-send of an unanswered top-up
    resend_max_s: float = 3600.0  # backoff ceiling (doubling from resend_first_s)
    sms_after_s: float = 6 * 3600.0  # unanswered this long: the compact token by SMS
    sms_sender: str = "log"  # log | record:PATH | module:callable
    silence_s: float = 3 * 3600.0  # no verified message this long: a "silent" alert
    envelope_valid_s: int = 0  # envelope expiry after issue (0: none)
    poll_s: float = 0.2  # the worker's idle wait


FIELDS = {f.name: f for f in dataclasses.fields(Config)}


def _coerce(name, value):
    kind = type(getattr(Config(), name))
    if kind is dict:
        return json.loads(value) if isinstance(value, str) else dict(value)
    return kind(value)


def load(path=None, environ=None, **overrides):
    """The settings: defaults < TOML file < OFFICE_* variables < overrides (None: unset)."""
    values = {}
    if path:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
        for k, v in doc.items():
            if k not in FIELDS:
                raise ValueError("%s: unknown setting %r" % (path, k))
            values[k] = _coerce(k, v)
    env = os.environ if environ is None else environ
    for name in FIELDS:
        v = env.get("OFFICE_" + name.upper())
        if v is not None:
            values[name] = _coerce(name, v)
    for k, v in overrides.items():
        if v is not None:
            values[k] = _coerce(k, v)
    return Config(**values)
