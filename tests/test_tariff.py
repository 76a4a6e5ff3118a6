"""Portable tests of firmware/billing/tariff.py: flat, time-of-use and block tariffs, config errors."""

import support
from firmware.billing import tariff
from firmware.billing.wallclock import WallClock, parse_days

# 2026-01-05 is a Monday; 2026-01-09 a Friday, -10 Saturday, -11 Sunday.
MON, TUE, FRI, SAT, SUN = 5, 6, 9, 10, 11


def _at(day, hh, mm=0, ss=0):
    return WallClock(2026, 1, day, hh * 3600 + mm * 60 + ss)


def _err(cfg, decimals=2, field="tariff"):
    return str(support.raises(ValueError, tariff.from_config, cfg, decimals, field))


TOU = {
    "type": "tou",
    "bands": [
        # weekday morning peak
        {"days": "mon-fri", "from": "07:00", "to": "10:00", "price_per_kwh": "0.4000"},
        # weekend night: Friday 22:00 .. Saturday 06:00 and Saturday 22:00 .. Sunday 06:00
        {"days": "fri,sat", "from": "22:00", "to": "06:00", "price_per_kwh": "0.1000"},
        # every evening until midnight
        {"from": "18:00", "to": "24:00", "price_per_kwh": "0.3000"},
    ],
    "default_price_per_kwh": "0.2500",
}

BLOCK = {
    "type": "block",
    "tiers": [
        {"up_to_kwh": "50", "price_per_kwh": "0.1000"},
        {"up_to_kwh": "150", "price_per_kwh": "0.2000"},
        {"up_to_kwh": None, "price_per_kwh": "0.3000"},
    ],
}


def test_flat():
    t = tariff.from_config({"type": "flat", "price_per_kwh": "0.2500"}, 2)
    assert isinstance(t, tariff.Flat) and t.kind == "flat"
    assert t.price == 2500
    c = _at(MON, 12)
    assert t.price_now(c, 0) == 2500
    assert t.price_now(_at(SUN, 3), 10**6) == 2500
    assert t.cost(0, c, 0, 0) == 0
    assert t.cost(7, c, 0, 0) == 17500
    assert t.cost(1000000, c, 123, 456) == 2500000000  # 1 kWh = 25 cents x CHARGE_SCALE
    # currency_decimals changes the scale of the price
    assert tariff.from_config({"type": "flat", "price_per_kwh": "0.2500"}, 3).price == 25000
    assert tariff.from_config({"type": "flat", "price_per_kwh": "25"}, 0).price == 2500


def test_in_window_same_day():
    weekdays = parse_days("mon-fri")
    start, end = 7 * 3600, 10 * 3600
    assert not tariff.in_window(weekdays, start, end, _at(MON, 6, 59, 59))
    assert tariff.in_window(weekdays, start, end, _at(MON, 7))
    assert tariff.in_window(weekdays, start, end, _at(FRI, 9, 59, 59))
    assert not tariff.in_window(weekdays, start, end, _at(FRI, 10))
    assert not tariff.in_window(weekdays, start, end, _at(SAT, 8))
    assert not tariff.in_window(weekdays, start, end, _at(SUN, 8))
    # up to the end of the day
    assert tariff.in_window(0x7F, 18 * 3600, 86400, _at(SUN, 23, 59, 59))
    assert not tariff.in_window(0x7F, 18 * 3600, 86400, _at(MON, 0))
    assert tariff.in_window(0x7F, 0, 86400, _at(TUE, 0))


def test_in_window_over_midnight():
    fri_sat = parse_days("fri,sat")
    start, end = 22 * 3600, 6 * 3600
    # from `start` on a listed day ...
    assert tariff.in_window(fri_sat, start, end, _at(FRI, 22))
    assert tariff.in_window(fri_sat, start, end, _at(SAT, 23, 59, 59))
    assert not tariff.in_window(fri_sat, start, end, _at(FRI, 21, 59, 59))
    assert not tariff.in_window(fri_sat, start, end, _at(SUN, 22))  # Sunday not listed
    assert not tariff.in_window(fri_sat, start, end, _at(MON, 23))
    # ... to `end` the next morning: the day before must be listed
    assert tariff.in_window(fri_sat, start, end, _at(SAT, 0))
    assert tariff.in_window(fri_sat, start, end, _at(SAT, 5, 59, 59))
    assert tariff.in_window(fri_sat, start, end, _at(SUN, 3))  # Saturday night
    assert not tariff.in_window(fri_sat, start, end, _at(SAT, 6))
    assert not tariff.in_window(fri_sat, start, end, _at(FRI, 3))  # Thursday not listed
    assert not tariff.in_window(fri_sat, start, end, _at(MON, 3))  # Sunday not listed
    # between end and start nothing matches, whatever the days
    assert not tariff.in_window(0x7F, start, end, _at(SAT, 12))
    # Sunday night runs into Monday morning (wrap of the weekday mask)
    sun = parse_days("sun")
    assert tariff.in_window(sun, start, end, _at(MON, 1))
    assert not tariff.in_window(sun, start, end, _at(SUN, 1))


def test_tou_prices_by_weekday_and_time():
    t = tariff.from_config(TOU, 2)
    assert isinstance(t, tariff.TimeOfUse) and t.kind == "tou"
    assert t.default_price == 2500
    assert [b[3] for b in t.bands] == [4000, 1000, 3000]
    assert t.bands[0][:3] == (0x1F, 7 * 3600, 10 * 3600)
    assert t.bands[1][:3] == (0x30, 22 * 3600, 6 * 3600)
    assert t.bands[2][:3] == (0x7F, 18 * 3600, 86400)  # days default to all
    cases = [
        (MON, 6, 59, 2500),
        (MON, 7, 0, 4000),
        (MON, 9, 59, 4000),
        (MON, 10, 0, 2500),
        (SAT, 8, 0, 2500),  # no weekend peak
        (MON, 18, 0, 3000),
        (MON, 23, 59, 3000),
        (TUE, 0, 0, 2500),  # Monday night is not in the night band
        (FRI, 21, 59, 3000),
        (FRI, 22, 0, 1000),  # night band listed first: wins over the evening band
        (SAT, 0, 0, 1000),
        (SAT, 5, 59, 1000),
        (SAT, 6, 0, 2500),
        (SAT, 22, 30, 1000),
        (SUN, 2, 0, 1000),
        (SUN, 6, 0, 2500),
        (SUN, 22, 0, 3000),
        (FRI, 3, 0, 2500),
    ]
    for day, hh, mm, want in cases:
        c = _at(day, hh, mm)
        assert t.price_now(c, 0) == want, (day, hh, mm)
        assert t.cost(3, c, 0, 0) == 3 * want, (day, hh, mm)


def test_tou_first_band_wins_and_follows_the_clock():
    cfg = {
        "type": "tou",
        "bands": [
            {"days": "all", "from": "12:00", "to": "13:00", "price_per_kwh": "0.0100"},
            {"days": "all", "from": "08:00", "to": "20:00", "price_per_kwh": "0.0200"},
        ],
        "default_price_per_kwh": "0.0300",
    }
    t = tariff.from_config(cfg, 2)
    c = _at(MON, 11, 59, 58)
    seen = []
    for _ in range(4):
        seen.append(t.price_now(c, 0))
        c.advance(1)
    assert seen == [200, 200, 100, 100]
    c = _at(MON, 19, 59, 59)
    assert t.price_now(c, 0) == 200
    c.advance(1)
    assert t.price_now(c, 0) == 300


def test_tou_band_to_midnight_written_as_00_00():
    cfg = {
        "type": "tou",
        "bands": [{"days": "mon", "from": "22:00", "to": "00:00", "price_per_kwh": "1"}],
        "default_price_per_kwh": "2",
    }
    t = tariff.from_config(cfg, 2)
    assert t.price_now(_at(MON, 22), 0) == 10000
    assert t.price_now(_at(MON, 23, 59, 59), 0) == 10000
    assert t.price_now(_at(TUE, 0), 0) == 20000
    assert t.price_now(_at(MON, 21, 59, 59), 0) == 20000


def test_block_price_now_per_tier():
    t = tariff.from_config(BLOCK, 2)
    assert isinstance(t, tariff.Block) and t.kind == "block"
    assert t.tiers == [(50000, 1000), (150000, 2000), (None, 3000)]  # bounds in Wh
    c = _at(MON, 12)
    assert t.price_now(c, 0) == 1000
    assert t.price_now(c, 49999) == 1000
    assert t.price_now(c, 50000) == 2000
    assert t.price_now(c, 149999) == 2000
    assert t.price_now(c, 150000) == 3000
    assert t.price_now(c, 10**9) == 3000


def test_block_cost_splits_a_tick_across_a_bound():
    t = tariff.from_config(BLOCK, 2)
    c = _at(MON, 12)
    # 49.999 kWh + 998 mWh: 2 mWh left in tier 1, the third mWh is in tier 2
    assert t.cost(3, c, 49999, 998) == 2 * 1000 + 1 * 2000
    assert t.cost(2, c, 49999, 998) == 2 * 1000
    assert t.cost(1, c, 49999, 999) == 1000
    assert t.cost(3, c, 49999, 999) == 1000 + 2 * 2000
    assert t.cost(3, c, 50000, 0) == 3 * 2000
    # 49.999 kWh exactly + 3 mWh is still inside the first tier
    assert t.cost(3, c, 49999, 0) == 3 * 1000
    # a big reading that spans all three tiers at once
    mwh = 101000000  # 101 kWh from 49.5 kWh: 0.5 / 100 / 0.5 kWh
    want = 500000 * 1000 + 100000000 * 2000 + 500000 * 3000
    assert t.cost(mwh, c, 49500, 0) == want
    # at the last tier nothing is split
    assert t.cost(5, c, 200000, 500) == 5 * 3000


def _block_oracle(tiers, pos_mwh, mwh):
    total = 0
    lo = 0
    for bound, price in tiers:
        hi = pos_mwh + mwh if bound is None else bound * 1000
        a = pos_mwh if pos_mwh > lo else lo
        b = pos_mwh + mwh if pos_mwh + mwh < hi else hi
        if b > a:
            total += (b - a) * price
        lo = hi
        if bound is None:
            break
    return total


def test_block_cost_matches_an_interval_oracle():
    tiers = [(1, 7), (3, 11), (4, 13), (None, 17)]  # Wh bounds, small to hit every split
    t = tariff.Block(tiers)
    c = _at(MON, 0)
    checked = 0
    for pos in range(0, 6000, 37):
        for mwh in list(range(40)) + list(range(40, 6000, 29)):
            got = t.cost(mwh, c, pos // 1000, pos % 1000)
            want = _block_oracle(tiers, pos, mwh)
            assert got == want, (pos, mwh, got, want)
            checked += 1
    assert checked > 30000


def test_block_month_walk_in_small_ticks():
    # ticks of 1 .. 7 mWh from 0 to 40 Wh: the month total equals the tier arithmetic
    t = tariff.from_config(
        {
            "type": "block",
            "tiers": [
                {"up_to_kwh": "0.010", "price_per_kwh": "0.1000"},
                {"up_to_kwh": "0.025", "price_per_kwh": "0.2000"},
                {"up_to_kwh": None, "price_per_kwh": "0.3000"},
            ],
        },
        2,
    )
    c = _at(MON, 0)
    wh = mwh_part = 0
    total = 0
    pos = 0
    step = 0
    while pos < 40000:
        e = step % 7 + 1
        total += t.cost(e, c, wh, mwh_part)
        pos += e
        wh, mwh_part = pos // 1000, pos % 1000
        step += 1
    assert total == 10000 * 1000 + 15000 * 2000 + (pos - 25000) * 3000


def test_from_config_unknown_or_missing_type():
    msg = _err({"type": "stepped"})
    assert msg.startswith("tariff.type: unknown tariff type 'stepped'"), msg
    assert _err({"price_per_kwh": "0.2"}).startswith("tariff.type: unknown tariff type")
    assert _err(["flat"]).startswith("tariff: expected an object")
    assert _err("flat").startswith("tariff: expected an object")
    assert _err({"type": "bogus"}, 2, "next_tariff").startswith("next_tariff.type: ")


def test_from_config_flat_price_errors():
    msg = _err({"type": "flat"})
    assert msg == "tariff.price_per_kwh: missing", msg
    msg = _err({"type": "flat", "price_per_kwh": "-0.25"})
    assert msg.startswith("tariff.price_per_kwh: ") and "negative" in msg, msg
    msg = _err({"type": "flat", "price_per_kwh": "0.00001"})
    assert msg.startswith("tariff.price_per_kwh: ") and "decimals" in msg, msg
    msg = _err({"type": "flat", "price_per_kwh": "cheap"})
    assert msg.startswith("tariff.price_per_kwh: not a decimal"), msg
    # the highest accepted price, and one price unit more
    assert tariff.from_config({"type": "flat", "price_per_kwh": "10000"}, 2).price == 10**8
    msg = _err({"type": "flat", "price_per_kwh": "10000.0001"})
    assert msg.startswith("tariff.price_per_kwh: implausibly high"), msg


def _tou_with(band, default="0.2500"):
    cfg = {"type": "tou", "bands": [dict(TOU["bands"][0]), band]}
    if default is not None:
        cfg["default_price_per_kwh"] = default
    return cfg


def test_from_config_tou_errors_name_the_band_field():
    good = {"days": "sat", "from": "08:00", "to": "12:00", "price_per_kwh": "0.3000"}

    def bad(**kw):
        b = dict(good)
        for k, v in kw.items():
            if v is None:
                del b[k]
            else:
                b[k] = v
        return _err(_tou_with(b))

    assert tariff.from_config(_tou_with(good), 2).bands[1] == (0x20, 28800, 43200, 3000)
    cases = [
        (bad(**{"from": "7:00"}), "tariff.bands[1].from: expected HH:MM"),
        (bad(**{"from": "24:00"}), "tariff.bands[1].from: no such time of day"),
        (bad(**{"from": None}), "tariff.bands[1].from: expected HH:MM"),
        (bad(to="25:00"), "tariff.bands[1].to: no such time of day"),
        (bad(to="12h00"), "tariff.bands[1].to: expected HH:MM"),
        (bad(to=None), "tariff.bands[1].to: expected HH:MM"),
        (bad(to="08:00"), "tariff.bands[1]: empty band"),
        (bad(days="sat-sunday"), "tariff.bands[1].days: unknown day"),
        (bad(days=""), "tariff.bands[1].days: expected day names"),
        (bad(price_per_kwh="-1"), "tariff.bands[1].price_per_kwh: must not be negative"),
        (bad(price_per_kwh=None), "tariff.bands[1].price_per_kwh: missing"),
    ]
    for msg, want in cases:
        assert msg.startswith(want), (msg, want)
    msg = _err(_tou_with(good, default=None))
    assert msg == "tariff.default_price_per_kwh: missing", msg
    msg = _err(_tou_with(good, default="-0.01"))
    assert msg.startswith("tariff.default_price_per_kwh: must not be negative"), msg
    msg = _err({"type": "tou", "bands": {"from": "07:00"}, "default_price_per_kwh": "1"})
    assert msg.startswith("tariff.bands: expected a list"), msg
    msg = _err({"type": "tou", "bands": ["07:00-10:00"], "default_price_per_kwh": "1"})
    assert msg.startswith("tariff.bands[0]: expected an object"), msg
    # "24:00" is fine as an end; no bands at all is a flat price
    cfg = _tou_with({"from": "20:00", "to": "24:00", "price_per_kwh": "0.5"})
    assert tariff.from_config(cfg, 2).bands[1] == (0x7F, 72000, 86400, 5000)
    t = tariff.from_config({"type": "tou", "bands": [], "default_price_per_kwh": "0.3"}, 2)
    assert t.price_now(_at(SAT, 9), 0) == 3000


def _block_with(*tiers):
    return {"type": "block", "tiers": list(tiers)}


def test_from_config_block_errors_name_the_tier_field():
    p = "0.1000"
    cases = [
        (
            _block_with(
                {"up_to_kwh": "100", "price_per_kwh": p},
                {"up_to_kwh": "100", "price_per_kwh": p},
                {"up_to_kwh": None, "price_per_kwh": p},
            ),
            "tariff.tiers[1].up_to_kwh: tiers must increase",
        ),
        (
            _block_with(
                {"up_to_kwh": "100", "price_per_kwh": p},
                {"up_to_kwh": "99.999", "price_per_kwh": p},
                {"up_to_kwh": None, "price_per_kwh": p},
            ),
            "tariff.tiers[1].up_to_kwh: tiers must increase",
        ),
        (
            _block_with(
                {"up_to_kwh": None, "price_per_kwh": p}, {"up_to_kwh": "50", "price_per_kwh": p}
            ),
            "tariff.tiers[0].up_to_kwh: only the last tier may be open",
        ),
        (
            _block_with({"price_per_kwh": p}, {"up_to_kwh": None, "price_per_kwh": p}),
            "tariff.tiers[0].up_to_kwh: only the last tier may be open",
        ),
        (
            _block_with({"up_to_kwh": "50", "price_per_kwh": p}),
            "tariff.tiers: the last tier must have up_to_kwh null",
        ),
        (
            _block_with({"up_to_kwh": "0", "price_per_kwh": p}, {"up_to_kwh": None}),
            "tariff.tiers[0].up_to_kwh: tiers must increase",
        ),
        (
            _block_with({"up_to_kwh": "-5", "price_per_kwh": p}, {"up_to_kwh": None}),
            "tariff.tiers[0].up_to_kwh: must not be negative",
        ),
        (
            _block_with({"up_to_kwh": "50.0001", "price_per_kwh": p}, {"up_to_kwh": None}),
            "tariff.tiers[0].up_to_kwh: '50.0001' has more than 3 decimals",
        ),
        (
            _block_with({"up_to_kwh": "lots", "price_per_kwh": p}, {"up_to_kwh": None}),
            "tariff.tiers[0].up_to_kwh: not a decimal number",
        ),
        (
            _block_with({"up_to_kwh": "2000000", "price_per_kwh": p}, {"up_to_kwh": None}),
            "tariff.tiers[0].up_to_kwh: out of range",
        ),
        (
            _block_with({"up_to_kwh": "50", "price_per_kwh": p}, {"up_to_kwh": None}),
            "tariff.tiers[1].price_per_kwh: missing",
        ),
        (
            _block_with(
                {"up_to_kwh": "50", "price_per_kwh": "-0.1"},
                {"up_to_kwh": None, "price_per_kwh": p},
            ),
            "tariff.tiers[0].price_per_kwh: must not be negative",
        ),
        (
            _block_with("50", {"up_to_kwh": None, "price_per_kwh": p}),
            "tariff.tiers[0]: expected an object",
        ),
        (_block_with(), "tariff.tiers: expected a non-empty list"),
        ({"type": "block"}, "tariff.tiers: expected a non-empty list"),
    ]
    for cfg, want in cases:
        msg = _err(cfg)
        assert msg.startswith(want), (msg, want)
    one = tariff.from_config(_block_with({"up_to_kwh": None, "price_per_kwh": p}), 2)
    assert one.tiers == [(None, 1000)]
    assert one.cost(5, _at(MON, 0), 10**6, 0) == 5000


def test_from_config_refuses_unknown_keys_naming_them():
    cfg = {"type": "flat", "price_per_kwh": "0.25", "price_per_kw": "0.30"}
    err = support.raises(ValueError, tariff.from_config, cfg, 2)
    assert "tariff.price_per_kw" in str(err)
    cfg = {"type": "block", "tiers": [{"up_to_kwh": None, "price_per_kwh": "0.1"}], "x": 1}
    assert "tariff.x" in str(support.raises(ValueError, tariff.from_config, cfg, 2))
