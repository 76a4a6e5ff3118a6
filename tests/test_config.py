"""Portable tests of firmware/config.py: settings through conffile, events, calibration store.

Run in a fresh directory under /tmp with explicit paths (config.py's defaults are relative
to the board's root). build() itself needs drivers.board (machine) and is not run here:
its pieces (parse_settings, load_settings, report_config, save_calibration) are.
"""

import json
import os

import support
from drivers.atm90e26 import defaults, validate
from drivers.atm90e26_cal import calibrate
from firmware.storage import conffile, jsonseal
from firmware.billing import events as ev
from firmware import config
from firmware.billing.meter import Meter
from firmware.billing.wallclock import WallClock


GOOD = {
    "meter_id": "M0001",
    "tariff": {"type": "flat", "price_per_kwh": "0.2500"},
    "low_credit": "3.00",
    "board": {"relay_set": 32, "relay_reset": 33},
    "calibration": {"Ugain": 0x6800},
}


_tmpdir = support.tmpdir
_rmtree = support.rmtree


def _in_tmp(fn):
    d = _tmpdir()
    try:
        fn(d, d + "/settings.json")
    finally:
        _rmtree(d)


def _write(path, raw):
    with open(path, "wb") as f:
        f.write(raw if isinstance(raw, bytes) else jsonseal.dumps(raw))


def _read_json(path):
    with open(path, "rb") as f:
        return jsonseal.loads(f.read())  # the seal checked


def _changed(**kw):
    raw = json.loads(json.dumps(GOOD))
    raw.update(kw)
    return raw


def _meter():
    settings = config.parse_settings(jsonseal.dumps(GOOD))[0]
    return Meter(settings, WallClock(2026, 1, 5, 3600))


def test_parse_settings_splits_the_sections():
    settings, board, cal, raw = config.parse_settings(jsonseal.dumps(GOOD))
    assert settings.meter_id == "M0001" and settings.low_credit == 300
    assert board == {"relay_set": 32, "relay_reset": 33}
    assert cal == {"Ugain": 0x6800}
    assert raw == GOOD


def test_parse_settings_refuses_what_the_meter_would_refuse():
    cases = (
        (b"[1, 2]", "settings"),
        (b'{"meter_id": ', ""),
        (jsonseal.dumps(_changed(board=[1])), "board"),
        (jsonseal.dumps(_changed(calibration=5)), "calibration"),
        (jsonseal.dumps(_changed(calibration={"Ugain": 0x8000})), "calibration.Ugain"),
        (jsonseal.dumps(_changed(calibration={"Nope": 1})), "calibration.Nope"),
        (jsonseal.dumps(_changed(low_credit="0.50")), "low_credit"),
        (jsonseal.dumps(_changed(colour="red")), "colour"),
    )
    for data, field in cases:
        e = support.raises(ValueError, config.parse_settings, data)
        assert field in str(e), (field, str(e))


def test_an_unknown_modem_dialect_is_refused_naming_the_known_ones():
    from drivers import dialects
    from firmware.billing import settings as settings_mod

    e = support.raises(ValueError, config.parse_settings, jsonseal.dumps(_changed(modem="sim800")))
    assert "modem" in str(e) and "simcom, quectel" in str(e), str(e)
    bad_board = _changed(board={"lora_dialect": "rak811"})
    e = support.raises(ValueError, config.parse_settings, jsonseal.dumps(bad_board))
    assert "board.lora_dialect" in str(e) and "rui3, e5" in str(e), str(e)
    for name in dialects.LORAWAN:
        config.parse_settings(jsonseal.dumps(_changed(board={"lora_dialect": name})))
    # the settings schema (billing may import no driver) keeps the drivers' list
    assert tuple(settings_mod.MODEMS) == dialects.CELLULAR


def test_load_settings_reads_the_file():
    def run(d, path):
        _write(path, GOOD)
        settings, board, cal, report = config.load_settings(path)
        assert settings.meter_id == "M0001"
        assert board == GOOD["board"] and cal == GOOD["calibration"]
        assert report is None

    _in_tmp(run)


def test_a_bad_value_falls_back_to_the_last_good_settings():
    def run(d, path):
        _write(path, GOOD)
        assert config.load_settings(path)[3] is None  # boot: the last good copy is kept
        _write(path, _changed(meter_id="M0002", low_credit="0.50"))  # below reconnect_min
        settings, board, cal, report = config.load_settings(path)
        assert settings.meter_id == "M0001" and board == GOOD["board"]
        assert report[0] == conffile.BAK and "low_credit" in report[1], report
        assert _read_json(path) == GOOD  # restored
        assert _read_json(path + ".bad")["meter_id"] == "M0002"  # kept for the technician

    _in_tmp(run)


def test_a_bad_calibration_register_falls_back_too():
    # the board would refuse it at start-up: better the last good file than no meter
    def run(d, path):
        _write(path, GOOD)
        config.load_settings(path)
        _write(path, _changed(calibration={"Ugain": 70000}))
        settings, board, cal, report = config.load_settings(path)
        assert cal == GOOD["calibration"] and report[0] == conffile.BAK
        assert "calibration.Ugain" in report[1]

    _in_tmp(run)


def test_no_settings_file_runs_on_defaults_and_says_so():
    def run(d, path):
        settings, board, cal, report = config.load_settings(path)
        assert settings.meter_id == "00000000" and board == {} and cal == {}
        assert report == (None, conffile.MISSING)

    _in_tmp(run)


def test_report_config_emits_one_event_per_report():
    m = _meter()
    assert config.report_config(m, None) is None
    assert m.log.items == []
    kind = config.report_config(m, (conffile.BAK, "ValueError: low_credit: ..."), "s.json")
    assert kind == ev.CONFIG_FALLBACK
    stamp = WallClock(2026, 1, 5, 3600).stamp()
    assert m.log.items[-1] == (stamp, ev.CONFIG_FALLBACK, m.ledger.balance, 2)
    config.report_config(m, (conffile.NEW, conffile.MISSING))
    assert m.log.items[-1][1:] == (ev.CONFIG_FALLBACK, m.ledger.balance, 1)
    assert config.report_config(m, (None, conffile.MISSING)) == ev.CONFIG_DEFAULTS
    assert m.log.items[-1][1:] == (ev.CONFIG_DEFAULTS, m.ledger.balance, 0)
    config.report_config(m, (None, "s.json: ValueError: x; s.json.bak: ValueError: y"))
    assert m.log.items[-1][1:] == (ev.CONFIG_DEFAULTS, m.ledger.balance, 1)
    assert len(m.log.items) == 4
    assert ev.CONFIG_FALLBACK == "config_fallback" and ev.CONFIG_DEFAULTS == "config_defaults"


def test_save_calibration_round_trip_keeps_everything_else():
    def run(d, path):
        _write(path, GOOD)
        config.load_settings(path)
        new = calibrate(
            validate(GOOD["calibration"]),
            u_ref_cv=23000,
            u_read_cv=22770,
            p_ref_w=1150,
            p_read_w=1162,
        )
        assert new["Ugain"] != 0x6800
        assert config.save_calibration(new, path) is None  # based on the file itself
        settings, board, cal, report = config.load_settings(path)
        assert report is None
        assert cal == new and validate(cal) == new
        assert board == GOOD["board"] and settings.meter_id == "M0001"
        assert settings.low_credit == 300 and settings.raw["tariff"] == GOOD["tariff"]
        saved = _read_json(path)
        for key, value in GOOD.items():
            if key != "calibration":
                assert saved[key] == value, key
        assert _read_json(path + ".bak") == saved  # refreshed by the load
        assert sorted(os.listdir(d)) == ["settings.json", "settings.json.bak"]

    _in_tmp(run)


def test_save_calibration_refuses_a_bad_calibration_and_writes_nothing():
    def run(d, path):
        _write(path, GOOD)
        e = support.raises(ValueError, config.save_calibration, {"Ugain": 0x8001}, path)
        assert "Ugain" in str(e)
        assert _read_json(path) == GOOD

    _in_tmp(run)


def test_save_calibration_on_a_fresh_meter_creates_the_file():
    def run(d, path):
        report = config.save_calibration({"Lgain": 0x0123}, path)
        assert report == (None, conffile.MISSING)
        settings, board, cal, report = config.load_settings(path)
        assert report is None and cal["Lgain"] == 0x0123 and cal == validate({"Lgain": 0x0123})
        assert settings.meter_id == "00000000" and board == {}

    _in_tmp(run)


def test_save_calibration_edits_the_last_good_copy_when_the_file_is_bad():
    def run(d, path):
        _write(path, GOOD)
        config.load_settings(path)
        _write(path, b"{garbage")
        report = config.save_calibration(defaults(), path)
        assert report[0] == conffile.BAK
        saved = _read_json(path)
        assert saved["meter_id"] == "M0001" and saved["calibration"] == defaults()

    _in_tmp(run)


def test_save_calibration_refuses_when_no_copy_is_usable():
    def run(d, path):
        _write(path, b"{garbage")
        e = support.raises(ValueError, config.save_calibration, defaults(), path)
        assert "unusable" in str(e)
        assert "settings.json" not in os.listdir(d)  # nothing written over it
        with open(path + ".bad", "rb") as f:
            assert f.read() == b"{garbage"

    _in_tmp(run)
