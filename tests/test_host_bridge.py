"""CPython only: the LoRaWAN bridge (tools/bridge) against a real mosquitto.

A top-up on meters/<id>/topup becomes the ChirpStack v4 or The Things Stack v3 downlink
(compact token as 9 bytes; envelope when the DR carries it; refused on meters/<id>/bridge
when it cannot fit); uplinks signed by firmware/comms/lora/payload.py's Uplinks (as the meter
makes them) come out as signed acks, events and state that tools/vend/messages.py
verifies, the ack carrying the full token id; forged and replayed uplinks are dropped and
counted; `vend send --format compact` goes through the bridge to a fake LoRaWAN meter.
"""

import base64
import json
import queue
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from broker import Broker, broker_fixture, free_port  # noqa: F401 - the fixture `broker`
from firmware.tokens import keys as fkeys
from firmware.comms.lora import payload as lp
from firmware.tokens import codes as rc
from tools.bridge import config as bconfig
from tools.bridge import mapping, service
from tools.vend import core, messages

ROOT = Path(__file__).resolve().parent.parent
APP = "6d2e1e5c-2b0a-4f0e-9d7e-0a1b2c3d4e5f"
CS_DR0, CS_DR3, TTS_US = 31001, 31002, 31003
EUI = {CS_DR0: "70B3D57ED0000A01", CS_DR3: "70B3D57ED0000A02", TTS_US: "70B3D57ED0000A03"}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("bridge") / "ks.json"
    core.keygen(str(path), decimals=2)
    return path


def make_config(broker, store, state=None, client_id=None):
    doc = {
        "keystore": str(store),
        "client_id": client_id or "bridge-" + secrets.token_hex(4),
        "broker": {"host": broker.host, "port": broker.port},
        "meters": {
            str(CS_DR0): {"network": "chirpstack", "application_id": APP,
                          "dev_eui": EUI[CS_DR0], "region": "EU868", "dr": 0},
            str(CS_DR3): {"network": "chirpstack", "application_id": APP,
                          "dev_eui": EUI[CS_DR3], "region": "EU868", "dr": 3},
            str(TTS_US): {"network": "tts", "application_id": "meters", "tenant": "acme",
                          "device_id": "meter-3", "dev_eui": EUI[TTS_US], "region": "US915",
                          "priority": "HIGH"},
        },
    }  # fmt: skip
    if state:
        doc["state"] = str(state)
    return bconfig.Config(doc)


class Listener:
    """A paho client recording every message on its filters: (topic, payload, retain)."""

    def __init__(self, broker, *filters, retained=True):
        self.q = queue.Queue()
        ready = threading.Event()
        self.c = paho.Client(CallbackAPIVersion.VERSION2, client_id="l-" + secrets.token_hex(4))
        self.c.on_connect = lambda c, *a: c.subscribe([(f, 1) for f in filters])
        self.c.on_subscribe = lambda *a: ready.set()
        self.c.on_message = lambda c, u, m: (
            self.q.put((m.topic, bytes(m.payload), m.retain)) if retained or not m.retain else None
        )
        self.c.connect(broker.host, broker.port)
        self.c.loop_start()
        assert ready.wait(10)

    def publish(self, topic, payload, qos=1):
        self.c.publish(topic, payload, qos=qos).wait_for_publish(10)

    def get(self, timeout=10):
        return self.q.get(timeout=timeout)

    def none(self, wait=0.7):
        try:
            got = self.q.get(timeout=wait)
        except queue.Empty:
            return True
        raise AssertionError("unexpected message %r" % (got,))

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


@pytest.fixture
def world(broker, store):
    lines = []
    b = service.Bridge(make_config(broker, store), log=lines.append).start()
    ns = Listener(broker, "application/+/device/+/command/down", "v3/+/devices/+/down/push")
    bo = Listener(
        broker, "meters/+/ack", "meters/+/event", "meters/+/state", "meters/+/bridge",
        retained=False,
    )  # fmt: skip
    vk = core.load_keystore(str(store))
    yield b, ns, bo, vk, lines
    ns.close()
    bo.close()
    b.stop()


def meter_uplinks(vk, meter_id, boot):
    """The meter's own signer (firmware/comms/lora/payload.py) under its firmware key."""
    key = fkeys.MeterKey(fkeys.derive_meter_key(vk, meter_id))
    return lp.Uplinks(key.msg_mac(), fkeys.meter_id_bytes(meter_id), boot)


def cs_uplink(meter_id, data, port=lp.UPLINK_PORT, fcnt=1):
    eui = EUI[meter_id].lower()
    topic = "application/%s/device/%s/event/up" % (APP, eui)
    obj = {
        "deduplicationId": "3ac7e3c4-4401-4b8d-9386-a5c902f9202d",
        "time": "2026-12-01T10:00:00.123456789+00:00",
        "deviceInfo": {"tenantId": "t", "applicationId": APP, "deviceName": "m",
                       "devEui": eui, "tags": {}},
        "devAddr": "00189440", "dr": 0, "fCnt": fcnt, "fPort": port,
        "data": base64.b64encode(data).decode(),
        "rxInfo": [{"gatewayId": "0016c001f153a14c", "rssi": -87, "snr": 7.5}],
        "txInfo": {"frequency": 868100000, "modulation": {"lora": {"spreadingFactor": 12}}},
    }  # fmt: skip
    return topic, json.dumps(obj).encode()


def tts_uplink(data, port=lp.UPLINK_PORT):
    topic = "v3/meters@acme/devices/meter-3/up"
    obj = {
        "end_device_ids": {"device_id": "meter-3", "application_ids": {"application_id": "meters"},
                           "dev_eui": EUI[TTS_US]},
        "received_at": "2026-12-01T10:00:01.5Z",
        "uplink_message": {"f_port": port, "f_cnt": 4, "frm_payload": base64.b64encode(data).decode(),
                           "rx_metadata": [{"gateway_ids": {"gateway_id": "gw"}, "rssi": -101,
                                            "snr": -3.25}],
                           "settings": {"data_rate": {"lora": {"bandwidth": 125000,
                                                               "spreading_factor": 10}}}},
    }  # fmt: skip
    return topic, json.dumps(obj).encode()


def test_compact_token_becomes_the_9_byte_chirpstack_downlink(world):
    b, ns, bo, vk, lines = world
    key = core.meter_key(vk, CS_DR0)
    digits = core.compact_credit(key, 70001, 1234)
    bo.publish("meters/%d/topup" % CS_DR0, digits.encode())
    topic, payload, _ = ns.get()
    assert topic == "application/%s/device/%s/command/down" % (APP, EUI[CS_DR0].lower())
    obj = json.loads(payload)
    assert list(obj) == ["devEui", "confirmed", "fPort", "data"]
    assert obj["devEui"] == EUI[CS_DR0].lower() and obj["confirmed"] is False
    assert obj["fPort"] == lp.TOPUP_PORT == 10
    frm = base64.b64decode(obj["data"])
    assert len(frm) == 9 and lp.downlink_kind(frm) == lp.COMPACT
    assert lp.downlink_token(frm) == digits
    assert b.stats["downlinks"] == 1 and b.stats["refused"] == 0
    assert any("token 70001 (compact, 9 bytes)" in line for line in lines)
    assert not any(digits in line or key.hex() in line for line in lines)


def test_envelope_goes_where_it_fits_and_is_refused_where_it_does_not(world):
    b, ns, bo, vk, lines = world
    env3 = core.envelope(core.meter_key(vk, CS_DR3), 0, CS_DR3, 9, 0, 0, "credit", 500)
    bo.publish("meters/%d/topup" % CS_DR3, env3.hex().encode())  # as hex text
    topic, payload, _ = ns.get()
    assert topic.endswith("/device/%s/command/down" % EUI[CS_DR3].lower())
    assert base64.b64decode(json.loads(payload)["data"]) == env3
    env0 = core.envelope(core.meter_key(vk, CS_DR0), 0, CS_DR0, 77, 0, 0, "credit", 500)
    bo.publish("meters/%d/topup" % CS_DR0, env0)  # raw bytes
    topic, payload, retain = bo.get()
    assert topic == "meters/%d/bridge" % CS_DR0 and not retain
    note = json.loads(payload)
    assert note["token"] == 77
    assert (
        "70-byte envelope does not fit a downlink at EU868 DR0 (51 bytes at most)"
        in (note["error"])
    )
    assert "--format compact" in note["error"]
    ns.none()
    assert b.stats["refused"] == 1 and b.stats["downlinks"] == 1


def test_the_things_stack_downlink_and_the_worst_case_dr(world):
    b, ns, bo, vk, lines = world
    key = core.meter_key(vk, TTS_US)
    digits = core.compact_credit(key, 5, 100)
    bo.publish("meters/%d/topup" % TTS_US, digits.encode())
    topic, payload, _ = ns.get()
    assert topic == "v3/meters@acme/devices/meter-3/down/push"
    [item] = json.loads(payload)["downlinks"]
    assert item == {
        "f_port": 10,
        "frm_payload": base64.b64encode(lp.compact_bytes(digits)).decode(),
        "priority": "HIGH",
        "confirmed": False,
        "correlation_ids": ["prepaid-meter:token:5"],
    }
    env = core.envelope(key, 0, TTS_US, 6, 0, 0, "credit", 100)
    bo.publish("meters/%d/topup" % TTS_US, env)
    note = json.loads(bo.get()[1])
    assert note["token"] == 6 and "US915 worst case (53 bytes at most)" in note["error"]


def test_tokens_the_meter_could_never_take_are_refused(world):
    b, ns, bo, vk, lines = world
    other = core.compact_credit(core.meter_key(vk, CS_DR3), 3, 100)  # another meter's
    for payload, text in (
        (other.encode(), "does not decode under meter 31001's key"),
        (b"hello", "not a top-up"),
        (b"1234", "not a top-up"),
    ):
        bo.publish("meters/%d/topup" % CS_DR0, payload)
        topic, got, _ = bo.get()
        assert topic == "meters/%d/bridge" % CS_DR0
        assert text in json.loads(got)["error"]
    ns.none()


def _forward(bo, ns, vk, meter_id, token_id, units=1234):
    digits = core.compact_credit(core.meter_key(vk, meter_id), token_id, units)
    bo.publish("meters/%d/topup" % meter_id, digits.encode())
    ns.get()


def test_ack_uplink_comes_back_signed_with_the_full_token_id(world):
    b, ns, bo, vk, lines = world
    _forward(bo, ns, vk, CS_DR0, 70001)
    up = meter_uplinks(vk, CS_DR0, boot=3)
    ns.publish(*cs_uplink(CS_DR0, up.ack(rc.ACCEPT, 70001, 1234)))
    topic, payload, retain = bo.get()
    assert topic == "meters/%d/ack" % CS_DR0 and not retain
    mkey = core.meter_key(vk, CS_DR0)
    obj = messages.verify(mkey, payload)
    assert list(obj) == ["meter", "boot", "seq", "t", "token", "result", "code", "balance"]
    assert obj["meter"] == str(CS_DR0) and (obj["boot"], obj["seq"]) == (3, 1)
    assert obj["token"] == 70001 and 70001 & 0xFFFF != 70001
    assert (obj["result"], obj["code"], obj["balance"]) == ("accepted", 1, "12.34")
    assert obj["t"] == mapping.stamp(mapping._time("2026-12-01T10:00:00.123456+00:00"))
    fresh = messages.Freshness()
    fresh.accept(obj)
    # a second delivery answered `used`, then a balance below zero, after an event
    ns.publish(*cs_uplink(CS_DR0, up.event("topup", 1234, 1234)))
    ns.publish(*cs_uplink(CS_DR0, up.ack(rc.USED, 70001, -250)))
    ev = messages.verify(mkey, bo.get()[1])
    assert ev["event"] == "topup" and ev["balance"] == "12.34" and ev["value"] == 1234
    used = messages.verify(mkey, bo.get()[1])
    assert (used["token"], used["result"], used["code"]) == (70001, "used", 10)
    assert used["balance"] == "-2.50"
    fresh.accept(ev)
    fresh.accept(used)
    assert b.stats["acks"] == 2 and b.stats["events"] == 1


def test_state_and_meter_reading_make_the_retained_state(world, broker):
    b, ns, bo, vk, lines = world
    up = meter_uplinks(vk, TTS_US, boot=1)
    ns.publish(*tts_uplink(up.state(99, "low_credit", "connected", True, 2300)))
    topic, payload, retain = bo.get()
    assert topic == "meters/%d/state" % TTS_US  # retained: the late listener below
    mkey = core.meter_key(vk, TTS_US)
    s = messages.verify(mkey, payload)
    assert s == {"meter": str(TTS_US), "boot": 1, "seq": 1, "t": s["t"], "online": True,
                 "balance": "0.99", "credit_status": "low_credit",
                 "control_state": "connected", "relay": "closed", "power_w": 2300,
                 "lora_rssi_dbm": -101, "lora_snr_db": -3.25}  # fmt: skip
    ns.publish(*tts_uplink(up.meter(123456, 0, 2)))
    s2 = messages.verify(mkey, bo.get()[1])
    assert (s2["seq"], s2["energy_wh"], s2["errors"], s2["open_reasons"]) == (2, 123456, 2, 0)
    assert s2["balance"] == "0.99" and s2["relay"] == "closed"
    # the broker keeps it: a back office starting later reads the last state at once
    late = Listener(broker, "meters/%d/state" % TTS_US)
    try:
        topic, payload, retain = late.get()
        assert retain and messages.verify(mkey, payload)["seq"] == 2
    finally:
        late.close()


def test_forged_replayed_and_stray_uplinks_are_dropped_and_counted(world):
    b, ns, bo, vk, lines = world
    up = meter_uplinks(vk, CS_DR3, boot=2)
    good = up.state(500, "in_credit", "connected", True, 10)
    ns.publish(*cs_uplink(CS_DR3, good))
    assert bo.get()[0] == "meters/%d/state" % CS_DR3
    bad = bytearray(up.state(400, "in_credit", "connected", True, 10))
    bad[3] ^= 0x01  # the balance changed on the way
    ns.publish(*cs_uplink(CS_DR3, bytes(bad)))
    ns.publish(*cs_uplink(CS_DR3, good))  # replayed
    wrong_key = meter_uplinks(vk, CS_DR0, boot=2)  # another meter's key
    wrong_key.seq = 1
    ns.publish(*cs_uplink(CS_DR3, wrong_key.state(500, "in_credit", "connected", True, 10)))
    ns.publish(*cs_uplink(CS_DR3, good[:10]))
    ns.publish(*cs_uplink(CS_DR3, good, port=7))
    ns.publish("application/%s/device/0011223344556677/event/up" % APP, cs_uplink(CS_DR3, good)[1])
    ns.publish(cs_uplink(CS_DR3, good)[0], b"{not json")
    bo.none(1.0)
    assert b.stats["forged"] == 2 and b.stats["replayed"] == 1
    assert b.stats["malformed"] == 1 and b.stats["wrong_port"] == 1
    assert b.stats["unknown_device"] == 1 and b.stats["not_json"] == 1
    # the genuine next uplink still goes through: the receiver did not move
    ns.publish(*cs_uplink(CS_DR3, up.event("disconnect", 0, 1)))
    got = messages.verify(core.meter_key(vk, CS_DR3), bo.get()[1])
    assert (got["boot"], got["seq"], got["event"]) == (2, 3, "disconnect")


def test_state_file_keeps_boot_seq_and_tokens_across_a_restart(broker, store, tmp_path):
    vk = core.load_keystore(str(store))
    state = tmp_path / "state.json"
    cid = "bridge-" + secrets.token_hex(4)
    ns = Listener(broker, "application/+/device/+/command/down")
    bo = Listener(broker, "meters/%d/ack" % CS_DR0)
    up = meter_uplinks(vk, CS_DR0, boot=7)  # beyond the 4 boots searched from 0
    up.seq = 100
    try:
        with service.Bridge(make_config(broker, store, state, cid), log=lambda s: None) as b:
            b.sides[CS_DR0].rx.boot = 7  # as if it had seen boot 7 before
            _forward(bo, ns, vk, CS_DR0, 0x20005)
            first = up.ack(rc.ACCEPT, 0x20005, 1)
            ns.publish(*cs_uplink(CS_DR0, first))
            assert messages.verify(core.meter_key(vk, CS_DR0), bo.get()[1])["seq"] == 101
        rec = json.loads(state.read_text())["meters"][str(CS_DR0)]
        assert rec == {"boot": 7, "seq": 101, "tokens": [0x20005]}
        with service.Bridge(make_config(broker, store, state, cid), log=lambda s: None) as b:
            ns.publish(*cs_uplink(CS_DR0, first))  # a replay after the restart
            ns.publish(*cs_uplink(CS_DR0, up.ack(rc.USED, 0x20005, 1)))
            obj = messages.verify(core.meter_key(vk, CS_DR0), bo.get()[1])
            assert (obj["seq"], obj["token"], obj["result"]) == (102, 0x20005, "used")
            assert b.stats["forged"] + b.stats["replayed"] == 1
    finally:
        ns.close()
        bo.close()


class FakeLoraMeter:
    """A LoRaWAN meter behind ChirpStack: takes the downlink of its DevEUI, credits it
    (tools/vend/core.py decodes it), answers with an ack uplink signed by lorapayload."""

    def __init__(self, broker, vk, meter_id):
        self.meter_id = meter_id
        self.key = core.meter_key(vk, meter_id)
        self.up = meter_uplinks(vk, meter_id, boot=1)
        self.balance = 0
        self.seen = set()
        self.l = Listener(broker, "application/%s/device/%s/command/down"
                          % (APP, EUI[meter_id].lower()))  # fmt: skip
        self.l.c.on_message = self._on_message

    def _on_message(self, client, userdata, msg):
        frm = base64.b64decode(json.loads(msg.payload)["data"])
        token = lp.downlink_token(frm)
        info = core.decode_compact(self.key, token)
        tid = info["token_id"]
        code = rc.USED if tid in self.seen else rc.ACCEPT
        if code == rc.ACCEPT:
            self.seen.add(tid)
            self.balance += info["amount"]
        client.publish(*cs_uplink(self.meter_id, self.up.ack(code, tid, self.balance)), qos=1)

    def close(self):
        self.l.close()


def vend(*args, timeout=60):
    return subprocess.run(
        [sys.executable, "-m", "tools.vend", *[str(a) for a in args]], cwd=ROOT,
        capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def test_vend_send_through_the_bridge(world, broker, store):
    b, ns, bo, vk, lines = world
    meter = FakeLoraMeter(broker, vk, CS_DR0)
    base = ["send", "--key", store, "--meter-id", CS_DR0, "--port", broker.port,
            "--timeout", 20]  # fmt: skip
    try:
        proc = vend(*base, "--amount", "12.34", "--token-id", 70002, "--format", "compact")
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == (
            "accepted: meter 31001 credited token 70002 (12.34); balance 12.34"
        )
        proc = vend(*base, "--amount", "12.34", "--token-id", 70002, "--format", "compact")
        assert proc.returncode == 2 and "with used (code 10)" in proc.stdout, proc.stderr
        proc = vend(*base, "--amount", "1.00", "--token-id", 70003)  # an envelope: too long
        assert proc.returncode == 5, proc.stderr
        assert "the LoRaWAN bridge did not forward the top-up (token 70003, 1.00)" in proc.stderr
        assert "does not fit a downlink at EU868 DR0" in proc.stderr
        assert meter.balance == 1234
    finally:
        meter.close()


def test_config_errors_name_the_field(store):
    def doc(**meter):
        m = {"network": "chirpstack", "application_id": APP, "dev_eui": EUI[CS_DR0],
             "region": "EU868"}  # fmt: skip
        m.update(meter)
        return {"keystore": str(store), "meters": {"5": m}}

    for meter, text in (
        ({"dr": 9}, "meters.5.dr: a downlink data rate of EU868 (DR0..DR6)"),
        ({"region": "US915", "dr": 0}, "meters.5.dr: a downlink data rate of US915 (DR8..DR13)"),
        ({"region": "XX"}, "meters.5.region: one of"),
        ({"dev_eui": "12"}, "meters.5.dev_eui: 16 hex digits"),
        ({"network": "lorix"}, "meters.5.network: one of chirpstack, tts"),
        ({"tenant": "x"}, "meters.5.tenant: only for network tts"),
        ({"colour": 1}, "meters.5: unknown field colour"),
        ({"server": "nope"}, "meters.5.server: no server named 'nope'"),
    ):
        with pytest.raises(bconfig.ConfigError) as e:
            bconfig.Config(doc(**meter))
        assert text in str(e.value), (meter, str(e.value))
    m = bconfig.Config(doc(region="US915")).meters[5]
    assert (m.dr, m.max_bytes) == (None, 53)
    m = bconfig.Config(doc(dr=3, fopts_margin=15)).meters[5]
    assert m.max_bytes == 100


def test_check_cli_prints_the_mapping_and_no_keys(store, tmp_path):
    path = tmp_path / "bridge.json"
    doc = {"keystore": str(store), "meters": {
        str(CS_DR0): {"network": "chirpstack", "application_id": APP, "dev_eui": EUI[CS_DR0],
                      "region": "EU868", "dr": 0},
        str(TTS_US): {"network": "tts", "application_id": "meters", "tenant": "acme",
                      "dev_eui": EUI[TTS_US], "region": "US915"}}}  # fmt: skip
    path.write_text(json.dumps(doc))
    proc = subprocess.run(
        [sys.executable, "-m", "tools.bridge", "check", "--config", str(path)], cwd=ROOT,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert (
        "meter 31001: chirpstack %s, EU868 DR0 (downlinks up to 51 bytes: compact only)" % APP
        in out
    )
    assert "meters/31001/topup -> application/%s/device/70b3d57ed0000a01/command/down" % APP in out
    assert "meters/31003/topup -> v3/meters@acme/devices/eui-70b3d57ed0000a03/down/push" in out
    assert "v3/meters@acme/devices/+/up -> meters/31003/{ack,event,state}" in out
    vk = core.load_keystore(str(store))
    assert vk.hex() not in out and core.meter_key(vk, CS_DR0).hex() not in out
    proc = subprocess.run(
        [sys.executable, "-m", "tools.bridge", "--help"], cwd=ROOT, capture_output=True,
        text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0 and "run" in proc.stdout and "check" in proc.stdout


def test_run_cli_serves_until_terminated(broker, store, tmp_path):
    path = tmp_path / "bridge.json"
    doc = {"keystore": str(store), "client_id": "run-" + secrets.token_hex(3),
           "broker": {"host": broker.host, "port": broker.port},
           "meters": {str(CS_DR0): {"network": "chirpstack", "application_id": APP,
                                    "dev_eui": EUI[CS_DR0], "region": "EU868", "dr": 0}}}  # fmt: skip
    path.write_text(json.dumps(doc))
    ns = Listener(broker, "application/+/device/+/command/down")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tools.bridge", "run", "--config", str(path)], cwd=ROOT,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        subscribed = "Received SUBSCRIBE from %s" % doc["client_id"]
        while subscribed not in broker.log():
            assert time.monotonic() < deadline and proc.poll() is None, proc.stderr
            time.sleep(0.05)
        time.sleep(0.3)
        vk = core.load_keystore(str(store))
        digits = core.compact_credit(core.meter_key(vk, CS_DR0), 12, 100)
        ns.publish("meters/%d/topup" % CS_DR0, digits.encode())
        topic, payload, _ = ns.get(15)
        assert base64.b64decode(json.loads(payload)["data"]) == lp.compact_bytes(digits)
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=20)
        ns.close()
    assert proc.returncode == 0, err
    assert "bridge: stopped; topups=1 downlinks=1" in err


def test_commands_are_answered_at_once_they_do_not_travel_over_lorawan(world, broker, store):
    b, ns, bo, vk, lines = world
    proc = vend(
        "cmd", "--key", store, "--meter-id", CS_DR3, "--cmd-id", 4, "--op", "relay",
        "--action", "open", "--port", broker.port, "--timeout", 20,
    )  # fmt: skip
    assert proc.returncode == 5, proc.stderr
    assert "the LoRaWAN bridge did not forward the command 4 (relay open)" in proc.stderr
    assert "commands do not travel over LoRaWAN" in proc.stderr
    note = json.loads(bo.get()[1])
    assert note == {
        "error": "commands do not travel over LoRaWAN: meter 31002 takes only top-ups there",
        "cmd": 4,
    }
    ns.none()


def test_network_server_on_its_own_broker(broker, store):
    """The back office on one mosquitto, the network server's integration on another."""
    vk = core.load_keystore(str(store))
    with Broker() as nsb:
        cfg = bconfig.Config({
            "keystore": str(store), "client_id": "two-" + secrets.token_hex(3),
            "broker": {"host": broker.host, "port": broker.port},
            "servers": {"cs": {"host": nsb.host, "port": nsb.port}},
            "meters": {str(CS_DR0): {"network": "chirpstack", "application_id": APP,
                                     "dev_eui": EUI[CS_DR0], "region": "EU868",
                                     "server": "cs"}},
        })  # fmt: skip
        ns = Listener(nsb, "application/+/device/+/command/down")
        bo = Listener(broker, "meters/%d/ack" % CS_DR0, "application/#")
        try:
            with service.Bridge(cfg, log=lambda s: None):
                _forward(bo, ns, vk, CS_DR0, 40)
                up = meter_uplinks(vk, CS_DR0, boot=1)
                ns.publish(*cs_uplink(CS_DR0, up.ack(rc.ACCEPT, 40, 100)))
                topic, payload, _ = bo.get()
                assert topic == "meters/%d/ack" % CS_DR0  # nothing of ChirpStack's here
                assert messages.verify(core.meter_key(vk, CS_DR0), payload)["token"] == 40
        finally:
            ns.close()
            bo.close()


def test_unreachable_broker_is_an_error_at_start(store):
    cfg = bconfig.Config({
        "keystore": str(store), "broker": {"port": free_port()},
        "meters": {"5": {"network": "chirpstack", "application_id": APP,
                         "dev_eui": EUI[CS_DR0], "region": "EU868"}},
    })  # fmt: skip
    with pytest.raises(service.BridgeError) as e:
        service.Bridge(cfg, log=lambda s: None).start(3)
    assert "cannot reach broker 127.0.0.1:" in str(e.value)
