"""Portable tests of firmware/billing/wallclock.py: calendar arithmetic, the advancing clock, parsing."""

import support
from firmware.billing import wallclock as wc
from firmware.billing.wallclock import WallClock

# (y, m, d, days from 2000-01-01, weekday 0=Mon), checked against CPython's datetime
KNOWN = (
    (2000, 1, 1, 0, 5),  # Saturday
    (2000, 2, 29, 59, 1),  # 2000 is a leap year (divisible by 400)
    (2000, 3, 1, 60, 2),
    (2000, 12, 31, 365, 6),
    (2001, 1, 1, 366, 0),
    (2024, 2, 29, 8825, 3),  # Thursday
    (2024, 3, 1, 8826, 4),
    (2026, 1, 5, 9501, 0),  # Monday
    (2026, 3, 29, 9584, 6),
    (2034, 1, 19, 12437, 3),
    (2099, 12, 31, 36524, 3),
    (2100, 2, 28, 36583, 6),
    (2100, 3, 1, 36584, 0),  # 2100 is not a leap year
    (2199, 12, 31, 73048, 1),
    (1999, 12, 31, -1, 4),
    (1970, 1, 1, -10957, 3),
    (2400, 2, 29, 146156, 1),
)


def _err(fn, *args, **kw):
    return str(support.raises(ValueError, fn, *args, **kw))


def test_known_dates():
    for y, m, d, days, wday in KNOWN:
        assert wc.days_from_2000(y, m, d) == days, (y, m, d)
        assert wc.weekday(y, m, d) == wday, (y, m, d)
    assert wc.DAYS[wc.weekday(2000, 1, 1)] == "sat"
    assert wc.DAYS[wc.weekday(2026, 1, 5)] == "mon"


def test_leap_years():
    for y in (2000, 2004, 2024, 2096, 2400):
        assert wc.is_leap(y), y
        assert wc.month_days(y, 2) == 29
    for y in (2001, 2023, 2100, 2200, 2300):
        assert not wc.is_leap(y), y
        assert wc.month_days(y, 2) == 28
    assert [wc.month_days(2026, m) for m in range(1, 13)] == [
        31,
        28,
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ]


def test_every_day_2000_to_2199_is_consecutive():
    days = 0
    wday = 5
    for y in range(2000, 2200):
        assert wc.days_from_2000(y, 1, 1) == days, y
        for m in range(1, 13):
            for d in range(1, wc.month_days(y, m) + 1):
                if d == 1 or d > 27:  # month starts and ends; the middle is linear
                    assert wc.days_from_2000(y, m, d) == days, (y, m, d)
                    assert wc.weekday(y, m, d) == wday, (y, m, d)
                days += 1
                wday = (wday + 1) % 7
    assert days == 73049  # 200 years with 49 leap days (2100 is not one)


def test_clock_fields_after_set():
    c = WallClock(2026, 1, 5, 7 * 3600 + 30 * 60 + 15)
    assert (c.year, c.month, c.day, c.sod) == (2026, 1, 5, 27015)
    assert c.wday == 0
    assert c.days == 9501
    assert c.date_code == 20260105
    assert not c.new_day and not c.new_month
    assert c.stamp() == 9501 * 86400 + 27015
    assert c.iso() == "2026-01-05T07:30:15"


def test_clock_set_rejects_invalid():
    for args in (
        (2026, 13, 1, 0),
        (2026, 0, 1, 0),
        (2026, 2, 29, 0),
        (2100, 2, 29, 0),
        (2026, 4, 31, 0),
        (2026, 1, 0, 0),
        (2026, 1, 1, 86400),
        (2026, 1, 1, -1),
    ):
        msg = _err(WallClock, *args)
        assert msg.startswith("clock:"), (args, msg)
    assert WallClock(2024, 2, 29, 86399).sod == 86399


def test_advance_within_a_day():
    c = WallClock(2026, 1, 5, 0)
    c.advance(1)
    assert (c.day, c.sod, c.new_day, c.new_month) == (5, 1, False, False)
    c.advance(86398)
    assert (c.day, c.sod, c.new_day) == (5, 86399, False)
    c.advance(0)
    assert (c.day, c.sod, c.new_day, c.new_month) == (5, 86399, False, False)


def test_advance_across_midnight():
    c = WallClock(2026, 1, 5, 86399)
    c.advance(1)
    assert (c.year, c.month, c.day, c.sod) == (2026, 1, 6, 0)
    assert c.new_day and not c.new_month
    assert c.wday == 1 and c.days == 9502 and c.date_code == 20260106
    c.advance(1)  # flags are per call
    assert not c.new_day and not c.new_month
    assert c.sod == 1


def test_advance_across_month_and_year():
    c = WallClock(2026, 1, 31, 86395)
    c.advance(10)
    assert (c.year, c.month, c.day, c.sod) == (2026, 2, 1, 5)
    assert c.new_day and c.new_month
    assert c.date_code == 20260201
    c = WallClock(2025, 12, 31, 86399)
    c.advance(1)
    assert (c.year, c.month, c.day, c.sod) == (2026, 1, 1, 0)
    assert c.new_day and c.new_month
    assert c.wday == wc.weekday(2026, 1, 1) == 3
    assert c.date_code == 20260101


def test_advance_over_leap_days():
    c = WallClock(2024, 2, 28, 43200)
    c.advance(86400)
    assert (c.month, c.day, c.new_month) == (2, 29, False)
    c.advance(86400)
    assert (c.month, c.day, c.new_month) == (3, 1, True)
    c = WallClock(2100, 2, 28, 43200)
    c.advance(86400)
    assert (c.month, c.day, c.new_month) == (3, 1, True)
    assert c.wday == 0 and c.days == 36584


def test_advance_many_days_in_one_call():
    c = WallClock(2026, 1, 5, 3600)
    c.advance(40 * 86400 + 5)
    assert (c.year, c.month, c.day, c.sod) == (2026, 2, 14, 3605)
    assert c.new_day and c.new_month
    assert c.days == wc.days_from_2000(2026, 2, 14)
    assert c.wday == wc.weekday(2026, 2, 14)
    c.advance(366 * 86400)  # 2026-02-14 + 366 days (no Feb 29 in 2026/27)
    assert (c.year, c.month, c.day) == (2027, 2, 15)
    assert c.stamp() == wc.days_from_2000(2027, 2, 15) * 86400 + 3605


def test_advancing_clock_matches_a_fresh_clock_every_day():
    c = WallClock(2000, 1, 1, 12345)
    ref = WallClock(2000, 1, 1, 12345)
    months = 0
    for _ in range(366 + 3 * 365):  # 2000 .. 2003, both leap and common years
        prev_month = c.month
        c.advance(86400)
        ref.set(c.year, c.month, c.day, c.sod)
        assert (c.wday, c.days, c.date_code) == (ref.wday, ref.days, ref.date_code)
        assert c.new_day
        assert c.new_month == (c.month != prev_month)
        months += c.new_month
    assert (c.year, c.month, c.day) == (2004, 1, 1)
    assert months == 48


def test_format_stamp_known():
    assert wc.format_stamp(0) == "2000-01-01T00:00:00"
    assert wc.format_stamp(86399) == "2000-01-01T23:59:59"
    assert wc.format_stamp(59 * 86400 + 3723) == "2000-02-29T01:02:03"
    assert wc.format_stamp(8825 * 86400) == "2024-02-29T00:00:00"
    assert wc.format_stamp(36584 * 86400 - 1) == "2100-02-28T23:59:59"
    assert wc.format_stamp(73048 * 86400 + 86399) == "2199-12-31T23:59:59"


def test_stamp_format_parse_round_trip():
    for y, m, d, days, _ in KNOWN:
        if not 2000 <= y <= 2199:
            continue
        for sod in (0, 1, 3599, 43200, 86399):
            c = WallClock(y, m, d, sod)
            assert c.stamp() == days * 86400 + sod
            text = wc.format_stamp(c.stamp())
            assert wc.parse_datetime(text) == (y, m, d, sod), text
            assert c.iso() == text
    # a walk over two centuries in steps that hit every month and second of the day
    stamp = 0
    while stamp < 73049 * 86400:
        text = wc.format_stamp(stamp)
        y, m, d, sod = wc.parse_datetime(text)
        assert wc.days_from_2000(y, m, d) * 86400 + sod == stamp, text
        stamp += 1234567


def test_parse_date():
    assert wc.parse_date("2026-01-05") == (2026, 1, 5)
    assert wc.parse_date("2024-02-29") == (2024, 2, 29)
    assert wc.parse_date("2000-01-01") == (2000, 1, 1)
    assert wc.parse_date("2199-12-31") == (2199, 12, 31)
    for text in ("2026/01/05", "2026-1-5", "26-01-05", "2026-01-05T00", "abcd-ef-gh", ""):
        msg = _err(wc.parse_date, text, "holidays[2]")
        assert msg.startswith("holidays[2]: expected YYYY-MM-DD"), (text, msg)
    for text in ("2026-13-01", "2026-00-10", "2026-02-29", "2100-02-29", "2026-04-31"):
        msg = _err(wc.parse_date, text, "holidays[0]")
        assert msg.startswith("holidays[0]: no such date"), (text, msg)
    for text in ("1999-12-31", "2200-01-01"):
        assert _err(wc.parse_date, text).startswith("date: "), text
    assert _err(wc.parse_date, None, "start").startswith("start: expected")
    assert _err(wc.parse_date, 20260105, "start").startswith("start: expected")


def test_parse_hhmm():
    assert wc.parse_hhmm("00:00") == 0
    assert wc.parse_hhmm("07:30") == 27000
    assert wc.parse_hhmm("23:59") == 86340
    assert wc.parse_hhmm("24:00", allow_24=True) == 86400
    assert wc.parse_hhmm("00:00", allow_24=True) == 0
    # 24:00 is an end of day only
    msg = _err(wc.parse_hhmm, "24:00", "tariff.bands[0].from")
    assert msg.startswith("tariff.bands[0].from: no such time of day"), msg
    for text in ("24:01", "25:00", "23:60"):
        msg = _err(wc.parse_hhmm, text, "friendly[1].to", allow_24=True)
        assert msg.startswith("friendly[1].to: no such time of day"), (text, msg)
    for text in ("7:30", "07-30", "0730", "07:3", "ab:cd", "07:30:00", ""):
        msg = _err(wc.parse_hhmm, text, "friendly[0].from")
        assert msg.startswith("friendly[0].from: expected HH:MM"), (text, msg)
    assert _err(wc.parse_hhmm, None).startswith("time: expected HH:MM")
    assert _err(wc.parse_hhmm, 730).startswith("time: expected HH:MM")


def test_parse_datetime():
    assert wc.parse_datetime("2026-01-05T07:30:15") == (2026, 1, 5, 27015)
    assert wc.parse_datetime("2026-01-05 07:30:15") == (2026, 1, 5, 27015)
    assert wc.parse_datetime("2024-02-29T23:59:59") == (2024, 2, 29, 86399)
    for text in (
        "2026-01-05T07:30",
        "2026-01-05X07:30:00",
        "2026-01-05T07:30-00",
        "2026-01-05T07:30:ab",
        "2026-01-05",
        "",
    ):
        msg = _err(wc.parse_datetime, text, "clock")
        assert msg.startswith("clock: expected"), (text, msg)
    for text in ("2026-01-05T24:00:00", "2026-01-05T07:60:00", "2026-01-05T07:30:60"):
        msg = _err(wc.parse_datetime, text, "clock")
        assert msg.startswith("clock: no such time of day"), (text, msg)
    msg = _err(wc.parse_datetime, "2026-02-30T00:00:00")
    assert msg.startswith("start: no such date"), msg
    assert _err(wc.parse_datetime, None).startswith("start: expected")


def test_parse_days():
    assert wc.parse_days("mon") == 0x01
    assert wc.parse_days("sun") == 0x40
    assert wc.parse_days("mon-fri") == 0x1F
    assert wc.parse_days("sat,sun") == 0x60
    assert wc.parse_days("mon,wed-fri") == 0x1D
    assert wc.parse_days("fri-mon") == 0x71  # wraps over the weekend
    assert wc.parse_days("sun-sun") == 0x40
    assert wc.parse_days("all") == 0x7F
    assert wc.parse_days("*") == 0x7F
    assert wc.parse_days("mon-sun") == 0x7F
    assert wc.parse_days(" SAT , Sun ") == 0x60
    assert wc.parse_days("tue-mon") == 0x7F
    for text in ("monday", "mon-", "-fri", "mon,,tue", "xyz-fri", "mon-fri-sat", "mon;tue"):
        msg = _err(wc.parse_days, text, "tariff.bands[3].days")
        assert msg.startswith("tariff.bands[3].days: unknown day"), (text, msg)
    for bad in ("", "   ", None, 5):
        msg = _err(wc.parse_days, bad, "friendly[0].days")
        assert msg.startswith("friendly[0].days: expected day names"), (bad, msg)


def test_parsers_take_ascii_digits_only():
    # int() alone would take signs, spaces and '_' (and, on CPython only, other scripts'
    # digits): the same settings file must validate alike on the host and the meter.
    for text in (" 7:30", "+7:30", "-0:30", "07:-5", "0_:30", "07: 5", "\u0660\u0667:30"):
        msg = _err(wc.parse_hhmm, text, "friendly[0].from", allow_24=True)
        assert msg.startswith("friendly[0].from: expected HH:MM"), (text, msg)
    for text in ("2026- 1-05", "2026-+1-05", "+026-01-05", "2026-01-0_", "2_26-01-05"):
        msg = _err(wc.parse_date, text, "holidays[0]")
        assert msg.startswith("holidays[0]: expected YYYY-MM-DD"), (text, msg)
    for text in ("2026-01-05T07:30:+5", "2026-01-05T07:30: 5", "2026-01-05T07:30:-0"):
        msg = _err(wc.parse_datetime, text, "clock")
        assert msg.startswith("clock: expected"), (text, msg)
