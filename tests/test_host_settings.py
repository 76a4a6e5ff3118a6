"""Host tests of the settings file written by hand: `python -m tools.settings` (seal,
check, show, id) and the board section's schema against drivers/board.py."""

import ast
import json
import subprocess
import sys
from pathlib import Path

from firmware import config
from firmware.storage import jsonseal
from firmware.tokens import meterid

ROOT = Path(__file__).resolve().parent.parent


def _tool(*args):
    return subprocess.run(
        [sys.executable, "-m", "tools.settings", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_board_schema_names_every_pin_of_the_board_with_its_type():
    tree = ast.parse((ROOT / "drivers/board.py").read_text())
    pins = None
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "DEFAULT_PINS":
            pins = ast.literal_eval(node.value)
    assert pins
    kinds = {
        **dict.fromkeys(config.BOARD_TEXT, str),
        **dict.fromkeys(config.BOARD_LISTS, list),
        **{k: type(None) for k in config.BOARD_NULLABLE},
        **dict.fromkeys(config.BOARD_INTS, int),
    }
    assert kinds == {k: type(v) for k, v in pins.items()}
    config.check_board(pins)  # the defaults pass their own schema


def test_a_hand_written_file_is_sealed_checked_shown_and_its_id_written(tmp_path):
    f = tmp_path / "settings.json"
    f.write_text(json.dumps({"meter_id": "4711", "low_credit": "3.00"}, indent=2))
    r = _tool("check", f)
    assert r.returncode == 1 and "seal: missing" in r.stderr
    r = _tool("seal", f)
    assert r.returncode == 0, r.stderr
    assert f.read_bytes() == jsonseal.dumps({"meter_id": "4711", "low_credit": "3.00"})
    assert _tool("check", f).stdout == "ok\n"
    r = _tool("show", f)
    assert r.returncode == 0 and json.loads(r.stdout) == {"meter_id": "4711", "low_credit": "3.00"}
    # hand-edited after sealing: refused, as the meter would, until resealed on purpose
    f.write_bytes(f.read_bytes().replace(b"3.00", b"4.00"))
    r = _tool("seal", f)
    assert r.returncode == 1 and "seal: does not match" in r.stderr
    assert _tool("seal", f, "--edited").returncode == 0
    assert config.parse_settings(f.read_bytes())[0].low_credit == 400
    # a field the meter refuses is refused by name, and nothing is written
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps(
            {
                "tariff": {
                    "type": "tou",
                    "default_price_per_kwh": "0.2",
                    "bands": [
                        {"dayz": "sat", "from": "00:00", "to": "24:00", "price_per_kwh": "0.3"}
                    ],
                }
            }
        )
    )
    before = bad.read_bytes()
    r = _tool("seal", bad)
    assert r.returncode == 1 and "tariff.bands[0].dayz: unknown key" in r.stderr
    assert bad.read_bytes() == before
    r = _tool("id", "4711", tmp_path / "meter.id")
    assert r.returncode == 0 and meterid.load((tmp_path / "meter.id").read_bytes()) == 4711
    assert _tool("id", "0", tmp_path / "x.id").returncode == 1
