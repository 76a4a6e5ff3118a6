"""The simulator's command line and report (CPython host; the firmware runs under micropython).

`python -m tools.sim` must refuse bad scenarios with exit status 2 and one line on
stderr naming the field, and a good run must produce the report docs/simulator.md describes.
Where the command line itself is not under test, tools.sim.host.run(dict) is used.
"""

import json
import re
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from firmware.billing.policy import CONTROL_STATES
from tools.sim import host
from tools.sim.scenario import ScenarioError

ROOT = Path(__file__).resolve().parent.parent
MONEY2 = re.compile(r"^-?\d+\.\d{2}$")
ENERGY = re.compile(r"^\d+\.\d{3}$")
BASE = {"start": "2026-01-05T10:00:00", "duration_s": 60}  # a Monday


def _cli(tmp_path, text, *extra):
    path = tmp_path / "scenario.json"
    path.write_text(text)
    report = tmp_path / "report.json"
    proc = subprocess.run(
        [sys.executable, "-m", "tools.sim", str(path), "--report", str(report), *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return proc, report


def _with(**kw):
    sc = dict(BASE)
    sc.update(kw)
    return json.dumps(sc)


BAD = [
    (
        "unknown tariff type",
        _with(tariff={"type": "steep", "price_per_kwh": "0.10"}),
        "tariff.type",
    ),
    (
        "negative price",
        _with(tariff={"type": "flat", "price_per_kwh": "-0.10"}),
        "tariff.price_per_kwh",
    ),
    (
        "time 25:00 in a friendly window",
        _with(friendly=[{"days": "sat,sun", "from": "25:00", "to": "24:00"}]),
        "friendly[0].from",
    ),
    ("month 13 in start", _with(start="2026-13-01T00:00:00"), "start"),
    ("missing duration_s", json.dumps({"start": BASE["start"]}), "duration_s"),
    ("load not a list", _with(load={"at_s": 0, "watts": 100}), "load"),
    (
        "fractional watts, ideal",
        _with(meter="ideal", load=[{"at_s": 0, "watts": 1.5}]),
        "load[0].watts",
    ),
    (
        "volts with the ideal meter",
        _with(meter="ideal", load=[{"at_s": 0, "volts": 230, "amps": 1}]),
        "load[0]",
    ),
    ("amps out of range", _with(load=[{"at_s": 0, "volts": 230, "amps": 500}]), "load[0].amps"),
    ("unknown fault", _with(faults=[{"at_s": 0, "fault": "gremlins"}]), "faults[0].fault"),
    ("unknown meter", _with(meter="analog"), "meter"),
    ("negative top-up", _with(topups=[{"at_s": 5, "amount": "-1.00"}]), "topups[0].amount"),
    ("top-up after the end", _with(topups=[{"at_s": 61, "amount": "1.00"}]), "topups[0].at_s"),
    ("unknown key", _with(colour="blue"), "colour"),
    ("unknown action", _with(actions=[{"at_s": 1, "do": "dance"}]), "actions[0].do"),
    ("low_credit below reconnect_min", _with(low_credit="0.50"), "low_credit"),
    ("invalid JSON", '{"start": "2026-01-05T10:00:00", "duration_s": 60,', "JSON"),
    ("not an object", "[1, 2]", "scenario"),
]


@pytest.mark.parametrize("text,field", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_scenario_exits_2_with_one_line_naming_the_field(tmp_path, text, field):
    proc, report = _cli(tmp_path, text)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    assert field in lines[0]
    assert proc.stdout == ""
    assert not report.exists()


def test_bad_scenario_raises_scenario_error_from_host_run():
    sc = json.loads(_with(friendly=[{"from": "07:00", "to": "25:00"}]))
    with pytest.raises(ScenarioError, match=r"^friendly\[0\]\.to: "):
        host.run(sc)


# -- a good run through the command line ---------------------------------------------

GOOD = {
    "meter": "ideal",  # exact mWh: the chip's own resolution is tested in test_host_sim_chip
    "start": "2026-01-05T10:00:00",
    "duration_s": 7200,
    "step_s": 1,
    "balance": "2.20",
    "tariff": {"type": "flat", "price_per_kwh": "0.2500"},
    "load": [{"at_s": 0, "watts": 1200}, {"at_s": 3600, "watts": 300}],
}


def _check_format(report):
    assert {"final", "events", "series", "warnings"} <= set(report)
    f = report["final"]
    for key in ("balance", "debt", "credited", "charged", "recovered"):
        assert MONEY2.match(f[key]), (key, f[key])
    for key in ("energy_wh", "true_energy_wh"):
        assert ENERGY.match(f[key]), (key, f[key])
    assert f["relay"] in ("closed", "open")
    assert f["control_state"] in CONTROL_STATES
    assert isinstance(f["carry"], int) and isinstance(f["ticks"], int)
    last = -1
    for e in report["events"]:
        assert isinstance(e["t_s"], int) and e["t_s"] >= last
        last = e["t_s"]
        assert isinstance(e["kind"], str) and e["kind"]
        assert MONEY2.match(e["balance"]), e
        assert isinstance(e["value"], int)
    for p in report["series"]:
        assert isinstance(p["t_s"], int)
        assert isinstance(p["power_w"], int)
        assert MONEY2.match(p["balance"]), p
        assert p["relay"] in ("closed", "open")
        assert isinstance(p["state"], str)


def test_good_scenario_report_matches_the_format(tmp_path):
    proc, path = _cli(tmp_path, json.dumps(GOOD), "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    report = json.loads(path.read_text())
    _check_format(report)
    f = report["final"]
    # 1200 W for an hour, 300 W for an hour: 1.5 kWh at 0.25 = 0.375 -> 0.37, 0.005 carried
    assert f["energy_wh"] == "1500.000" == f["true_energy_wh"]
    assert f["charged"] == "0.37"
    assert f["carry"] == 1500000 * 2500 - 37 * 10**8
    assert f["balance"] == "1.83"
    assert f["relay"] == "closed" and f["control_state"] == "connected"
    assert f["state"] == "low_credit"
    assert f["ticks"] == 7200 and f["errors"] == 0 and f["relay_faults"] == 0
    # one point a minute, both ends included
    series = report["series"]
    assert [p["t_s"] for p in series] == list(range(0, 7201, 60))
    assert all(p["power_w"] == (1200 if p["t_s"] < 3600 else 300) for p in series)
    assert series[0]["balance"] == "2.20"
    assert series[-1]["balance"] == "1.83"
    # 1 cent per 120 s at 1200 W: 1.99 after 21 cents, at 2520 s; reminder an hour later
    kinds = [(e["t_s"], e["kind"], e["balance"]) for e in report["events"]]
    assert kinds == [(2520, "low_credit", "1.99"), (6120, "low_credit_reminder", "1.85")]


def test_summary_prints_the_events_and_the_final_state(tmp_path):
    sc = dict(GOOD, duration_s=3000, load=GOOD["load"][:1])
    proc, _ = _cli(tmp_path, json.dumps(sc), "--quiet", "--summary")
    assert proc.returncode == 0, proc.stderr
    assert "low_credit" in proc.stdout
    assert "final: balance 1.95, energy 1000.000 Wh, relay closed" in proc.stdout


# -- running out of credit -----------------------------------------------------------

PRICE = 3600  # 0.3600 per kWh in price units (1/100 cent)
ZERO = {
    "meter": "ideal",
    "start": "2026-01-05T12:00:00",
    "duration_s": 1500,
    "step_s": 1,
    "series_s": 1,
    "balance": "0.50",
    "debt": "1.00",
    "debt_recovery_percent": 50,
    "low_credit": "0.20",
    "reconnect_min": "0.10",
    "tariff": {"type": "flat", "price_per_kwh": "0.3600"},
    # 10 kW at 0.36: 0.1 cent a second, zero after about 500 s
    "load": [{"at_s": 0, "watts": 10000}],
    "topups": [{"at_s": 900, "amount": "2.00"}],
}


@pytest.fixture(scope="module")
def zero_report():
    return host.run(ZERO)


def _dec(s):
    return Decimal(s)


def test_relay_opens_within_one_tick_of_zero(zero_report):
    r = zero_report
    _check_format(r)
    disc = [e for e in r["events"] if e["kind"] == "disconnect"]
    assert len(disc) == 1
    assert disc[0]["balance"] == "0.00"
    t0 = disc[0]["t_s"]
    assert 480 <= t0 <= 520
    series = r["series"]
    assert [p["t_s"] for p in series] == list(range(1501))
    # A sample at t is taken after the tick of t: the tick at t0 reached zero and cut
    # (the 80 ms pulse is still under way at the sample); one tick later it is open.
    first_zero = next(p for p in series if _dec(p["balance"]) <= 0)
    assert first_zero["t_s"] == t0
    assert first_zero["state"] == "out_of_credit"
    assert _dec(series[t0 - 1]["balance"]) > 0 and series[t0 - 1]["relay"] == "closed"
    for p in series[t0 + 1 :]:
        if _dec(p["balance"]) <= 0:
            assert p["relay"] == "open" and p["power_w"] == 0, p
            assert p["state"] == "out_of_credit"
    for p in series:
        if p["relay"] == "open":
            assert t0 < p["t_s"] <= 900, p


def test_topup_restores_supply_and_repays_debt(zero_report):
    r = zero_report
    kinds = [(e["t_s"], e["kind"], e["value"]) for e in r["events"] if e["t_s"] == 900]
    assert (900, "topup", 200) in kinds
    assert (900, "debt_recovered", 100) in kinds
    assert (900, "reconnect", 0) in kinds
    assert r["series"][901]["relay"] == "closed"
    assert r["series"][901]["power_w"] == 10000
    assert [p["t_s"] for p in r["series"] if p["relay"] == "open"][-1] == 900
    f = r["final"]
    assert f["relay"] == "closed" and f["control_state"] == "connected"
    assert f["debt"] == "0.00" and f["recovered"] == "1.00" and f["credited"] == "1.00"
    assert f["relay_faults"] == 0 and f["errors"] == 0


def test_final_balance_reconciles_exactly(zero_report):
    f = zero_report["final"]
    start = _dec(ZERO["balance"])
    assert _dec(f["balance"]) == start + _dec(f["credited"]) - _dec(f["charged"])
    # flat tariff, no standing charge: charged == floor(price x energy), rest carried
    mwh = int(_dec(f["energy_wh"]) * 1000)
    assert _dec(f["charged"]) == Decimal(mwh * PRICE // 10**8) / 100
    assert f["carry"] == mwh * PRICE % 10**8
    assert f["energy_wh"] == f["true_energy_wh"]


def test_energy_stops_while_the_relay_is_open(zero_report):
    r = zero_report
    t0 = [e["t_s"] for e in r["events"] if e["kind"] == "disconnect"][0]
    # Supplied from 0 to the cut at t0 and from the top-up at 900 s to the end; each
    # relay pulse takes the same 80 ms, so the two pulse times cancel out.
    powered_ms = t0 * 1000 + (1500 - 900) * 1000
    assert int(_dec(r["final"]["energy_wh"]) * 1000) == 10000 * powered_ms // 3600


def test_sim_energy_equals_true_energy_under_a_varying_load():
    sc = {
        "meter": "ideal",
        "start": "2026-01-10T21:00:00",  # Saturday evening into Sunday
        "duration_s": 4 * 3600,
        "step_s": 3,
        "series_s": 600,
        "balance": "50.00",
        "tariff": {
            "type": "tou",
            "bands": [{"days": "all", "from": "22:00", "to": "23:30", "price_per_kwh": "0.4113"}],
            "default_price_per_kwh": "0.1277",
        },
        "load": [
            {"at_s": 0, "watts": 1234},
            {"at_s": 1001, "watts": 77},
            {"at_s": 4444, "watts": 0},
            {"at_s": 5000, "watts": 3333},
            {"at_s": 9999, "watts": 19},
        ],
    }
    f = host.run(sc)["final"]
    assert f["energy_wh"] == f["true_energy_wh"]
    assert _dec(f["energy_wh"]) > 5000
    assert _dec(f["balance"]) == _dec("50.00") - _dec(f["charged"])
    assert f["ticks"] == 4 * 3600 // 3
