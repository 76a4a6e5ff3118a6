"""Top-ups in the simulator go through the token path (CPython host, firmware under
micropython): vended by tools/vend's own crypto for the meter's key, entered like a
keypad or MQTT token, answered in the report."""

import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

from tools.sim import host
from tools.vend import core

ROOT = Path(__file__).resolve().parent.parent
BASE = {
    "start": "2026-01-05T10:00:00",
    "duration_s": 600,
    "meter": "ideal",
    "balance": "1.50",
    "tariff": {"type": "flat", "price_per_kwh": "0.2500"},
}


def test_topups_are_vended_tokens_compact_or_envelope():
    sc = dict(BASE, topups=[{"at_s": 60, "amount": "5.00"}, {"at_s": 120, "amount": "200.01"}])
    r = host.run(sc)
    a = r["answers"]
    assert [x["result"] for x in a] == ["accepted", "accepted"]
    assert len(a[0]["token"]) == 20 and a[0]["token"].isdigit()  # 500 fits a compact token
    assert len(a[1]["token"]) == 140  # 20001 does not: an envelope, in hex
    assert Decimal(r["final"]["credited"]) == Decimal("205.01")
    assert a[1]["balance"] == r["final"]["balance"]


def test_entered_tokens_replays_and_garbage_get_reject_codes(tmp_path):
    store = tmp_path / "vend.json"
    core.keygen(str(store), decimals=2)
    vk = core.load_keystore(str(store))
    key = core.meter_key(vk, 4711)
    good = core.compact_credit(key, 7, 300)
    other = core.compact_credit(core.meter_key(vk, 4712), 8, 300)
    sc = dict(
        BASE,
        meter_id="4711",
        vending_key=str(store),
        enter=[
            {"at_s": 10, "token": good},
            {"at_s": 20, "token": good},
            {"at_s": 30, "token": other},
            {"at_s": 40, "token": "not a token"},
        ],
    )
    r = host.run(sc)
    got = [(x["t_s"], x["result"]) for x in r["answers"]]
    assert got == [(10, "accepted"), (20, "used"), (30, "crc"), (40, "format")]
    assert Decimal(r["final"]["credited"]) == Decimal("3.00")
    kinds = [e["kind"] for e in r["events"]]
    assert kinds.count("token_rejected") == 3 and kinds.count("topup") == 1


def test_a_top_up_during_a_power_cut_lands_once_when_the_power_returns():
    sc = dict(
        BASE,
        topups=[{"at_s": 100, "amount": "2.00"}],
        power_cuts=[{"at_s": 90, "for_s": 60}],
    )
    r = host.run(sc)
    assert [(x["t_s"], x["result"]) for x in r["answers"]] == [(100, "accepted")]
    topup = [e for e in r["events"] if e["kind"] == "topup"]
    assert len(topup) == 1 and topup[0]["t_s"] == 150  # delivered when the meter is back


def test_a_bad_key_store_is_a_one_line_error(tmp_path):
    bad = tmp_path / "nope.json"
    bad.write_text("{}")
    path = tmp_path / "s.json"
    path.write_text(json.dumps(dict(BASE, vending_key=str(bad))))
    proc = subprocess.run(
        [sys.executable, "-m", "tools.sim", str(path), "--report", str(tmp_path / "r.json")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "vending_key" in proc.stderr and "Traceback" not in proc.stderr


def test_tokens_typed_on_the_keypad_model_credit_and_show_on_the_screen(tmp_path):
    store = tmp_path / "vend.json"
    core.keygen(str(store), decimals=2)
    key = core.meter_key(core.load_keystore(str(store)), 4711)
    good = core.compact_credit(key, 9, 400)
    typo = good[:5] + str((int(good[5]) + 1) % 10) + good[6:]
    sc = dict(
        BASE,
        meter_id="4711",
        vending_key=str(store),
        keys=[
            {"at_s": 10, "keys": typo + "#"},  # one digit wrong
            {"at_s": 30, "keys": "12*3**"},  # typed, corrected, dropped
            {"at_s": 50, "keys": good + "#"},
        ],
    )
    shots = tmp_path / "screens"
    r = host.run(sc, screens=str(shots))
    got = [(x["token"], x["result"]) for x in r["answers"]]
    assert got[0][0] == typo and got[0][1] in ("crc", "format")
    assert got[1] == (good, "accepted") and len(got) == 2
    assert Decimal(r["final"]["credited"]) == Decimal("4.00")
    names = sorted(p.name for p in shots.glob("*.png"))
    assert any("token_accepted" in n for n in names), names
    assert any("token_" + got[0][1] in n for n in names), names
