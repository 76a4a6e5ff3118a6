"""The state record by name: every released layout pinned, restored and checked per owner.

Portable: CPython pytest and MicroPython. This module keeps its own copy of every layout
the meter has released (COPIES, below): firmware/storage/layouts.py must list the same,
in the same order, and each layout after version 1 must be the one before it with
fields appended at its end. A record of each released layout is made here from the
copy (struct and CRC-32 of this module's own, not the firmware's writer), written to
the journal on the NOR flash model, and the App booted on it: every owner's state
(meter, credit control's max-power protection, token memory, OpenPAYGO, app counters)
must read what the record holds, and the fields the layout lacks their stated default.
Values that do not fit a field are refused by the writer, with nothing written.
"""

import binascii
import struct

import support
from firmware.app import STATE_FIELDS, App
from firmware.billing import meter as meter_mod
from firmware.billing import policy
from firmware.billing.settings import Settings
from firmware.billing.wallclock import WallClock
from firmware.storage import layouts, record
from firmware.storage.journal import Journal
from firmware.tokens import replay
from firmware.tokens.intake import OPG_FIELDS
from tools.sim.board import SimBoard
from tools.sim.nor import NorFlash

# -- the released layouts, copied: (version, "owner name:type[=absent] ...") ----------

_V1_METER = (
    "meter stamp:q balance:q carry:q standing_carry:q debt:q energy_wh:q energy_mwh:q"
    " month_wh:q month_mwh:q month_key:q credited:q charged:q recovered:q"
    " control_state:q open_reasons:q flags:q"
)
_V1_TOKENS = "tokens high:q mask_lo:q mask_hi:q failures:q fail_stamp:q"
_V1_OPG = "openpaygo opg_count:q opg_used:q"
_V1_APP = "app boots:q cmd_id:q"
_V2_METER = (
    "meter stamp:q balance:q carry:I standing_carry:I debt:q energy_wh:q energy_mwh:H"
    " month_wh:I month_mwh:H month_key:I credited:q charged:q recovered:q"
    " control_state:B open_reasons:B flags:B"
)
_V2_MAX_POWER = (
    "meter mp_clock:I mp_retry_at:i=-1 mp_trips:B mp_trip1:i=-1 mp_trip2:i=-1"
    " mp_trip3:i=-1 mp_trip4:i=-1 mp_trip5:i=-1 mp_trip6:i=-1 mp_trip7:i=-1"
    " mp_trip8:i=-1"
)
_V2 = (
    _V2_METER,
    "tokens high:I mask_lo:I mask_hi:I failures:H fail_stamp:q",
    "openpaygo opg_count:I opg_used:H",
    "app boots:I cmd_id:q",
    _V2_MAX_POWER,
)
COPIES = (
    (1, (_V1_METER,)),
    (1, (_V1_METER, _V1_TOKENS)),
    (1, (_V1_METER, _V1_TOKENS, _V1_APP)),
    (1, (_V1_METER, _V1_TOKENS, _V1_OPG, _V1_APP)),
    (2, _V2),
)
NEWEST = COPIES[-1]
_SIZES = {"b": 1, "B": 1, "h": 2, "H": 2, "i": 4, "I": 4, "q": 8}


def _fields(groups):
    """[(owner, name, code, absent)] of a copied layout, in record order."""
    out = []
    for g in groups:
        words = g.split()
        for w in words[1:]:
            name, code = w.split(":")
            absent = 0
            if "=" in code:
                code, absent = code.split("=")
                absent = int(absent)
            out.append((words[0], name, code, absent))
    return out


# -- the rules -------------------------------------------------------------------------


def layout_errors(listed, copies):
    """What breaks the record's rules in `listed` (the firmware's RELEASED) against the
    released `copies`: a released layout changed or gone, or a later layout that is not
    the one before it with fields appended."""
    errors = []
    for i in range(len(copies)):
        if i >= len(listed):
            errors.append("released layout %d (version %d) is gone" % (i, copies[i][0]))
        elif listed[i][0] != copies[i][0] or _fields(listed[i][1]) != _fields(copies[i][1]):
            errors.append("released layout %d (version %d) changed" % (i, copies[i][0]))
    for i in range(len(copies), len(listed)):
        errors.append("layout %d (version %d) is not copied here" % (i, listed[i][0]))
    for i in range(1, len(listed)):
        old, new = listed[i - 1], listed[i]
        if new[0] == 1:
            continue  # version 1: the four positional releases, pinned above as they were
        before, after = _fields(old[1]), _fields(new[1])
        if new[0] != old[0] + 1:
            errors.append("layout %d: version %d after %d" % (i, new[0], old[0]))
        if len(after) <= len(before) or after[: len(before)] != before:
            if old[0] >= 2:
                errors.append("layout %d (version %d) does not append" % (i, new[0]))
    return errors


def test_the_listed_layouts_are_the_released_ones():
    assert layout_errors(layouts.RELEASED, COPIES) == []


def test_a_field_inserted_anywhere_but_the_end_is_caught():
    groups = list(_V2)
    appended = groups + ["meter new_field:I"]
    inserted = [groups[0].replace("balance:q", "balance:q new_field:I")] + groups[1:]
    inserted_late = groups[:-1] + [groups[-1].replace("mp_trips:B", "mp_trips:B x:I")]
    assert layout_errors(COPIES + ((3, tuple(appended)),), COPIES) == [
        "layout 5 (version 3) is not copied here"
    ]
    for planted in (inserted, inserted_late):
        got = layout_errors(COPIES + ((3, tuple(planted)),), COPIES)
        assert "layout 5 (version 3) does not append" in got, got
        # ... and once copied as released it still fails the append rule
        both = COPIES + ((3, tuple(planted)),)
        assert layout_errors(both, both) == ["layout 5 (version 3) does not append"]
    widened = [groups[0].replace("carry:I", "carry:q")] + groups[1:]
    assert "released layout 4 (version 2) changed" in layout_errors(
        COPIES[:-1] + ((2, tuple(widened)),), COPIES
    )
    assert "released layout 2 (version 1) is gone" in layout_errors(COPIES[:2], COPIES)


def test_every_field_of_the_newest_layout_has_its_owner():
    newest = _fields(NEWEST[1])
    assert STATE_FIELDS == tuple(f[1] for f in newest)
    owner = {}
    for n in meter_mod.STATE_FIELDS:
        owner[n] = "meter"
    for n in replay.STATE_FIELDS:
        owner[n] = "tokens"
    for n in OPG_FIELDS:
        owner[n] = "openpaygo"
    for n in ("boots", "cmd_id"):
        owner[n] = "app"
    assert len(owner) == len(newest)
    for own, name, _, _ in newest:
        assert owner[name] == own, name


def test_the_record_stays_within_its_slot():
    assert record.STATE.size == 9 + sum(_SIZES[f[2]] for f in _fields(NEWEST[1])) + 4
    assert record.STATE.size <= 256  # the journal's slot (firmware/storage/journal.py)


# -- a record of each released layout, restored --------------------------------------

MONDAY_NOON = (2026, 1, 5, 12 * 3600)
SETTINGS = {
    "meter_id": "4711002",
    "tariff": {"type": "flat", "price_per_kwh": "0.2500"},
    "max_power_w": 3000,
    "max_power_lockout_trips": 4,
}
SAVED_AGO = 30  # the record was written 30 s before the meter starts again
VALUES = {
    "stamp": WallClock(*MONDAY_NOON).stamp() - SAVED_AGO,
    "balance": 123456,
    "carry": 98765432,
    "standing_carry": 86000,
    "debt": 4321,
    "energy_wh": 7654321,
    "energy_mwh": 999,
    "month_wh": 123456,
    "month_mwh": 321,
    "month_key": 202601,
    "credited": 10**12 + 7,
    "charged": 10**12 - 3,
    "recovered": 55555,
    "control_state": policy.DISCONNECTED,
    "open_reasons": policy.OPEN_REMOTE,
    "flags": 2,  # low credit armed, no emergency credit
    "high": 5000,
    "mask_lo": 0x80000005,
    "mask_hi": 0x40000003,
    "failures": 3,
    "fail_stamp": 819999000,
    "opg_count": 77,
    "opg_used": 0x0102,
    "boots": 41,
    "cmd_id": 2**40 + 9,
    "mp_clock": 5000,
    "mp_retry_at": 5090,
    "mp_trips": 2,
    "mp_trip1": 4970,
    "mp_trip2": 4000,
    "mp_trip3": -1,
    "mp_trip4": -1,
    "mp_trip5": -1,
    "mp_trip6": -1,
    "mp_trip7": -1,
    "mp_trip8": -1,
}


def _record_bytes(version, groups, seq, values=None):
    """A record as a meter of that release wrote it, from the copied layout: magic,
    version, count, sequence, from version 2 on the size, the fields, the CRC-32."""
    values = values or VALUES
    fields = _fields(groups)
    body = b"".join(struct.pack("<" + f[2], values[f[1]]) for f in fields)
    head = struct.pack("<2sBBI", b"PM", version, len(fields), seq)
    if version > 1:
        head += bytes([len(head) + 1 + len(body) + 4])
    head += body
    return head + struct.pack("<I", binascii.crc32(head))


def _boot_on(data):
    flash = NorFlash(4)
    flash.erase(0)
    flash.program(0, data)
    s = Settings(SETTINGS)
    board = SimBoard(MONDAY_NOON, None, s, meter="ideal", store="journal", flash=flash)
    return App(board, s)


def _expect(names, name):
    """What an owner must read for `name`: the record's value, or the absent default."""
    if name in names:
        return VALUES[name]
    for f in _fields(NEWEST[1]):
        if f[1] == name:
            return f[3]
    raise AssertionError(name)


def test_a_record_of_each_released_layout_restores_every_owner():
    for version, groups in COPIES:
        names = [f[1] for f in _fields(groups)]
        app = _boot_on(_record_bytes(version, groups, 7))
        e = lambda n: _expect(names, n)  # noqa: E731
        where = "layout %d/%d" % (version, len(names))
        led = app.meter.ledger
        for n in (
            "balance",
            "carry",
            "standing_carry",
            "debt",
            "energy_wh",
            "energy_mwh",
            "month_wh",
            "month_mwh",
            "credited",
            "charged",
            "recovered",
        ):
            assert getattr(led, n) == e(n), (where, n)
        assert app.meter.month_key == e("month_key"), where
        ctl = app.meter.control
        assert ctl.control_state == e("control_state") and ctl.open_reasons == e("open_reasons"), (
            where
        )
        assert ctl.low_armed and not ctl.ec_invoked, where
        mem = app.intake.tokens.memory
        assert mem.high == e("high"), where
        assert mem.mask == (e("mask_hi") << 32) | e("mask_lo"), where
        assert (mem.failures, mem.fail_stamp) == (e("failures"), e("fail_stamp")), where
        assert app.intake.to_fields()[len(replay.STATE_FIELDS) :] == (
            e("opg_count"),
            e("opg_used"),
        ), where
        assert app.boots == e("boots") + 1 and app.cmd_id == e("cmd_id"), where
        # the max-power protection: its clock (on by the time since the record), retry
        # time and trips (newest last)
        if "mp_clock" in names:
            assert ctl.now == 5000 + SAVED_AGO and ctl.retry_at == 5090, where
            assert ctl.trips == [-1, -1, 4000, 4970], where
        else:  # a record from before it was kept: a full retry (120 s), no trips
            assert ctl.now == SAVED_AGO and ctl.retry_at == SAVED_AGO + 120, where
            assert ctl.trips == [-1] * 4, where
        # the first save writes the newest layout, which reads back the same
        app.save()
        again = Journal(app.board.flash).load()
        assert again == app.fields(), where
        assert len(again) == len(STATE_FIELDS)


def test_an_unknown_layout_or_a_bad_crc_is_no_state():
    good = _record_bytes(NEWEST[0], NEWEST[1], 3)
    assert record.STATE.unpack(good)[1] == tuple(VALUES[n] for n in STATE_FIELDS)
    for bad in (
        good[:2] + bytes([1]) + good[3:],  # version 1 has no such count
        good[:2] + bytes([0]) + good[3:],
        good[:3] + bytes([good[3] - 1]) + good[4:],  # its version with another count
        good[:8] + bytes([good[8] - 1]) + good[9:],  # another size
        good[:-1] + bytes([good[-1] ^ 1]),
    ):
        assert record.STATE.unpack(bad) is None


def test_a_record_of_a_later_version_reads_the_fields_this_firmware_knows():
    # after a downgrade the journal holds records of a layout that appended fields: the
    # newest of them is the state (never an older record of a layout known here)
    later = NEWEST[1] + ("app later_a:I later_b:q",)
    values = dict(VALUES)
    values.update({"later_a": 7, "later_b": -8})
    buf = _record_bytes(NEWEST[0] + 1, later, 9, values)
    assert record.STATE.unpack(buf) == (9, tuple(VALUES[n] for n in STATE_FIELDS))
    assert record.STATE.unpack(buf[:-1]) is None  # torn
    bad = bytearray(buf)
    bad[20] ^= 1
    assert record.STATE.unpack(bad) is None
    fewer = _record_bytes(NEWEST[0] + 1, NEWEST[1][:-1], 9, values)  # not an append
    assert record.STATE.unpack(fewer) is None


# -- values that do not fit ----------------------------------------------------------


def test_a_value_that_does_not_fit_is_refused_and_nothing_is_written():
    flash = NorFlash(2)
    j = Journal(flash)
    j.load()
    good = tuple(VALUES[n] for n in STATE_FIELDS)
    j.save(good)
    before = flash.snapshot()
    ops = flash.ops
    for name, value in (
        ("cmd_id", 2**63),  # struct would keep 0: every command replayable
        ("high", 2**32),  # ... 0: every token id spendable again
        ("control_state", 256),
        ("energy_mwh", -1),
        ("mp_trips", 300),
        ("balance", -(2**63) - 1),
        ("carry", True),
        ("debt", 1.5),
    ):
        bad = list(good)
        bad[STATE_FIELDS.index(name)] = value
        err = support.raises(ValueError, j.save, tuple(bad))
        assert name in str(err), (name, str(err))
        assert flash.ops == ops and flash.snapshot() == before, name
    assert support.raises(ValueError, j.save, good[:-1])
    assert Journal(flash).load() == good
    j.save(good)  # the writer goes on after a refusal
    assert Journal(flash).load() == good and j.seq == 2


def test_the_fields_own_limits():
    cur = record.STATE.current
    assert cur.limits("cmd_id") == (-(2**63), 2**63 - 1)
    assert cur.limits("high") == (0, 2**32 - 1) and replay.ID_MAX == 2**32 - 1
    assert cur.limits("mp_retry_at") == (-(2**31), 2**31 - 1)
    assert cur.limits("control_state") == (0, 255)
