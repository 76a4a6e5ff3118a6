"""CPython only: `python -m tools.vend send` and `cmd` against a real mosquitto broker, with
a paho client playing the meter: it takes the top-up or command, checks it (the envelope
with tools/vend/core.py, the command with tools/vend/messages.py) and answers a signed ack.
Exit statuses: 0 accepted, 2 refused, 3 no answer, 4 broker unreachable.
"""

import json
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
from tools.vend import core, messages

ROOT = Path(__file__).resolve().parent.parent
OTHER_KEY = bytes(range(32))


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("vend") / "ks.json"
    core.keygen(str(path), decimals=2)
    return path


class FakeMeter:
    """A meter on the broker: answers every top-up and command with acks made by
    answer(kind, request) -> list of payloads (default: one signed "accepted")."""

    def __init__(self, broker, vk, meter_id, answer=None):
        self.meter_id = str(meter_id)
        self.key = core.meter_key(vk, meter_id)
        self.answer = answer or self.accept
        self.got = []  # (kind, qos, decoded request)
        self.seq = 0
        self.balance = 1234
        self._subscribed = threading.Event()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id="meter-" + secrets.token_hex(4)
        )
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert self._subscribed.wait(10), "fake meter: no SUBACK"

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def topic(self, kind):
        return "meters/%s/%s" % (self.meter_id, kind)

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        client.subscribe([(self.topic("topup"), 1), (self.topic("cmd"), 1)])

    def _on_message(self, client, userdata, msg):
        kind = msg.topic.rsplit("/", 1)[1]
        if kind == "topup":
            req = core.decode_envelope(self.key, 0, self.meter_id, bytes(msg.payload))
        else:
            try:
                req = messages.verify(self.key, bytes(msg.payload))
            except ValueError as e:
                req = {"error": str(e)}
        self.got.append((kind, msg.qos, req))
        for payload in self.answer(kind, req):
            client.publish(self.topic("ack"), payload, qos=1)

    def ack(self, key=None, **fields):
        """A signed ack (under key, default the meter's) with the usual head."""
        self.seq += 1
        obj = {"meter": self.meter_id, "boot": 2, "seq": self.seq, "t": 850000000}
        obj.update(fields)
        return messages.sign(key or self.key, obj)

    def accept(self, kind, req):
        if kind == "topup":
            assert req["valid"] and req["kind"] == "credit", req
            self.balance += req["amount"]
            bal = core.format_money(self.balance, 2)
            return [self.ack(token=req["token_id"], result="accepted", code=1, balance=bal)]
        assert "error" not in req, req
        return [self.ack(cmd=req["id"], result="accepted")]


def vend(*args, timeout=60):
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "tools.vend", *[str(a) for a in args]],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    proc.elapsed = time.monotonic() - t0
    return proc


def send(broker, store, meter_id, *more):
    return vend(
        "send", "--key", store, "--meter-id", meter_id, "--port", broker.port,
        "--host", broker.host, "--timeout", 20, *more,
    )  # fmt: skip


def assert_no_keys(proc, store, meter_id):
    vk = core.load_keystore(str(store))
    for secret in (vk.hex(), core.meter_key(vk, meter_id).hex()):
        assert secret not in proc.stdout and secret not in proc.stderr


def test_help_lists_send_and_cmd():
    proc = vend("--help")
    assert proc.returncode == 0 and "send" in proc.stdout and "cmd" in proc.stdout
    proc = vend("send", "--help")
    assert proc.returncode == 0 and "--token-id" in proc.stdout and "--topic-prefix" in proc.stdout


def test_send_accepted(broker, store):
    vk = core.load_keystore(str(store))
    with FakeMeter(broker, vk, "1001") as meter:
        proc = send(broker, store, "1001", "--amount", "10.00", "--token-id", 7)
        assert proc.returncode == 0, proc.stderr
        assert (
            proc.stdout.strip() == "accepted: meter 1001 credited token 7 (10.00); balance 22.34"
        )
        assert "waiting for the answer on meters/1001/ack" in proc.stderr
        [(kind, qos, req)] = meter.got
        assert (kind, qos) == ("topup", 1)
        assert (req["token_id"], req["amount"], req["meter_id"]) == (7, 1000, 1001)
        proc = send(broker, store, "01001", "--amount", "0.05", "--token-id", 8, "--json")
        assert proc.returncode == 0, proc.stderr
        ack = json.loads(proc.stdout)
        assert ack == {
            "meter": "1001",
            "boot": 2,
            "seq": 2,
            "t": 850000000,
            "token": 8,
            "result": "accepted",
            "code": 1,
            "balance": "22.39",
        }
        assert "accepted: meter 1001 credited token 8 (0.05)" in proc.stderr
        assert_no_keys(proc, store, "1001")


def test_send_refused_used(broker, store):
    vk = core.load_keystore(str(store))

    def used(kind, req):
        return [meter.ack(token=req["token_id"], result="used", code=10, balance="12.34")]

    with FakeMeter(broker, vk, "1002", used) as meter:
        proc = send(broker, store, "1002", "--amount", "5", "--token-id", 3)
    assert proc.returncode == 2, proc.stderr
    assert "refused: meter 1002 answered token 3 with used (code 10); balance 12.34" in proc.stdout
    assert "credited before" in proc.stdout


def test_forged_and_other_acks_are_ignored(broker, store):
    """A forged "accepted" (bad mac, or another meter's key), a tampered one and a genuine
    ack of another token come first: the CLI logs each and waits for the real answer."""
    vk = core.load_keystore(str(store))

    def answers(kind, req):
        tid = req["token_id"]
        good = meter.ack(token=tid, result="accepted", code=1, balance="99.00")
        tampered = good.replace(b"99.00", b"99.99")
        return [
            meter.ack(OTHER_KEY, token=tid, result="accepted", code=1, balance="99.00"),
            tampered,
            json.dumps({"meter": "1003", "token": tid, "result": "accepted"}).encode(),
            meter.ack(token=tid - 1, result="accepted", code=1, balance="1.00"),
            meter.ack(token=tid, result="used", code=10, balance="5.00"),
        ]

    with FakeMeter(broker, vk, "1003", answers) as meter:
        proc = send(broker, store, "1003", "--amount", "1.00", "--token-id", 11)
    assert proc.returncode == 2, proc.stderr
    assert "answered token 11 with used (code 10); balance 5.00" in proc.stdout
    assert proc.stderr.count("mac does not verify") == 2, proc.stderr
    assert "no mac" in proc.stderr
    assert "token 10 (accepted) from meter 1003, not the one waited for" in proc.stderr


def test_no_answer_exits_3_within_the_timeout(broker, store):
    proc = vend(
        "send", "--key", store, "--meter-id", "1004", "--amount", "1", "--token-id", 1,
        "--port", broker.port, "--timeout", 2,
    )  # fmt: skip
    assert proc.returncode == 3, proc.stderr
    assert proc.elapsed < 15
    assert "no answer from meter 1004 within 2 s" in proc.stderr
    assert "same --token-id is safe" in proc.stderr
    assert proc.stdout == ""


def test_broker_gone_while_waiting_exits_3(store):
    """The broker stops after taking the top-up: the outcome is unknown, so exit 3 at once
    (not at the end of the timeout) with the advice to repeat under the same id."""
    with Broker() as b:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tools.vend", "send", "--key", str(store), "--meter-id",
             "1009", "--amount", "1", "--token-id", "1", "--port", str(b.port), "--timeout", "60"],
            cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while "meters/1009/topup" not in b.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "meters/1009/topup" in b.log()
        t0 = time.monotonic()
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 3, err
    assert time.monotonic() - t0 < 20
    assert "lost the connection to the broker" in err and "same --token-id is safe" in err


def test_unreachable_broker_exits_4(store):
    port = free_port()
    proc = vend(
        "send", "--key", store, "--meter-id", "1005", "--amount", "1", "--token-id", 1,
        "--port", port, "--timeout", 5,
    )  # fmt: skip
    assert proc.returncode == 4, proc.stderr
    assert "cannot reach the broker at 127.0.0.1:%d" % port in proc.stderr
    assert "nothing was sent" in proc.stderr
    proc = vend(
        "cmd", "--key", store, "--meter-id", "1005", "--cmd-id", 1, "--op", "report",
        "--port", port, "--timeout", 5,
    )  # fmt: skip
    assert proc.returncode == 4 and "cannot reach the broker" in proc.stderr


def test_cmd_round_trip(broker, store):
    vk = core.load_keystore(str(store))
    base = ["cmd", "--key", store, "--meter-id", "1006", "--port", broker.port, "--timeout", 20]
    with FakeMeter(broker, vk, "1006") as meter:
        proc = vend(*base, "--cmd-id", 1, "--op", "relay", "--action", "open")
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == "accepted: meter 1006 applied the command 1 (relay open)"
        tariff = '{"type":"flat","price_per_kwh":"0.2500"}'
        proc = vend(
            *base, "--cmd-id", 2, "--op", "tariff", "--tariff", tariff,
            "--from", "2026-01-01T00:00", "--json",
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["cmd"] == 2
        proc = vend(*base, "--cmd-id", 3, "--op", "thresholds", "--low-credit", "2.50",
                    "--max-power-w", 5000)  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert_no_keys(proc, store, "1006")
    assert [(k, q) for k, q, _ in meter.got] == [("cmd", 1)] * 3
    assert [r for _, _, r in meter.got] == [
        {"meter": "1006", "id": 1, "op": "relay", "action": "open"},
        {
            "meter": "1006",
            "id": 2,
            "op": "tariff",
            "tariff": {"type": "flat", "price_per_kwh": "0.2500"},
            "from": "2026-01-01T00:00",
        },
        {"meter": "1006", "id": 3, "op": "thresholds", "low_credit": "2.50", "max_power_w": 5000},
    ]


def test_cmd_refused_and_old(broker, store):
    vk = core.load_keystore(str(store))

    def refuse(kind, req):
        if req["id"] < 5:
            return [meter.ack(cmd=req["id"], result="old")]
        return [meter.ack(cmd=req["id"], result="refused", error="max_power_w: 0..30000")]

    base = ["cmd", "--key", store, "--meter-id", "1007", "--port", broker.port, "--timeout", 20]
    with FakeMeter(broker, vk, "1007", refuse) as meter:
        proc = vend(*base, "--cmd-id", 5, "--op", "thresholds", "--max-power-w", 99999)
        assert proc.returncode == 2, proc.stderr
        assert "refused: meter 1007 did not apply the command 5" in proc.stdout
        assert "max_power_w: 0..30000" in proc.stdout
        proc = vend(*base, "--cmd-id", 4, "--op", "report")
        assert proc.returncode == 2 and "use a higher --cmd-id" in proc.stdout


def test_cmd_request_errors(store):
    base = ["cmd", "--key", store, "--meter-id", "1008", "--cmd-id", 1, "--port", 1]
    for args, text in (
        (["--op", "relay"], "needs action"),
        (["--op", "tariff", "--tariff", "{not json"], "JSON object expected"),
        (["--op", "thresholds"], "at least one"),
        (["--op", "thresholds", "--low-credit", "two"], "decimal string"),
        (["--op", "report", "--action", "open"], "takes no fields"),
    ):
        proc = vend(*base, *args)
        assert proc.returncode == 1 and text in proc.stderr, (args, proc.stderr)
