"""The running bridge: its MQTT connections (paho-mqtt), the handlers, the state file.

    bridge = Bridge(config.load("bridge.json"), log=print)
    bridge.start()            # connect, subscribe, wait for the SUBACKs (deadline)
    ...                       # paho's network threads run the handlers
    bridge.stop()

Connections: the back office's broker (`<prefix>/<id>/topup` and `cmd` of every meter
configured, QoS 1; acks, events and state out at QoS 1, state retained; refusals on
`<prefix>/<id>/bridge`, a command always: LoRaWAN carries none), and one per network-server connection named in the
configuration (the uplink topics of the meters' applications, downlinks out: ChirpStack
at QoS 1, TTS at QoS 0, the only QoS it has). A meter without a `server` has its network
server on the back office's broker, so one connection may serve both. Sessions are
persistent (clean session off, client id from the configuration), so top-ups and uplinks
published while the bridge is away wait at the brokers; paho reconnects on its own.

State file (JSON, replaced atomically after every change): per meter the (boot, seq) of
the last uplink accepted and the token ids of the recent top-ups forwarded. Without it a
restarted bridge would search from boot 0 (and miss a meter that has started more than 4
times) and could not give an ack its full token id.

Counters (`stats`): topups, downlinks, refused, uplinks, acks, events, states, and the
uplinks dropped: forged, replayed, malformed, wrong_port, unknown_device, not_json.
Keys and token contents are never logged: a line names the meter, the token id, the
form and the size.
"""

import json
import os
import secrets
import threading
import time

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from tools.bridge import mapping
from tools.vend import core, messages

COUNTERS = (
    "topups",
    "downlinks",
    "refused",
    "uplinks",
    "acks",
    "events",
    "states",
    "forged",
    "replayed",
    "malformed",
    "wrong_port",
    "unknown_device",
    "not_json",
)


class BridgeError(RuntimeError):
    """The bridge could not start: a broker unreachable, a subscription refused."""


class _Conn:
    """One paho client and the topic filters it subscribes to at every connect."""

    def __init__(self, server, client_id, filters, on_message, log):
        self.server = server
        self.filters = filters  # [(filter, qos)]
        self.log = log
        self.ready = threading.Event()
        self.failed = None
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=False,
            protocol=paho.MQTTv311,
        )
        if server.username is not None:
            self.client.username_pw_set(server.username, server.password)
        self.client.reconnect_delay_set(1, 30)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = on_message
        self._sub_mid = None

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            self.failed = "refused the connection: %s" % reason_code
            self.log("%s: %s" % (self.where, self.failed))
            return
        if self.filters:
            _, self._sub_mid = client.subscribe(self.filters)
        else:
            self.ready.set()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        if mid != self._sub_mid:
            return
        bad = [f for (f, _), c in zip(self.filters, reason_codes) if c.is_failure]
        if bad:
            self.failed = "refused the subscription to %s" % ", ".join(bad)
            self.log("%s: %s" % (self.where, self.failed))
            return
        self.ready.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self.ready.clear()
        self.log("%s: connection lost (%s); reconnecting" % (self.where, reason_code))

    @property
    def where(self):
        return "%s %s:%d" % (self.server.name, self.server.host, self.server.port)

    def start(self):
        try:
            self.client.connect(self.server.host, self.server.port, keepalive=30)
        except OSError as e:
            raise BridgeError("cannot reach %s: %s" % (self.where, e.strerror or e)) from e
        self.client.loop_start()

    def stop(self):
        self.client.on_disconnect = None
        try:
            self.client.disconnect()
        finally:
            self.client.loop_stop()


class Bridge:
    """cfg: config.Config; vending_key: bytes (default: read from cfg.keystore)."""

    def __init__(self, cfg, vending_key=None, log=None):
        self.cfg = cfg
        self.log = log or _stderr
        vk = core.load_keystore(cfg.keystore) if vending_key is None else vending_key
        saved = _load_state(cfg.state)
        self.sides = {}
        self.by_device = {}
        for mid, m in cfg.meters.items():
            r = saved.get(str(mid), {})
            self.sides[mid] = mapping.MeterSide(
                m, vk, r.get("boot"), r.get("seq", 0), r.get("tokens", ())
            )
            self.by_device[m.ident] = self.sides[mid]
        self.stats = dict.fromkeys(COUNTERS, 0)
        self._lock = threading.RLock()
        self._conns = {}
        bo_filters = [(self._topic(mid, k), 1) for mid in cfg.meters for k in ("topup", "cmd")]
        self.backoffice = self._conn(cfg.broker, cfg.client_id, bo_filters)
        self._ns = {}  # meter id -> _Conn
        for mid, m in cfg.meters.items():
            server = cfg.server_of(m)
            if server.key not in self._conns:
                suffix = "-ns%d" % len(self._conns)
                self._conn(server, cfg.client_id + suffix, [])
            conn = self._conns[server.key]
            f = (mapping.uplink_filter(m), 1 if m.network == "chirpstack" else 0)
            if f not in conn.filters:
                conn.filters.append(f)
            self._ns[mid] = conn

    def _conn(self, server, client_id, filters):
        conn = _Conn(server, client_id, filters, self._on_message, self.log)
        self._conns[server.key] = conn
        return conn

    def _topic(self, meter_id, kind):
        return "%s/%d/%s" % (self.cfg.prefix, meter_id, kind)

    # -- life ------------------------------------------------------------------------

    def start(self, timeout=10.0):
        """Connect everything and wait until every subscription holds; BridgeError else."""
        started = []
        try:
            for conn in self._conns.values():
                conn.start()
                started.append(conn)
        except BridgeError:
            for conn in started:
                conn.stop()
            raise
        deadline = time.monotonic() + timeout
        for conn in self._conns.values():
            while not conn.ready.wait(0.05):
                if conn.failed or time.monotonic() > deadline:
                    self.stop()
                    raise BridgeError(
                        "%s: %s" % (conn.where, conn.failed or "not ready within %g s" % timeout)
                    )
        self.log(
            "bridge: %d meters; back office on %s; network servers on %s"
            % (
                len(self.sides),
                self.backoffice.where,
                ", ".join(sorted({c.where for c in self._ns.values()})),
            )
        )
        return self

    def stop(self):
        for conn in self._conns.values():
            conn.stop()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- handlers (paho's network threads) ---------------------------------------------

    def _on_message(self, client, userdata, msg):
        try:
            with self._lock:
                self._dispatch(msg.topic, bytes(msg.payload))
        except Exception as e:  # a handler must never kill paho's thread
            self.log("bridge: error handling %s: %r" % (msg.topic, e))

    def _dispatch(self, topic, payload):
        p = topic.split("/")
        prefix = self.cfg.prefix.split("/")
        n = len(prefix)
        if len(p) == n + 2 and p[:n] == prefix and p[n].isdigit():
            side = self.sides.get(int(p[n]))
            if side is not None and p[n + 1] == "topup":
                return self._topup(side, payload)
            if side is not None and p[n + 1] == "cmd":
                return self._cmd(side, payload)
        for network in ("chirpstack", "tts"):
            dev = mapping.device_of(network, topic)
            if dev is not None:
                return self._uplink(dev, payload)

    def _topup(self, side, payload):
        m = side.meter
        self.stats["topups"] += 1
        try:
            plan = mapping.plan(m, side.key, payload)
        except mapping.Refused as e:
            return self._refuse(m, str(e), e.token)
        conn = self._ns[m.meter_id]
        for dl in plan:
            topic, body, qos = mapping.downlink_message(m, dl)
            info = conn.client.publish(topic, body, qos=qos)
            if info.rc == paho.MQTT_ERR_NO_CONN and qos:
                self.log(
                    "meter %d: %s is down; the downlink waits for it" % (m.meter_id, conn.where)
                )
            elif info.rc != paho.MQTT_ERR_SUCCESS:
                return self._refuse(
                    m, "the network server's broker (%s) did not take the downlink: %s"
                    % (conn.where, paho.error_string(info.rc)), dl.token,
                )  # fmt: skip
            side.forwarded(dl)
            self.stats["downlinks"] += 1
            self.log(
                "meter %d: token %s (%s, %d bytes) -> %s"
                % (m.meter_id, dl.token, dl.kind, len(dl.frm), topic)
            )
        self._save()

    def _refuse(self, m, why, token, field="token"):
        self.stats["refused"] += 1
        what = "top-up" if field == "token" else "command"
        self.log("meter %d: %s refused (%s %s): %s" % (m.meter_id, what, field, token, why))
        body = json.dumps({"error": why, field: token}).encode()
        self.backoffice.client.publish(self._topic(m.meter_id, "bridge"), body, qos=1)

    def _cmd(self, side, payload):
        """A LoRaWAN meter takes no commands: the back office hears so at once."""
        try:
            cid = messages.verify(side.key, payload).get("id")
        except ValueError:
            cid = None
        self._refuse(
            side.meter, "commands do not travel over LoRaWAN: meter %d takes only top-ups "
            "there" % side.meter.meter_id, cid, "cmd",
        )  # fmt: skip

    def _uplink(self, dev, payload):
        side = self.by_device.get(dev)
        if side is None:
            self.stats["unknown_device"] += 1
            self.log("uplink from %s %s %s: not a configured meter; dropped" % dev)
            return
        m = side.meter
        try:
            up = mapping.parse_uplink(m.network, payload)
        except ValueError as e:
            self.stats["not_json"] += 1
            self.log("meter %d: uplink dropped: %s" % (m.meter_id, e))
            return
        try:
            out = side.uplink(up)
        except mapping.Dropped as e:
            self.stats[e.reason] += 1
            self.log("meter %d: uplink dropped (%s): %s" % (m.meter_id, e.reason, e))
            return
        self.stats["uplinks"] += 1
        for kind, body, retain in out:
            self.stats[kind + "s"] += 1
            topic = self._topic(m.meter_id, kind)
            self.backoffice.client.publish(topic, body, qos=1, retain=retain)
            self.log(
                "meter %d: uplink (boot %d, seq %d) -> %s"
                % (m.meter_id, side.rx.boot, side.rx.seq, topic)
            )
        self._save()

    def _save(self):
        path = self.cfg.state
        if path is None:
            return
        doc = {"version": 1, "meters": {str(k): s.record() for k, s in self.sides.items()}}
        tmp = "%s.tmp%s" % (path, secrets.token_hex(4))
        with open(tmp, "w") as f:
            json.dump(doc, f, indent=1)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)


def _load_state(path):
    if path is None or not os.path.exists(path):
        return {}
    try:
        with open(path) as f:
            doc = json.load(f)
        meters = doc["meters"]
        if doc.get("version") != 1 or not isinstance(meters, dict):
            raise ValueError("version 1 with meters expected")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise BridgeError("state file %s: %s" % (path, e)) from e
    return meters


def _stderr(line):
    import sys

    print(line, file=sys.stderr, flush=True)
