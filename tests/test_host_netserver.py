"""CPython only: the network-server stand-in (tools/sim/netserver.py) with a fake device on
its air socket and a real mosquitto: joins (unknown devices and the join fault refused),
uplinks out as ChirpStack v4 JSON, confirmed ones acknowledged, downlinks from
command/down to the device (lost and duplicated on demand, oversize refused with a log
event), and the bridge in front of it: a top-up reaches the device as 9 bytes and the
device's signed ack uplink comes back to meters/<id>/ack, verified as vend verifies it.
"""

import base64
import json
import queue
import secrets
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from broker import broker_fixture  # noqa: F401 - the fixture `broker`
from firmware.tokens import keys as fkeys
from firmware.comms.lora import payload as lp
from firmware.tokens import codes as rc
from tools.bridge import config as bconfig
from tools.bridge import service
from tools.sim.netserver import NetServer
from tools.vend import core, messages

ROOT = Path(__file__).resolve().parent.parent
APP = "0b7e6c1a-4c55-4d0b-8a39-5e9c3f2f7d10"
EUI = "70B3D57ED0000B01"
JOIN_EUI = "0000000000000001"
METER = 41001


class Device:
    """A fake modem on the air socket: send() a line, get() the next line from the server."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.q = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        buf = b""
        while True:
            try:
                d = self.sock.recv(4096)
            except OSError:
                return
            if not d:
                return
            buf += d
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                self.q.put(json.loads(line))

    def send(self, obj):
        self.sock.sendall(json.dumps(obj).encode() + b"\n")

    def get(self, timeout=10):
        return self.q.get(timeout=timeout)

    def none(self, wait=0.7):
        with pytest.raises(queue.Empty):
            self.q.get(timeout=wait)

    def join(self, eui=EUI):
        self.send({"join": {"dev_eui": eui, "join_eui": JOIN_EUI}})
        return self.get()

    def up(self, data, fcnt, confirmed=False, port=lp.UPLINK_PORT, eui=EUI):
        self.send({"up": {"dev_eui": eui, "port": port, "data": data.hex(),
                          "confirmed": confirmed, "fcnt": fcnt, "dr": 5}})  # fmt: skip

    def close(self):
        self.sock.close()


class Mqtt:
    def __init__(self, broker, *filters):
        self.q = queue.Queue()
        ready = threading.Event()
        self.c = paho.Client(CallbackAPIVersion.VERSION2, client_id="t-" + secrets.token_hex(4))
        self.c.on_connect = lambda c, *a: c.subscribe([(f, 1) for f in filters])
        self.c.on_subscribe = lambda *a: ready.set()
        self.c.on_message = lambda c, u, m: self.q.put((m.topic, bytes(m.payload)))
        self.c.connect(broker.host, broker.port)
        self.c.loop_start()
        assert ready.wait(10)

    def publish(self, topic, obj):
        payload = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
        self.c.publish(topic, payload, qos=1).wait_for_publish(10)

    def get(self, timeout=10):
        return self.q.get(timeout=timeout)

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


@pytest.fixture
def ns(broker):
    lines = []
    n = NetServer(broker.port, APP, {EUI: "meter-41001"}, region="EU868", downlink_dr=0,
                  log=lines.append).start()  # fmt: skip
    yield n
    n.stop()


def down_topic(eui=EUI):
    return "application/%s/device/%s/command/down" % (APP, eui.lower())


def test_join_refused_for_unknown_devices_and_by_the_fault(broker, ns):
    dev = Device(ns.port)
    try:
        assert dev.join("0011223344556677") == {"joined": False}
        ns.refuse_joins = 1
        assert dev.join() == {"joined": False}
        assert dev.join() == {"joined": True}
        assert ns.stats["join_refusals"] == 2 and ns.stats["joins"] == 1
    finally:
        dev.close()


def test_uplink_becomes_chirpstack_json_and_confirmed_ones_are_acked(broker, ns):
    mq = Mqtt(broker, "application/%s/device/+/event/+" % APP)
    dev = Device(ns.port)
    try:
        dev.up(b"\x01\x02", 0)  # not joined yet: dropped
        assert dev.join() == {"joined": True}
        topic, payload = mq.get()
        assert topic == "application/%s/device/%s/event/join" % (APP, EUI.lower())
        dev_addr = json.loads(payload)["devAddr"]
        data = bytes(range(11))
        dev.up(data, 7, confirmed=True)
        assert dev.get() == {"acked": 7}
        topic, payload = mq.get()
        assert topic == "application/%s/device/%s/event/up" % (APP, EUI.lower())
        up = json.loads(payload)
        assert base64.b64decode(up["data"]) == data
        assert (up["fPort"], up["fCnt"], up["dr"], up["confirmed"]) == (2, 7, 5, True)
        assert up["devAddr"] == dev_addr and len(up["deduplicationId"]) == 36
        info = up["deviceInfo"]
        assert info["applicationId"] == APP and info["devEui"] == EUI.lower()
        assert info["deviceName"] == "meter-41001"
        assert up["rxInfo"][0]["rssi"] == -70 and up["rxInfo"][0]["snr"] == 9.0
        assert up["txInfo"]["modulation"]["lora"]["spreadingFactor"] == 12
        assert up["time"].endswith("Z")
        dev.up(data, 8)  # unconfirmed: no ack
        assert json.loads(mq.get()[1])["fCnt"] == 8
        dev.none()
        assert ns.stats["uplinks"] == 2 and ns.stats["acked"] == 1 and ns.stats["strays"] == 1
    finally:
        dev.close()
        mq.close()


def test_downlinks_reach_the_device_lost_duplicated_and_oversize(broker, ns):
    mq = Mqtt(broker, "application/%s/device/+/event/+" % APP)
    dev = Device(ns.port)
    try:
        mq.publish(down_topic(), {"devEui": EUI.lower(), "confirmed": False, "fPort": 10,
                                  "data": base64.b64encode(b"early").decode()})  # fmt: skip
        assert dev.join() == {"joined": True}  # queued before the join: sent after it
        assert dev.get() == {"down": {"port": 10, "data": b"early".hex()}}
        nine = bytes(range(1, 10))
        body = {"devEui": EUI.lower(), "confirmed": False, "fPort": 10,
                "data": base64.b64encode(nine).decode()}  # fmt: skip
        mq.publish(down_topic(), body)
        assert dev.get() == {"down": {"port": 10, "data": nine.hex()}}
        ns.lose_downlinks = 1
        mq.publish(down_topic(), body)
        dev.none()
        ns.duplicate_downlinks = 1
        mq.publish(down_topic(), body)
        assert dev.get() == dev.get() == {"down": {"port": 10, "data": nine.hex()}}
        dev.none()
        assert (ns.stats["lost"], ns.stats["duplicated"], ns.stats["downlinks"]) == (1, 1, 4)
        kinds = []
        while True:
            try:
                kinds.append(mq.get(0.5)[0].rsplit("/", 1)[1])
            except queue.Empty:
                break
        assert kinds.count("txack") == 4
        big = dict(body, data=base64.b64encode(bytes(70)).decode())  # 70 > 51 at EU868 DR0
        mq.publish(down_topic(), big)
        topic, payload = mq.get()
        assert topic.endswith("/event/log")
        log = json.loads(payload)
        assert (
            log["code"] == "DOWNLINK_PAYLOAD_SIZE"
            and "70 bytes exceeds 51" in (log["description"])
        )
        mq.publish(down_topic(), dict(body, devEui="0011223344556677"))
        assert "is not the topic's" in json.loads(mq.get()[1])["description"]
        dev.none()
        assert ns.stats["refused_downlinks"] == 2
    finally:
        dev.close()
        mq.close()


def test_bridge_and_netserver_carry_a_top_up_and_its_ack(broker, ns, tmp_path):
    store = tmp_path / "ks.json"
    core.keygen(str(store), decimals=2)
    vk = core.load_keystore(str(store))
    cfg = bconfig.Config({
        "keystore": str(store), "client_id": "b-" + secrets.token_hex(3),
        "broker": {"host": broker.host, "port": broker.port},
        "meters": {str(METER): {"network": "chirpstack", "application_id": APP,
                                "dev_eui": EUI, "region": "EU868", "dr": 0}},
    })  # fmt: skip
    bo = Mqtt(broker, "meters/%d/+" % METER)
    dev = Device(ns.port)
    fkey = fkeys.MeterKey(fkeys.derive_meter_key(vk, METER))
    up = lp.Uplinks(fkey.msg_mac(), fkeys.meter_id_bytes(METER), 1)
    try:
        with service.Bridge(cfg, log=lambda s: None) as b:
            assert dev.join() == {"joined": True}
            digits = core.compact_credit(core.meter_key(vk, METER), 65540, 500)
            bo.publish("meters/%d/topup" % METER, digits.encode())
            assert bo.get()[0].endswith("/topup")  # our own
            down = dev.get()["down"]
            assert down["port"] == lp.TOPUP_PORT
            assert lp.downlink_token(bytes.fromhex(down["data"])) == digits
            dev.up(up.ack(rc.ACCEPT, 65540, 500), 0, confirmed=True)
            assert dev.get() == {"acked": 0}
            topic, payload = bo.get()
            assert topic == "meters/%d/ack" % METER
            ack = messages.verify(core.meter_key(vk, METER), payload)
            assert (ack["token"], ack["result"], ack["balance"]) == (65540, "accepted", "5.00")
            assert b.stats["acks"] == 1
    finally:
        dev.close()
        bo.close()


def test_runs_alone_from_the_command_line(broker):
    proc = subprocess.Popen(
        [sys.executable, "-m", "tools.sim.netserver", "--broker-port", str(broker.port),
         "--app", APP, "--device", EUI],
        cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        line = proc.stdout.readline()
        assert line.startswith("netserver: air on 127.0.0.1:"), line
        dev = Device(int(line.rsplit(":", 1)[1]))
        try:
            assert dev.join("0011223344556677") == {"joined": False}
            assert dev.join() == {"joined": True}
        finally:
            dev.close()
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=20)
    assert proc.returncode == 0


def test_a_stop_signal_at_once_after_start_up_still_exits_cleanly(broker):
    # the signal lands as soon as the air port is announced, before the server has settled
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGINT):
        proc = subprocess.Popen(
            [sys.executable, "-m", "tools.sim.netserver", "--broker-port", str(broker.port),
             "--app", APP],
            cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        line = proc.stdout.readline()
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=20)
        assert line.startswith("netserver: air on 127.0.0.1:"), line
        assert proc.returncode == 0, (sig, proc.returncode, err[-500:])
        assert "Traceback" not in err
