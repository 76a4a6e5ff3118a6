"""End to end: the office (`python -m tools.office serve`, API and worker in one process)
on SQLite and on a throwaway PostgreSQL cluster, a real mosquitto on 127.0.0.1, and the
live meter (the firmware under `micropython` over the cellular modem model,
tools/sim/live_host.py).

A payment POSTed -> a sale and its token -> mosquitto -> the meter credits it -> its
signed ack -> the sale delivered -> its signed state's credit total reconciled. Then the
same with the meter offline for a while (delivered on its return, credited once), the
webhook delivered twice (one sale), and the office killed mid-delivery and restarted (no
sale lost or doubled). The main path runs on both stores; each of the others on one (the
offline meter on PostgreSQL, the webhook and the kill on the SQLite file), to keep the
run short.
"""

import hashlib
import hmac
import itertools
import json
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest
from broker import broker_fixture, free_port  # noqa: F401  (the `broker` fixture)
from postgres import fresh_db, postgres_fixture  # noqa: F401  (the `postgres` fixture)

from tools.sim.live_host import LiveMeter
from tools.vend import core

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
API_KEY = "e2e-operator"
SECRET = "e2e-webhook"
_ids = itertools.count(32000001)


class Office:
    """`python -m tools.office serve` with its own TOML settings; kill() is a SIGKILL."""

    def __init__(self, tmp_path, db_url, keystore, mqtt_port):
        self.port = free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        self.db_url = db_url
        self.conf = tmp_path / ("office-%d.toml" % self.port)
        self.conf.write_text(
            "\n".join(
                (
                    'db_url = "%s"' % db_url,
                    'keystore = "%s"' % keystore,
                    "mqtt_port = %d" % mqtt_port,
                    'client_id = "office-%d"' % self.port,
                    'api_key = "%s"' % API_KEY,
                    'webhook_secrets = { paynow = "%s" }' % SECRET,
                    "resend_first_s = 1.0",
                    "resend_max_s = 2.0",
                    "poll_s = 0.05",
                    "",
                )
            )
        )
        self.log = tmp_path / ("office-%d.log" % self.port)
        self.proc = None
        self.http = httpx.Client(base_url=self.url, timeout=10)

    def cli(self, *args):
        r = subprocess.run(
            [sys.executable, "-m", "tools.office", "--config", str(self.conf), *args],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        return r.stdout

    def start(self):
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tools.office", "--config", str(self.conf), "serve",
                 "--port", str(self.port)],
                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        end = time.monotonic() + 30
        while time.monotonic() < end:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                if self.http.get("/health").json().get("worker"):
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError("the office did not start:\n" + self.log.read_text())

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.proc = None

    def stop(self):
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
        self.http.close()

    def get(self, path):
        r = self.http.get(path, headers={"Authorization": "Bearer " + API_KEY})
        assert r.status_code == 200, r.text
        return r.json()

    def pay(self, meter, amount, key):
        return self.http.post(
            "/payments",
            json={"meter": meter, "amount": amount},
            headers={"Authorization": "Bearer " + API_KEY, "Idempotency-Key": key},
        )

    def wait_meter(self, meter, pred, timeout=40):
        end = time.monotonic() + timeout
        while True:
            m = self.get("/meters/" + meter)
            if pred(m):
                return m
            if time.monotonic() > end:
                raise AssertionError("office view of meter %s: %r\n%s"
                                     % (meter, m, self.log.read_text()[-3000:]))  # fmt: skip
            time.sleep(0.1)


@pytest.fixture
def keystore(tmp_path):
    path = str(tmp_path / "vend.key")
    core.keygen(path, decimals=2)
    return path, core.load_keystore(path)


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        return "sqlite:///%s" % (tmp_path / "office.db")
    return fresh_db(request.getfixturevalue("postgres"))


@pytest.fixture
def office(tmp_path, db_url, keystore, broker):
    o = Office(tmp_path, db_url, keystore[0], broker.port)
    o.cli("init-db")
    yield o
    o.stop()


def _meter(tmp_path, office, broker, keystore, **kw):
    mid = str(next(_ids))
    office.cli("meter", "add", mid)
    return LiveMeter(str(tmp_path / ("meter-" + mid)), broker.port, keystore[1], mid, **kw)


def _offline(m):
    """Online first (its session exists at the broker), then the modem stops answering."""
    m.wait(lambda s: s["online"])
    m.fault("mute")
    m.wait(lambda s: not s["online"], timeout=30)


def _delivered_once(office, m, mid, amount_units, sales):
    """The meter credited the sales once each, acked, and its credit total reconciles."""
    view = office.wait_meter(
        mid,
        lambda v: v["reconcile"] == "ok" and all(s["state"] == "delivered" for s in v["sales"]),
    )
    assert len(view["sales"]) == sales
    st = m.status()
    assert st["credited"] == amount_units  # credited once, whatever was re-sent
    assert view["credit_total"] == view["delivered_total"] == core.format_money(amount_units, 2)
    assert [e for e in st["events"] if e == "topup"] == ["topup"] * sales
    return view


def test_a_payment_reaches_the_live_meter_is_acked_delivered_and_reconciled(
    tmp_path, office, broker, keystore
):
    office.start()
    with _meter(tmp_path, office, broker, keystore) as m:
        m.wait(lambda s: s["online"])
        r = office.pay(m.meter_id, "10.00", "pay-1")
        assert r.status_code == 201, r.text
        assert r.json()["token_id"] == 1
        view = _delivered_once(office, m, m.meter_id, 1000, 1)
        assert view["sales"][0]["result"] == "accepted"
        assert view["balance"] == "10.00" and view["online"] is True
        # a retried POST is the same sale: nothing more reaches the meter
        assert office.pay(m.meter_id, "10.00", "pay-1").json()["sale"] == r.json()["sale"]
        time.sleep(1.0)
        assert m.status()["credited"] == 1000
        assert office.get("/reconcile?meter=%s" % m.meter_id)[0]["reconcile"] == "ok"
        assert office.get("/alerts") == []


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_a_meter_offline_for_a_while_is_credited_once_on_its_return(
    tmp_path, office, broker, keystore
):
    office.start()
    with _meter(tmp_path, office, broker, keystore) as m:
        _offline(m)
        assert office.pay(m.meter_id, "5.00", "off-1").status_code == 201
        office.wait_meter(m.meter_id, lambda v: v["sales"][0]["attempts"] >= 3)  # re-sent
        assert m.status()["credited"] == 0
        m.fault("mute", on=False)
        _delivered_once(office, m, m.meter_id, 500, 1)
        time.sleep(1.5)  # the copies queued at the broker meanwhile are answered `used`
        assert m.status()["credited"] == 500


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_the_webhook_delivered_twice_is_one_sale(tmp_path, office, broker, keystore):
    office.start()
    with _meter(tmp_path, office, broker, keystore) as m:
        m.wait(lambda s: s["online"])
        raw = json.dumps({"reference": "PN-1", "meter": m.meter_id, "amount": "7.00"}).encode()
        sig = "sha256=" + hmac.new(SECRET.encode(), raw, hashlib.sha256).hexdigest()
        codes = [
            office.http.post("/webhooks/paynow", content=raw, headers={"X-Signature": sig})
            for _ in range(2)
        ]
        assert [c.status_code for c in codes] == [201, 200]
        assert codes[0].json()["sale"] == codes[1].json()["sale"]
        _delivered_once(office, m, m.meter_id, 700, 1)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_the_office_killed_mid_delivery_and_restarted_loses_and_doubles_nothing(
    tmp_path, office, broker, keystore
):
    office.start()
    with _meter(tmp_path, office, broker, keystore) as m:
        _offline(m)
        assert office.pay(m.meter_id, "3.00", "k-1").status_code == 201
        office.wait_meter(m.meter_id, lambda v: v["sales"][0]["attempts"] >= 1)
        r2 = office.pay(m.meter_id, "4.00", "k-2")
        office.kill()  # at once: the second sale may not have been sent yet
        assert r2.status_code == 201
        m.fault("mute", on=False)  # the meter takes what waits at the broker, and acks
        m.wait(lambda s: s["credited"] >= 300 and s["online"], timeout=40)
        office.start()
        view = _delivered_once(office, m, m.meter_id, 700, 2)
        assert sorted(s["token_id"] for s in view["sales"]) == [1, 2]
        # a payment retried against the restarted office is still the same sale
        assert office.pay(m.meter_id, "4.00", "k-2").json()["sale"] == r2.json()["sale"]
        time.sleep(1.0)
        assert m.status()["credited"] == 700


def test_the_office_demo_shows_a_sale_reach_the_simulated_meter(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "tools.office.demo", "--dir", str(tmp_path / "demo")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert "meter answered accepted" in lines[-2] and "sale delivered" in lines[-2]
    assert lines[-1].endswith("delivered 10.00, meter reports 10.00 -> ok")
