"""The delivery worker: one MQTT session (persistent, client id `client_id`) that sends
every pending sale to its meter and takes the meters' messages in (tools/office/ingest.py).

Delivery rules (docs/office.md, "Delivery"):
- a pending sale is published to `<prefix>/<id>/topup` at QoS 1: its envelope (MQTT
  meters) or its 20 digits (LoRaWAN meters, through tools/bridge), the very bytes minted
  with the sale, so every re-send carries the same token id;
- unanswered, it is sent again after resend_first_s, then doubling up to resend_max_s,
  until the meter's signed ack: accepted or used -> delivered, a refusal -> refused;
- unanswered sms_after_s after the sale, the customer is sent the compact token (same id)
  by SMS once; whichever reaches the meter first credits, the other answers `used`;
- the attempt is recorded after the broker's PUBACK: a worker killed in between sends it
  again when it starts, which the meter answers `used` (a token id is credited once).
"""

import datetime
import logging
import threading
import time

from sqlalchemy import select

from tools.office import money
from tools.office.alerts import raise_alert
from tools.office.ingest import Ingest
from tools.office.keys import Keys
from tools.office.schema import ACTIVE, PENDING, Delivery, Meter, MeterStatus, Sale, utcnow
from tools.office.sms import sender_of, token_text
from tools.office.store import Store
from tools.vend import mqtt

log = logging.getLogger("office.worker")
BATCH = 50
SILENCE_EVERY_S = 5.0
WAKE_S = 0.02  # how often a wait for messages looks at wake()


def backoff_s(cfg, attempts):
    """Seconds from the attempt-th send to the next (attempts >= 1)."""
    return min(cfg.resend_first_s * 2 ** min(attempts - 1, 30), cfg.resend_max_s)


class Worker:
    def __init__(self, cfg, store=None, keys=None, sender=None):
        self.cfg = cfg
        self.store = store or Store(cfg.db_url)
        self.keys = keys or Keys(cfg.keystore)
        self.sender = sender or sender_of(cfg.sms_sender)
        self.ingest = Ingest(self.store, self.keys, cfg.topic_prefix)
        self.stop_event = threading.Event()
        self._wake = threading.Event()
        self.link = None
        self.sent = 0
        self._silence_at = 0.0

    def stop(self):
        self.stop_event.set()

    def run(self):
        """Connect, work, reconnect after a failure; until stop()."""
        while not self.stop_event.is_set():
            try:
                self._connect()
                while not self.stop_event.is_set():
                    self.step()
            except mqtt.MqttError as e:
                log.warning("MQTT: %s; connecting again in 1 s", e)
            except Exception:
                log.exception("worker step failed; going on in 1 s")
            finally:
                self._close()
            self.stop_event.wait(1.0)

    def _connect(self):
        c = self.cfg
        link = mqtt.Link(
            c.mqtt_host, c.mqtt_port, timeout=10, client_id=c.client_id, log=log.info, clean=False
        )
        link.connect()
        self.link = link
        for kind in ("ack", "event", "state", "bridge"):
            link.subscribe("%s/+/%s" % (c.topic_prefix, kind), 1)

    def _close(self):
        if self.link is not None:
            self.link.close()
            self.link = None

    def _filters(self):
        return [
            "%s/+/%s" % (self.cfg.topic_prefix, k) for k in ("ack", "event", "state", "bridge")
        ]

    def step(self):
        """Take what arrived (up to poll_s), send what is due, run the fallbacks."""
        self.drain(self.cfg.poll_s)
        self.deliver_due()
        self.fallback_due()
        if time.monotonic() - self._silence_at >= SILENCE_EVERY_S:
            self._silence_at = time.monotonic()
            self.check_silence()

    def wake(self):
        """A sale was just recorded (the API in this process): send it without waiting."""
        self._wake.set()

    def drain(self, wait_s):
        """Ingest every message waiting, waiting up to wait_s for the first (less when
        wake() is called meanwhile)."""
        filters = self._filters()
        end = time.monotonic() + wait_s
        while True:
            left = end - time.monotonic()
            if self._wake.is_set() or left <= 0:
                self._wake.clear()
                return
            try:
                t, p = self.link.wait_message(filters, lambda t, p: (t, p), min(left, WAKE_S))
            except mqtt.Timeout:
                continue
            try:
                self.ingest.handle(t, p)
            except Exception:
                log.exception("ingest of a message on %s failed", t)
            end = min(end, time.monotonic() + 0.001)

    def deliver_due(self):
        now = utcnow()
        with self.store.session() as s:
            rows = s.execute(
                select(Sale.id, Sale.meter_id, Sale.format, Sale.token, Delivery.attempts)
                .join(Delivery, Delivery.sale_id == Sale.id)
                .where(Sale.state == PENDING, Delivery.next_attempt_at <= now)
                .order_by(Delivery.next_attempt_at, Sale.id)
                .limit(BATCH)
            ).all()
        for sale_id, meter_id, fmt, token, attempts in rows:
            payload = bytes.fromhex(token) if fmt == "envelope" else token.encode()
            topic = mqtt.topic(meter_id, "topup", self.cfg.topic_prefix)
            try:
                self.link.publish(topic, payload, 1, False)
            except mqtt.MqttError as e:
                self._record(sale_id, attempts, str(e), sent=False)
                raise
            self._record(sale_id, attempts + 1, None, sent=True)
            self.sent += 1

    def _record(self, sale_id, attempts, error, sent):
        now = utcnow()
        with self.store.session() as s:
            d = s.get(Delivery, sale_id)
            if sent:
                d.attempts = attempts
                d.last_attempt_at = now
                d.next_attempt_at = now + datetime.timedelta(seconds=backoff_s(self.cfg, attempts))
            if error or not d.last_error or not d.last_error.startswith("bridge"):
                d.last_error = error

    def fallback_due(self):
        """The SMS fallback of sales unanswered for sms_after_s."""
        limit = utcnow() - datetime.timedelta(seconds=self.cfg.sms_after_s)
        with self.store.session() as s:
            sales = s.scalars(
                select(Sale)
                .where(Sale.state == PENDING, Sale.fallback_at.is_(None), Sale.created_at <= limit)
                .order_by(Sale.id)
                .limit(BATCH)
            ).all()
            for sale in sales:
                self._fallback(s, sale)

    def _fallback(self, s, sale):
        sale.fallback_at = utcnow()
        m = sale.meter
        customer = sale.payment.customer or m.customer
        why = None
        if sale.compact is None:
            why = "no compact token (the amount or the token id does not fit one)"
        elif customer is None or not customer.phone:
            why = "no customer phone"
        if why is None:
            text = token_text(
                m.id, money.text(sale.amount, m.currency_decimals), sale.compact, sale.token_id
            )
            try:
                self.sender.send(customer.phone, text)
                sale.sms_sent_at = sale.fallback_at
                return
            except Exception as e:
                why = "the SMS sender failed: %s" % e
        raise_alert(
            s,
            m.id,
            "sms",
            "sale %d (token %d) unanswered, no SMS: %s" % (sale.id, sale.token_id, why),
            sale.token_id,
        )

    def check_silence(self):
        limit = utcnow() - datetime.timedelta(seconds=self.cfg.silence_s)
        with self.store.session() as s:
            q = (
                select(Meter, MeterStatus)
                .outerjoin(MeterStatus, MeterStatus.meter_id == Meter.id)
                .where(Meter.state == ACTIVE)
            )
            for m, st in s.execute(q).all():
                seen = st.last_seen if st is not None and st.last_seen else None
                if (seen or m.created_at) <= limit:
                    raise_alert(
                        s,
                        m.id,
                        "silent",
                        "no verified message since %s"
                        % ((seen.isoformat(timespec="seconds") + "Z") if seen else "it was added"),
                    )
