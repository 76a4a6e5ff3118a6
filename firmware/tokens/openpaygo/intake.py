"""The OpenPAYGO half of the credit path (firmware/tokens/intake.py), loaded only when the meter
has an `opaygo.key` file (firmware/tokens/openpaygo/keyfile.py): routing, answers and effects.

    got = opaygo_intake.load(intake)   # Opaygo, or None (off); reports a bad file
    text = got.digits(token)           # digits of an OpenPAYGO length, or None
    r, matched = got.check(text, now, balance)   # pure, like Tokens.check()
    got.apply(r); got.commit(r, now)   # the effect in RAM, then the count spent

Answers are tokens.Result objects, format "openpaygo": Accept; Used (a count already
used, or an add token older than the window); CRC (no count matches: wrong key, typo or
guess) and Format (not of its digit set), both counted toward the keypad lock-out on the
same replay.Memory counters as compact failures; Lockout while it lasts (not examined,
not counted); Range (an amount above the token limit) and Overflow (an add that would
take the balance past 2**30 - 1), neither spending the count. `matched` is True when
the digits are a token of this device for a count of its window (accepted or not).

Effects: ADD_CREDIT credits value x value_unit through meter.credit (a `topup`, debt
recovery as any top-up). SET_CREDIT makes it the balance (meter.set_balance): the
difference, up or down, is booked to the ledger's `credited` total, so balance = credits
- charges still holds; the debt is left alone (the back office that sets a balance has
decided the whole figure).
DISABLE_PAYG turns the payment mode to postpaid (`postpaid`, through the settings
schema like a management token); any add or set token turns prepayment back on, as the
OpenPAYGO HDK does. COUNTER_SYNC only moves the count. token_id is the count.
"""

from firmware.billing import events as ev
from firmware.billing import money
from firmware.tokens import codes as rc
from firmware.tokens.intake import OPAYGO
from firmware.tokens.gate import CREDIT, Result

# Result.kind of OpenPAYGO tokens (an add token is a "credit" like any top-up)
SET_CREDIT = "set_credit"
DISABLE_PAYG = "disable_payg"
COUNTER_SYNC = "counter_sync"
_KINDS = (None, CREDIT, SET_CREDIT, DISABLE_PAYG, COUNTER_SYNC)  # by openpaygo kind 1..4


def load(intake, state=(0, 0)):
    """Read intake.opaygo_path. Returns (Opaygo or None, report): report None when the
    file is good or there is none, else (source, reason) as conffile.load says it; a bad
    file is printed and logged as a key file's (`key_fallback` when a good copy took its
    place, detail 1 `.new`, 2 `.bak`; `key_bad` detail 1 when none did: off)."""
    from firmware.storage import conffile
    from firmware.tokens.openpaygo import keyfile as opaygokey

    path = intake.opaygo_path
    cfg, source, reason = conffile.load(path, opaygokey.load)
    report = None if source == conffile.MAIN or reason == conffile.MISSING else (source, reason)
    if cfg is None:
        if report is not None:
            _log(intake.meter, ev.KEY_BAD, 1, reason + "; OpenPAYGO off")
        return None, report
    if report is not None:
        _log(
            intake.meter,
            ev.KEY_FALLBACK,
            1 if source == conffile.NEW else 2,
            path + ": " + reason + "; using " + path + "." + source,
        )
    return Opaygo(intake, cfg, state), report


def _log(m, kind, value, text):
    print("keys: " + text)
    m.log.emit(m.clock.stamp(), kind, m.ledger.balance, value)


class Opaygo:
    def __init__(self, intake, cfg, state=(0, 0)):
        self.intake = intake
        self.decoder = cfg.decoder()
        self.lengths = cfg.lengths()
        self.from_fields(state)

    def to_fields(self):
        return self.decoder.to_fields()

    def from_fields(self, fields):
        """The journaled window; one that is not valid starts afresh (count 0)."""
        try:
            self.decoder.from_fields(fields)
        except ValueError:
            self.decoder.from_fields((0, 0))

    def digits(self, token):
        """The stripped text when `token` is a digit string of one of our lengths."""
        if isinstance(token, (bytes, bytearray, memoryview)):
            data = bytes(token).strip()
            if len(data) not in self.lengths:
                return None
            for b in data:
                if b < 48 or b > 57:
                    return None
            return data.decode()
        if not isinstance(token, str):
            return None
        text = token.strip()
        if len(text) not in self.lengths:
            return None
        for ch in text:
            if ch < "0" or ch > "9":
                return None
        return text

    def check(self, text, now, balance):
        """(Result, matched) for digits(); pure."""
        from firmware.tokens.openpaygo import decoder as opg

        r = Result(0, OPAYGO)
        tokens = self.intake.tokens
        if tokens.memory.locked_for(now):
            r.code = rc.LOCKOUT
            return r, False
        kind, amount, count = self.decoder.decode(text)
        if kind == opg.MALFORMED or kind == opg.INVALID:
            r.code = rc.FORMAT if kind == opg.MALFORMED else rc.CRC
            r.counted = True
            return r, False
        r.token_id = count
        if kind == opg.ALREADY_USED:
            r.code = rc.USED
            return r, True
        r.kind = _KINDS[kind]
        r.value = amount
        r.code = rc.ACCEPT
        if kind == opg.ADD_CREDIT:
            r.amount = amount
            if amount > tokens.max_credit:
                r.code = rc.RANGE
            elif balance + amount > money.SMALL_INT_MAX:
                r.code = rc.OVERFLOW
        elif kind == opg.SET_CREDIT and amount > tokens.max_credit:
            r.code = rc.RANGE
        return r, True

    def apply(self, r):
        """The effect of an accepted token, in RAM (the caller journals it)."""
        intake = self.intake
        m = intake.meter
        kind = r.kind
        if kind == CREDIT:
            if r.amount > 0:
                m.credit(r.amount)
        elif kind == SET_CREDIT:
            m.set_balance(r.value)
        elif kind == DISABLE_PAYG:
            if not m.settings.postpaid:
                intake.set_setting("postpaid", True)
        if (kind == CREDIT or kind == SET_CREDIT) and m.settings.postpaid:
            intake.set_setting("postpaid", False)

    def commit(self, r, now):
        """Mark the count used (accepted), or count a failed guess toward the lock-out."""
        memory = self.intake.tokens.memory
        if r.code == rc.ACCEPT:
            self.decoder.commit(_KINDS.index(r.kind), r.token_id)
            memory.succeed()
        if r.counted:
            memory.fail(now)
