"""What the customer types on the keypad: tokens, information codes, screen steps.

    entry = Entry(app, clock)
    keypad.run(entry.key)        # one character per key press

Keys (4x3 pad `123456789*0#`; a 4x4 pad adds A next screen, B backspace, C cancel,
D enter):
- digits start a token; `*` deletes the last digit (the last one: the line ends); `#`
  enters it through the one credit path (firmware/tokens/intake.py, the same as a remote
  token: `App.enter`), and the answer is kept for the display: accepted with the new
  balance, or the reject code's word;
- `#` on an idle pad starts an information code, ended by `#` (STS keypad meters'
  short codes): #0# meter number, #1# balance, #2# kWh left, #3# power now, #4# power
  limit, #5# state, #6# signal, #30# last tokens, #078# last token's result (Conlog),
  #90# software version; `##` steps to the next screen, as does `*` on an idle pad;
- a line left for `timeout_ms` (30 s) is dropped.
Every key clicks; an answer plays "accepted" or "rejected" (drivers/indicator.py).
`changes` counts every change so the display knows when to redraw.
"""

from firmware.tokens import codes as rc

MAX_DIGITS = 20
MAX_CODE = 3
CODES = {
    "0": "meter_id",
    "1": "balance",
    "2": "kwh_left",
    "3": "power",
    "4": "power_limit",
    "5": "state",
    "6": "signal",
    "30": "tokens",
    "078": "last_token",
    "90": "version",
}
KEEP_TOKENS = 10

IDLE = "idle"
TOKEN = "token"
CODE = "code"


class Entry:
    def __init__(self, app, clock, timeout_ms=30000):
        self.app = app
        self.clock = clock
        self.timeout_ms = timeout_ms
        self.mode = IDLE
        self.digits = ""
        self.answer = None  # {"code", "word", "balance", "accepted", "at_ms"}
        self.info = None  # (name, at_ms)
        self.tokens = []  # the last KEEP_TOKENS answers, newest last
        self.steps = 0
        self.changes = 0
        self.entered = 0
        self.on_answer = None  # fn(digits, answer) after each token (the simulator's report)
        self._last_ms = 0

    def _sound(self, name):
        ind = self.app.board.indicator
        if ind is not None:
            ind.play(name)

    def _changed(self):
        self.changes += 1

    def key(self, ch):
        now = self.clock.ticks_ms()
        if self.mode != IDLE and self.clock.ticks_diff(now, self._last_ms) > self.timeout_ms:
            self._cancel()  # a line left alone: the key starts afresh
        self._last_ms = now
        self._sound("click")
        if ch == "A":
            self._next()
        elif ch == "B":
            self._back()
        elif ch == "C":
            self._cancel()
        elif ch == "D":
            self._enter(now)
        elif ch == "*":
            if self.mode == IDLE:
                self._next()
            else:
                self._back()
        elif ch == "#":
            if self.mode == IDLE:
                self.mode = CODE
                self.digits = ""
                self._changed()
            else:
                self._enter(now)
        elif "0" <= ch <= "9":
            limit = MAX_CODE if self.mode == CODE else MAX_DIGITS
            if self.mode == IDLE:
                self.mode = TOKEN
                self.digits = ""
            if len(self.digits) < limit:
                self.digits += ch
            self._changed()

    def expire(self):
        """Drop a line left for timeout_ms (the keypad task calls this now and then)."""
        if self.mode != IDLE:
            now = self.clock.ticks_ms()
            if self.clock.ticks_diff(now, self._last_ms) > self.timeout_ms:
                self._cancel()

    def _next(self):
        self.info = None
        self.answer = None
        self.steps += 1
        self._changed()

    def _back(self):
        self.digits = self.digits[:-1]
        if not self.digits:
            self.mode = IDLE
        self._changed()

    def _cancel(self):
        self.mode = IDLE
        self.digits = ""
        self._changed()

    def _enter(self, now):
        mode, digits = self.mode, self.digits
        self.mode = IDLE
        self.digits = ""
        if mode == CODE:
            if not digits:
                self._next()
                return
            name = CODES.get(digits)
            if name is None:
                self._sound("rejected")
            else:
                self.answer = None
                self.info = (name, now)
            self._changed()
            return
        if not digits:
            self._changed()
            return
        r, balance = self.app.enter(digits)
        ok = rc.accepted(r.code)
        self.entered += 1
        self.answer = {
            "code": r.code,
            "word": rc.word(r.code),
            "balance": balance,
            "accepted": ok,
            "at_ms": now,
        }
        self.info = None
        self.tokens.append(self.answer)
        if len(self.tokens) > KEEP_TOKENS:
            self.tokens.pop(0)
        self._sound("accepted" if ok else "rejected")
        self._changed()
        if self.on_answer is not None:
            self.on_answer(digits, self.answer)
