"""`make office-demo`: the office on SQLite sells to the demo's simulated meter and shows the
sale reach it. Everything runs on this machine, on loopback: mosquitto (tools/sim/broker),
the live meter (the firmware under `micropython` over the modem model), and the office's
API and worker (uvicorn in this process). State goes to out/office-demo (made afresh).

    python -m tools.office.demo [--amount 10.00]
"""

import argparse
import os
import shutil
import threading
import time

import httpx
import uvicorn

from tools.office.api import make_app
from tools.office.config import Config
from tools.office.keys import Keys
from tools.office.sales import add_meter
from tools.office.store import Store
from tools.sim.broker import Broker, free_port
from tools.sim.live_host import LiveMeter
from tools.vend import core

METER = "12345678"


def _step(text):
    print("office-demo: " + text, flush=True)


def _until(get, ok, timeout=30.0):
    end = time.monotonic() + timeout
    while True:
        v = get()
        if ok(v):
            return v
        if time.monotonic() > end:
            raise SystemExit("office-demo: gave up waiting; last: %r" % (v,))
        time.sleep(0.1)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--amount", default="10.00")
    ap.add_argument("--dir", default="out/office-demo")
    args = ap.parse_args(argv)
    shutil.rmtree(args.dir, ignore_errors=True)
    os.makedirs(args.dir)
    ks = os.path.join(args.dir, "vend.key")
    core.keygen(ks, decimals=2)
    with Broker() as broker:
        _step("mosquitto on 127.0.0.1:%d" % broker.port)
        url = "sqlite:///%s" % os.path.join(args.dir, "office.db")
        cfg = Config(db_url=url, keystore=ks, mqtt_port=broker.port, client_id="office-demo",
                     listen_port=free_port(), resend_first_s=2.0)  # fmt: skip
        store = Store(url)
        store.migrate()
        keys = Keys(ks)
        with store.session() as s:
            add_meter(s, keys, METER, customer=("Demo customer", "+10000000000"))
        _step("store %s: meter %s added" % (url, METER))
        with LiveMeter(os.path.join(args.dir, "meter"), broker.port, keys.vending_key, METER,
                       watts=500) as meter:  # fmt: skip
            meter.wait(lambda s: s["online"])
            _step("meter %s online, balance %s" % (METER, meter.status()["balance"]))
            server = uvicorn.Server(
                uvicorn.Config(make_app(cfg, worker=True, store=store, keys=keys),
                               host="127.0.0.1", port=cfg.listen_port, log_level="warning")
            )  # fmt: skip
            t = threading.Thread(target=server.run, daemon=True)
            t.start()
            http = httpx.Client(base_url="http://127.0.0.1:%d" % cfg.listen_port, timeout=10)
            _until(lambda: _health(http), bool)
            _step("office API on http://127.0.0.1:%d (OpenAPI at /docs)" % cfg.listen_port)
            r = http.post("/payments", json={"meter": METER, "amount": args.amount},
                          headers={"Idempotency-Key": "demo-1"})  # fmt: skip
            if r.status_code != 201:
                raise SystemExit("office-demo: payment refused: %s" % r.text)
            sale = r.json()
            _step("POST /payments %s -> sale %d, token id %d (%s), state %s"
                  % (args.amount, sale["sale"], sale["token_id"], sale["format"], sale["state"]))  # fmt: skip
            view = _until(lambda: http.get("/meters/" + METER).json(),
                          lambda v: v["sales"][0]["state"] != "pending" and v["reconcile"] == "ok")  # fmt: skip
            x = view["sales"][0]
            _step(
                "meter answered %s after %d send(s): sale %s"
                % (x["result"], x["attempts"], x["state"])
            )
            st = meter.status()
            _step("meter balance %s, relay %s; office reconcile: delivered %s, meter reports %s -> %s"
                  % (st["balance"], "closed" if st["relay"] else "open", view["delivered_total"],
                     view["credit_total"], view["reconcile"]))  # fmt: skip
            server.should_exit = True
            t.join(10)
            http.close()
        store.dispose()
    return 0


def _health(http):
    try:
        return http.get("/health").json().get("worker")
    except httpx.HTTPError:
        return False


if __name__ == "__main__":
    raise SystemExit(main())
