"""Portable tests of the settings' integrity: every nested object refuses unknown and
ill-typed keys by field path (firmware/billing/settings.py, tariff.py, firmware/config.py)."""

import json

import support
from firmware import config
from firmware.storage import jsonseal
from firmware.billing.settings import Settings

_P = "0.3000"
TOU = {
    "type": "tou",
    "default_price_per_kwh": "0.2000",
    "bands": [
        {"days": "mon-fri", "from": "07:00", "to": "09:00", "price_per_kwh": _P},
        {"days": "mon-fri", "from": "17:00", "to": "21:00", "price_per_kwh": _P},
    ],
}
BLOCK = {
    "type": "block",
    "tiers": [
        {"up_to_kwh": "50", "price_per_kwh": "0.1000"},
        {"up_to_kwh": None, "price_per_kwh": _P},
    ],
}


def _copy(obj):
    return json.loads(json.dumps(obj))


def _refused(raw):
    return str(support.raises(ValueError, Settings, raw))


def test_a_misspelt_key_in_a_tou_band_is_refused_by_path():
    t = _copy(TOU)
    t["bands"][1]["dayz"] = t["bands"][1].pop("days")
    assert _refused({"tariff": t}) == "tariff.bands[1].dayz: unknown key"
    # the passive tariff is the same schema
    raw = {"tariff_next": t, "tariff_next_from": "2027-01-01T00:00"}
    assert _refused(raw) == "tariff_next.bands[1].dayz: unknown key"
    Settings({"tariff": TOU})  # the spelling the schema knows still loads


def test_a_band_or_tier_that_is_not_an_object_or_mistyped_is_refused():
    t = _copy(TOU)
    t["bands"][0] = ["mon-fri", "07:00"]
    assert _refused({"tariff": t}) == "tariff.bands[0]: expected an object"
    t = _copy(TOU)
    t["bands"][0]["from"] = 700
    assert _refused({"tariff": t}).startswith("tariff.bands[0].from: expected HH:MM")
    t = _copy(TOU)
    t["bands"][0]["days"] = ["mon"]
    assert _refused({"tariff": t}).startswith("tariff.bands[0].days: expected day names")
    t = _copy(TOU)
    t["bands"][0]["price_per_kwh"] = True
    assert _refused({"tariff": t}).startswith("tariff.bands[0].price_per_kwh: expected")


def test_a_misspelt_key_in_a_block_tier_is_refused_by_path():
    b = _copy(BLOCK)
    b["tiers"][0]["up_to_kWh"] = b["tiers"][0].pop("up_to_kwh")
    assert _refused({"tariff": b}) == "tariff.tiers[0].up_to_kWh: unknown key"
    b = _copy(BLOCK)
    b["tiers"][1]["price"] = "0.5"
    assert _refused({"tariff": b}) == "tariff.tiers[1].price: unknown key"
    Settings({"tariff": BLOCK})


def test_a_misspelt_key_in_a_friendly_window_or_quiet_hours_is_refused():
    w = [{"days": "sat,sun", "from": "00:00", "to": "24:00"}]
    Settings({"friendly": w, "quiet_hours": w})
    bad = [{"day": "sat,sun", "from": "00:00", "to": "24:00"}]
    assert _refused({"friendly": bad}) == "friendly[0].day: unknown key"
    bad = [w[0], {"from": "21:00", "to": "07:00", "until": "08:00"}]
    assert _refused({"quiet_hours": bad}) == "quiet_hours[1].until: unknown key"
    assert _refused({"friendly": ["sat"]}) == "friendly[0]: expected an object"
    assert _refused({"quiet_hours": [{"from": 21, "to": "07:00"}]}).startswith(
        "quiet_hours[0].from: expected HH:MM"
    )


def _file(**kw):
    raw = {"meter_id": "4711"}
    raw.update(kw)
    return jsonseal.dumps(raw)


def test_the_board_section_refuses_unknown_and_mistyped_pins():
    config.parse_settings(_file(board={"relay_set": 32, "lora_reset": None, "display": ""}))
    for board, want in (
        ({"relay_sett": 32}, "board.relay_sett: unknown key"),
        ({"relay_set": "32"}, "board.relay_set: expected a whole number"),
        ({"relay_set": True}, "board.relay_set: expected a whole number"),
        ({"lora_reset": "27"}, "board.lora_reset: expected a whole number or null"),
        ({"display": 1}, "board.display: expected a string"),
        ({"keypad_rows": [13, "14"]}, "board.keypad_rows: expected a list of whole numbers"),
        ({"keypad_cols": 33}, "board.keypad_cols: expected a list of whole numbers"),
    ):
        e = support.raises(ValueError, config.parse_settings, _file(board=board))
        assert str(e).startswith(want), (str(e), want)


def test_the_calibration_section_refuses_unknown_registers():
    e = support.raises(ValueError, config.parse_settings, _file(calibration={"Ugian": 1}))
    assert str(e) == "calibration.Ugian: unknown register"


# -- the seal ---------------------------------------------------------------------------
# A settings file as the field has them: TOU with two bands, standing charge, friendly and
# quiet windows, max power (about 500 bytes sealed).
FIELD = {
    "meter_id": "4711002",
    "currency_decimals": 2,
    "tariff": TOU,
    "standing_charge_per_day": "0.25",
    "low_credit": "3.00",
    "reconnect_min": "1.00",
    "emergency_credit": "5.00",
    "friendly": [{"days": "sat,sun", "from": "00:00", "to": "24:00"}],
    "quiet_hours": [{"from": "21:00", "to": "07:00"}],
    "max_power_w": 6000,
    "board": {"relay_set": 25, "relay_reset": 26},
    "calibration": {"Ugain": 0x6800},
}


def test_the_sealed_file_is_one_byte_string_on_every_runtime():
    obj = {"b": [1, None, True, False], "a": {"z": 'x"\\\n\u00e9', "y": -3}}
    want = b'{"a":{"y":-3,"z":"x\\"\\\\\\u000a\xc3\xa9"},"b":[1,null,true,false],"seal":"'
    data = jsonseal.dumps(obj)
    assert data.startswith(want) and len(data) == len(want) + 10, data
    # the CRC-32 of the canonical form, the same number under CPython and MicroPython
    assert data.endswith(b'"43788243"}'), data  # zlib.crc32 of the text before "seal"
    assert jsonseal.loads(data) == obj
    assert jsonseal.dumps({}) == b'{"seal":"a3a6bf43"}'  # crc32(b"{}")


def test_an_unsealed_or_mismatched_file_is_refused():
    e = support.raises(ValueError, config.parse_settings, json.dumps(FIELD).encode())
    assert str(e).startswith("seal: missing")
    data = jsonseal.dumps(FIELD).replace(b'"0.3000"', b'"8.3000"', 1)
    e = support.raises(ValueError, config.parse_settings, data)
    assert str(e).startswith("seal: does not match")
    e = support.raises(ValueError, jsonseal.dumps, {"x": 0.5})
    assert str(e).startswith("settings.x: a whole number or a decimal string")
    config.parse_settings(jsonseal.dumps(FIELD))


def test_every_single_bit_flip_of_a_settings_file_is_refused_or_harmless():
    """The fault injection of bit rot: each of the 8 x len(file) one-bit flips of a real
    sealed settings file either fails to load (the meter then takes the last good copy,
    with its event) or loads exactly what the file held. None changes a setting."""
    data = jsonseal.dumps(FIELD)
    good = config.parse_settings(data)[3]
    refused = harmless = changed = 0
    buf = bytearray(data)
    for i in range(len(buf)):
        for bit in range(8):
            buf[i] ^= 1 << bit
            try:
                raw = config.parse_settings(bytes(buf))[3]
            except Exception:  # anything the load refuses: the fallback copy is used
                refused += 1
            else:
                if raw == good:
                    harmless += 1
                else:
                    changed += 1
            buf[i] ^= 1 << bit
    print(
        "settings bit flips: %d bytes, %d flips: %d refused, %d harmless, %d changed"
        % (len(data), 8 * len(data), refused, harmless, changed)
    )
    assert refused + harmless == 8 * len(data) and changed == 0
    assert refused > 0.99 * 8 * len(data)


def test_a_flipped_bit_on_flash_falls_back_to_the_last_good_copy_with_its_event():
    from firmware.billing import events as ev
    from firmware.billing.meter import Meter
    from firmware.billing.wallclock import WallClock
    from firmware.storage import conffile

    d = support.tmpdir()
    try:
        path = d + "/settings.json"
        conffile.save(path, jsonseal.dumps(FIELD))
        conffile.save(path, jsonseal.dumps(dict(FIELD, max_power_w=7000)))  # .bak: 6000
        data = bytearray(support.read_file(path))
        i = data.index(b"7000")
        data[i] ^= 0x01  # 7000 -> 6000: valid JSON, valid settings, the seal does not match
        support.write_file(path, bytes(data))
        settings, board, cal, report = config.load_settings(path)
        assert settings.max_power_w == 6000 and report[0] == conffile.BAK
        assert report[1].startswith("ValueError: seal: does not match"), report
        m = Meter(settings, WallClock(2026, 1, 5, 3600))
        assert config.report_config(m, report, path) == ev.CONFIG_FALLBACK
        assert m.log.items[-1][1:] == (ev.CONFIG_FALLBACK, m.ledger.balance, 2)
        assert support.read_file(path + ".bad") == bytes(data)  # kept for the technician
    finally:
        support.rmtree(d)


def test_every_writer_of_the_meter_seals_what_it_writes():
    from firmware.storage import conffile

    d = support.tmpdir()
    try:
        path = d + "/settings.json"
        conffile.save(path, config.seal_settings(FIELD))
        config.save_meter_settings({"low_credit": "4.00"}, path)
        assert config.parse_settings(support.read_file(path))[0].low_credit == 400
        config.save_calibration({"Ugain": 0x6900}, path)
        got = config.parse_settings(support.read_file(path))
        assert got[2]["Ugain"] == 0x6900 and got[0].low_credit == 400
    finally:
        support.rmtree(d)


# -- the meter's own id, apart from the settings ----------------------------------------
METER_ID = 4711002
_VK = bytes(range(32))


def _key():
    from firmware.tokens import keys

    return keys.MeterKey(keys.derive_meter_key(_VK, METER_ID))


def _files(d, settings=FIELD, meter_id=METER_ID):
    """A provisioned meter's files in d: sealed settings (and their .bak), meter.key,
    meter.id (None: none)."""
    from firmware.storage import conffile
    from firmware.tokens import meterid

    path = d + "/settings.json"
    if settings is not None:
        conffile.save(path, jsonseal.dumps(settings))
        conffile.save(path, jsonseal.dumps(settings))  # the .bak: the same
    for _ in range(2):  # each file and its .bak
        conffile.save(config.key_path_for(path), _key().to_bytes())
        if meter_id is not None:
            conffile.save(config.id_path_for(path), meterid.to_bytes(meter_id))
    return path


def _boot(path):
    import asyncio

    from firmware.build import build
    from firmware.billing.settings import Settings
    from tools.sim.board import SimBoard

    d = path[: path.rfind("/")]
    board = SimBoard((2026, 1, 5, 12 * 3600), d, Settings({}), meter="ideal", flash_sectors=4)
    asyncio.new_event_loop()
    return build(path, board=board)


def _kinds(app):
    return [(e[1], e[3]) for e in app.meter.log.items]


def _in_dir(fn):
    d = support.tmpdir()
    try:
        fn(d)
    finally:
        support.rmtree(d)


def _damage(path):
    data = bytearray(support.read_file(path))
    data[len(data) // 2] ^= 0x10
    support.write_file(path, bytes(data))


def test_on_default_settings_the_meter_keeps_its_id_accepts_tokens_and_says_so():
    from firmware.ui.screens import Screens
    from firmware.service import running, tech
    from tools.sim import tokenmint

    def run(d):
        path = _files(d)
        _damage(path)
        _damage(path + ".bak")
        app = _boot(path)
        m = app.meter
        assert m.settings.raw["tariff"] == {"type": "flat", "price_per_kwh": "0.2000"}
        assert m.settings.meter_id == str(METER_ID) and app.meter_id == METER_ID
        assert ("config_defaults", 1) in _kinds(app)
        st = app.status()
        assert st["settings"] == "defaults"
        r, bal = app.enter(tokenmint.compact_credit(_key(), 1, 500, rnd=0))
        assert r.accepted and bal == 500, r.code
        env = tokenmint.envelope_credit(_key(), METER_ID, 2, 300, m.clock.stamp())
        r, bal = app.enter(env)
        assert r.accepted and bal == 800, r.code
        assert Screens(app, app.board.clock).alert() == "DEFAULT SETTINGS"
        # no copy to edit: a change is refused and changes nothing, in memory or on flash
        e = support.raises(ValueError, app.change_settings, {"low_credit": "5.00"})
        assert str(e).startswith("settings file unusable, not changed"), str(e)
        assert m.settings.low_credit == 200 and m.settings.raw["low_credit"] == "2.00"
        assert support.read_file(path) is None
        running.bind(app, path)
        try:
            assert tech.status()["settings"] == "defaults"
        finally:
            running.bind(None, path)

    _in_dir(run)


def test_a_meter_without_an_id_file_takes_it_once_from_good_settings():
    from firmware.tokens import meterid

    def run(d):
        path = _files(d, meter_id=None)
        app = _boot(path)
        assert app.meter_id == METER_ID and app.status()["settings"] == "file"
        assert meterid.load(support.read_file(config.id_path_for(path))) == METER_ID
        _damage(path)
        _damage(path + ".bak")
        app = _boot(path)  # the settings are gone; the id is not
        assert app.meter.settings.meter_id == str(METER_ID)
        assert app.intake.tokens.key is not None

    _in_dir(run)


def test_settings_that_name_another_meter_are_refused():
    def run(d):
        path = _files(d, settings=dict(FIELD, meter_id="4711003"))
        app = _boot(path)
        assert ("config_defaults", 1) in _kinds(app)
        assert app.meter.settings.meter_id == str(METER_ID)
        e = support.raises(ValueError, app.change_settings, {"meter_id": "4711003"})
        assert str(e) == "meter_id: '4711003' is not this meter (4711002, meter.id)"
        assert app.meter.settings.meter_id == str(METER_ID)
        e = support.raises(ValueError, config.save_meter_settings, {"meter_id": "1"}, path)
        assert "is not this meter" in str(e)

    _in_dir(run)


def test_a_key_file_fallback_is_a_key_event_not_a_settings_event():
    def run(d):
        path = _files(d)
        key_path = config.key_path_for(path)
        _damage(key_path)  # meter.key.bak is good
        app = _boot(path)
        kinds = _kinds(app)
        assert ("key_fallback", 2) in kinds, kinds
        assert not [k for k in kinds if k[0].startswith("config_")], kinds
        assert app.intake.tokens.key is not None

    _in_dir(run)


def test_every_key_copy_bad_is_an_event():
    def run(d):
        path = _files(d)
        key_path = config.key_path_for(path)
        _damage(key_path)
        _damage(key_path + ".bak")
        app = _boot(path)
        assert ("key_bad", 1) in _kinds(app)
        assert app.intake.tokens.key is None

    _in_dir(run)


def test_a_damaged_id_file_falls_back_and_every_copy_bad_is_an_event():
    def run(d):
        path = _files(d)
        id_path = config.id_path_for(path)
        _damage(id_path)
        app = _boot(path)
        assert ("key_fallback", 2) in _kinds(app) and app.meter_id == METER_ID
        _damage(id_path)
        _damage(id_path + ".bak")
        app = _boot(path)
        assert ("key_bad", 1) in _kinds(app) and app.meter_id is None
        assert app.meter.settings.meter_id == str(METER_ID)  # the settings still say it

    _in_dir(run)


def test_without_the_seal_bit_flips_change_settings():
    """The sweep's baseline: the same settings written as plain JSON (no seal) load
    changed after some single-bit flips; the seal is what refuses them."""
    from firmware.billing.settings import Settings

    def load(data):
        raw = json.loads(data)
        board, cal = raw.pop("board"), raw.pop("calibration")
        config.check_board(board)
        config.validate_calibration(cal)
        return Settings(raw).raw, board, cal

    data = json.dumps(FIELD).encode()
    good = load(data)
    loaded = changed = 0
    buf = bytearray(data)
    for i in range(len(buf)):
        for bit in range(8):
            buf[i] ^= 1 << bit
            try:
                raw = load(bytes(buf))
            except Exception:
                pass
            else:
                loaded += 1
                changed += raw != good
            buf[i] ^= 1 << bit
    print("unsealed bit flips: %d bytes: %d load, %d changed" % (len(data), loaded, changed))
    assert changed > 0.03 * 8 * len(data)
