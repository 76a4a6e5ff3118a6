"""A thin MQTT link for the back office tools over paho-mqtt 2.x: connect with a deadline,
subscribe (waiting for the SUBACK), publish at QoS 1 (waiting for the PUBACK) and wait for
the first message on a topic that verifies under a meter key and is the one wanted.

Every wait has a deadline. Errors are MqttError subclasses with a message for the
operator: BrokerUnreachable (nothing could be sent), Timeout and ConnectionLost.

Topics of a meter (prefix "meters" by default): `<prefix>/<id>/topup` (envelope bytes),
`<prefix>/<id>/cmd` (signed JSON) in; `ack`, `event`, `state` (retained) out.
"""

import queue
import secrets
import socket
import sys
import threading
import time

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from tools.vend import messages

PREFIX = "meters"
_LOST = object()  # queued when the connection drops


class MqttError(Exception):
    """An MQTT failure, with a message for the operator."""


class BrokerUnreachable(MqttError):
    """The broker could not be reached or refused the connection: nothing was sent."""


class ConnectionLost(MqttError):
    """The connection dropped after it was made."""


class Timeout(MqttError):
    """A deadline passed."""


def topic(meter_id, kind, prefix=PREFIX):
    """`<prefix>/<meter id in decimal>/<kind>`."""
    return "%s/%d/%s" % (prefix, int(meter_id), kind)


def _stderr(line):
    print(line, file=sys.stderr, flush=True)


class Link:
    """One MQTT connection (MQTT 3.1.1; a clean session unless clean=False, for a service
    whose subscriptions should keep its messages while it is down) with a network thread.

    with Link("127.0.0.1", 1883, timeout=10) as link:
        link.subscribe(ack_topic)
        link.publish(topup_topic, payload)
        ack = link.wait_verified(ack_topic, key, lambda m: m.get("token") == 7, 30)
    """

    def __init__(
        self, host="127.0.0.1", port=1883, timeout=10.0, client_id=None, log=None, clean=True
    ):
        self.host, self.port, self.timeout = host, int(port), float(timeout)
        self.log = log or _stderr
        self.where = "%s:%d" % (host, self.port)
        self._cond = threading.Condition()
        self._connected = False
        self._connack = None  # reason code of the CONNACK
        self._lost = None  # reason of an unexpected disconnect
        self._subacks = {}  # mid -> reason codes
        self._pubacks = set()  # mids the broker confirmed
        self._messages = queue.Queue()
        self._started = False
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or "vend-" + secrets.token_hex(6),
            clean_session=clean,
            protocol=paho.MQTTv311,
        )
        c = self._client
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_subscribe = self._on_subscribe
        c.on_publish = self._on_publish
        c.on_message = self._on_message

    # --- paho callbacks (network thread): record and notify, never raise

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        with self._cond:
            self._connack = reason_code
            self._connected = not reason_code.is_failure
            self._cond.notify_all()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        with self._cond:
            if self._connected:
                self._lost = str(reason_code)
                self._messages.put(_LOST)
            self._connected = False
            self._cond.notify_all()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        with self._cond:
            self._subacks[mid] = reason_codes
            self._cond.notify_all()

    def _on_publish(self, client, userdata, mid, reason_code, properties):
        with self._cond:
            self._pubacks.add(mid)
            self._cond.notify_all()

    def _on_message(self, client, userdata, msg):
        self._messages.put((msg.topic, bytes(msg.payload)))

    # --- life

    def __enter__(self):
        self.connect()
        return self

    def __exit__(self, *exc):
        self.close()

    def _wait(self, done, timeout):
        """Wait under the condition until done() or the connection drops; True if done."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not done():
                if self._lost is not None:
                    raise ConnectionLost(
                        "lost the connection to the broker at %s (%s)" % (self.where, self._lost)
                    )
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def connect(self, timeout=None):
        """Connect and wait for the CONNACK; BrokerUnreachable on any failure."""
        timeout = self.timeout if timeout is None else timeout
        unreachable = "cannot reach the broker at %s" % self.where
        self._client.connect_timeout = max(0.1, timeout)
        try:
            self._client.connect(self.host, self.port, keepalive=60)
        except ConnectionRefusedError as e:
            raise BrokerUnreachable(unreachable + " (connection refused)") from e
        except (TimeoutError, socket.timeout) as e:
            raise BrokerUnreachable(unreachable + " (no answer within %g s)" % timeout) from e
        except OSError as e:
            raise BrokerUnreachable("%s (%s)" % (unreachable, e.strerror or e)) from e
        self._client.loop_start()
        self._started = True
        if not self._wait(lambda: self._connack is not None, timeout):
            raise BrokerUnreachable(unreachable + " (no CONNACK within %g s)" % timeout)
        if self._connack.is_failure:
            raise BrokerUnreachable(
                "the broker at %s refused the connection: %s" % (self.where, self._connack)
            )

    def close(self):
        """Disconnect and stop the network thread (safe to call twice)."""
        with self._cond:
            self._connected = False  # a disconnect from here on is not "lost"
        try:
            self._client.disconnect()
        except Exception:  # noqa: S110 - closing anyway
            pass
        if self._started:
            self._client.loop_stop()
            self._started = False

    # --- operations

    def subscribe(self, topic_filter, qos=1, timeout=None):
        """Subscribe and wait for the broker's SUBACK."""
        timeout = self.timeout if timeout is None else timeout
        rc, mid = self._client.subscribe(topic_filter, qos)
        if rc != paho.MQTT_ERR_SUCCESS:
            raise MqttError("cannot subscribe to %s: %s" % (topic_filter, paho.error_string(rc)))
        if not self._wait(lambda: mid in self._subacks, timeout):
            raise Timeout(
                "the broker at %s did not confirm the subscription to %s within %g s"
                % (self.where, topic_filter, timeout)
            )
        for code in self._subacks.pop(mid):
            if code.is_failure:
                raise MqttError("the broker refused the subscription to %s" % topic_filter)

    def publish(self, topic_name, payload, qos=1, retain=False, timeout=None):
        """Publish and, at QoS 1 or 2, wait until the broker has confirmed it."""
        timeout = self.timeout if timeout is None else timeout
        info = self._client.publish(topic_name, payload, qos=qos, retain=retain)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise MqttError("cannot publish to %s: %s" % (topic_name, paho.error_string(info.rc)))
        if qos == 0:
            return
        if not self._wait(lambda: info.mid in self._pubacks, timeout):
            raise Timeout(
                "the broker at %s did not confirm the message to %s within %g s"
                % (self.where, topic_name, timeout)
            )
        self._pubacks.discard(info.mid)

    def wait_message(self, topic_filter, accept, timeout=None):
        """The first non-None accept(topic, payload) of a message on topic_filter (a filter,
        or a tuple of them).

        Messages received since the subscription are seen too (they are queued), so
        subscribe before publishing the request. Timeout when the deadline passes,
        ConnectionLost when the connection drops.
        """
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        filters = (topic_filter,) if isinstance(topic_filter, str) else tuple(topic_filter)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Timeout("no message on %s within %g s" % (" or ".join(filters), timeout))
            try:
                item = self._messages.get(timeout=left)
            except queue.Empty:
                continue
            if item is _LOST:
                raise ConnectionLost(
                    "lost the connection to the broker at %s (%s)" % (self.where, self._lost)
                )
            t, payload = item
            if not any(paho.topic_matches_sub(f, t) for f in filters):
                continue
            result = accept(t, payload)
            if result is not None:
                return result

    def wait_verified(
        self, topic_filter, meter_key, wanted, timeout=None, freshness=None, notes=None
    ):
        """The first message on topic_filter that verifies under meter_key (messages.verify),
        is fresh (when a messages.Freshness is given) and satisfies wanted(obj); every
        other message is logged and ignored. notes: (filter, fn): messages on that filter
        (unsigned, e.g. the LoRaWAN bridge's) go to fn(topic, payload) instead, and its
        first non-None result is returned (fn may raise, to end the wait)."""

        def accept(t, payload):
            if notes is not None and paho.topic_matches_sub(notes[0], t):
                return notes[1](t, payload)
            try:
                obj = messages.verify(meter_key, payload)
                if freshness is not None:
                    freshness.check(obj)
            except ValueError as e:
                self.log("ignored a message on %s: %s" % (t, e))
                return None
            if not wanted(obj):
                self.log("ignored a message on %s: %s" % (t, _brief(obj)))
                return None
            if freshness is not None:
                freshness.accept(obj)
            return obj

        filters = topic_filter if notes is None else (topic_filter, notes[0])
        return self.wait_message(filters, accept, timeout)


def _brief(obj):
    """A short description of a verified message that is not the one waited for."""
    for name in ("token", "cmd", "event"):
        if name in obj:
            what = "%s %s" % (name, obj[name])
            if "result" in obj:
                what += " (%s)" % obj["result"]
            return "%s from meter %s, not the one waited for" % (what, obj.get("meter"))
    return "from meter %s, not the one waited for" % obj.get("meter")
