"""The office's store on SQLite and on a throwaway PostgreSQL cluster: the migrations, the
CLI's init-db / meter add / meter import / sell, sales with their token ids and tokens,
refusals that write nothing, and two processes selling to one meter at once (PostgreSQL)
never sharing a token id.
"""

import json
import os
import subprocess
import sys

import pytest
from postgres import fresh_db, postgres_fixture  # noqa: F401  (the `postgres` fixture)
from sqlalchemy import func, select

from tools.office.config import Config
from tools.office.keys import Keys
from tools.office.sales import SaleError, add_meter, sell
from tools.office.schema import Customer, Meter, Payment, Sale
from tools.office.store import Store
from tools.vend import core

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TABLES = [
    "agents", "alembic_version", "alerts", "customers", "deliveries", "messages",
    "meter_status", "meters", "payments", "sales",
]  # fmt: skip


@pytest.fixture
def keystore(tmp_path):
    path = str(tmp_path / "vend.key")
    core.keygen(path, decimals=2)
    return path


@pytest.fixture(params=["sqlite", "postgres"])
def url(request, tmp_path):
    if request.param == "sqlite":
        return "sqlite:///%s" % (tmp_path / "office.db")
    return fresh_db(request.getfixturevalue("postgres"))


@pytest.fixture
def office(url, keystore):
    store = Store(url)
    store.migrate()
    cfg = Config(db_url=url, keystore=keystore)
    yield store, Keys(keystore), cfg
    store.dispose()


def _office(url, keystore, *args):
    return subprocess.run(
        [sys.executable, "-m", "tools.office", "--db", url, "--keystore", keystore, *args],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_cli_init_db_meter_add_import_and_sell(url, keystore, tmp_path):
    r = _office(url, keystore, "init-db")
    assert r.returncode == 0, r.stderr
    assert Store(url).tables() == TABLES
    assert _office(url, keystore, "init-db").returncode == 0  # idempotent
    r = _office(url, keystore, "meter", "add", "0012345678", "--customer-phone", "+254700000001")
    assert r.returncode == 0 and "added meter 12345678" in r.stdout, r.stderr
    r = _office(url, keystore, "meter", "add", "12345678")
    assert r.returncode == 1 and "already in the store" in r.stderr
    csv_path = tmp_path / "meters.csv"
    csv_path.write_text(
        "meter,transport,decimals,first_token_id,customer_name,customer_phone\n"
        "2001,mqtt,2,100,Amina,+254700000002\n"
        "2002,lorawan,0,,,\n"
    )
    r = _office(url, keystore, "meter", "import", str(csv_path))
    assert r.returncode == 0 and "imported 2 meters" in r.stdout, r.stderr
    bad = tmp_path / "bad.csv"
    bad.write_text("meter,transport\n3001,mqtt\n3002,carrier-pigeon\n")
    r = _office(url, keystore, "meter", "import", str(bad))
    assert r.returncode == 1 and "line 3" in r.stderr and "transport" in r.stderr
    r = _office(url, keystore, "sell", "2001", "12.50", "--reference", "rcpt-1")
    assert r.returncode == 0, r.stderr
    sale = json.loads(r.stdout)
    assert (sale["token_id"], sale["amount"], sale["format"], sale["state"]) == (
        100,
        "12.50",
        "envelope",
        "pending",
    )
    r2 = _office(url, keystore, "sell", "2001", "12.50", "--reference", "rcpt-1")
    assert json.loads(r2.stdout)["sale"] == sale["sale"] and not json.loads(r2.stdout)["created"]
    r = _office(url, keystore, "sell", "2002", "7")
    assert r.returncode == 0 and json.loads(r.stdout)["format"] == "compact", r.stderr
    store = Store(url)
    with store.session() as s:
        assert sorted(m.id for m in s.scalars(select(Meter))) == ["12345678", "2001", "2002"]
        assert s.get(Meter, "3001") is None  # the bad file added nothing
        assert s.get(Meter, "2001").customer.name == "Amina"
        assert s.scalar(select(func.count()).select_from(Sale)) == 2
    store.dispose()


def test_a_sale_allocates_token_ids_in_order_and_mints_tokens_the_meter_takes(office):
    store, keys, cfg = office
    with store.session() as s:
        add_meter(s, keys, "12345678", customer=("Juma", "+254700000009"))
        add_meter(s, keys, "77", transport="lorawan", decimals=0)
    sales = [sell(store, keys, cfg, "12345678", "%d.00" % (i + 1), "api", "k%d" % i)[0]
             for i in range(5)]  # fmt: skip
    assert [x.token_id for x in sales] == [1, 2, 3, 4, 5]
    key = core.meter_key(keys.vending_key, 12345678, 0)
    for i, x in enumerate(sales):
        info = core.decode_envelope(key, 0, 12345678, bytes.fromhex(x.token))
        assert info["valid"] and info["token_id"] == i + 1 and info["amount"] == (i + 1) * 100
        c = core.decode_compact(key, x.compact)  # the SMS fallback: same id, same amount
        assert c["valid"] and c["token_id"] == i + 1 and c["amount"] == (i + 1) * 100
    lora, _ = sell(store, keys, cfg, "77", "50", "api", "lora-1")
    assert lora.format == "compact" and lora.token == lora.compact
    with store.session() as s:
        assert s.get(Meter, "12345678").next_token_id == 6
        assert s.get(Payment, sales[0].payment_id).customer.phone == "+254700000009"


@pytest.mark.parametrize(
    ("meter", "amount", "field", "status", "what"),
    [
        ("99", "1.00", "meter", 404, "unknown meter 99"),
        ("retired", "1.00", "meter", 409, "retired"),
        ("12345678", "0.50", "amount", 422, "below the minimum 1.00"),
        ("12345678", "1.001", "amount", 422, "more than 2 decimals"),
        ("12345678", "1,00", "amount", 422, "decimal number"),
        ("12345678", "١٠", "amount", 422, "ASCII"),
        ("12345678", 10, "amount", 422, "decimal string"),
        ("12345678", "-1", "amount", 422, "decimal number"),
        ("77", "16385", "amount", 422, "compact token"),
        ("abc", "1", "meter", 422, "1 to 19 digits"),
    ],
)
def test_a_refused_sale_names_the_field_and_writes_nothing(
    office, meter, amount, field, status, what
):
    store, keys, cfg = office
    with store.session() as s:
        add_meter(s, keys, "12345678", min_amount=100)
        add_meter(s, keys, "5", ).state = "retired"  # fmt: skip
        add_meter(s, keys, "77", transport="lorawan", decimals=0)
    meter = "5" if meter == "retired" else meter
    with pytest.raises(SaleError) as e:
        sell(store, keys, cfg, meter, amount, "api", "ref-1", phone="+1555")
    assert (e.value.field, e.value.status) == (field, status) and what in e.value.message
    with store.session() as s:
        assert s.scalar(select(func.count()).select_from(Payment)) == 0
        assert s.scalar(select(func.count()).select_from(Sale)) == 0
        assert s.scalar(select(func.count()).select_from(Customer)) == 0
        assert [m.next_token_id for m in s.scalars(select(Meter).order_by(Meter.id))] == [1, 1, 1]


def test_a_reference_reused_for_another_request_is_refused(office):
    store, keys, cfg = office
    with store.session() as s:
        add_meter(s, keys, "12345678")
    first, created = sell(store, keys, cfg, "12345678", "10.00", "api", "same")
    again, created2 = sell(store, keys, cfg, "12345678", "10.00", "api", "same")
    assert created and not created2 and (again.id, again.token) == (first.id, first.token)
    with pytest.raises(SaleError) as e:
        sell(store, keys, cfg, "12345678", "20.00", "api", "same")
    assert e.value.status == 409 and e.value.field == "reference"
    other, created3 = sell(store, keys, cfg, "12345678", "10.00", "mpesa", "same")
    assert created3 and other.token_id == 2  # references are per provider


def test_a_key_store_swapped_by_mistake_mints_nothing(office, tmp_path):
    store, keys, cfg = office
    with store.session() as s:
        add_meter(s, keys, "12345678")
    other = str(tmp_path / "other.key")
    core.keygen(other, decimals=2)
    with pytest.raises(SaleError) as e:
        sell(store, Keys(other), cfg, "12345678", "1.00", "api", "x")
    assert e.value.status == 503 and "added under vending key" in e.value.message
    with store.session() as s:
        assert s.scalar(select(func.count()).select_from(Sale)) == 0


SELLER = """
import sys
from tools.office.config import Config
from tools.office.keys import Keys
from tools.office.sales import sell
from tools.office.store import Store
url, ks, tag, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
store = Store(url)
keys = Keys(ks)
cfg = Config(db_url=url, keystore=ks)
print("ready", flush=True)
sys.stdin.readline()  # both start together
ids = [sell(store, keys, cfg, "4242", "1.00", "api", "%s-%d" % (tag, i))[0].token_id
       for i in range(n)]
print(" ".join(map(str, ids)), flush=True)
"""


def test_two_processes_selling_to_one_meter_never_share_a_token_id(postgres, keystore):
    url = fresh_db(postgres)
    store = Store(url)
    store.migrate()
    with store.session() as s:
        add_meter(s, Keys(keystore), "4242")
    n = 40
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", SELLER, url, keystore, tag, str(n)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for tag in ("a", "b")
    ]
    for p in procs:
        assert p.stdout.readline().strip() == "ready"
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    got = []
    for p in procs:
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0
        got.append([int(x) for x in out.split()])
    a, b = got
    assert len(a) == len(b) == n
    assert sorted(a + b) == list(range(1, 2 * n + 1))  # every id once, none skipped
    assert a == sorted(a) and b == sorted(b)
    assert set(a) & set(b) == set()
    interleaved = sum(1 for x, y in zip(sorted(a + b), sorted(a + b)[1:]) if (x in a) != (y in a))
    with store.session() as s:
        assert s.get(Meter, "4242").next_token_id == 2 * n + 1
        assert s.scalar(select(func.count(func.distinct(Sale.token_id)))) == 2 * n
    store.dispose()
    assert interleaved >= 1  # the two really sold at the same time
