"""Power cuts in the simulator (CPython host driving the firmware under micropython).

A day of load and top-ups on the ATM90E26 model with 50 random power cuts: after each
the meter reboots through its start-up on the same flash, relay and chip. The books
must reconcile exactly: balance = start + credits - charges, every top-up credited
once (those due during an outage are delivered when the power returns), the charges
equal to the price of the energy billed, and the energy billed plus what the cuts and
chip resets lost equal to the energy drawn.
"""

import json
import random
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

from tools.sim import host

ROOT = Path(__file__).resolve().parent.parent
PRICE_UNITS = 2500  # 0.2500 per kWh in 1/100 minor units
SCALE = 10**8  # firmware.billing.money.CHARGE_SCALE


def _cuts(n, seed, day=86400):
    rnd = random.Random(seed)
    out, t = [], 0
    slot = day // n
    for i in range(n):
        at = i * slot + rnd.randrange(0, slot // 2)
        length = rnd.randrange(1, slot // 2)
        assert at >= t
        out.append({"at_s": at, "for_s": length})
        t = at + length
    return out


def _scenario():
    rnd = random.Random(7)
    load = [
        {"at_s": h * 3600, "watts": rnd.choice([150, 600, 1800, 3200, 6500])} for h in range(24)
    ]
    topups = [
        {"at_s": 1800 + h * 7200, "amount": "%d.%02d" % (rnd.randrange(1, 6), rnd.randrange(100))}
        for h in range(12)
    ]
    return {
        "start": "2026-01-05T00:00:00",
        "duration_s": 86400,
        "tariff": {"type": "flat", "price_per_kwh": "0.2500"},
        "balance": "3.00",
        "low_credit": "2.00",
        "reconnect_min": "1.00",
        "load": load,
        "topups": topups,
        "power_cuts": _cuts(50, 11),
    }


def test_fifty_random_power_cuts_reconcile_exactly():
    sc = _scenario()
    r = host.run(sc)
    f = r["final"]
    assert f["power_cuts"] == 50
    assert f["errors"] == 0
    topped = sum(Decimal(t["amount"]) for t in sc["topups"])
    assert Decimal(f["credited"]) == topped  # none lost, none twice
    assert sum(1 for e in r["events"] if e["kind"] == "topup") == len(sc["topups"])
    assert Decimal(f["balance"]) == Decimal("3.00") + topped - Decimal(f["charged"])
    billed_mwh = int(Decimal(f["energy_wh"]) * 1000)
    charged_minor = int(Decimal(f["charged"]) * 100)
    assert charged_minor * SCALE + f["carry"] == billed_mwh * PRICE_UNITS
    # energy: billed + lost to cuts (unsaved) + lost to chip resets == drawn, to within
    # what is still inside the chip's registers at the end (under one LSB, 31.25 mWh)
    true = Decimal(f["true_energy_wh"])
    accounted = (
        Decimal(f["energy_wh"])
        + Decimal(f["cut_lost_energy_wh"])
        + Decimal(f["chip_lost_energy_wh"])
    )
    assert Decimal("0") <= true - accounted <= Decimal("0.05"), (true, accounted)
    # each cut lost at most the write policy's bound: 0.10 plus one tick
    assert Decimal(f["cut_lost_charge"]) <= 50 * Decimal("0.11")
    # a boot event after every cut (the fresh meter's first boot is the set-up)
    assert sum(1 for e in r["events"] if e["kind"] == "boot") == 50


def _cli(tmp_path, sc):
    path = tmp_path / "s.json"
    path.write_text(json.dumps(sc))
    return subprocess.run(
        [sys.executable, "-m", "tools.sim", str(path), "--report", str(tmp_path / "r.json")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_bad_power_cut_steps_are_refused_with_the_field_named(tmp_path):
    base = {"start": "2026-01-05T00:00:00", "duration_s": 600}
    cases = [
        ([{"at_s": 10}], "power_cuts[0].for_s: missing"),
        ([{"at_s": 10, "for_s": -1}], "power_cuts[0].for_s"),
        ([{"at_s": 10, "for_s": 100}, {"at_s": 50, "for_s": 5}], "power_cuts"),
        ("soon", "power_cuts: expected a list"),
    ]
    for cuts, field in cases:
        proc = _cli(tmp_path, dict(base, power_cuts=cuts))
        assert proc.returncode == 2, proc.stderr
        assert field in proc.stderr and "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1


def test_a_five_second_cut_inside_a_friendly_window_keeps_the_supply_until_it_ends():
    sc = {
        "start": "2026-01-10T10:00:00",  # a Saturday
        "duration_s": 2400,
        "tariff": {"type": "flat", "price_per_kwh": "1.0000"},
        "balance": "0.20",  # 200 s at 3.6 kW, then held by the window
        "low_credit": "1.00",
        "reconnect_min": "1.00",
        "friendly": [{"days": "sat-sun", "from": "08:00", "to": "10:30"}],
        "load": [{"at_s": 0, "watts": 3600}],
        "power_cuts": [{"at_s": 600, "for_s": 5}],
        "meter": "ideal",
    }
    r = host.run(sc)
    assert r["final"]["power_cuts"] == 1 and r["final"]["errors"] == 0
    kinds = [(e["t_s"], e["kind"]) for e in r["events"] if e["kind"] != "friendly_hold"]
    assert kinds == [(605, "boot"), (1800, "disconnect")]  # cut when the window ends


def test_power_cuts_between_max_power_trips_still_lock_out_at_the_fourth():
    sc = {
        "start": "2026-01-05T12:00:00",
        "duration_s": 1200,
        "tariff": {"type": "flat", "price_per_kwh": "0.2500"},
        "balance": "100.00",
        "max_power_w": 3000,
        "load": [{"at_s": 0, "watts": 5000}],
        # one 5-second cut in each of the first three retry waits (trips at 30, 180, 330)
        "power_cuts": [
            {"at_s": 90, "for_s": 5},
            {"at_s": 240, "for_s": 5},
            {"at_s": 390, "for_s": 5},
        ],
        "meter": "ideal",
    }
    r = host.run(sc)
    assert r["final"]["power_cuts"] == 3 and r["final"]["errors"] == 0
    at = lambda kind: [e["t_s"] for e in r["events"] if e["kind"] == kind]  # noqa: E731
    assert at("max_power_trip") == [30, 180, 330, 480]
    assert at("max_power_retry") == [150, 300, 450]
    assert at("max_power_lockout") == [480]
    assert r["final"]["relay"] == "open"
