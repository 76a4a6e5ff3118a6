"""What the customer's display shows, decided without knowing the panel.

`Screens.compose(out)` fills a `Content` (title, main value, unit, a small note line, a
status line, blink, page p of n) from the meter as it is now (App.status(), read once
for each composition; the settings say how to show it); a renderer draws it: the
dot-matrix OLED through firmware/ui/display.py, a segment LCD could map the same content to
its digits and icons. Which content, in order of priority:

1. the keypad line being typed (app.entry, firmware/ui/keyentry.py): "Token" with the
   digits grouped in 4s, or "Code";
2. the answer to a token typed there, for `hold_ms` (10 s): "Accepted" and the new
   balance, or the reject code's word ("Top-up" instead of "Token" for one that came
   another way: the back office, the technician); or an information screen asked for
   with a code (#0# meter number ... #90# version), for `hold_ms` -- whichever came last;
3. otherwise the cycle: balance, energy left, power, state, last token (once there is
   one), meter number, each for `cycle_ms` (4 s); the keypad's next-screen key steps it
   at once (and ends an answer or information screen).

The balance blinks while the credit is low or emergency credit is in use; the status
line names what is wrong (tamper, the reason the supply is off, press the button, low
or emergency credit, friendly hours) and is empty when all is well.

Energy left is the balance at the price now: kWh x 100 = balance x 10^4 // price, the
balance in minor units and the price in 1/100 minor unit per kWh (docs/billing.md,
units), so it is floor(balance / price) to the 0.01 kWh shown whatever the tariff (flat,
the TOU band or the block tier in force now). The time it lasts at the present load:
minutes = balance x 6 x 10^6 // (price x W), shown with the load as "2000 W: 24h40"
(minutes under an hour, hours and minutes under 100 h, then days); "--" when the load
or the price is 0.
"""

from firmware.billing import policy
from firmware.tokens import codes as tokencodes
from firmware.billing.money import format_decimal

CYCLE = ("balance", "kwh_left", "power", "state", "last_token", "meter_id")
# what firmware/ui/keyentry.py may ask for (info codes)
INFO = CYCLE + ("power_limit", "signal", "tokens", "version")

_STATE_WORD = {
    policy.IN_CREDIT: "Normal",
    policy.LOW_CREDIT: "Low credit",
    policy.EMERGENCY: "Emergency",
    policy.FRIENDLY: "Friendly",
    policy.OUT_OF_CREDIT: "No credit",
}
_CREDIT_ALERT = {
    policy.LOW_CREDIT: "LOW CREDIT",
    policy.EMERGENCY: "EMERGENCY CREDIT",
    policy.FRIENDLY: "FRIENDLY HOURS",
    policy.OUT_OF_CREDIT: "NO CREDIT",
}
# why the supply is off, the most telling first
_OFF_REASONS = (
    (policy.OPEN_TAMPER, "TAMPER"),
    (policy.OPEN_LOCKOUT, "POWER LOCKOUT"),
    (policy.OPEN_MAX_POWER, "OVER POWER LIMIT"),
    (policy.OPEN_REMOTE, "REMOTE OFF"),
    (policy.OPEN_CREDIT, "NO CREDIT"),
)


def kwh_left_x100(balance, price):
    """Energy the balance buys at `price`, in 0.01 kWh (floor); None when price is 0."""
    if price <= 0:
        return None
    if balance <= 0:
        return 0
    return balance * 10000 // price


def minutes_left(balance, price, watts):
    """Minutes the balance lasts at `watts` and `price` (floor); None when either is 0."""
    if price <= 0 or watts <= 0:
        return None
    if balance <= 0:
        return 0
    return balance * 6000000 // (price * watts)


def duration_text(minutes):
    if minutes is None:
        return "--"
    if minutes < 60:
        return str(minutes) + " min"
    if minutes < 100 * 60:
        m = minutes % 60
        return str(minutes // 60) + "h" + ("0" if m < 10 else "") + str(m)
    tenths = minutes * 10 // 1440
    if tenths < 100:
        return str(tenths // 10) + "." + str(tenths % 10) + " days"
    return str(tenths // 10) + " days"


def group4(digits):
    """'12345678' -> '1234 5678' (the way tokens are printed on receipts)."""
    out = ""
    for i in range(0, len(digits), 4):
        out += (" " if i else "") + digits[i : i + 4]
    return out


class Content:
    """Panel-neutral content of one screen."""

    def __init__(self):
        self.clear()

    def clear(self):
        self.name = ""  # which screen ("balance", "entry", "answer", INFO names)
        self.title = ""
        self.value = ""  # the main figure or word
        self.unit = ""
        self.note = ""  # a small second line
        self.status = ""  # what is wrong, "" when all is well
        self.blink = False  # the value blinks
        self.small = False  # the value wants the small font (a long line of digits)
        self.page = 0  # position in the cycle, 1-based (0: not a cycle screen)
        self.pages = 0

    def set(self, name, title, value, unit="", note=""):
        self.name = name
        self.title = title
        self.value = value
        self.unit = unit
        self.note = note

    def same(self, o):
        return (
            self.name == o.name
            and self.title == o.title
            and self.value == o.value
            and self.unit == o.unit
            and self.note == o.note
            and self.status == o.status
            and self.blink == o.blink
            and self.small == o.small
            and self.page == o.page
            and self.pages == o.pages
        )

    def copy(self, o):
        self.name = o.name
        self.title = o.title
        self.value = o.value
        self.unit = o.unit
        self.note = o.note
        self.status = o.status
        self.blink = o.blink
        self.small = o.small
        self.page = o.page
        self.pages = o.pages


class Screens:
    def __init__(self, app, clock, cycle_ms=4000, hold_ms=10000):
        self.app = app
        self.clock = clock
        self.cycle_ms = cycle_ms
        self.hold_ms = hold_ms
        self.index = 0  # into CYCLE
        self._since = clock.ticks_ms()
        self._steps = None  # entry.steps last seen
        self._answer = None  # the answer showing (or shown), and whether it still shows
        self._answer_live = False
        self._typed = None  # entry.answer last seen
        self._last = app.intake.last  # intake.last last seen: a new one is an answer too
        self._info = None
        self._info_live = False
        self._version = None  # (version, hash, match): identify() hashes files, once

    # -- helpers --------------------------------------------------------------------
    def money(self, amount):
        return format_decimal(amount, self.app.meter.settings.currency_decimals)

    def _live(self, at_ms, now):
        age = self.clock.ticks_diff(now, at_ms)
        return 0 <= age < self.hold_ms

    def step(self, n=1):
        """Next screen of the cycle (the keypad's next-screen key); ends an overlay."""
        for _ in range(n):
            self.index = (self.index + 1) % len(CYCLE)
            if not self._available(self.index):
                self.index = (self.index + 1) % len(CYCLE)
        self._since = self.clock.ticks_ms()
        self._answer_live = False
        self._info_live = False

    def _available(self, i):
        return CYCLE[i] != "last_token" or self.app.intake.last is not None

    def alert(self, st=None):
        """The status line: what is wrong now, most serious first ("" when nothing).
        st: App.status() (read now when not given)."""
        if st is None:
            st = self.app.status()
        reasons = st["open_reasons"]
        state = st["control_state"]
        if reasons & policy.OPEN_TAMPER:
            return "TAMPER"
        if state == policy.DISCONNECTED:
            for bit, text in _OFF_REASONS:
                if reasons & bit:
                    return text
            return "SUPPLY OFF"
        if state == policy.READY_FOR_RECONNECTION:
            return "PRESS BUTTON"
        text = _CREDIT_ALERT.get(st["credit_status"], "")
        if not text and st.get("settings") == "defaults":
            return "DEFAULT SETTINGS"  # no good settings copy: billing at the defaults
        return text

    # -- composing ---------------------------------------------------------------------
    def compose(self, out):
        """Fill `out` (a Content) with what shows now; returns it."""
        now = self.clock.ticks_ms()
        out.clear()
        entry = getattr(self.app, "entry", None)
        overlay = None
        last = self.app.intake.last
        remote = last is not self._last  # a token from anywhere (the back office...)
        self._last = last
        if entry is not None:
            if self._steps is None:
                self._steps = entry.steps
            elif entry.steps != self._steps:
                self.step((entry.steps - self._steps) % len(CYCLE))
                self._steps = entry.steps
            a = entry.answer
            if a is not self._typed:
                self._typed = a
                if a is not None:  # typed here: the same token as intake.last
                    self._answer = a
                    self._answer_live = True
                    remote = False
        if remote and last is not None:
            self._answer = self._last_answer(now)
            self._answer_live = True
        a = self._answer
        if self._answer_live and not self._live(a["at_ms"], now):
            self._answer_live = False
        if entry is not None:
            info = entry.info
            if info is not self._info:
                self._info = info
                self._info_live = info is not None
            if self._info_live and not self._live(info[1], now):
                self._info_live = False
            if entry.mode != "idle":
                overlay = "entry"
            elif self._answer_live and self._info_live:
                newer = self.clock.ticks_diff(a["at_ms"], info[1]) >= 0
                overlay = "answer" if newer else "info"
            elif self._info_live:
                overlay = "info"
        if overlay is None and self._answer_live:
            overlay = "answer"
        if overlay is not None:
            self._since = now  # the cycle waits, then resumes where it was
            if overlay == "entry":
                self._entry(out, entry)
            elif overlay == "answer":
                self._token_answer(out, a)
            else:
                self.screen(self._info[0], out)
            return out
        if self.clock.ticks_diff(now, self._since) >= self.cycle_ms:
            self.step()
            self._since = now
        if not self._available(self.index):
            self.index = (self.index + 1) % len(CYCLE)
        st = self.app.status()
        self.screen(CYCLE[self.index], out, st)
        out.status = self.alert(st)
        n = 0
        for i in range(len(CYCLE)):
            if self._available(i):
                n += 1
                if i == self.index:
                    out.page = n
        out.pages = n
        return out

    def screen(self, name, out, st=None):
        """Fill `out` with the named screen (CYCLE or INFO names) from `st`, App.status()
        (read now when not given)."""
        if st is None:
            st = self.app.status()
        getattr(self, "_s_" + (name if name in INFO else "balance"))(out, st)
        return out

    def _entry(self, out, entry):
        if entry.mode == "token":
            d = entry.digits
            out.set("entry", "Token", group4(d) if d else "_", note=str(len(d)) + " of 20")
            out.small = True  # the same size from the first digit to the 20th
        else:
            out.set("entry", "Code", "#" + entry.digits + "_", note="number then #")
            out.small = True

    def _token_answer(self, out, a):
        code = a["code"]
        title = "Top-up" if a.get("remote") else "Token"
        if code == tokencodes.ACCEPT or a["accepted"]:
            out.set("answer", title, a["word"], note="Balance " + self.money(a["balance"]))
        else:
            out.set("answer", title, a["word"], note="Rejected (" + str(code) + ")")

    # -- the screens -------------------------------------------------------------------
    def _s_balance(self, out, st):
        credit = st["credit_status"]
        note = ""
        if st["debt"] > 0:
            note = "debt " + self.money(st["debt"])
        out.set("balance", "Balance", self.money(st["balance"]), note=note)
        out.blink = credit == policy.LOW_CREDIT or credit == policy.EMERGENCY

    def _s_kwh_left(self, out, st):
        price = st["price"]
        bal = st["balance"]
        k = kwh_left_x100(bal, price)
        w = st["power_w"]
        mins = minutes_left(bal, price, w)
        value = "--" if k is None else format_decimal(k, 2)
        dur = duration_text(mins)
        note = str(w) + " W: " + dur
        if len(note) > 16:  # the small line's width
            note = dur
        out.set("kwh_left", "Energy left", value, "kWh", note)

    def _s_power(self, out, st):
        limit = self.app.meter.settings.max_power_w
        note = "limit " + str(limit) + " W" if limit else ""
        out.set("power", "Power now", str(st["power_w"]), "W", note)

    def _s_power_limit(self, out, st):
        s = self.app.meter.settings
        if s.max_power_w:
            trip = "trips after " + str(s.max_power_trip_s) + " s"
            out.set("power_limit", "Power limit", str(s.max_power_w), "W", trip)
        else:
            out.set("power_limit", "Power limit", "None")

    def _s_state(self, out, st):
        state = st["control_state"]
        if st["open_reasons"] & policy.OPEN_TAMPER:
            word = "Tamper"
        else:
            word = _STATE_WORD.get(st["credit_status"], "?")
        if state == policy.CONNECTED:
            supply = "Supply on"
        elif state == policy.READY_FOR_RECONNECTION:
            supply = "Supply ready"
        else:
            supply = "Supply off"
        out.set("state", "State", word, note=supply)
        out.status = self.alert(st)

    def _last_answer(self, now=0):
        """intake.last as an answer (the shape of keyentry's), None before any token."""
        last = self.app.intake.last
        if last is None:
            return None
        r, bal = last
        return {
            "code": r.code,
            "word": tokencodes.word(r.code),
            "balance": bal,
            "accepted": tokencodes.accepted(r.code),
            "at_ms": now,
            "remote": True,
        }

    def _s_last_token(self, out, st):
        a = self._last_answer()
        if a is None:
            out.set("last_token", "Last token", "None")
        else:
            self._token_answer(out, a)
            out.name = "last_token"
            out.title = "Last token"

    def _s_tokens(self, out, st):
        """The newest token typed (or the last one from anywhere) and the ones before."""
        entry = getattr(self.app, "entry", None)
        kept = getattr(entry, "tokens", None) or []
        if not kept:
            self._s_last_token(out, st)
            out.name = "tokens"
            out.title = "Tokens"
            return
        self._token_answer(out, kept[-1])
        out.name = "tokens"
        out.title = "Tokens " + str(len(kept))
        before = ""
        for i in range(len(kept) - 2, -1, -1):
            w = kept[i]["word"]
            if len(before) + len(w) + 1 > 16:
                break
            before += (" " if before else "") + w
        out.status = before

    def _signal(self, st):
        """(value, note) of the radio: dBm or "--", and online / offline / no modem."""
        tel = st["modem"]
        if tel is None:
            return "--", "no modem"
        rssi = tel.get("rssi_dbm")
        return ("--" if rssi is None else str(rssi)), ("online" if st["online"] else "offline")

    def _s_meter_id(self, out, st):
        value, note = self._signal(st)
        if value != "--":
            note += " " + value + " dBm"
        out.set("meter_id", "Meter", st["meter_id"], note=note)

    def _s_signal(self, out, st):
        value, note = self._signal(st)
        out.set("signal", "Signal", value, "dBm", note)

    def version_wanted(self):
        """True while the version screen is asked for and its files not yet hashed: the
        display task then hashes them with identify_async and set_version() first."""
        entry = getattr(self.app, "entry", None)
        info = entry.info if entry is not None else None
        return self._version is None and info is not None and info[0] == "version"

    def set_version(self, v):
        """A version.identify() result for the version screen."""
        self._version = (v["version"], v["hash"][:12], v["match"])

    def _s_version(self, out, st):
        if self._version is None:  # composed outside the display task: at once
            from firmware.storage import version

            self.set_version(version.identify())
        ver, h, match = self._version
        out.set("version", "Version", ver, note=h)
        out.status = "" if match is None else ("VERIFIED" if match else "MODIFIED")
