"""End to end over MQTT: a real mosquitto on 127.0.0.1, the firmware under `micropython`
on the simulated board in real time with the cellular modem model (real TCP), and the
back office's side made with tools/vend (paho-mqtt, `cryptography`, standard hmac).

What a utility would check before trusting remote top-ups: `vend send` tops up a
disconnected meter, which credits, closes the relay and acks; redelivered and replayed
top-ups never credit twice; every message the meter sends verifies under its key and
is numbered; signed commands change the tariff, thresholds and relay, forged or
replayed ones do nothing; under each modem fault the meter keeps metering and cuts the
supply on its own, then catches up when the link returns; the loop never stalls longer
than one tick.
"""

import json
import os
import subprocess
import sys
import time

import paho.mqtt.client as paho
import pytest
from broker import broker_fixture  # noqa: F401  (the `broker` fixture)

from tools.sim.live_host import LiveMeter
from tools.vend import core, messages

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TICK_MS = 100
# 10 kW at 360.0000 a kWh costs 1.00 a second: outages show in the balance at once.
FAST = {"tariff": {"type": "flat", "price_per_kwh": "360.0000"}, "low_credit": "1.00"}
WATTS = 10000


@pytest.fixture
def keystore(tmp_path):
    path = str(tmp_path / "vend.key")
    core.keygen(path, decimals=2)
    return path, core.load_keystore(path)


def _vend(*args, timeout=60):
    return subprocess.run(
        [sys.executable, "-m", "tools.vend", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _send(ks, meter_id, port, amount, token_id, timeout=20):
    r = _vend(
        "send",
        "--key",
        ks,
        "--meter-id",
        meter_id,
        "--amount",
        amount,
        "--token-id",
        str(token_id),
        "--port",
        str(port),
        "--timeout",
        str(timeout),
        "--json",
    )
    return r.returncode, (json.loads(r.stdout) if r.stdout.strip() else None), r.stderr


class Watcher:
    """The back office's subscription: every message of the meter, verified in order."""

    def __init__(self, port, meter, meter_key):
        self.key = meter_key
        self.meter = meter
        self.got = []  # (kind, object) in arrival order
        self.bad = []
        c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="backoffice-" + meter)
        c.on_message = self._on
        c.connect("127.0.0.1", port)
        c.loop_start()
        c.subscribe("meters/%s/#" % meter, 1)
        self.client = c
        time.sleep(0.2)

    def publish(self, kind, payload):
        info = self.client.publish("meters/%s/%s" % (self.meter, kind), payload, qos=1)
        info.wait_for_publish(10)

    def _on(self, client, userdata, msg):
        kind = msg.topic.rsplit("/", 1)[1]
        if kind in ("topup", "cmd"):
            return
        try:
            self.got.append((kind, messages.verify(self.key, msg.payload)))
        except ValueError as e:
            self.bad.append((kind, str(e), msg.payload))

    def of(self, kind):
        return [o for k, o in list(self.got) if k == kind]

    def wait(self, pred, timeout=20):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            found = [o for k, o in list(self.got) if pred(k, o)]
            if found:
                return found[-1]
            time.sleep(0.02)
        raise AssertionError("no such message; got %r" % self.got[-10:])

    def close(self):
        self.client.loop_stop()
        self.client.disconnect()


_ids = iter(range(20000001, 20001000))


def _meter(tmp_path, broker, ks, **kw):
    """A meter of its own id: the broker (one per module) keeps retained states."""
    kw.setdefault("tick_ms", TICK_MS)
    return LiveMeter(str(tmp_path / "meter"), broker.port, ks[1], str(next(_ids)), **kw)


def _sequenced(objs):
    """(boot, seq) strictly increasing: what the back office's freshness check needs."""
    keys = [(o["boot"], o["seq"]) for o in objs if "seq" in o]
    return keys == sorted(keys) and len(set(keys)) == len(keys)


@pytest.mark.parametrize("modem", ["simcom", "quectel"])
def test_vend_send_tops_up_a_disconnected_meter_which_closes_its_relay_and_acks(
    tmp_path, broker, keystore, modem
):
    with _meter(tmp_path, broker, keystore, watts=2000, settings={"modem": modem}) as m:
        w = Watcher(broker.port, m.meter_id, m.key)
        st = m.wait(lambda s: s["online"])
        assert st["control_state"] == "disconnected" and st["relay"] is False
        code, ack, err = _send(keystore[0], m.meter_id, broker.port, "10.00", 41)
        assert code == 0, err
        assert ack["result"] == "accepted" and ack["token"] == 41 and ack["balance"] == "10.00"
        st = m.wait(lambda s: s["relay"] is True, timeout=5)
        assert st["credited"] == 1000 and st["control_state"] == "connected"
        state = w.wait(lambda k, o: k == "state" and o.get("relay") == "closed")
        assert state["credit_status"] == "in_credit" and state["online"] is True
        # run from the tree: no version.json, so no built identity to claim
        assert state["software"] == "unreleased" and state["mqtt_client"] == "unknown"
        assert [o["event"] for o in w.of("event")][-2:] == ["topup", "reconnect"]
        final = m.stop()
        w.close()
    assert not w.bad
    assert _sequenced([o for _, o in w.got])
    assert final["late_ms_max"] < TICK_MS, final["late_ms_max"]


def test_redelivered_and_replayed_topups_credit_once_and_answer_used(tmp_path, broker, keystore):
    with _meter(tmp_path, broker, keystore) as m:
        w = Watcher(broker.port, m.meter_id, m.key)
        m.wait(lambda s: s["online"])
        env = core.envelope(m.key, 0, m.meter_id, 9, core.stamp_now(), 0, "credit", 500)
        for _ in range(3):  # the same PUBLISH three times, as a broker redelivering does
            w.publish("topup", env)
        w.publish("topup", env.hex().encode())  # as hex
        w.wait(lambda k, o: k == "ack" and len(w.of("ack")) >= 4)
        results = [(a["token"], a["result"]) for a in w.of("ack")]
        assert results == [(9, "accepted"), (9, "used"), (9, "used"), (9, "used")]
        st = m.status()
        assert st["credited"] == 500
        # a keypad token over MQTT is refused (format) and spends no lock-out
        w.publish("topup", b"12345678901234567890")
        ack = w.wait(lambda k, o: k == "ack" and o["token"] is None)
        assert ack["result"] == "format" and ack["code"] == 6
        # after a restart of the meter the token is still spent
        m.stop()
        m.start()
        m.wait(lambda s: s["online"])
        w.publish("topup", env)
        ack = w.wait(lambda k, o: k == "ack" and o["boot"] == 2)
        assert ack["result"] == "used"
        assert m.status()["credited"] == 500
        w.close()
    assert not w.bad and _sequenced([o for _, o in w.got])


def test_topups_sent_while_the_meter_is_offline_wait_at_the_broker(tmp_path, broker, keystore):
    with _meter(tmp_path, broker, keystore) as m:
        w = Watcher(broker.port, m.meter_id, m.key)
        m.wait(lambda s: s["online"] and s["comms"]["connects"] == 1)
        m.fault("mute")  # the modem stops answering: the meter goes offline
        m.wait(lambda s: not s["online"], timeout=20)
        env = core.envelope(m.key, 0, m.meter_id, 77, core.stamp_now(), 0, "credit", 2500)
        w.publish("topup", env)
        time.sleep(1.0)
        assert m.status()["credited"] == 0
        m.fault("mute", on=False)
        # delivered by the broker when the session resumes (a second connect)
        m.wait(lambda s: s["credited"] == 2500 and s["comms"]["connects"] >= 2, timeout=40)
        ack = w.wait(lambda k, o: k == "ack" and o["token"] == 77, timeout=20)
        assert ack["result"] == "accepted"
        w.close()


# name: (actions that make the fault, actions that clear it), each (fault, arguments).
FAULTS = {
    "drop_link": ([("drop_link", {})], []),
    "reboot": ([("reboot", {})], []),
    "mute": ([("mute", {"on": True})], [("mute", {"on": False})]),
    "reg": ([("reg", {"stat": 0})], [("reg", {"stat": 1})]),
    "garbage": ([("garbage", {})], []),
    "slow": ([("slow", {"ms": 400})], [("slow", {"ms": 0})]),
    # the SIM is gone and the modem restarts: every bring-up finds no SIM until it is back
    "sim": ([("sim", {"state": "absent"}), ("reboot", {})], [("sim", {"state": "ready"})]),
    # the modem reboots halfway through the payload of the next AT+CIPSEND: armed once
    # the low-credit event is through, that send carries the disconnect event
    "reboot_on_send": ([("reboot_on_send", {"on": True})], []),
}
ARMED_AFTER = {"reboot_on_send": "low_credit"}
# the TCP connection dies without a DISCONNECT: the broker publishes the last will
WILL = ("drop_link", "reboot", "sim", "reboot_on_send")


def _while_faulty(m, fault):
    """What each fault must have done to the modem before it is cleared."""
    if fault == "sim":
        st = m.wait(lambda s: s["modem"]["last_error"] == "no_sim", timeout=10)
        assert not st["online"] and st["modem_model"]["reboots"] == 1
    elif fault == "reboot_on_send":
        m.wait(lambda s: s["modem"]["resets"] == 1 and s["comms"]["drops"] == 1, timeout=10)
        assert m.status()["modem_model"]["reboots"] == 1


@pytest.mark.parametrize("fault", list(FAULTS))
def test_under_each_modem_fault_the_meter_meters_cuts_and_catches_up(
    tmp_path, broker, keystore, fault
):
    actions, clears = FAULTS[fault]
    settings = dict(FAST)
    with _meter(tmp_path, broker, keystore, watts=WATTS, settings=settings) as m:
        w = Watcher(broker.port, m.meter_id, m.key)
        m.wait(lambda s: s["online"])
        code, ack, err = _send(keystore[0], m.meter_id, broker.port, "4.00", 1)
        assert code == 0, err
        m.wait(lambda s: s["relay"] is True, timeout=5)
        if fault in ARMED_AFTER:
            w.wait(lambda k, o: k == "event" and o["event"] == ARMED_AFTER[fault], timeout=10)
        before = m.status()
        for name, args in actions:
            m.fault(name, **args)
        # offline or not, the meter bills and cuts the supply on its own
        st = m.wait(lambda s: s["control_state"] == "disconnected" and not s["relay"], timeout=15)
        assert st["balance_units"] <= 0
        assert st["ticks"] > before["ticks"]
        _while_faulty(m, fault)
        for name, args in clears:
            m.fault(name, **args)
        # catching up: online again, the disconnect event and a fresh state delivered
        m.wait(lambda s: s["online"] and s["queued"] == 0, timeout=40)
        w.wait(lambda k, o: k == "event" and o["event"] == "disconnect", timeout=20)
        w.wait(lambda k, o: k == "state" and o.get("relay") == "open", timeout=20)
        # a message cut off by the fault is sent again whole, once, under its first number
        assert [o["boot"] for o in w.of("event") if o["event"] == "disconnect"] == [1]
        if fault in WILL:
            will = w.wait(lambda k, o: k == "state" and o["online"] is False)
            assert "seq" not in will and "balance" not in will
        if fault in ARMED_AFTER:  # the cut message reached the broker only after the will
            got = list(w.got)
            cut = [i for i, (k, o) in enumerate(got) if o.get("event") == "disconnect"]
            assert got.index(("state", will)) < cut[0]
        code, ack, err = _send(keystore[0], m.meter_id, broker.port, "5.00", 2, timeout=30)
        assert code == 0, err
        m.wait(lambda s: s["relay"] is True, timeout=5)
        final = m.stop()
        w.close()
    assert final["credited"] == 900
    assert not w.bad and _sequenced([o for _, o in w.got])
    assert final["late_ms_max"] < TICK_MS, final["late_ms_max"]


def _cmd(w, m, cmd_id, op, **fields):
    payload = messages.make_cmd(m.key, m.meter_id, cmd_id, op, **fields)
    w.publish("cmd", payload)
    return w.wait(lambda k, o: k == "ack" and o.get("cmd") == cmd_id)


def test_signed_commands_change_tariff_thresholds_and_relay(tmp_path, broker, keystore):
    with _meter(tmp_path, broker, keystore, watts=100) as m:
        w = Watcher(broker.port, m.meter_id, m.key)
        m.wait(lambda s: s["online"])
        assert _send(keystore[0], m.meter_id, broker.port, "50.00", 3)[0] == 0
        m.wait(lambda s: s["relay"] is True, timeout=5)
        assert _cmd(w, m, 1, "relay", action="open")["result"] == "accepted"
        st = m.wait(lambda s: s["relay"] is False, timeout=5)
        assert st["open_reasons"] & 8  # remote
        assert _cmd(w, m, 2, "relay", action="close")["result"] == "accepted"
        m.wait(lambda s: s["relay"] is True, timeout=5)
        assert (
            _cmd(w, m, 3, "tariff", tariff={"type": "flat", "price_per_kwh": "0.3000"})["result"]
            == "accepted"
        )
        assert m.status()["price"] == 3000
        # a passive tariff with an activation time a few seconds ahead (meter local time)
        st = m.status()
        ack = _cmd(
            w,
            m,
            4,
            "tariff",
            tariff={"type": "flat", "price_per_kwh": "0.4000"},
            **{"from": "2026-11-25T10:00:05"},
        )
        assert ack["result"] == "accepted"
        m.wait(lambda s: s["price"] == 4000, timeout=15)
        w.wait(lambda k, o: k == "event" and o["event"] == "tariff_activated")
        ack = _cmd(w, m, 5, "thresholds", low_credit="3.00", max_power_w=5000)
        assert ack["result"] == "accepted"
        st = m.status()
        assert st["settings"]["low_credit"] == "3.00" and st["settings"]["max_power_w"] == 5000
        # refused content: the id is spent, nothing changes, the reason is in the ack
        ack = _cmd(w, m, 6, "thresholds", low_credit="0.50")
        assert ack["result"] == "refused" and "low_credit" in ack["error"]
        assert m.status()["settings"]["low_credit"] == "3.00"
        # replay of an applied command: old
        payload = messages.make_cmd(m.key, m.meter_id, 1, "relay", action="open")
        w.publish("cmd", payload)
        assert w.wait(lambda k, o: k == "ack" and o.get("cmd") == 1 and o["result"] == "old")
        # forged: signed with another key
        other = core.meter_key(bytes(32), m.meter_id, 0)
        forged = messages.make_cmd(other, m.meter_id, 99, "relay", action="open")
        w.publish("cmd", forged)
        assert w.wait(lambda k, o: k == "ack" and o.get("result") == "mac")
        # an id the journal's cmd_id cannot hold (struct would keep 7 of 2**64 + 7, and
        # commands 8.. would apply again after a restart): refused, nothing applied
        huge = messages.make_cmd(m.key, m.meter_id, 2**64 + 7, "relay", action="open")
        w.publish("cmd", huge)
        assert w.wait(
            lambda k, o: k == "ack" and o["result"] == "refused" and "id" in o.get("error", "")
        )
        st = m.status()
        assert st["relay"] is True and st["cmd_id"] == 6
        # settings survive a restart (settings file), so does the command memory
        m.stop()
        m.start()
        st = m.wait(lambda s: s["online"])
        assert st["cmd_id"] == 6 and st["price"] == 4000
        assert st["settings"]["low_credit"] == "3.00"
        w.close()
    assert not w.bad


def test_after_a_key_change_over_mqtt_messages_and_commands_use_the_new_key(
    tmp_path, broker, keystore
):
    vk = keystore[1]
    with _meter(tmp_path, broker, keystore) as m:
        m.wait(lambda s: s["online"])
        new = core.meter_key(vk, m.meter_id, 1)
        w = Watcher(broker.port, m.meter_id, new)  # the back office moves to revision 1
        material = core.key_material(vk, m.meter_id, 1)
        env = core.envelope(
            m.key, 0, m.meter_id, 5, core.stamp_now(), 0, "key_change_1", 0, 255, material
        )
        w.publish("topup", env)
        ack = w.wait(lambda k, o: k == "ack" and o.get("token") == 5)
        assert ack["result"] == "accepted" and ack["code"] == 3  # KCT2: the key changed
        # a command signed with the new key is taken; one under the old key is not
        w.publish("cmd", messages.make_cmd(m.key, m.meter_id, 1, "report"))
        assert w.wait(lambda k, o: k == "ack" and o.get("result") == "mac")["cmd"] is None
        w.publish("cmd", messages.make_cmd(new, m.meter_id, 2, "report"))
        assert w.wait(lambda k, o: k == "ack" and o.get("cmd") == 2)["result"] == "accepted"
        # and so after a restart (the new key file)
        m.stop()
        m.start()
        m.wait(lambda s: s["online"])
        w.publish("cmd", messages.make_cmd(new, m.meter_id, 3, "report"))
        assert w.wait(lambda k, o: k == "ack" and o.get("cmd") == 3)["result"] == "accepted"
        w.close()
    # only what was signed before the change (the retained state) needs the old key
    before = [messages.verify(m.key, p) for _, _, p in w.bad]
    assert all(o["boot"] == 1 and o["seq"] < ack["seq"] for o in before)
    assert _sequenced([o for _, o in w.got])
