"""The office's delivery worker and ingest against a real mosquitto, with a stand-in meter
that signs its acks, events and states with the meter's key (tools/vend/messages, the
tag the firmware makes): re-sends of the same token with backoff until the signed ack,
refusals, forged and replayed messages dropped, reconciliation and alerts, the SMS
fallback through a recording sender, silence, and a LoRaWAN meter's compact token and
the bridge's note. The live firmware is in tests/test_host_office_e2e.py.
"""

import itertools
import json
import threading
import time

import paho.mqtt.client as paho
import pytest
from broker import broker_fixture  # noqa: F401  (the `broker` fixture)
from sqlalchemy import func, select

from tools.office.config import Config
from tools.office.keys import Keys
from tools.office.sales import add_meter, sell
from tools.office.schema import Alert, Message, MeterStatus, Sale
from tools.office.store import Store
from tools.office.worker import Worker, backoff_s
from tools.vend import core, messages

_ids = itertools.count(31000001)


class StandIn:
    """A meter's MQTT side: takes top-ups, answers with messages signed under its key."""

    def __init__(self, port, meter_id, key, boot=1):
        self.meter, self.key, self.boot, self.seq = meter_id, key, boot, 0
        self.topups = []
        c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="meter-" + meter_id)
        c.on_message = lambda cl, u, msg: self.topups.append(bytes(msg.payload))
        c.connect("127.0.0.1", port)
        c.loop_start()
        c.subscribe("meters/%s/topup" % meter_id, 1)
        self.client = c
        time.sleep(0.2)

    def say(self, kind, key=None, seq=None, **fields):
        if seq is None:
            self.seq += 1
            seq = self.seq
        obj = {"meter": self.meter, "boot": self.boot, "seq": seq, "t": 1000 + seq}
        obj.update(fields)
        payload = messages.sign(key or self.key, obj)
        self.client.publish("meters/%s/%s" % (self.meter, kind), payload, qos=1).wait_for_publish(
            5
        )
        return payload

    def close(self):
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def office(tmp_path, broker):
    ks = str(tmp_path / "vend.key")
    core.keygen(ks, decimals=2)
    url = "sqlite:///%s" % (tmp_path / "office.db")
    store = Store(url)
    store.migrate()
    keys = Keys(ks)
    made = []

    def start(**kw):
        cfg = Config(
            db_url=url, keystore=ks, mqtt_port=broker.port, client_id="office-%d" % next(_ids),
            resend_first_s=0.4, resend_max_s=1.0, poll_s=0.05,
            sms_sender="record:%s" % (tmp_path / "sms.jsonl"),
        )  # fmt: skip
        for k, v in kw.items():
            setattr(cfg, k, v)
        w = Worker(cfg, store=store, keys=keys)
        t = threading.Thread(target=w.run, daemon=True)
        t.start()
        made.append((w, t))
        return w, cfg

    yield store, keys, start, tmp_path
    for w, t in made:
        w.stop()
        t.join(10)
    store.dispose()


def _meter(store, keys, broker, **kw):
    mid = str(next(_ids))
    with store.session() as s:
        add_meter(s, keys, mid, **kw)
    key = core.meter_key(keys.vending_key, int(mid), 0)
    return mid, key, StandIn(broker.port, mid, key)


def _until(pred, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = pred()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError("condition not met in %g s" % timeout)


def _when(get, ok, timeout=10.0):
    """get()'s first value that satisfies ok."""
    box = []
    _until(lambda: ok(box.append(get()) or box[-1]), timeout)
    return box[-1]


def _sale(store, sale_id):
    with store.session() as s:
        x = s.get(Sale, sale_id)
        return x, x.delivery.attempts


def _alerts(store, meter, kind=None):
    with store.session() as s:
        q = select(Alert).where(Alert.meter_id == meter, Alert.cleared_at.is_(None))
        if kind:
            q = q.where(Alert.kind == kind)
        return s.scalars(q).all()


def test_backoff_doubles_to_its_ceiling():
    cfg = Config(resend_first_s=30, resend_max_s=3600)
    assert [backoff_s(cfg, n) for n in (1, 2, 3, 7, 8, 50)] == [30, 60, 120, 1920, 3600, 3600]


def test_a_sale_is_resent_unchanged_with_backoff_until_the_signed_ack(office, broker):
    store, keys, start, _ = office
    mid, key, meter = _meter(store, keys, broker)
    w, cfg = start()
    sale, _ = sell(store, keys, cfg, mid, "10.00", "api", "a")
    _until(lambda: len(meter.topups) >= 3)  # no answer: sent again and again
    assert len(set(meter.topups)) == 1  # the same bytes every time: the same token id
    info = core.decode_envelope(key, 0, int(mid), meter.topups[0])
    assert info["valid"] and info["token_id"] == sale.token_id and info["amount"] == 1000
    meter.say("ack", token=sale.token_id, result="accepted", code=0, balance="10.00")
    x, attempts = _when(lambda: _sale(store, sale.id), lambda r: r[0].state == "delivered")
    assert x.result == "accepted" and x.delivered_at is not None and attempts >= 3
    n = len(meter.topups)
    time.sleep(1.5)  # past the backoff ceiling: nothing more is sent
    assert len(meter.topups) == n
    meter.close()


def test_a_refused_token_needs_attention_and_names_the_reason(office, broker):
    store, keys, start, _ = office
    mid, key, meter = _meter(store, keys, broker)
    w, cfg = start()
    sale, _ = sell(store, keys, cfg, mid, "2.00", "api", "r")
    _until(lambda: meter.topups)
    meter.say("ack", token=sale.token_id, result="expired", code=6, balance="0.00")
    _until(lambda: _sale(store, sale.id)[0].state == "refused")
    (a,) = _alerts(store, mid, "refused")
    assert "expired" in a.detail and str(sale.token_id) in a.detail
    n = len(meter.topups)
    time.sleep(1.2)
    assert len(meter.topups) == n  # refused is final: not sent again
    meter.close()


def test_forged_replayed_and_foreign_messages_are_dropped(office, broker, tmp_path):
    store, keys, start, _ = office
    mid, key, meter = _meter(store, keys, broker)
    w, cfg = start()
    sale, _ = sell(store, keys, cfg, mid, "1.00", "api", "f")
    _until(lambda: meter.topups)
    other = core.meter_key(core.load_keystore(_other_keystore(tmp_path)), int(mid), 0)
    meter.say("ack", key=other, token=sale.token_id, result="accepted", code=0, balance="1.00")
    meter.client.publish("meters/%s/ack" % mid, b'{"meter":"%s","token":1}' % mid.encode(), qos=1)
    first = meter.say("state", online=True, balance="0.00", credit_total="0.00")
    _until(lambda: _count(store, Message) == 1)
    meter.client.publish("meters/%s/state" % mid, first, qos=1)  # a replay
    meter.say("ack", seq=1, token=sale.token_id, result="accepted", code=0, balance="1.00")
    time.sleep(0.8)
    assert _sale(store, sale.id)[0].state == "pending"
    assert _count(store, Message) == 1 and w.ingest.dropped >= 4
    meter.say("ack", token=sale.token_id, result="accepted", code=0, balance="1.00")
    _until(lambda: _sale(store, sale.id)[0].state == "delivered")
    meter.close()


def _other_keystore(tmp_path):
    p = str(tmp_path / "other.key")
    core.keygen(p, decimals=2)
    return p


def _count(store, table):
    with store.session() as s:
        return s.scalar(select(func.count()).select_from(table))


def _status(store, mid):
    with store.session() as s:
        return s.get(MeterStatus, mid)


def test_the_state_is_stored_and_reconciled_and_alerts_raise_and_clear(office, broker):
    store, keys, start, _ = office
    mid, key, meter = _meter(store, keys, broker, credit_base=500)
    w, cfg = start()
    sale, _ = sell(store, keys, cfg, mid, "10.00", "api", "s")
    _until(lambda: meter.topups)
    # credited by the meter, the ack not yet in: pending, not a mismatch
    meter.say("state", online=True, balance="15.00", relay="closed", credit_status="ok",
              control_state="connected", open_reasons=0, modem_rssi_dbm=-71, credit_total="15.00")  # fmt: skip
    st = _when(lambda: _status(store, mid), lambda x: x and x.reconcile == "pending")
    assert (st.balance, st.relay, st.signal_dbm, st.credit_total, st.online) == (
        1500,
        "closed",
        -71,
        1500,
        True,
    )
    meter.say("ack", token=sale.token_id, result="accepted", code=0, balance="15.00")
    meter.say("state", online=True, balance="-0.50", credit_total="15.00", open_reasons=0)
    st = _when(lambda: _status(store, mid), lambda x: x.reconcile == "ok")
    assert st.delivered_total == 1500 and st.balance == -50
    # credit the office never sold: a mismatch, raised once, cleared when it agrees again
    meter.say("state", online=True, balance="20.00", credit_total="20.00", open_reasons=16)
    _until(lambda: _alerts(store, mid, "mismatch"))
    meter.say("state", online=True, balance="20.00", credit_total="20.00", open_reasons=16)
    meter.say("event", event="relay_fault", balance="20.00", value=1)
    _until(lambda: _alerts(store, mid, "relay_fault"))
    assert len(_alerts(store, mid, "mismatch")) == 1
    assert "20.00" in _alerts(store, mid, "mismatch")[0].detail
    assert len(_alerts(store, mid, "tamper")) == 1
    meter.say("state", online=True, balance="15.00", credit_total="15.00", open_reasons=0)
    _until(lambda: not _alerts(store, mid, "mismatch") and not _alerts(store, mid, "tamper"))
    meter.say("event", event="console_session", balance="15.00", value=0)
    _until(lambda: _alerts(store, mid, "console"))
    # the broker's last will: no seq, a liveness note
    meter.client.publish("meters/%s/state" % mid,
                         messages.sign(key, {"meter": mid, "boot": 1, "online": False}), qos=1)  # fmt: skip
    _until(lambda: _status(store, mid).online is False)
    assert _status(store, mid).seq == meter.seq
    meter.close()


def test_unanswered_for_long_the_customer_gets_the_compact_token_by_sms_once(office, broker):
    store, keys, start, tmp_path = office
    mid, key, meter = _meter(store, keys, broker, customer=("Amina", "+254700000042"))
    nophone, _, m2 = _meter(store, keys, broker)
    w, cfg = start(sms_after_s=0.6)
    sale, _ = sell(store, keys, cfg, mid, "10.00", "api", "sms")
    sale2, _ = sell(store, keys, cfg, nophone, "10.00", "api", "sms2")
    path = tmp_path / "sms.jsonl"
    _until(lambda: path.exists() and path.read_text())
    _until(lambda: _alerts(store, nophone, "sms"))
    time.sleep(1.0)
    (sms,) = [json.loads(line) for line in path.read_text().splitlines()]
    assert sms["phone"] == "+254700000042"
    digits = "".join(ch for ch in sms["text"].split("token ")[1].split(" (")[0] if ch.isdigit())
    assert digits == sale.compact
    info = core.decode_compact(key, digits)
    assert info["valid"] and info["token_id"] == sale.token_id and info["amount"] == 1000
    x, _ = _sale(store, sale.id)
    assert x.sms_sent_at is not None and x.state == "pending"  # still re-sent until answered
    assert "no customer phone" in _alerts(store, nophone, "sms")[0].detail
    meter.close()
    m2.close()


def test_a_silent_meter_raises_an_alert_that_its_next_message_clears(office, broker):
    store, keys, start, _ = office
    mid, key, meter = _meter(store, keys, broker)
    w, cfg = start(silence_s=0.5)
    _until(lambda: _alerts(store, mid, "silent"), timeout=15)
    meter.say("state", online=True, balance="0.00", credit_total="0.00")
    _until(lambda: not _alerts(store, mid, "silent"))
    meter.close()


def test_a_lorawan_meter_gets_its_compact_token_and_the_bridge_note_is_kept(office, broker):
    store, keys, start, _ = office
    mid, key, meter = _meter(store, keys, broker, transport="lorawan")
    w, cfg = start()
    sale, _ = sell(store, keys, cfg, mid, "5.00", "api", "lora")
    _until(lambda: meter.topups)
    assert meter.topups[0] == sale.compact.encode()
    note = {"token": sale.token_id, "error": "the meter's downlink is full"}
    meter.client.publish("meters/%s/bridge" % mid, json.dumps(note), qos=1)
    _until(lambda: _alerts(store, mid, "bridge"))
    _until(lambda: "downlink is full" in (_sale(store, sale.id)[0].delivery.last_error or ""))
    meter.say("ack", token=sale.token_id, result="used", code=2, balance="5.00")
    _until(lambda: _sale(store, sale.id)[0].state == "delivered")
    assert not _alerts(store, mid, "bridge")
    meter.close()
