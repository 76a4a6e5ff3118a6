"""Top-up over LoRaWAN figures (CPython; tools/bench.py section "lora").

The whole path on loopback: a back office made with paho-mqtt and tools/vend publishes a
20-digit compact token on meters/<id>/topup of a real mosquitto; the bridge
(tools/bridge) turns it into a ChirpStack v4 downlink; the network-server stand-in
(tools/sim/netserver.py) sends it on its air socket to the RAK3172 model of the live
meter (tools/sim/live.py, the firmware under `micropython` in real time); the meter's
signed 11-byte ack uplink comes back the same way and the bridge republishes it as the
signed ack.

  lora_topup_latency_ms  publish of the top-up to the verified ack on meters/<id>/ack,
                    median over LORA_TOPUPS top-ups (`_max` beside it): the software's
                    share. The stand-in's air has no time on air (the model hands the
                    uplink over at AT+SEND) and the driver's duty cycle is off (top-ups
                    further apart than its hold never wait for it)
  lora_topup_air_ms_sf12 / _sf7  what the radio adds: the 9-byte downlink's and the
                    11-byte ack uplink's time on air at SF12 and SF7, 125 kHz
  lora_uplinks_per_day, lora_uplink_bytes_per_day  the state and meter reading uplinks
                    (11 bytes each) at the default lora_state_period_s, acks and events
                    aside
  lora_airtime_s_per_day_sf12 / _sf7  their time on air at EU868 DR0 (SF12) and DR5
                    (SF7), 125 kHz (drivers/lorawan.time_on_air_us)
  lora_duty_used_pct_sf12 / _sf7  that air time as a share of the day, against EU868's
                    1 % per sub-band (lora_duty_limit_pct)
  lora_ttn_fair_use_ok_sf12 / _sf7  within The Things Network's 30 s a day of uplink air
                    time (docs/lorawan.md, time on air and duty cycle)
"""

import os
import secrets
import statistics
import tempfile
import threading
import time

import paho.mqtt.client as paho

from drivers.lorawan import time_on_air_us
from firmware.billing.settings import SCHEMA
from tools.bridge import config as bconfig
from tools.bridge import service
from tools.sim.broker import Broker
from tools.sim.live_host import LiveMeter
from tools.sim.netserver import NetServer
from tools.vend import core, messages

LORA_TOPUPS = 5
APP = "5b0c7a31-9d2e-4f6a-8b1c-2d3e4f5a6b7c"
DEV_EUI = "70B3D57ED0000F01"
METER_ID = "31338"
TTN_AIRTIME_S = 30
DUTY_PCT = 1.0


def _uplink_figures():
    period = SCHEMA["lora_state_period_s"][1]
    per_day = 2 * 86400 // period  # a state and a meter reading each period
    out = {
        "lora_state_period_s": period,
        "lora_uplinks_per_day": per_day,
        "lora_uplink_bytes_per_day": per_day * 11,
        "lora_duty_limit_pct": DUTY_PCT,
    }
    for name, sf in (("sf12", 12), ("sf7", 7)):
        both_us = time_on_air_us(sf, 125, 9) + time_on_air_us(sf, 125, 11)
        out["lora_topup_air_ms_" + name] = round(both_us / 1000, 1)
        air_s = per_day * time_on_air_us(sf, 125, 11) / 1e6
        out["lora_airtime_s_per_day_" + name] = round(air_s, 2)
        out["lora_duty_used_pct_" + name] = round(100 * air_s / 86400, 4)
        out["lora_ttn_fair_use_ok_" + name] = air_s <= TTN_AIRTIME_S
    return out


class _Acks:
    def __init__(self, port, key):
        self.key = key
        self.cond = threading.Condition()
        self.acks = []
        ready = threading.Event()
        c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="bench-lora-backoffice")
        c.on_connect = lambda c, *a: c.subscribe("meters/%s/ack" % METER_ID, 1)
        c.on_subscribe = lambda *a: ready.set()
        c.on_message = self._on
        c.connect("127.0.0.1", port)
        c.loop_start()
        if not ready.wait(10):
            raise RuntimeError("bench: no SUBACK")
        self.c = c

    def _on(self, client, userdata, msg):
        obj = messages.verify(self.key, msg.payload)
        with self.cond:
            self.acks.append((time.perf_counter(), obj))
            self.cond.notify_all()

    def topup(self, digits, token, timeout=30):
        t0 = time.perf_counter()
        self.c.publish("meters/%s/topup" % METER_ID, digits.encode(), qos=1)
        end = t0 + timeout
        with self.cond:
            while True:
                for t, obj in self.acks:
                    if obj.get("token") == token and obj.get("result") == "accepted":
                        return (t - t0) * 1000
                left = end - time.perf_counter()
                if left <= 0:
                    raise RuntimeError("bench: no ack for token %d" % token)
                self.cond.wait(left)

    def close(self):
        self.c.loop_stop()
        self.c.disconnect()


def lora_figures():
    figures = _uplink_figures()
    with Broker() as b, tempfile.TemporaryDirectory() as d:
        store = os.path.join(d, "ks.json")
        core.keygen(store, decimals=2)
        vk = core.load_keystore(store)
        key = core.meter_key(vk, METER_ID)
        cfg = bconfig.Config({
            "keystore": store, "client_id": "bench-bridge-" + secrets.token_hex(3),
            "broker": {"host": b.host, "port": b.port},
            "meters": {METER_ID: {"network": "chirpstack", "application_id": APP,
                                  "dev_eui": DEV_EUI, "region": "EU868", "dr": 0}},
        })  # fmt: skip
        lora = {
            "netserver": None,
            "dev_eui": DEV_EUI,
            "join_eui": "0000000000000001",
            "appkey": secrets.token_hex(16).upper(),
            "duty_div": 0,
        }
        with NetServer(b.port, APP, {DEV_EUI: "bench"}) as ns:
            lora["netserver"] = ("127.0.0.1", ns.port)
            with service.Bridge(cfg, log=lambda line: None) as bridge:
                meter_dir = os.path.join(d, "meter")
                with LiveMeter(meter_dir, None, vk, METER_ID, lorawan=lora) as m:
                    m.wait(lambda s: s.get("online"), timeout=60)
                    acks = _Acks(b.port, key)
                    lat = []
                    for i in range(LORA_TOPUPS):
                        m.wait(lambda s: s["queued"] == 0, timeout=60, every=0.02)
                        digits = core.compact_credit(key, i + 1, 100)
                        lat.append(acks.topup(digits, i + 1))
                    acks.close()
                    final = m.status()
                dropped = bridge.stats["forged"] + bridge.stats["replayed"]
    figures.update(
        lora_topup_latency_ms=round(statistics.median(lat), 1),
        lora_topup_latency_ms_max=round(max(lat), 1),
        lora_credited=final["credited"],
        lora_bridge_dropped=dropped,
    )
    return figures
