"""What the bridge converts, with no I/O: top-ups to network-server downlinks, network-server
uplinks to the signed messages a cellular meter sends.

Top-up (`<prefix>/<id>/topup`) -> downlink on lorapayload.TOPUP_PORT (10):
    a 70-byte envelope, or its 140 hex digits    the envelope's 70 bytes, only if the
                                                 meter's downlink DR carries them
    a 20-digit compact token (text)              its 9-byte form (lorapayload.compact_bytes)
    two compact tokens on one line or two        two downlinks (a compact key change)
Anything else, a compact token that does not decode under the meter's key, or an envelope
too long for the DR is refused (Refused, with the token id when it is known): the bridge
never spends the meter's keypad lock-out on a token that cannot be the meter's.

ChirpStack v4: `application/<app>/device/<devEui>/command/down`
    {"devEui": "...", "confirmed": false, "fPort": 10, "data": "<base64>"}
The Things Stack v3: `v3/<app>@<tenant>/devices/<device id>/down/push`
    {"downlinks": [{"f_port": 10, "frm_payload": "<base64>", "priority": "NORMAL",
                    "confirmed": false, "correlation_ids": ["prepaid-meter:token:7"]}]}

Uplink (ChirpStack `.../device/<devEui>/event/up`, TTS `.../devices/<id>/up`) on
lorapayload.UPLINK_PORT (2): the 11 bytes are checked by lorapayload.Receiver under the
meter's message key (tag, then (boot, seq) above the last accepted) and become
    token ack   -> `<prefix>/<id>/ack`    {"meter","boot","seq","t","token","result","code",
                                          "balance"}; token: the full id of the top-up
                                          forwarded whose low 16 bits the ack carries
    event       -> `<prefix>/<id>/event`  {"meter","boot","seq","t","event","balance","value"}
    state       -> `<prefix>/<id>/state`  (retained) {"meter","boot","seq","t","online",
    meter       -> `<prefix>/<id>/state`  "balance","credit_status","control_state",
                                          "open_reasons","relay","power_w","energy_wh",
                                          "errors","lora_rssi_dbm","lora_snr_db"}: the fields
                                          the last state and meter reading uplinks told
signed with the meter's message key (tools/vend/messages.sign: the tag of
firmware/comms/signed.py), with the meter's own (boot, seq), so the back office's checks
(messages.verify, messages.Freshness) hold unchanged. `t` is the network server's
reception time (its JSON's `time` / `received_at`) as seconds since 2000-01-01 in the
bridge's local time, the bridge's clock when the JSON has none.
"""

import base64
import binascii
import collections
import datetime
import hashlib
import hmac
import json
import re
import struct

from firmware.comms.lora import payload as lp
from firmware.tokens import codes as rc
from tools.vend import core, messages

RECENT_TOKENS = 64  # token ids kept per meter for correlating acks
SEEN_UPLINKS = 64  # uplinks kept per meter to tell a replay from a forgery
CORRELATION = "prepaid-meter:token:%d"


class Refused(ValueError):
    """A top-up the bridge will not forward: message for the operator, token id or None."""

    def __init__(self, message, token=None):
        super().__init__(message)
        self.token = token


class Dropped(ValueError):
    """An uplink the bridge drops: `reason` is the counter it goes to."""

    def __init__(self, reason, message):
        super().__init__(message)
        self.reason = reason


class Downlink:
    """One downlink: kind (lorapayload.COMPACT or ENVELOPE), frm (bytes), token id."""

    def __init__(self, kind, frm, token):
        self.kind = kind
        self.frm = frm
        self.token = token


class HmacKey:
    """HMAC-SHA256 under one key with lorapayload's `digest(msg, msg2=None)` shape."""

    def __init__(self, key):
        self._key = bytes(key)

    def digest(self, msg, msg2=None):
        h = hmac.new(self._key, bytes(msg), hashlib.sha256)
        if msg2 is not None:
            h.update(bytes(msg2))
        return h.digest()


# -- top-ups -> downlinks ---------------------------------------------------------------

_DIGITS = re.compile(r"\A[0-9]{20}\Z")


def plan(meter, key, payload):
    """The downlinks for a top-up payload (list of Downlink); Refused when none can go."""
    data = bytes(payload)
    env = None
    if len(data) == core.ENVELOPE_SIZE:
        env = data
    else:
        try:
            text = data.decode("ascii").strip()
        except UnicodeDecodeError:
            text = None
        if text is not None and len(text) == 2 * core.ENVELOPE_SIZE:
            try:
                env = bytes.fromhex(text)
            except ValueError:
                env = None
        elif text is not None:
            words = text.split()
            if words and len(words) <= 2 and all(_DIGITS.match(w) for w in words):
                return [_compact(meter, key, w) for w in words]
    if env is None:
        raise Refused(
            "not a top-up: a 70-byte envelope, its 140 hex digits or a 20-digit compact "
            "token expected (%d bytes)" % len(data)
        )
    if env[0] != 1:
        raise Refused("envelope version %d: only version 1 is carried" % env[0])
    token = struct.unpack_from(">I", env, 10)[0]
    if len(env) > meter.max_bytes:
        raise Refused(
            "a %d-byte envelope does not fit a downlink at %s %s (%d bytes at most); send the "
            "top-up as a compact token (vend send --format compact)"
            % (len(env), meter.region, meter.dr_text, meter.max_bytes),
            token,
        )
    return [Downlink(lp.ENVELOPE, env, token)]


def _compact(meter, key, digits):
    info = core.decode_compact(key, digits)
    if not info.get("valid"):
        raise Refused(
            "compact token does not decode under meter %d's key (%s): not sent, it would only "
            "count toward the meter's lock-out" % (meter.meter_id, info.get("error", "?"))
        )
    frm = lp.compact_bytes(digits)
    if len(frm) > meter.max_bytes:  # 9 bytes fit every downlink; a margin could eat it
        raise Refused(
            "a %d-byte compact token does not fit %d bytes at %s %s"
            % (len(frm), meter.max_bytes, meter.region, meter.dr_text),
            info.get("token_id"),
        )
    return Downlink(lp.COMPACT, frm, info.get("token_id"))


def downlink_message(meter, dl):
    """(topic, JSON bytes, QoS) of a downlink on the meter's network server."""
    b64 = base64.b64encode(dl.frm).decode()
    if meter.network == "chirpstack":
        topic = "application/%s/device/%s/command/down" % (meter.application_id, meter.dev_eui)
        obj = {
            "devEui": meter.dev_eui,
            "confirmed": meter.confirmed,
            "fPort": lp.TOPUP_PORT,
            "data": b64,
        }
        return topic, json.dumps(obj).encode(), 1
    topic = "v3/%s/devices/%s/down/push" % (meter.app_path, meter.device_id)
    item = {
        "f_port": lp.TOPUP_PORT,
        "frm_payload": b64,
        "priority": meter.priority,
        "confirmed": meter.confirmed,
    }
    if dl.token is not None:
        item["correlation_ids"] = [CORRELATION % dl.token]
    return topic, json.dumps({"downlinks": [item]}).encode(), 0  # TTS: QoS 0 only


# -- network-server uplinks -------------------------------------------------------------


def uplink_filter(meter):
    """The topic filter of the uplinks of the meter's application."""
    if meter.network == "chirpstack":
        return "application/%s/device/+/event/up" % meter.application_id
    return "v3/%s/devices/+/up" % meter.app_path


def device_of(network, topic):
    """(network, application, device) a network server's uplink topic names, or None
    (config.Meter.ident): ChirpStack's application id and DevEUI (lower case), TTS's
    `<app>@<tenant>` and device id."""
    p = topic.split("/")
    if network == "chirpstack":
        if len(p) == 6 and p[0] == "application" and p[2] == "device" and p[4:] == ["event", "up"]:
            return network, p[1], p[3].lower()
        return None
    if len(p) == 5 and p[0] == "v3" and p[2] == "devices" and p[4] == "up":
        return network, p[1], p[3]
    return None


def parse_uplink(network, payload):
    """The fields of a network server's uplink JSON: port, data (bytes), fcnt, dr, rssi,
    snr, time (a datetime or None); ValueError when it is not an uplink."""
    try:
        obj = json.loads(bytes(payload).decode())
    except ValueError as e:
        raise ValueError("not JSON: %s" % e) from e
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    if network == "chirpstack":
        up, port, data, rx = obj, obj.get("fPort"), obj.get("data", ""), obj.get("rxInfo")
        fcnt, dr, when = obj.get("fCnt"), obj.get("dr"), obj.get("time")
    else:
        up = obj.get("uplink_message")
        if not isinstance(up, dict):
            raise ValueError("no uplink_message")
        port, data, rx = up.get("f_port"), up.get("frm_payload", ""), up.get("rx_metadata")
        fcnt, when = up.get("f_cnt"), obj.get("received_at") or up.get("received_at")
        settings = up.get("settings")
        dr = settings.get("data_rate_index") if isinstance(settings, dict) else None
    if type(port) is not int:
        raise ValueError("no port")
    try:
        raw = base64.b64decode(data or "", validate=True)
    except (binascii.Error, TypeError) as e:
        raise ValueError("data: not base64") from e
    rssi = snr = None
    if isinstance(rx, list) and rx and isinstance(rx[0], dict):
        best = max(rx, key=lambda r: r.get("rssi", -999) if isinstance(r, dict) else -999)
        rssi, snr = best.get("rssi"), best.get("snr")
    return {"port": port, "data": raw, "fcnt": fcnt, "dr": dr, "rssi": rssi, "snr": snr,
            "time": _time(when)}  # fmt: skip


def _time(text):
    """A datetime of an RFC 3339 time (any number of fraction digits), or None."""
    if not isinstance(text, str):
        return None
    m = re.match(r"\A([0-9T:-]+?)(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})\Z", text)
    if m is None:
        return None
    frac = (m.group(2) or "")[:7]
    zone = "+00:00" if m.group(3) == "Z" else m.group(3)
    try:
        return datetime.datetime.fromisoformat(m.group(1) + frac + zone)
    except ValueError:
        return None


def stamp(when=None):
    """Seconds since 2000-01-01 in the bridge's local time of an aware datetime (now if
    None), the meter's `t`."""
    if when is None:
        return core.stamp_now()
    local = when.astimezone().replace(tzinfo=None, microsecond=0)
    return core.stamp_of(local)


def money(units, decimals):
    """A balance as the meter writes it: a decimal string, "-" before a debt."""
    sign = "-" if units < 0 else ""
    s = str(abs(units))
    if decimals == 0:
        return sign + s
    s = s.rjust(decimals + 1, "0")
    return sign + s[:-decimals] + "." + s[-decimals:]


class MeterSide:
    """One meter's half of the bridge: its key, its Receiver, the token ids forwarded (for
    the acks) and what its last state and meter reading uplinks said."""

    def __init__(self, meter, vending_key, boot=None, seq=0, tokens=()):
        self.meter = meter
        self.key = core.meter_key(vending_key, meter.meter_id, meter.revision)
        mac = HmacKey(messages.msg_key(self.key))
        id8 = meter.meter_id.to_bytes(8, "big")
        self.rx = lp.Receiver(mac, id8, meter.boot if boot is None else boot, seq)
        self.tokens = collections.deque(tokens, RECENT_TOKENS)
        self.seen = collections.deque((), SEEN_UPLINKS)
        self.state = {}

    def record(self):
        """What the state file keeps: boot, seq and the recent token ids."""
        return {"boot": self.rx.boot, "seq": self.rx.seq, "tokens": list(self.tokens)}

    def forwarded(self, dl):
        if dl.token is not None:
            if dl.token in self.tokens:
                self.tokens.remove(dl.token)
            self.tokens.append(dl.token)

    def token_of(self, token16):
        """The full id of the newest token forwarded whose low 16 bits are token16; token16
        itself when none is known (ids below 65,536 are their own low bits); None for 0."""
        for t in reversed(self.tokens):
            if t & 0xFFFF == token16:
                return t
        return token16 or None

    def uplink(self, up):
        """[(kind, signed payload, retain)] for a parsed uplink; Dropped when it is not one."""
        data = up["data"]
        if up["port"] != lp.UPLINK_PORT:
            raise Dropped("wrong_port", "uplink on port %d, not %d" % (up["port"], lp.UPLINK_PORT))
        if len(data) != lp.SIZE:
            raise Dropped("malformed", "uplink of %d bytes, not %d" % (len(data), lp.SIZE))
        try:
            f = self.rx.decode(data)
        except ValueError as e:
            if data in self.seen:
                raise Dropped("replayed", "a replay of an uplink taken before") from e
            if "tag" in str(e):
                raise Dropped("forged", "tag does not verify under the meter's key") from e
            raise Dropped("malformed", str(e)) from e
        self.seen.append(data)
        head = {"meter": str(self.meter.meter_id), "boot": f["boot"], "seq": f["seq"],
                "t": stamp(up.get("time"))}  # fmt: skip
        d = self.meter.decimals
        if f["type"] == "ack":
            code = f["code"]
            head.update(
                token=self.token_of(f["token16"]),
                result="accepted" if rc.accepted(code) else rc.name(code),
                code=code,
                balance=money(f["balance"], d),
            )
            return [("ack", messages.sign(self.key, head), False)]
        if f["type"] == "event":
            head.update(event=f["event"] or "other", balance=money(f["balance"], d))
            head["value"] = f["value"]
            return [("event", messages.sign(self.key, head), False)]
        s = self.state
        if f["type"] == "state":
            s["balance"] = money(f["balance"], d)
            for k in ("credit_status", "control_state", "relay", "power_w"):
                s[k] = f[k]
        else:
            for k in ("open_reasons", "energy_wh", "errors"):
                s[k] = f[k]
        if up.get("rssi") is not None:
            s["lora_rssi_dbm"] = up["rssi"]
        if up.get("snr") is not None:
            s["lora_snr_db"] = up["snr"]
        head["online"] = True
        for k in _STATE_ORDER:
            if k in s:
                head[k] = s[k]
        return [("state", messages.sign(self.key, head), True)]


_STATE_ORDER = (
    "balance",
    "credit_status",
    "control_state",
    "open_reasons",
    "relay",
    "power_w",
    "energy_wh",
    "errors",
    "lora_rssi_dbm",
    "lora_snr_db",
)
