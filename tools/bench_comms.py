"""Remote top-up figures on loopback (CPython; tools/bench.py section "comms").

A real mosquitto on 127.0.0.1, the live meter (tools/sim/live.py: the firmware under
`micropython` on the simulated board in real time, the SIMCom modem model opening real
TCP) and a back office made with paho-mqtt and tools/vend.

  topup_latency_ms  publish of a top-up envelope to the meter's state message saying
                    the relay is closed (relay pulse included), median and p99 over
                    100 top-ups to a disconnected meter; `topup_ack_ms` publish to ack
  reconnect_s       a modem link drop to the meter online again (connected,
                    subscribed), median over 5 drops
"""

import os
import statistics
import tempfile
import threading
import time

import paho.mqtt.client as paho

from tools.sim.broker import Broker
from tools.sim.live_host import LiveMeter
from tools.vend import core, messages

TOPUPS = 100
DROPS = 5
# 1.8 kW at 3600.0000 a kWh: 1.00 lasts about 0.55 s, then the meter is cut again.
SETTINGS = {
    "tariff": {"type": "flat", "price_per_kwh": "3600.0000"},
    "low_credit": "0.01",
    "reconnect_min": "0.01",  # a top-up always reconnects, whatever the overshoot
    "relay_min_interval_ms": 100,
}


class _BackOffice:
    def __init__(self, port, meter_id, key):
        self.key = key
        self.meter_id = meter_id
        self.cond = threading.Condition()
        self.msgs = []  # (arrival, kind, object)
        c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="bench-backoffice")
        c.on_message = self._on
        c.connect("127.0.0.1", port)
        c.loop_start()
        c.subscribe("meters/%s/#" % meter_id, 1)
        self.c = c
        time.sleep(0.3)

    def _on(self, client, userdata, msg):
        kind = msg.topic.rsplit("/", 1)[1]
        if kind in ("ack", "state"):
            obj = messages.verify(self.key, msg.payload)
            with self.cond:
                self.msgs.append((time.perf_counter(), kind, obj))
                self.cond.notify_all()

    def wait(self, since, pred, timeout=10):
        end = time.perf_counter() + timeout
        with self.cond:
            while True:
                for t, kind, obj in self.msgs[since:]:
                    if pred(kind, obj):
                        return t
                left = end - time.perf_counter()
                if left <= 0:
                    raise RuntimeError("bench: no answer from the meter")
                self.cond.wait(left)

    def publish_topup(self, envelope):
        with self.cond:
            n = len(self.msgs)
        t0 = time.perf_counter()
        self.c.publish("meters/%s/topup" % self.meter_id, envelope, qos=1)
        return n, t0

    def close(self):
        self.c.loop_stop()
        self.c.disconnect()


def _pct(values, q):
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))]


def comms_figures():
    vk = os.urandom(32)
    with Broker() as b, tempfile.TemporaryDirectory() as d:
        with LiveMeter(d, b.port, vk, "31337", watts=1800, tick_ms=100, settings=SETTINGS) as m:
            m.wait(lambda s: s["online"])
            bo = _BackOffice(b.port, m.meter_id, m.key)
            lat, ack = [], []
            for i in range(TOPUPS):
                m.wait(lambda s: s["relay"] is False and s["queued"] == 0, every=0.01)
                env = core.envelope(
                    m.key, 0, m.meter_id, i + 1, core.stamp_now(), 0, "credit", 100
                )
                n, t0 = bo.publish_topup(env)
                t_ack = bo.wait(n, lambda k, o: k == "ack" and o["token"] == i + 1)
                t_rel = bo.wait(n, lambda k, o: k == "state" and o.get("relay") == "closed")
                lat.append((t_rel - t0) * 1000)
                ack.append((t_ack - t0) * 1000)
            bo.close()
            reconnect = []
            for _ in range(DROPS):
                before = m.status()["comms"]["connects"]
                t0 = time.perf_counter()
                m.fault("drop_link")
                m.wait(lambda s: s["comms"]["connects"] > before and s["online"], every=0.01)
                reconnect.append(time.perf_counter() - t0)
            final = m.status()
    return {
        "topup_latency_ms": round(statistics.median(lat), 1),
        "topup_latency_ms_p99": round(_pct(lat, 0.99), 1),
        "topup_ack_ms": round(statistics.median(ack), 1),
        "topup_ack_ms_p99": round(_pct(ack, 0.99), 1),
        "reconnect_s": round(statistics.median(reconnect), 2),
        "reconnect_s_max": round(max(reconnect), 2),
        "comms_late_ms_max": final["late_ms_max"],
        "comms_credited": final["credited"],
    }
