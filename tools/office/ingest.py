"""Ingest: a meter's message from the broker, verified and stored, and what it tells.

`<prefix>/<id>/ack|event|state` carry signed JSON (tools/vend/messages): the tag must
verify under the meter's key and (boot, seq) must be above the last accepted from that
meter (kept in meter_status, so it survives restarts); anything else is dropped and
counted, never stored. The broker's last will on the state topic carries no seq: it is
taken as a liveness note when its boot is not older than the last one seen.
`<prefix>/<id>/bridge` is the LoRaWAN bridge's unsigned note that it did not forward a
top-up: it only annotates that sale's delivery and raises a "bridge" alert.

What follows from a verified message:
  ack of a token  accepted or used -> the sale is delivered; another answer -> refused,
                  with a "refused" alert naming it
  event           relay_fault -> alert; console_session -> alert
  state           last seen, balance, relay, credit state, signal, software, credit_total;
                  tamper in open_reasons -> alert; then the meter is reconciled (a
                  delivery in between leaves it "pending" until the next state)
"""

import json
import logging

from sqlalchemy import select

from tools.office import money
from tools.office.alerts import clear_alert, raise_alert
from tools.office.keys import KeyError_
from tools.office.reconcile import reconcile_meter
from tools.office.schema import (
    DELIVERED,
    PENDING,
    REFUSED,
    Meter,
    MeterStatus,
    Message,
    Sale,
    utcnow,
)
from tools.vend import messages

log = logging.getLogger("office.ingest")

KINDS = ("ack", "event", "state", "bridge")
OPEN_TAMPER = 16  # the tamper bit of the meter's open_reasons (firmware/billing/policy.py)
EVENT_ALERTS = {"relay_fault": "relay_fault", "console_session": "console"}


class Ingest:
    def __init__(self, store, keys, prefix="meters"):
        self.store, self.keys, self.prefix = store, keys, prefix
        self.dropped = 0
        self.stored = 0

    def handle(self, topic, payload):
        """Take one message; True if it was stored, False if dropped (logged why)."""
        parts = topic.split("/")
        if len(parts) < 3 or "/".join(parts[:-2]) != self.prefix or parts[-1] not in KINDS:
            return self._drop(topic, "not a meter topic")
        mid, kind = parts[-2], parts[-1]
        with self.store.session() as s:
            m = s.get(Meter, mid)
            if m is None:
                return self._drop(topic, "unknown meter")
            if kind == "bridge":
                return self._bridge(s, m, payload)
            try:
                obj = messages.verify(self.keys.meter_key(m), payload)
            except KeyError_ as e:
                raise_alert(s, m.id, "key", str(e))
                return self._drop(topic, str(e))
            except ValueError as e:
                return self._drop(topic, str(e))
            if obj.get("meter") != m.id:
                return self._drop(topic, "signed for meter %r" % obj.get("meter"))
            st = s.get(MeterStatus, m.id)
            if st is None:
                st = MeterStatus(meter_id=m.id)
                s.add(st)
            why = _fresh(st, obj, kind)
            if why:
                return self._drop(topic, why)
            now = utcnow()
            s.add(
                Message(
                    meter_id=m.id,
                    kind=kind if "seq" in obj else "will",
                    boot=obj.get("boot"),
                    seq=obj.get("seq"),
                    received_at=now,
                    body=json.dumps(obj, sort_keys=True),
                )
            )
            st.last_seen = now
            clear_alert(s, m.id, "silent")
            if "seq" not in obj:  # the last will: offline; (boot, seq) unchanged
                st.online = False
            else:
                st.boot, st.seq = obj["boot"], obj["seq"]
                if kind == "ack":
                    self._ack(s, m, st, obj)
                elif kind == "event":
                    self._event(s, m, obj)
                else:
                    self._state(s, m, st, obj)
        self.stored += 1
        return True

    def _drop(self, topic, why):
        self.dropped += 1
        log.info("dropped a message on %s: %s", topic, why)
        return False

    def _ack(self, s, m, st, obj):
        token = obj.get("token")
        if type(token) is not int:
            return  # a command's ack, or a malformed top-up's: kept as a message only
        sale = s.scalars(select(Sale).where(Sale.meter_id == m.id, Sale.token_id == token)).first()
        if sale is None or sale.state != PENDING:
            return
        result = str(obj.get("result"))
        sale.result = result
        if result in ("accepted", "used"):
            sale.state = DELIVERED
            sale.delivered_at = utcnow()
            sale.delivery.last_error = None
            clear_alert(s, m.id, "bridge", sale.token_id)
            st.reconcile = "pending"  # until the meter's next state tells its credit total
        else:
            sale.state = REFUSED
            raise_alert(
                s,
                m.id,
                "refused",
                "meter refused token %d (sale %d): %s (code %s)"
                % (token, sale.id, result, obj.get("code")),
                sale.token_id,
            )

    def _event(self, s, m, obj):
        kind = EVENT_ALERTS.get(obj.get("event"))
        if kind:
            raise_alert(
                s,
                m.id,
                kind,
                "event %s at meter time %s (value %s)"
                % (obj.get("event"), obj.get("t"), obj.get("value")),
            )

    def _state(self, s, m, st, obj):
        d = m.currency_decimals
        st.state_at = utcnow()
        st.online = obj.get("online") is not False
        for name, attr in (
            ("relay", "relay"),
            ("credit_status", "credit_status"),
            ("control_state", "control_state"),
            ("software", "software"),
        ):
            if isinstance(obj.get(name), str):
                setattr(st, attr, obj[name][:64])
        if type(obj.get("open_reasons")) is int:
            st.open_reasons = obj["open_reasons"]
            if st.open_reasons & OPEN_TAMPER:
                raise_alert(
                    s,
                    m.id,
                    "tamper",
                    "the meter reports tamper (open reasons %d)" % st.open_reasons,
                )
            else:
                clear_alert(s, m.id, "tamper")
        for name in ("modem_rssi_dbm", "lora_rssi_dbm"):
            if type(obj.get(name)) is int:
                st.signal_dbm = obj[name]
        for name, attr in (("balance", "balance"), ("credit_total", "credit_total")):
            if name in obj:
                try:
                    setattr(st, attr, money.parse_signed(obj[name], d))
                except money.AmountError:
                    log.warning("meter %s: %s %r is not money", m.id, name, obj[name])
        reconcile_meter(s, m, st)

    def _bridge(self, s, m, payload):
        try:
            note = json.loads(bytes(payload).decode())
        except ValueError:
            return self._drop("bridge", "not JSON")
        token = note.get("token") if isinstance(note, dict) else None
        if type(token) is not int or not note.get("error"):
            return False
        sale = s.scalars(select(Sale).where(Sale.meter_id == m.id, Sale.token_id == token)).first()
        if sale is None:
            return False
        sale.delivery.last_error = "bridge: %s" % str(note["error"])[:500]
        raise_alert(
            s,
            m.id,
            "bridge",
            "the LoRaWAN bridge did not forward token %d: %s" % (token, note["error"]),
            token,
        )
        return True


def _fresh(st, obj, kind):
    """None if obj may be taken, else why not."""
    boot = obj.get("boot")
    if type(boot) is not int or boot < 0:
        return "no boot number"
    if "seq" not in obj:
        if kind != "state" or obj.get("online") is not False:
            return "no seq"
        if st.boot is not None and boot < st.boot:
            return "a last will of an earlier start"
        return None
    seq = obj["seq"]
    if type(seq) is not int or seq < 0:
        return "seq must be an integer >= 0"
    if st.boot is not None and st.seq is not None and (boot, seq) <= (st.boot, st.seq):
        return "replayed or already seen: (%d, %d) is not above (%d, %d)" % (
            boot,
            seq,
            st.boot,
            st.seq,
        )
    return None
