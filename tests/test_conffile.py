"""Portable tests of firmware/storage/conffile.py: atomic replace, fallback, repair, power cuts.

The first tests run on both runtimes in a fresh directory under /tmp. The cut sweeps
run conffile.save (and the load that recovers from it) on littlefs (vfs.VfsLfs2) over the
NOR flash model, cut at every program/erase operation, using the harness of
test_lfs_cuts.py; vfs exists only under MicroPython, so they skip under CPython.
"""

# The cut sweeps keep whole-flash copies (32 KB each) of every state they cut into, nested
# two deep in the repair test: more contiguous heap than the shared 256 K words leave.
# mpy-heapsize: 4096k

import json
import os

import support

from firmware.storage import conffile, jsonseal
from firmware.storage.conffile import BAK, MAIN, MISSING, NEW
from firmware.billing.settings import Settings


_tmpdir = support.tmpdir
_rmtree = support.rmtree


_read = support.read_file
_write = support.write_file


def _files(d):
    return sorted(os.listdir(d))


def _parse(data):
    """The meter's own schema as the parse step: Settings from JSON."""
    return Settings(json.loads(data)).meter_id


def _settings(meter_id, **extra):
    raw = {"meter_id": meter_id}
    raw.update(extra)
    return json.dumps(raw).encode()


def _in_tmp(fn):
    d = _tmpdir()
    try:
        fn(d, d + "/settings.json")
    finally:
        _rmtree(d)


def test_round_trip_and_bak_refreshed():
    def run(d, path):
        conffile.save(path, _settings("A1"))
        assert _files(d) == ["settings.json"]
        assert conffile.load(path, _parse) == ("A1", MAIN, None)
        assert _read(path + ".bak") == _settings("A1")  # the last good copy now exists
        conffile.save(path, _settings("B2"))
        assert _read(path + ".bak") == _settings("A1")  # save keeps the previous file
        assert _read(path) == _settings("B2")
        assert conffile.load(path, _parse) == ("B2", MAIN, None)
        assert _read(path + ".bak") == _settings("B2")  # refreshed when it differs
        assert _files(d) == ["settings.json", "settings.json.bak"]

    _in_tmp(run)


def test_bad_json_falls_back_to_the_last_good_copy():
    def run(d, path):
        conffile.save(path, _settings("GOOD"))
        conffile.load(path, _parse)
        _write(path, b'{"meter_id": "TRUNC')
        value, source, reason = conffile.load(path, _parse)
        assert (value, source) == ("GOOD", BAK)
        assert reason.startswith("ValueError") or reason.startswith("JSONDecodeError"), reason
        assert _read(path + ".bad") == b'{"meter_id": "TRUNC'  # kept for the technician
        assert _read(path) == _settings("GOOD")  # restored from the last good copy
        assert conffile.load(path, _parse) == ("GOOD", MAIN, None)

    _in_tmp(run)


def test_a_value_the_schema_refuses_falls_back_with_the_field_named():
    def run(d, path):
        conffile.save(path, _settings("GOOD"))
        conffile.load(path, _parse)
        conffile.save(path, _settings("BAD", currency_decimals=9))
        value, source, reason = conffile.load(path, _parse)
        assert (value, source) == ("GOOD", BAK)
        assert "currency_decimals" in reason and reason.startswith("ValueError"), reason
        assert _read(path + ".bad") == _settings("BAD", currency_decimals=9)
        # the bad file was moved aside: a later save cannot rotate it over the good .bak
        conffile.save(path, _settings("NEXT"))
        assert _read(path + ".bak") == _settings("GOOD")
        assert conffile.load(path, _parse) == ("NEXT", MAIN, None)

    _in_tmp(run)


def test_any_parse_failure_is_a_reported_fallback():
    def parse(data):
        if data == b"boom":
            raise TypeError("not a settings object")
        return data

    def run(d, path):
        conffile.save(path, b"fine")
        conffile.load(path, parse)
        _write(path, b"boom")
        assert conffile.load(path, parse) == (b"fine", BAK, "TypeError: not a settings object")

    _in_tmp(run)


def test_main_missing_uses_bak_and_restores_it():
    def run(d, path):
        conffile.save(path, _settings("KEEP"))
        conffile.load(path, _parse)
        os.remove(path)
        assert conffile.load(path, _parse) == ("KEEP", BAK, MISSING)
        assert _read(path) == _settings("KEEP")
        assert conffile.load(path, _parse) == ("KEEP", MAIN, None)
        assert _files(d) == ["settings.json", "settings.json.bak"]

    _in_tmp(run)


def test_save_cut_between_its_renames_is_finished_by_the_load():
    def run(d, path):
        # what a cut after `path -> path.bak` leaves: no path, the new data in .new
        _write(path + ".bak", _settings("OLD"))
        _write(path + ".new", _settings("NEW"))
        assert conffile.load(path, _parse) == ("NEW", NEW, MISSING)
        assert _files(d) == ["settings.json", "settings.json.bak"]
        assert _read(path) == _settings("NEW") and _read(path + ".bak") == _settings("NEW")

    _in_tmp(run)


def test_save_cut_before_its_renames_is_not_committed():
    def run(d, path):
        _write(path, _settings("OLD"))
        _write(path + ".new", _settings("NEW"))  # written, never renamed in
        assert conffile.load(path, _parse) == ("OLD", MAIN, None)
        assert _files(d) == ["settings.json", "settings.json.bak"]  # the stale .new is gone
        os.remove(path)  # and cannot come back later as a "newer" copy
        assert conffile.load(path, _parse) == ("OLD", BAK, MISSING)

    _in_tmp(run)


def test_a_torn_new_copy_is_skipped_for_the_bak():
    def run(d, path):
        _write(path + ".new", _settings("NEW")[:9])
        _write(path + ".bak", _settings("OLD"))
        assert conffile.load(path, _parse) == ("OLD", BAK, MISSING)
        assert _read(path) == _settings("OLD")

    _in_tmp(run)


def test_nothing_at_all_is_reported_for_defaults():
    def run(d, path):
        assert conffile.load(path, _parse) == (None, None, MISSING)
        assert _files(d) == []  # a load writes nothing it has no good data for

    _in_tmp(run)


def test_every_copy_bad_is_reported_with_each_reason():
    def run(d, path):
        _write(path, b"{")
        _write(path + ".new", _settings("X", persist_s=1))
        _write(path + ".bak", b"")
        value, source, reason = conffile.load(path, _parse)
        assert value is None and source is None
        assert reason != MISSING
        parts = reason.split("; ")
        assert len(parts) == 3, reason
        assert parts[0].startswith(path + ": ")
        assert parts[1].startswith(path + ".new: ") and "persist_s" in parts[1]
        assert parts[2].startswith(path + ".bak: ")
        assert _read(path + ".bad") == b"{"

    _in_tmp(run)


def test_an_unreadable_file_is_reported_not_taken_for_missing():
    def run(d, path):
        conffile.save(path + "x", b"")  # unrelated file nearby is left alone
        os.mkdir(path)  # settings.json is a directory: it exists but cannot be read
        _write(path + ".bak", _settings("BAK"))
        value, source, reason = conffile.load(path, _parse)
        assert (value, source) == ("BAK", BAK)
        assert reason != MISSING and "Error" in reason, reason
        assert _read(path) == _settings("BAK")
        assert "settings.jsonx" in _files(d)

    _in_tmp(run)


# -- power cuts on littlefs over the NOR flash model -----------------------------------


def _sweep_harness():
    import test_lfs_cuts as h

    h.need_vfs()
    return h


def _big_settings(meter_id):
    """A settings file as the meter has it: meter settings, board and calibration."""
    from drivers.atm90e26 import defaults

    raw = {
        "meter_id": meter_id,
        "tariff": {"type": "flat", "price_per_kwh": "0.2500"},
        "low_credit": "3.00",
        "board": {"relay_set": 25, "relay_reset": 26},
        "calibration": defaults(),
    }
    return jsonseal.dumps(raw)


def _parse_full(data):
    from firmware.config import parse_settings

    return parse_settings(data)[0].meter_id


def test_save_cut_at_every_operation_loads_old_or_new():
    h = _sweep_harness()
    point = "/lfs_conf_a"
    path = point + "/settings.json"
    first = _big_settings("GEN0000")
    assert len(first) > 400  # bigger than littlefs keeps inline: blocks are allocated

    def setup():
        conffile.save(path, first)
        assert conffile.load(path, _parse_full) == ("GEN0000", MAIN, None)

    image = h.formatted(point, setup)
    tally = {"cuts": 0, "old": 0, "new": 0, "via_new": 0, "erase_cuts": 0, "ops": 0}
    for gen in range(1, 6):
        old_id = "GEN%04d" % (gen - 1)
        new_id = "GEN%04d" % gen

        def check(flash):
            value, source, reason = conffile.load(path, _parse_full)  # never raises
            assert value in (old_id, new_id), (gen, value, source, reason)
            assert source in (MAIN, NEW), (gen, source, reason)  # never defaults
            assert conffile.load(path, _parse_full) == (value, MAIN, None)  # repaired
            assert _read(path + ".bak") == _read(path)
            if source == NEW:
                tally["via_new"] += 1
            return "old" if value == old_id else "new"

        outcomes, image, log = h.sweep(
            image, lambda: conffile.save(path, _big_settings(new_id)), check, point
        )
        tally["ops"] += len(log)
        for kind, k, at, outcome in outcomes:
            tally["cuts"] += 1
            tally[outcome] += 1
            tally["erase_cuts"] += 1 if kind == "erase" else 0
        assert outcomes[0][3] == "old" and outcomes[-1][3] == "new"
        # carry the flash as an uncut save + boot-time load leaves it
        f = h.flash_from(image)
        h.mount(f, point)
        assert conffile.load(path, _parse_full) == (new_id, MAIN, None)
        h.vfs.umount(point)
        image = f.snapshot()
    print("conffile.save cuts:", tally)
    assert tally["erase_cuts"] > 0 and tally["via_new"] > 0
    assert tally["cuts"] == tally["old"] + tally["new"]


def test_first_save_cut_loads_new_or_nothing():
    h = _sweep_harness()
    point = "/lfs_conf_b"
    path = point + "/settings.json"
    image = h.formatted(point)
    seen = set()

    def check(flash):
        value, source, reason = conffile.load(path, _parse_full)
        if value is None:  # no file yet, or littlefs created .new but the data never came
            assert source is None, source
            assert reason == MISSING or reason.startswith(path + ".new: "), reason
            seen.add(reason == MISSING)
        else:
            assert value == "FIRST" and source in (MAIN, NEW), (value, source, reason)
        seen.add(value)
        return value

    h.sweep(image, lambda: conffile.save(path, _big_settings("FIRST")), check, point)
    assert seen == {None, "FIRST", True, False}


def test_recovering_load_cut_at_every_operation_keeps_its_answer():
    # a second power cut, inside the load that repairs what the first one left
    h = _sweep_harness()
    point = "/lfs_conf_c"
    inner = "/lfs_conf_d"
    path = point + "/settings.json"

    def setup():
        conffile.save(path, _big_settings("OLD"))
        conffile.load(path, _parse_full)

    image = h.formatted(point, setup)
    h.reserve(image, 2)  # the outer and the inner sweep's flash, before anything fragments
    state = bytearray(len(image))  # each cut's state, copied here: no 32 KB per state
    tally = {"states": 0, "repairing": 0, "cuts": 0}

    def after_save_cut(flash):
        # the state the first cut left; the answer an uncut load gives from it
        state[:] = flash.mem
        want = conffile.load(path, _parse_full)[0]
        tally["states"] += 1
        ipath = inner + "/settings.json"

        def check_again(f2):
            value, source, reason = conffile.load(ipath, _parse_full)
            assert value == want, (want, value, source, reason)
            tally["cuts"] += 1
            return value

        outcomes, _, log = h.sweep(
            state, lambda: conffile.load(ipath, _parse_full), check_again, inner, False
        )
        if log:
            tally["repairing"] += 1
        return want

    h.sweep(image, lambda: conffile.save(path, _big_settings("NEW")), after_save_cut, point)
    print("conffile load-after-cut cuts:", tally)
    assert tally["repairing"] > 0 and tally["cuts"] > 0
