"""The back office over MQTT: top-ups and commands in, signed acks, events and state out.

    comms = Comms(app, link, key)      # link: drivers/cellular.Cellular (connect, telemetry)
    asyncio.create_task(comms.run())   # connect, subscribe, serve, reconnect, forever

Topics (prefix `topic_prefix`, client id = meter id in plain decimal):
  <p>/<id>/topup  in, QoS 1: a remote envelope (70 bytes, or its 140 hex digits); keypad
                  formats are refused here (format) so nobody on the broker can spend the
                  keypad's lock-out.
  <p>/<id>/cmd    in, QoS 1: a signed command (tariff, thresholds, relay, report).
  <p>/<id>/ack    out, QoS 1: the answer to each top-up ("token") and command ("cmd").
  <p>/<id>/event  out, QoS 1: every event of the meter's log, queued while offline.
  <p>/<id>/state  out, QoS 1, retained: balance, supply, power, price, signal, the
                  lifetime credit of every top-up taken (credit_total, the debt share
                  included: what the back office reconciles its sales against), the
                  software (version+built hash, storage/version.software_id) and the
                  MQTT client version that loaded (mqtt_client) ... at
                  connect, every `state_period_s`, after a top-up or a supply change.
                  The broker's last will on the same topic: a signed "online": false.
Every message out is signed (firmware/comms/signed.py) and numbered (boot, seq): `boot`
is journaled (App.boots) before the first message of a start, `seq` counts from 1.
The last will carries no seq (it is signed at connect time and published later):
a liveness note, never a reading.

Delivery. A top-up is checked, credited and journaled inside umqtt.simple's callback,
before it writes the PUBACK (firmware/comms/mqtt/session.py), so the broker counts it delivered
only once the money is safe; a redelivery (QoS 1 after a cut or a reconnect, or the
back office sending again) answers `used`: the token id decides, never the transport.
The session is persistent (clean session off), so top-ups sent while the meter is
offline wait at the broker. Acks and events wait in the outbox (firmware/comms/outbox.py:
acks ahead of the events not yet sent, the oldest of those dropped first when it is
full, counted in the state) and go out in order, each after the previous
PUBACK; a message keeps its seq across retries, so the back office can drop
duplicates. Nothing here is on the metering path: when the network is gone the
meter meters, bills and disconnects the same.
"""

from firmware.billing import events as ev
from firmware.billing import money
from firmware.comms import signed
from firmware.comms.outbox import ACK, EVENT, Outbox
from firmware.tokens import codes as rc
from firmware.tokens.envelope import SIZE as ENVELOPE_SIZE
from firmware.tokens.envelope import header, parse_hex
from firmware.billing.settings import parse_meter_id
from firmware.comms.mqtt.session import CLIENT, MQTTError, Session
from firmware.storage import version
from firmware.storage.record import STATE as RECORD
from firmware.billing.policy import CONTROL_STATES, relay_word

CMD_ID_MAX = RECORD.current.limits("cmd_id")[1]  # the journal keeps the last id applied

THRESHOLDS = (
    "low_credit",
    "reconnect_min",
    "emergency_credit",
    "max_power_w",
    "low_credit_repeat_s",
)
_CMD_KEYS = ("meter", "id", "op", "mac")


class Comms:
    """app: firmware.app.App; link: connect(host, port, timeout_ms) -> socket (see
    firmware/comms/mqtt/session.py) and telemetry() -> dict; key: the MeterKey (signs and checks; after
    a key change token the new key does, see `mac`)."""

    def __init__(self, app, link, key, queue_max=32, timeout_ms=10000, open_timeout_ms=60000):
        s = app.meter.settings
        self.app = app
        self.link = link
        self.clock = app.board.clock
        self._mac = key.msg_mac()  # until the intake has a key in force
        self.meter_id = str(parse_meter_id(s.meter_id))  # "01001" is meter 1001
        self.host = s.mqtt_host
        self.port = s.mqtt_port
        self.keepalive_s = s.mqtt_keepalive_s
        base = s.topic_prefix + "/" + self.meter_id + "/"
        self.t_topup = (base + "topup").encode()
        self.t_cmd = (base + "cmd").encode()
        self.t_ack = (base + "ack").encode()
        self.t_event = (base + "event").encode()
        self.t_state = (base + "state").encode()
        self.timeout_ms = timeout_ms
        self.open_timeout_ms = open_timeout_ms
        self.outbox = Outbox(queue_max)  # events and acks (firmware/comms/outbox.py)
        self.seq = 0
        self.online = False
        self.session = None
        self.state_due = True
        self._state_at = None
        self._relay_seen = None
        self.stats = {
            "connects": 0,
            "drops": 0,
            "topups": 0,
            "cmds": 0,
            "strays": 0,
            "last_error": None,
        }
        self._stop = False
        app.meter.log.listeners.append(self._on_event)

    @property
    def mac(self):
        """The message key of the meter key in force: after a key change token the
        messages are signed, and commands checked, under the new key at once."""
        mac = self.app.intake.msg_mac()
        return self._mac if mac is None else mac

    # -- outgoing messages ----------------------------------------------------------------

    def _on_event(self, stamp, kind, balance, value):
        self.outbox.put(EVENT, (stamp, kind, balance, value))
        if kind in (ev.DISCONNECT, ev.RECONNECT, ev.TOPUP, ev.READY_FOR_RECONNECTION):
            self.state_due = True

    def _topic(self, item):
        return self.t_ack if item.kind == ACK else self.t_event

    def _money(self, v):
        return money.format_decimal(v, self.app.meter.settings.currency_decimals)

    def _head(self, stamp=None):
        self.seq += 1
        if stamp is None:
            stamp = self.app.meter.clock.stamp()
        return [
            ("meter", self.meter_id),
            ("boot", self.app.boots),
            ("seq", self.seq),
            ("t", stamp),
        ]

    def _payload(self, item):
        f = item.fields
        if item.kind == EVENT:
            stamp, name, balance, value = f
            pairs = self._head(stamp)
            pairs += [("event", name), ("balance", self._money(balance)), ("value", value)]
        else:
            pairs = self._head(f[0]) + list(f[1:])
        return signed.sign(self.mac, signed.body(pairs))

    def state(self, online=True):
        """The signed state message (also what a technician reads): App.status()."""
        st = self.app.status()
        dec = self.app.meter.settings.currency_decimals
        pairs = self._head(st["stamp"])
        pairs += [
            ("online", online),
            ("balance", money.format_decimal(st["balance"], dec)),
            ("credit_status", st["credit_status"]),
            ("control_state", CONTROL_STATES[st["control_state"]]),
            ("open_reasons", st["open_reasons"]),
            ("relay", relay_word(st["relay"])),
            ("power_w", st["power_w"]),
            ("energy_wh", st["energy_wh"]),
            ("credit_total", money.format_decimal(st["credited"] + st["recovered"], dec)),
            ("price", money.format_price(st["price"], dec)),
            ("tariff_next_from", st["tariff_next_from"]),
            ("cmd_id", st["cmd_id"]),
            ("queued", st["queued"]),
            ("dropped", st["dropped"]),
            ("errors", st["errors"]),
            ("late_ms_max", st["late_ms_max"]),
            ("software", version.software_id()),
            ("mqtt_client", version.library(CLIENT)["version"]),
        ]
        tel = st["modem"] or {}
        for k in ("reg", "csq", "rssi_dbm", "resets", "drops"):
            if k in tel:
                pairs.append(("modem_" + k, tel[k]))
        return signed.sign(self.mac, signed.body(pairs))

    def _will(self):
        pairs = [("meter", self.meter_id), ("boot", self.app.boots), ("online", False)]
        return signed.sign(self.mac, signed.body(pairs))

    # -- incoming messages (called inside umqtt.simple's check_msg, before its PUBACK) ----

    def _on_message(self, topic, msg):
        try:
            if topic == self.t_topup:
                self._topup(msg)
            elif topic == self.t_cmd:
                self._cmd(msg)
            else:
                self.stats["strays"] += 1
        except MemoryError:
            raise
        except Exception as e:  # never out into umqtt: the stream must stay in step
            self.app.report_error("comms", e)

    def _topup(self, msg):
        self.stats["topups"] += 1
        data = bytes(msg)
        if len(data) == 2 * ENVELOPE_SIZE:
            data = parse_hex(data.decode()) if _ascii(data) else None
        if data is None or len(data) != ENVELOPE_SIZE:
            self._ack_token(None, rc.FORMAT, self.app.intake.refuse(rc.FORMAT))
            return
        r, balance = self.app.enter(data)
        self._ack_token(header(data)[3], r.code, balance)
        self.state_due = True

    def _ack_token(self, token_id, code, balance):
        name = "accepted" if rc.accepted(code) else rc.name(code)
        fields = (
            self.app.meter.clock.stamp(),
            ("token", token_id),
            ("result", name),
            ("code", code),
            ("balance", self._money(balance)),
        )
        self.outbox.put(ACK, fields)

    def _cmd(self, msg):
        self.stats["cmds"] += 1
        app = self.app
        try:
            obj = signed.verify(self.mac, bytes(msg))
        except ValueError as e:
            return self._ack_cmd(None, "mac", str(e))
        cid = obj.get("id")
        if not isinstance(cid, int) or isinstance(cid, bool) or not 0 < cid <= CMD_ID_MAX:
            return self._ack_cmd(
                None, "refused", "id: expected a whole number 1.." + str(CMD_ID_MAX)
            )
        if obj.get("meter") != self.meter_id:
            return self._ack_cmd(cid, "wrong_meter", None)
        if cid <= app.cmd_id:
            return self._ack_cmd(cid, "old", "command " + str(app.cmd_id) + " came before")
        error = None
        try:
            self._apply(obj)
        except ValueError as e:
            error = str(e)
        app.cmd_id = cid  # spent either way: it was genuine
        app.save()
        m = app.meter
        m.log.emit(m.clock.stamp(), ev.REMOTE_COMMAND, m.ledger.balance, cid)
        self._ack_cmd(cid, "refused" if error else "accepted", error)
        self.state_due = True

    def _apply(self, obj):
        op = obj.get("op")
        app = self.app
        extra = [k for k in obj if k not in _CMD_KEYS]
        if op == "tariff":
            t = obj.get("tariff")
            if t is None:
                raise ValueError("tariff: missing")
            frm = obj.get("from")
            if frm:
                app.change_settings({"tariff_next": t, "tariff_next_from": frm})
            else:
                app.change_settings({"tariff": t, "tariff_next": None, "tariff_next_from": ""})
        elif op == "thresholds":
            changes = {}
            for k in extra:
                if k not in THRESHOLDS:
                    raise ValueError(k + ": not a threshold")
                changes[k] = obj[k]
            if not changes:
                raise ValueError("thresholds: none given")
            app.change_settings(changes)
        elif op == "relay":
            action = obj.get("action")
            if action not in ("open", "close"):
                raise ValueError("action: expected open or close")
            app.meter.control.remote(action == "open")
            app.request_relay()
        elif op == "report":
            pass
        else:
            raise ValueError("op: unknown " + repr(op))

    def _ack_cmd(self, cid, result, error):
        fields = [self.app.meter.clock.stamp(), ("cmd", cid), ("result", result)]
        if error:
            fields.append(("error", error))
        self.outbox.put(ACK, tuple(fields))

    # -- the session ----------------------------------------------------------------------

    async def run(self):
        """Connect, serve, and after any failure connect again; never returns."""
        clk = self.clock
        self._stop = False
        while not self._stop:
            try:
                sock = await self.link.connect(self.host, self.port, self.open_timeout_ms)
            except Exception as e:  # the link has its own backoff; this is its deadline
                self._failed(e)
                await clk.sleep_ms(1000)
                continue
            try:
                await self._serve(sock)
            except Exception as e:
                self._failed(e)
            if self.session is not None:
                self.stats["strays"] += self.session.strays
                try:
                    await self.session.close(clean=self._stop)
                except Exception:
                    pass
                self.session = None
            if self.online:
                self.online = False
                self.stats["drops"] += 1
            if not self._stop:
                await clk.sleep_ms(1000)

    def stop(self):
        self._stop = True

    def _failed(self, e):
        self.stats["last_error"] = repr(e)

    async def _serve(self, sock):
        app = self.app
        clk = self.clock
        s = Session(sock, self.meter_id, self.keepalive_s, self._on_message, clk, self.timeout_ms)
        self.session = s
        if not app.boots_saved:
            app.save()  # this start's number is in the journal before any message
        await s.connect(self.t_state, self._will(), clean=False)
        await s.subscribe(self.t_topup, 1)
        await s.subscribe(self.t_cmd, 1)
        self.online = True
        self.stats["connects"] += 1
        self.state_due = True
        ka_ms = self.keepalive_s * 1000
        last_tx = clk.ticks_ms()
        while not self._stop:
            box = self.outbox
            while box:  # in order: a retried message keeps its seq, so it goes first
                item = box.head()
                if item.payload is None:
                    item.payload = self._payload(item)
                await s.publish(self._topic(item), item.payload, False, 1)
                box.done(item)
                last_tx = clk.ticks_ms()
            now = clk.ticks_ms()
            period = app.meter.settings.state_period_s * 1000
            if app.board.relay.closed is not self._relay_seen:  # the contacts moved
                self._relay_seen = app.board.relay.closed
                self.state_due = True
            if self.state_due or clk.ticks_diff(now, self._state_at) >= period:
                self.state_due = False
                self._state_at = now
                await s.publish(self.t_state, self.state(), True, 1)
                last_tx = clk.ticks_ms()
            now = clk.ticks_ms()
            if clk.ticks_diff(now, s.last_rx) > ka_ms + ka_ms // 2:
                raise MQTTError("timeout", "keepalive")
            if clk.ticks_diff(now, last_tx) >= ka_ms // 2:
                await s.ping()
                last_tx = clk.ticks_ms()
            if not (self.outbox or self.state_due):
                await s.poll(50)  # short: a relay move shows in the state at once


def _ascii(data):
    for b in data:
        if b < 0x20 or b > 0x7E:
            return False
    return True
