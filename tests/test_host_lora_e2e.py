"""CPython only: a top-up over LoRaWAN end to end, every piece real but the radio.

`python -m tools.vend send --format compact` -> mosquitto -> the bridge (tools/bridge) ->
the network-server stand-in (tools/sim/netserver.py, ChirpStack v4 JSON) -> its air socket
-> the RAK3172 model (tools/sim/rak3172.py) -> the firmware under `micropython`
(tools/sim/live.py, transport "lorawan"): the meter credits, its relay closes (the state
uplink says so, signed, on meters/<id>/state), the ack travels back as a signed 11-byte uplink that the bridge turns into the signed ack vend
verifies. A downlink the network delivers twice credits once (the second answer is a
signed `used` for the same token); a lost downlink leaves vend without an answer (exit 3)
and sending it again with the same token id credits it.
"""

import json
import queue
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from broker import broker_fixture  # noqa: F401 - the fixture `broker`
from tools.bridge import config as bconfig
from tools.bridge import service
from tools.sim.live_host import LiveMeter
from tools.sim.netserver import NetServer
from tools.vend import core, messages

ROOT = Path(__file__).resolve().parent.parent
APP = "9f1c2d3e-4b5a-4c6d-8e7f-0a1b2c3d4e5f"
METER_ID = "4711077"
DEV_EUI = "70B3D57ED0000E01"
JOIN_EUI = "0000000000000001"
APPKEY = "00112233445566778899AABBCCDDEEFF"


def vend(store, port, *args, timeout=60):
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "tools.vend", "send", "--key", str(store), "--meter-id",
         METER_ID, "--port", str(port), "--format", "compact", *[str(a) for a in args]],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    proc.elapsed = time.monotonic() - t0
    return proc


class Acks:
    """Every message on meters/<id>/ack, verified under the meter's key (and the states
    on meters/<id>/state in `states`)."""

    def __init__(self, broker, key):
        self.q = queue.Queue()
        self.states = []
        self.key = key
        ready = threading.Event()
        self.c = paho.Client(CallbackAPIVersion.VERSION2, client_id="a-" + secrets.token_hex(4))
        self.c.on_connect = lambda c, *a: c.subscribe(
            [("meters/%s/ack" % METER_ID, 1), ("meters/%s/state" % METER_ID, 1)]
        )
        self.c.on_subscribe = lambda *a: ready.set()
        self.c.on_message = self._on
        self.c.connect(broker.host, broker.port)
        self.c.loop_start()
        assert ready.wait(10)

    def _on(self, client, userdata, msg):
        obj = messages.verify(self.key, msg.payload)
        if msg.topic.endswith("/state"):
            self.states.append(obj)
        else:
            self.q.put(obj)

    def get(self, timeout=30):
        return self.q.get(timeout=timeout)

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


def test_vend_send_over_lorawan_to_the_firmware(broker, tmp_path):
    store = tmp_path / "ks.json"
    core.keygen(str(store), decimals=2)
    vk = core.load_keystore(str(store))
    cfg = bconfig.Config({
        "keystore": str(store), "client_id": "e2e-" + secrets.token_hex(3),
        "state": str(tmp_path / "bridge-state.json"),
        "broker": {"host": broker.host, "port": broker.port},
        "meters": {METER_ID: {"network": "chirpstack", "application_id": APP,
                              "dev_eui": DEV_EUI, "region": "EU868", "dr": 0}},
    })  # fmt: skip
    lines = []
    ns = NetServer(broker.port, APP, {DEV_EUI: "meter"}, region="EU868", downlink_dr=0,
                   log=lines.append).start()  # fmt: skip
    bridge = service.Bridge(cfg, log=lines.append).start()
    acks = Acks(broker, core.meter_key(vk, METER_ID))
    lora = {
        "netserver": ("127.0.0.1", ns.port),
        "dev_eui": DEV_EUI,
        "join_eui": JOIN_EUI,
        "appkey": APPKEY,
        "duty_div": 0,  # the stand-in's air is free
        "lora_model": {"tx_ms": 300},
    }
    try:
        with LiveMeter(str(tmp_path / "meter"), None, vk, METER_ID, lorawan=lora) as m:
            st = m.wait(lambda s: s.get("online"), timeout=40)
            assert st["relay"] is False and st["credited"] == 0
            assert ns.stats["joins"] >= 1
            # a top-up (a fresh meter takes compact ids near its last one: they start at 1)
            proc = vend(store, broker.port, "--amount", "25.00", "--token-id", 1,
                        "--timeout", 40)  # fmt: skip
            assert proc.returncode == 0, proc.stdout + proc.stderr + "\n".join(lines[-20:])
            assert proc.stdout.strip() == (
                "accepted: meter %s credited token 1 (25.00); balance 25.00" % METER_ID
            )
            first = acks.get()
            assert (first["token"], first["result"], first["balance"]) == (
                1, "accepted", "25.00"
            )  # fmt: skip
            st = m.wait(lambda s: s["relay"] is True, timeout=30)
            assert st["credited"] == 2500 and st["balance"] == "25.00"
            # the state uplinks come out as the signed state: the relay closed, in credit
            end = time.monotonic() + 30
            while not any(x.get("relay") == "closed" for x in acks.states):
                assert time.monotonic() < end, acks.states
                time.sleep(0.05)
            closed = [x for x in acks.states if x.get("relay") == "closed"][0]
            assert closed["balance"] == "25.00" and closed["credit_status"] == "in_credit"
            assert closed["control_state"] == "connected" and closed["online"] is True
            # the network delivers the next downlink twice: credited once, two signed acks
            ns.duplicate_downlinks = 1
            proc = vend(store, broker.port, "--amount", "1.00", "--token-id", 2,
                        "--timeout", 40)  # fmt: skip
            assert proc.returncode == 0, proc.stderr
            got = [acks.get(), acks.get()]
            assert [(a["token"], a["result"]) for a in got] == [
                (2, "accepted"),
                (2, "used"),
            ]
            fresh = messages.Freshness()
            for a in [first] + got:
                fresh.accept(a)  # (boot, seq) strictly increasing, as from a cellular meter
            st = m.wait(lambda s: s["comms"]["acks"] >= 3, timeout=30)
            assert st["credited"] == 2600 and st["balance"] == "26.00"
            # a lost downlink: no answer (exit 3); the same token id again credits it once
            ns.lose_downlinks = 1
            proc = vend(store, broker.port, "--amount", "2.00", "--token-id", 3,
                        "--timeout", 4)  # fmt: skip
            assert proc.returncode == 3 and "same --token-id is safe" in proc.stderr
            proc = vend(store, broker.port, "--amount", "2.00", "--token-id", 3,
                        "--timeout", 40)  # fmt: skip
            assert proc.returncode == 0, proc.stderr
            assert "balance 28.00" in proc.stdout
            st = m.wait(lambda s: s["credited"] == 2800, timeout=30)
            assert st["errors"] == 0
            assert ns.stats["lost"] == 1 and ns.stats["duplicated"] == 1
            assert bridge.stats["forged"] == bridge.stats["replayed"] == 0
            assert bridge.stats["acks"] >= 4
            state = json.loads((tmp_path / "bridge-state.json").read_text())
            assert state["meters"][METER_ID]["tokens"][-3:] == [1, 2, 3]
    finally:
        acks.close()
        bridge.stop()
        ns.stop()
