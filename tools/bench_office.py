"""The office's figures (CPython; tools/bench.py section "office").

office_sales_per_s_sqlite, office_sales_per_s_postgres  sales recorded by one process,
                  one after another (a transaction each: the meter's row locked, its
                  token id taken, the envelope and the compact token minted, payment,
                  sale and delivery inserted), on a SQLite file and on a throwaway
                  PostgreSQL cluster on 127.0.0.1 (tools/office/pgcluster.py, fsync on); both
                  commit durably (SQLite: WAL, synchronous=FULL)
office_payment_to_ack_ms, office_payment_to_ack_ms_p99  a payment POSTed to the office
                  (`python -m tools.office serve` on SQLite, API and worker in one
                  process) until the live meter's signed ack of its token is seen on
                  the broker (a real mosquitto; the firmware under `micropython` over
                  the modem model, tools/sim/live_host.py), median and p99 over
                  PAYMENTS payments one after another, all on loopback
"""

import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import paho.mqtt.client as paho

from tools.office.config import Config
from tools.office.keys import Keys
from tools.office.pgcluster import Cluster
from tools.office.sales import add_meter, sell
from tools.office.store import Store
from tools.sim.broker import Broker, free_port
from tools.sim.live_host import LiveMeter
from tools.vend import core, messages

SALES = 500
PAYMENTS = 50
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sales_per_s(url, keystore):
    store = Store(url)
    store.migrate()
    keys = Keys(keystore)
    cfg = Config(db_url=url, keystore=keystore)
    with store.session() as s:
        add_meter(s, keys, "4242")
    sell(store, keys, cfg, "4242", "1.00", "bench", "warm-up")
    t0 = time.perf_counter()
    for i in range(SALES):
        sell(store, keys, cfg, "4242", "1.00", "bench", "r%d" % i)
    rate = SALES / (time.perf_counter() - t0)
    store.dispose()
    return round(rate, 1)


class _Acks:
    def __init__(self, port, meter_id, key):
        self.key, self.cond, self.seen = key, threading.Condition(), {}
        c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="bench-acks")
        c.on_message = self._on
        c.connect("127.0.0.1", port)
        c.loop_start()
        c.subscribe("meters/%s/ack" % meter_id, 1)
        self.c = c
        time.sleep(0.3)

    def _on(self, client, userdata, msg):
        obj = messages.verify(self.key, msg.payload)
        with self.cond:
            self.seen.setdefault(obj.get("token"), time.perf_counter())
            self.cond.notify_all()

    def wait(self, token, timeout=20):
        with self.cond:
            if not self.cond.wait_for(lambda: token in self.seen, timeout):
                raise RuntimeError("no ack of token %d" % token)
            return self.seen[token]

    def close(self):
        self.c.loop_stop()
        self.c.disconnect()


def payment_to_ack(tmp, keystore, broker):
    import httpx

    conf = os.path.join(tmp, "office.toml")
    port = free_port()
    with open(conf, "w") as f:
        f.write(
            'db_url = "sqlite:///%s/latency.db"\nkeystore = "%s"\nmqtt_port = %d\n'
            'client_id = "bench-office"\n' % (tmp, keystore, broker.port)
        )
    base = [sys.executable, "-m", "tools.office", "--config", conf]
    subprocess.run(base + ["init-db"], cwd=ROOT, check=True, capture_output=True)
    subprocess.run(base + ["meter", "add", "5151"], cwd=ROOT, check=True, capture_output=True)
    office = subprocess.Popen(
        base + ["serve", "--port", str(port)], cwd=ROOT, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    http = httpx.Client(base_url="http://127.0.0.1:%d" % port, timeout=10)
    times = []
    try:
        vk = core.load_keystore(keystore)
        with LiveMeter(os.path.join(tmp, "meter"), broker.port, vk, "5151") as m:
            m.wait(lambda s: s["online"])
            end = time.monotonic() + 30
            while True:
                try:
                    if http.get("/health").json().get("worker"):
                        break
                except httpx.HTTPError:
                    if time.monotonic() > end:
                        raise
                time.sleep(0.1)
            acks = _Acks(broker.port, "5151", m.key)
            for i in range(PAYMENTS):
                t0 = time.perf_counter()
                r = http.post(
                    "/payments", json={"meter": "5151", "amount": "1.00"},
                    headers={"Idempotency-Key": "lat-%d" % i},
                )  # fmt: skip
                r.raise_for_status()
                times.append((acks.wait(r.json()["token_id"]) - t0) * 1000)
            acks.close()
    finally:
        http.close()
        office.terminate()
        office.wait(15)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(len(times) * 0.99))]


def office_figures():
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        ks = os.path.join(tmp, "vend.key")
        core.keygen(ks, decimals=2)
        out["office_sales_per_s_sqlite"] = sales_per_s("sqlite:///%s/sales.db" % tmp, ks)
        with Cluster(durable=True) as pg:
            out["office_sales_per_s_postgres"] = sales_per_s(pg.url("bench"), ks)
        with Broker() as broker:
            p50, p99 = payment_to_ack(tmp, ks, broker)
        out["office_payment_to_ack_ms"] = round(p50, 1)
        out["office_payment_to_ack_ms_p99"] = round(p99, 1)
    return out
