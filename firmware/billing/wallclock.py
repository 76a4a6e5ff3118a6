"""Local civil time kept as broken-down fields and advanced in place.

The metering tick needs the weekday, the second of the day and the calendar month
(time-of-use bands, friendly windows, monthly block reset). Calling time.localtime()
every tick would allocate a tuple, and epoch seconds outgrow the ESP32's 31-bit small
ints in 2034, so the meter keeps its own fields and advances them by elapsed seconds.
Meter time stamps (`stamp()`) count seconds since 2000-01-01T00:00:00 local time on
every port, whatever epoch the port's `time` module uses.
"""

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_MONTH_DAYS = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def is_leap(y):
    return y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)


def month_days(y, m):
    if m == 2 and is_leap(y):
        return 29
    return _MONTH_DAYS[m - 1]


def days_from_2000(y, m, d):
    """Days from 2000-01-01 to the given date (negative before it)."""
    # Days-from-civil, shifted so that March is the first month of the year.
    if m <= 2:
        y -= 1
    era = y // 400
    yoe = y - era * 400
    mp = (m + 9) % 12
    doy = (153 * mp + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 730425


def weekday(y, m, d):
    """0 = Monday ... 6 = Sunday (2000-01-01 was a Saturday)."""
    return (days_from_2000(y, m, d) + 5) % 7


def _digits(s):
    """True when s is ASCII digits only (int() alone also takes signs, spaces, '_', and
    on CPython other scripts' digits, differently on each runtime)."""
    for ch in s:
        if ch < "0" or ch > "9":
            return False
    return True


def parse_date(text, field="date"):
    """'YYYY-MM-DD' -> (y, m, d), validated."""
    if not isinstance(text, str) or len(text) != 10 or text[4] != "-" or text[7] != "-":
        raise ValueError(field + ": expected YYYY-MM-DD, got " + repr(text))
    if not _digits(text[0:4] + text[5:7] + text[8:10]):
        raise ValueError(field + ": expected YYYY-MM-DD, got " + repr(text))
    y, m, d = int(text[0:4]), int(text[5:7]), int(text[8:10])
    if not (1 <= m <= 12 and 1 <= d <= month_days(y, m) and 2000 <= y <= 2199):
        raise ValueError(field + ": no such date " + repr(text))
    return y, m, d


def parse_hhmm(text, field="time", allow_24=False):
    """'HH:MM' -> seconds of the day; '24:00' allowed as an end of day."""
    if not isinstance(text, str) or len(text) != 5 or text[2] != ":":
        raise ValueError(field + ": expected HH:MM, got " + repr(text))
    if not _digits(text[0:2] + text[3:5]):
        raise ValueError(field + ": expected HH:MM, got " + repr(text))
    h, mi = int(text[0:2]), int(text[3:5])
    if allow_24 and h == 24 and mi == 0:
        return 86400
    if not (0 <= h <= 23 and 0 <= mi <= 59):
        raise ValueError(field + ": no such time of day " + repr(text))
    return h * 3600 + mi * 60


def parse_datetime(text, field="start"):
    """'YYYY-MM-DDTHH:MM:SS' (local time) -> (y, m, d, seconds of day)."""
    if not isinstance(text, str) or len(text) != 19 or text[10] not in "T ":
        raise ValueError(field + ": expected YYYY-MM-DDTHH:MM:SS, got " + repr(text))
    y, m, d = parse_date(text[:10], field)
    hm = parse_hhmm(text[11:16], field)
    if text[16] != ":" or not _digits(text[17:19]):
        raise ValueError(field + ": expected YYYY-MM-DDTHH:MM:SS, got " + repr(text))
    s = int(text[17:19])
    if not 0 <= s <= 59:
        raise ValueError(field + ": no such time of day " + repr(text))
    return y, m, d, hm + s


def parse_days(text, field="days"):
    """'mon-fri', 'sat,sun', 'mon,wed-fri', 'all' -> bit mask (bit 0 = Monday)."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(field + ": expected day names like 'mon-fri', got " + repr(text))
    text = text.strip().lower()
    if text in ("all", "*", "mon-sun"):
        return 0x7F
    mask = 0
    for part in text.split(","):
        a, dash, b = part.strip().partition("-")
        if a not in DAYS or (dash and b not in DAYS):
            raise ValueError(field + ": unknown day in " + repr(text))
        i, j = DAYS.index(a), DAYS.index(b) if dash else DAYS.index(a)
        while True:
            mask |= 1 << i
            if i == j:
                break
            i = (i + 1) % 7
    return mask


def format_stamp(stamp):
    """Meter time stamp -> 'YYYY-MM-DDTHH:MM:SS' (allocates; not for the tick)."""
    days, sod = divmod(stamp, 86400)
    y = 2000 + days // 366
    while days_from_2000(y + 1, 1, 1) <= days:
        y += 1
    m = 1
    while m < 12 and days_from_2000(y, m + 1, 1) <= days:
        m += 1
    d = days - days_from_2000(y, m, 1) + 1
    return "%04d-%02d-%02dT%02d:%02d:%02d" % (y, m, d, sod // 3600, sod // 60 % 60, sod % 60)


class WallClock:
    """Local date and time of day, advanced by whole seconds without allocating."""

    def __init__(self, y, m, d, sod=0):
        self.set(y, m, d, sod)

    def set(self, y, m, d, sod=0):
        if not (1 <= m <= 12 and 1 <= d <= month_days(y, m) and 0 <= sod < 86400):
            raise ValueError("clock: invalid date/time")
        self.year = y
        self.month = m
        self.day = d
        self.sod = sod  # second of the day, 0..86399
        self.wday = weekday(y, m, d)  # 0 = Monday
        self.days = days_from_2000(y, m, d)
        self.date_code = y * 10000 + m * 100 + d
        self.new_day = False
        self.new_month = False

    def advance(self, seconds):
        """Move forward; sets new_day / new_month when a boundary was crossed."""
        self.new_day = False
        self.new_month = False
        sod = self.sod + seconds
        while sod >= 86400:
            sod -= 86400
            self._next_day()
        self.sod = sod

    def _next_day(self):
        self.new_day = True
        self.days += 1
        self.wday = (self.wday + 1) % 7
        self.day += 1
        if self.day > month_days(self.year, self.month):
            self.day = 1
            self.new_month = True
            self.month += 1
            if self.month > 12:
                self.month = 1
                self.year += 1
        self.date_code = self.year * 10000 + self.month * 100 + self.day

    def stamp(self):
        """Seconds since 2000-01-01T00:00:00 local (a long int after 2034: events only)."""
        return self.days * 86400 + self.sod

    def iso(self):
        return format_stamp(self.stamp())
