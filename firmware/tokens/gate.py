"""The token front door: one `check()` for every top-up or management token, compact (20
digits) or envelope (70 bytes, or 140 hex digits), and a separate `commit()`.

    tokens = Tokens(meter_id, keys.load_key(record), replay.Memory.from_fields(saved))
    r = tokens.check(text_or_bytes, now, balance)  # pure: nothing changes
    if r.code == ACCEPT and r.kind == "credit": ...credit r.amount (minor units)...
    if r.new_key is not None: ...store r.new_key.to_bytes() (atomic file)...
    tokens.commit(r, now)  # marks the id used, counts a failure or changes the key
    ...journal tokens.memory.to_fields() with the balance, in one record...

`check()` never raises: every input gets a Result whose `code` is one of tokencodes (1
Accept .. 17 WrongMeter), with `word` for the display and `dlms` for the token gateway.
Order of the checks, compact: lock-out, format (20 digits below 2**66, class 3), key present,
decryption and CRC, class/subclass implemented, key change rules, key expiry (against the
meter clock), value range, token id (replay.Memory: Range, Used, Old), overflow. Envelope:
size and version, meter id, key present, key revision, tag, body reserved bytes, kind, key
expiry (against the issue time), the envelope's own expiry (Old), value range, token id,
overflow. Only compact tokens are locked out and only their format and CRC failures count:
an envelope's 128-bit tag can't be guessed, and a stranger on the MQTT broker must not be
able to lock the customer out.

A key change in compact form is two tokens (either order, within KCT_TIMEOUT_S of each other,
held in RAM only); the first answers KCT1, the second KCT2 with `new_key` set. An envelope
key change is one token and answers KCT2. The new key is revision + 1 and leaves the replay
memory alone, so every id stays spent; tokens under the old key fail after it.
"""

try:
    from micropython import const
except ImportError:  # CPython, for host tests and tools

    def const(x):
        return x


from firmware.tokens import compact, envelope, replay
from firmware.tokens import codes as rc
from firmware.tokens.cipher64 import Cipher64
from firmware.billing.settings import parse_meter_id
from firmware.tokens.keys import MAX_REVISION, meter_id_bytes
from firmware.billing.money import SMALL_INT_MAX
from firmware.tokens.codes import (  # noqa: F401 (re-exported: the result codes)
    ACCEPT,
    CRC,
    DDTK,
    FORMAT,
    FUNCTION,
    KCT1,
    KCT2,
    KEY_EXPIRED,
    KEY_TYPE,
    LOCKOUT,
    MFR_CODE,
    NOT_READY,
    OLD,
    OVERFLOW,
    RANGE,
    USED,
    WRONG_METER,
)

COMPACT = "compact"
ENVELOPE = "envelope"

CREDIT = "credit"
MAX_POWER = "max_power"
LOW_CREDIT = "low_credit"
CLEAR_TAMPER = "clear_tamper"
PAYMENT_MODE = "payment_mode"
KEY_CHANGE = "key_change"

PAYMENT_CREDIT = const(1)  # DLMS payment_mode 1: credit (postpaid), prepayment disabled
PAYMENT_PREPAID = const(2)  # DLMS payment_mode 2: prepayment
MAX_POWER_W = const(65535)
MAX_CREDIT = SMALL_INT_MAX  # largest credit or threshold a token may carry (minor units)
KCT_TIMEOUT_S = const(600)

_SUB_KIND = {
    compact.SUB_MAX_POWER: MAX_POWER,
    compact.SUB_CLEAR_TAMPER: CLEAR_TAMPER,
    compact.SUB_LOW_CREDIT: LOW_CREDIT,
    compact.SUB_PAYMENT_MODE: PAYMENT_MODE,
}


class Result:
    """One token's answer. amount: credit in minor units (0 otherwise); value: the
    management value (W, minor units, payment mode) or the credit amount again."""

    def __init__(self, code, fmt=None, cls=-1, subclass=-1):
        self.code = code
        self.format = fmt
        self.cls = cls
        self.subclass = subclass
        self.kind = None
        self.token_id = 0
        self.amount = 0
        self.value = 0
        self.issued = 0
        self.expiry = 0
        self.new_key = None
        self.counted = False  # counts toward the lock-out
        self.stage = None  # first half of a compact key change: (subclass, payload)

    @property
    def accepted(self):
        return rc.accepted(self.code)

    @property
    def name(self):
        return rc.name(self.code)

    @property
    def word(self):
        return rc.word(self.code)

    @property
    def dlms(self):
        return rc.dlms_status(self.code)

    def __repr__(self):
        return "<Result %s %s %s id=%d value=%d>" % (
            self.name,
            self.format,
            self.kind,
            self.token_id,
            self.value,
        )


class Tokens:
    def __init__(self, meter_id, key=None, memory=None, max_credit=MAX_CREDIT):
        """meter_id: int or digits; key: keys.MeterKey or None (every token: NOT_READY);
        memory: replay.Memory (a fresh one when None)."""
        self.meter_id = parse_meter_id(meter_id)
        self._id8 = meter_id_bytes(self.meter_id)
        self.memory = memory if memory is not None else replay.Memory()
        self.max_credit = max_credit
        self._staged = None
        self.set_key(key)

    def set_key(self, key):
        self.key = key
        self._cipher = Cipher64(key.f64_key()) if key is not None else None
        self._staged = None

    def lockout_remaining(self, now):
        """Seconds before a compact token will be examined again (0: now)."""
        return self.memory.locked_for(now)

    # --- check: pure

    def check(self, token, now=None, balance=None):
        """Result for `token` (str or bytes) at `now` (stamp, or None when the clock is
        unknown); with `balance` (minor units) a credit that would overflow answers
        OVERFLOW. Changes nothing; never raises (but MemoryError)."""
        try:
            return self._check(token, now, balance)
        except MemoryError:  # not the token's fault: the caller may retry
            raise
        except Exception:  # a bug must not take the token path down: refuse the token
            return Result(rc.FORMAT)

    def _check(self, token, now, balance):
        if isinstance(token, (bytes, bytearray, memoryview)):
            data = bytes(token)
            if not _printable(data):
                return self._check_envelope(data, now, balance)
            token = data.decode()
        if not isinstance(token, str):
            return Result(rc.FORMAT)
        text = token.strip()
        if len(text) == 2 * envelope.SIZE:
            data = envelope.parse_hex(text)
            if data is not None:
                return self._check_envelope(data, now, balance)
        return self._check_compact(text, now, balance)

    def _check_compact(self, text, now, balance):
        if self.memory.locked_for(now):
            return Result(rc.LOCKOUT, COMPACT)
        n = compact.parse_digits(text)
        if n is None:
            r = Result(rc.FORMAT, COMPACT)
            r.counted = True
            return r
        code, cls, sub, rnd, tid, field = compact.decode(self._cipher, n)
        if code:
            r = Result(code, COMPACT, cls, sub if code == rc.FUNCTION else -1)
            r.counted = code == rc.FORMAT or code == rc.CRC
            return r
        r = Result(0, COMPACT, cls, sub)
        if cls == compact.CLASS_CREDIT:
            if sub != compact.SUB_CURRENCY:
                r.code = rc.FUNCTION
                return r
            r.kind = CREDIT
            r.amount = r.value = compact.decode_amount(field)
        elif sub == compact.SUB_KEY_CHANGE_1 or sub == compact.SUB_KEY_CHANGE_2:
            return self._compact_key_change(r, compact.payload(rnd, tid, field), now)
        else:
            kind = _SUB_KIND.get(sub)
            if kind is None:
                r.code = rc.FUNCTION
                return r
            r.kind = kind
            if kind == LOW_CREDIT:
                r.value = compact.decode_amount(field)
            else:
                r.value = field
        r.token_id = tid
        if self.key.expired(now):
            r.code = rc.KEY_EXPIRED
            return r
        return self._finish(r, balance)

    def _compact_key_change(self, r, payload, now):
        r.kind = KEY_CHANGE
        key = self.key
        if key.revision >= MAX_REVISION:
            r.code = rc.KEY_TYPE
            return r
        other = self._staged
        if other is not None:
            sub, other_payload, revision, stamp = other
            if (
                revision != key.revision
                or sub == r.subclass
                or (
                    now is not None and stamp is not None and not 0 <= now - stamp <= KCT_TIMEOUT_S
                )
            ):
                other = None
        if other is None:
            r.code = rc.KCT1
            r.stage = (r.subclass, payload)
            return r
        if r.subclass == compact.SUB_KEY_CHANGE_1:
            p1, p2 = payload, other_payload
        else:
            p1, p2 = other_payload, payload
        material, ken = compact.key_change_material(p1, p2)
        r.new_key = key.rotated(material, ken)
        r.value = r.new_key.revision
        r.code = rc.KCT2
        return r

    def _check_envelope(self, data, now, balance):
        code, tid, issued, expiry, kind, aux, value, material = envelope.open_envelope(
            self.key, self._id8, data
        )
        if code:
            return Result(code, ENVELOPE)
        cls = kind >> 4
        sub = kind & 0xF
        r = Result(0, ENVELOPE, cls, sub)
        r.token_id = tid
        r.issued = issued
        r.expiry = expiry
        plain = aux == 0 and material == bytes(10)
        if cls == compact.CLASS_CREDIT and sub == compact.SUB_CURRENCY:
            r.kind = CREDIT
            r.amount = r.value = value
        elif cls == compact.CLASS_MANAGEMENT and sub == compact.SUB_KEY_CHANGE_1:
            r.kind = KEY_CHANGE
            plain = value == 0
        elif cls == compact.CLASS_MANAGEMENT and sub in _SUB_KIND:
            r.kind = _SUB_KIND[sub]
            r.value = value
        else:
            r.code = rc.FUNCTION if cls <= compact.CLASS_RESERVED else rc.FORMAT
            return r
        if not plain:
            r.code = rc.FORMAT
            return r
        if r.kind == KEY_CHANGE:
            if self.key.revision >= MAX_REVISION:
                r.code = rc.KEY_TYPE
                return r
        elif self.key.expired(issued):
            r.code = rc.KEY_EXPIRED
            return r
        if expiry:
            if expiry < issued:
                r.code = rc.RANGE
                return r
            if now is not None and now > expiry:
                r.code = rc.OLD
                return r
        if r.kind == KEY_CHANGE:
            status = self.memory.status(tid)
            if status:
                r.code = status
                return r
            r.new_key = self.key.rotated(material, aux)
            r.value = r.new_key.revision
            r.code = rc.KCT2
            return r
        return self._finish(r, balance)

    def _finish(self, r, balance):
        """Value range, token id and overflow for a credit or management token."""
        kind = r.kind
        v = r.value
        if kind == CREDIT:
            bad = v < 1 or v > self.max_credit
        elif kind == MAX_POWER:
            bad = v > MAX_POWER_W
        elif kind == LOW_CREDIT:
            bad = v > self.max_credit
        elif kind == CLEAR_TAMPER:
            bad = v != 0
        else:  # PAYMENT_MODE
            bad = v != PAYMENT_CREDIT and v != PAYMENT_PREPAID
        if bad:
            r.code = rc.RANGE
            return r
        status = self.memory.status(r.token_id)
        if status:
            r.code = status
            return r
        if kind == CREDIT and balance is not None and balance + v > SMALL_INT_MAX:
            r.code = rc.OVERFLOW
            return r
        r.code = rc.ACCEPT
        return r

    # --- commit: the only place state changes

    def commit(self, result, now=None):
        """Apply a Result of check(): mark an accepted token id used, count a failure
        toward the lock-out, stage half a key change or install the new key. Store a new
        key (result.new_key.to_bytes()) before calling this, and journal
        memory.to_fields() after it."""
        code = result.code
        if code == rc.ACCEPT or code == rc.KCT2:
            if result.token_id and self.memory.status(result.token_id) == replay.NEW:
                self.memory.mark(result.token_id)
        if rc.accepted(code):
            self.memory.succeed()
        if code == rc.KCT1 and result.stage is not None and self.key is not None:
            self._staged = (result.stage[0], result.stage[1], self.key.revision, now)
        elif code == rc.KCT2 and result.new_key is not None:
            self.set_key(result.new_key)
        if result.counted:
            self.memory.fail(now)


def _printable(data):
    """True for ASCII text (tab and line ends allowed); an envelope starts with 0x01."""
    for b in data:
        if (b < 0x20 and b != 9 and b != 10 and b != 13) or b > 0x7E:
            return False
    return True
