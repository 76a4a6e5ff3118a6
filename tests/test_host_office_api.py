"""The office's HTTP API on a SQLite store (FastAPI's test client, no worker): payments with
an Idempotency-Key, the HMAC-signed webhook, M-Pesa Daraja C2B validation and
confirmation, agent sales, errors as JSON naming the field, operator credentials, and
the OpenAPI description at /docs.
"""

import hashlib
import hmac
import json
import subprocess
import sys

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from tools.office.api import make_app
from tools.office.config import Config
from tools.office.keys import Keys
from tools.office.sales import add_meter
from tools.office.schema import Payment, Sale
from tools.office.store import Store
from tools.vend import core

API_KEY = "operator-secret"
SECRET = "whsec-test"
MPESA = "c2b-path-secret"
AUTH = {"Authorization": "Bearer " + API_KEY}


@pytest.fixture
def office(tmp_path):
    ks = str(tmp_path / "vend.key")
    core.keygen(ks, decimals=2)
    url = "sqlite:///%s" % (tmp_path / "office.db")
    cfg = Config(
        db_url=url, keystore=ks, api_key=API_KEY, webhook_secrets={"paynow": SECRET},
        mpesa_token=MPESA,
    )  # fmt: skip
    store = Store(url)
    store.migrate()
    keys = Keys(ks)
    with store.session() as s:
        add_meter(s, keys, "12345678", min_amount=100)
        add_meter(s, keys, "5").state = "retired"
    with TestClient(make_app(cfg, store=store, keys=keys)) as client:
        yield client, store, cfg
    store.dispose()


def _count(store, table):
    with store.session() as s:
        return s.scalar(select(func.count()).select_from(table))


def test_a_payment_with_the_same_idempotency_key_gives_the_same_sale_and_token(office):
    client, store, _ = office
    body = {"meter": "12345678", "amount": "10.00", "phone": "+254700000001"}
    r1 = client.post("/payments", json=body, headers=dict(AUTH, **{"Idempotency-Key": "k-1"}))
    assert r1.status_code == 201, r1.text
    s1 = r1.json()
    assert (s1["token_id"], s1["amount"], s1["state"]) == (1, "10.00", "pending")
    for _ in range(3):  # a client retrying after a lost answer
        r = client.post("/payments", json=body, headers=dict(AUTH, **{"Idempotency-Key": "k-1"}))
        assert r.status_code == 200 and r.json() == s1
    with store.session() as s:
        sale = s.scalars(select(Sale)).one()
        assert sale.token_id == 1 and sale.amount == 1000
    r = client.post("/payments", json=dict(body, amount="20.00"),
                    headers=dict(AUTH, **{"Idempotency-Key": "k-1"}))  # fmt: skip
    assert r.status_code == 409 and r.json()["error"]["field"] == "reference"
    r = client.post("/payments", json=body, headers=dict(AUTH, **{"Idempotency-Key": "k-2"}))
    assert r.status_code == 201 and r.json()["token_id"] == 2
    assert _count(store, Sale) == 2


@pytest.mark.parametrize(
    ("body", "headers", "status", "field"),
    [
        ({"meter": "99", "amount": "10.00"}, {}, 404, "meter"),
        ({"meter": "5", "amount": "10.00"}, {}, 409, "meter"),
        ({"meter": "12345678", "amount": "0.99"}, {}, 422, "amount"),
        ({"meter": "12345678", "amount": 10.0}, {}, 422, "amount"),
        ({"meter": "12345678", "amount": "1e3"}, {}, 422, "amount"),
        ({"meter": "12345678"}, {}, 422, "amount"),
        ({"meter": "12345678", "amount": "10.00"}, {"Idempotency-Key": None}, 422, "idempotency-key"),
        ({"meter": "12345678", "amount": "10.00"}, {"Authorization": "Bearer no"}, 401, "Authorization"),
    ],
)  # fmt: skip
def test_a_refused_payment_is_json_naming_the_field_and_writes_nothing(
    office, body, headers, status, field
):
    client, store, _ = office
    h = dict(AUTH, **{"Idempotency-Key": "k"})
    h.update(headers)
    h = {k: v for k, v in h.items() if v is not None}
    r = client.post("/payments", json=body, headers=h)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["field"].lower() == field.lower() and err["message"]
    assert _count(store, Payment) == 0 and _count(store, Sale) == 0


def _signed(body, secret=SECRET):
    raw = json.dumps(body).encode()
    return raw, "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()


def test_the_signed_webhook_delivered_twice_makes_one_sale(office):
    client, store, _ = office
    raw, sig = _signed({"reference": "PN-881", "meter": "12345678", "amount": "5.00"})
    h = {"X-Signature": sig, "Content-Type": "application/json"}
    r1 = client.post("/webhooks/paynow", content=raw, headers=h)
    r2 = client.post("/webhooks/paynow", content=raw, headers=h)
    assert (r1.status_code, r2.status_code) == (201, 200), r1.text
    assert r1.json()["sale"] == r2.json()["sale"] and r1.json()["token_id"] == 1
    assert _count(store, Sale) == 1
    forged = client.post("/webhooks/paynow", content=raw.replace(b"5.00", b"50.00"), headers=h)
    assert forged.status_code == 401 and forged.json()["error"]["field"] == "X-Signature"
    raw2, sig2 = _signed({"reference": "PN-882", "meter": "12345678", "amount": "5.00"}, "other")
    r = client.post("/webhooks/paynow", content=raw2, headers={"X-Signature": sig2})
    assert r.status_code == 401
    r = client.post("/webhooks/unknown", content=raw, headers=h)
    assert r.status_code == 404 and r.json()["error"]["field"] == "provider"
    raw3, sig3 = _signed({"reference": "PN-883", "meter": "12345678"})
    r = client.post("/webhooks/paynow", content=raw3, headers={"X-Signature": sig3})
    assert r.status_code == 422 and r.json()["error"]["field"] == "amount"
    assert _count(store, Sale) == 1


# Safaricom Daraja C2B: the confirmation the M-Pesa platform POSTs after a Pay Bill payment.
C2B = {
    "TransactionType": "Pay Bill",
    "TransID": "RKTQDM7W6S",
    "TransTime": "20261122063845",
    "TransAmount": "10.00",
    "BusinessShortCode": "600638",
    "BillRefNumber": "12345678",
    "InvoiceNumber": "",
    "OrgAccountBalance": "49197.00",
    "ThirdPartyTransID": "",
    "MSISDN": "254708374149",
    "FirstName": "John",
    "MiddleName": "",
    "LastName": "Doe",
}


def test_mpesa_c2b_validation_and_confirmation_the_account_number_being_the_meter(office):
    client, store, _ = office
    base = "/mpesa/%s/c2b/" % MPESA
    assert client.post(base + "validation", json=C2B).json()["ResultCode"] == "0"
    for account in ("99", "5", "not-a-meter"):
        r = client.post(base + "validation", json=dict(C2B, BillRefNumber=account))
        assert r.json() == {"ResultCode": "C2B00012", "ResultDesc": "Rejected"}
    r1 = client.post(base + "confirmation", json=C2B)
    r2 = client.post(base + "confirmation", json=C2B)  # M-Pesa repeats unanswered callbacks
    assert r1.status_code == r2.status_code == 200
    assert r1.json()["ResultCode"] == 0 and r1.json()["sale"] == r2.json()["sale"]
    # a numeric amount (some integrations send one) is read as its text, never a float
    raw = json.dumps(dict(C2B, TransID="RKTQDM7W6T", TransAmount=12.5)).encode()
    r3 = client.post(base + "confirmation", content=raw)
    assert r3.status_code == 200, r3.text
    with store.session() as s:
        sales = s.scalars(select(Sale).order_by(Sale.id)).all()
        assert [(x.token_id, x.amount) for x in sales] == [(1, 1000), (2, 1250)]
        p = s.scalars(select(Payment).order_by(Payment.id)).first()
        assert (p.provider, p.provider_ref) == ("mpesa", "RKTQDM7W6S")
        assert (p.customer.phone, p.customer.name) == ("254708374149", "John Doe")
    assert client.post("/mpesa/wrong/c2b/confirmation", json=C2B).status_code == 404


def test_an_agent_sells_with_its_token_and_the_reads_need_the_operator(office, tmp_path):
    client, store, cfg = office
    r = subprocess.run(
        [sys.executable, "-m", "tools.office", "--db", cfg.db_url, "--keystore", cfg.keystore,
         "agent", "add", "kiosk-7"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    token = r.stdout.strip()
    body = {"meter": "12345678", "amount": "3.00"}
    h = {"Authorization": "Bearer " + token, "Idempotency-Key": "receipt-1"}
    r1 = client.post("/agent/sales", json=body, headers=h)
    assert r1.status_code == 201 and len(r1.json()["compact"]) == 20, r1.text
    assert client.post("/agent/sales", json=body, headers=h).json()["sale"] == r1.json()["sale"]
    bad = client.post("/agent/sales", json=body, headers=dict(h, Authorization="Bearer x"))
    assert bad.status_code == 401
    with store.session() as s:
        assert s.scalars(select(Payment)).one().provider == "agent:kiosk-7"
    assert client.get("/meters").status_code == 401
    m = client.get("/meters/12345678", headers=AUTH).json()
    assert m["next_token_id"] == 2 and m["sales"][0]["token_id"] == 1
    assert client.get("/sales/%d" % r1.json()["sale"], headers=AUTH).json()["attempts"] == 0
    assert client.get("/meters/99", headers=AUTH).json()["error"]["field"] == "meter"
    assert client.get("/alerts", headers=AUTH).json() == []
    assert client.get("/reconcile", headers=AUTH).status_code == 200


def test_openapi_is_served_at_docs(office):
    client, _, _ = office
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    for p in (
        "/payments",
        "/webhooks/{provider}",
        "/agent/sales",
        "/mpesa/{secret}/c2b/confirmation",
    ):
        assert p in paths
