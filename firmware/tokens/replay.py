"""Anti-replay memory and entry lock-out: the token state the journal keeps with the balance.

Replay rule (a sliding window, as IPsec's anti-replay window and STS's Old/Used TID memory):
`high` is the highest token id ever accepted (0: none yet) and bit i of the 64-bit `mask`
says whether id high-1-i was accepted. A token id
- 0, or more than MAX_JUMP above `high`: RANGE (so no token, forged or mistyped, can push
  the window far ahead and make the genuine ones old);
- above `high`: new; the window slides up;
- equal to `high`, or within the 64 ids below it with its bit set: USED;
- within the 64 ids below `high` with its bit clear: new (tokens may arrive out of order);
- more than 64 below `high`: OLD, whether it was used or not (the memory is bounded; the
  back office vends ids in order and re-vends a lost token under a new id).
So an id is accepted at most once, ever: across power cuts (the state is journaled with the
credit in one record) and across key changes (a key change leaves the memory alone).

Lock-out (compact tokens only; see tokens.py): every compact token that fails its format or
CRC counts as a failure; from the 3rd failure on, entry is locked for 10 s, doubling with each
further failure up to 1,280 s (from the 10th), counted from the last failure. An accepted
token clears the count; a failure more than a day after the previous one starts it afresh.
If the clock moves backwards past the last failure the lock ends (the count stays).

The whole state is `to_fields()`: the STATE_FIELDS tuple of ints, each fitting a signed
64-bit integer; `Memory.from_fields(fields)` restores it and refuses anything out of range.
"""

try:
    from micropython import const
except ImportError:  # CPython, for host tests and tools

    def const(x):
        return x


from firmware.tokens import codes as rc

WINDOW = const(64)
MAX_JUMP = const(65536)
ID_MAX = 0xFFFFFFFF
FREE_FAILURES = const(2)
LOCK_FIRST_S = const(10)
LOCK_MAX_S = const(1280)
FORGIVE_S = const(86400)
_FAILURES_MAX = const(1000)
_MASK32 = 0xFFFFFFFF
_MASK64 = 0xFFFFFFFFFFFFFFFF
_I64_MIN = -(1 << 63)
_I64_MAX = (1 << 63) - 1

STATE_FIELDS = ("high", "mask_lo", "mask_hi", "failures", "fail_stamp")
NEW = const(0)  # Memory.status(): the token id may be accepted


def lockout_s(failures):
    """Seconds of lock-out after `failures` consecutive failures (0 for the first two)."""
    if failures <= FREE_FAILURES:
        return 0
    n = failures - FREE_FAILURES - 1
    if n >= 7:
        return LOCK_MAX_S
    return LOCK_FIRST_S << n


class Memory:
    def __init__(self):
        self.high = 0
        self.mask = 0
        self.failures = 0
        self.fail_stamp = 0

    # --- anti-replay

    def status(self, token_id):
        """NEW (0) when `token_id` may be accepted, else USED, OLD or RANGE. Changes
        nothing."""
        high = self.high
        if token_id < 1 or token_id > ID_MAX or token_id > high + MAX_JUMP:
            return rc.RANGE
        if token_id > high:
            return NEW
        if token_id == high:
            return rc.USED
        i = high - 1 - token_id
        if i >= WINDOW:
            return rc.OLD
        return rc.USED if (self.mask >> i) & 1 else NEW

    def mark(self, token_id):
        """Record `token_id` as accepted (call only after status() said NEW)."""
        high = self.high
        if token_id > high:
            shift = token_id - high
            if high == 0 or shift > WINDOW:
                mask = 0
            else:
                mask = (self.mask << shift) & _MASK64
            if high > 0 and shift <= WINDOW:
                mask |= 1 << (shift - 1)  # the old high joins the window
            self.mask = mask
            self.high = token_id
        elif token_id < high:
            i = high - 1 - token_id
            if i < WINDOW:
                self.mask |= 1 << i

    # --- lock-out

    def locked_for(self, now):
        """Seconds of lock-out left at `now` (0: entry allowed)."""
        if self.failures <= FREE_FAILURES or now is None:
            return 0
        elapsed = now - self.fail_stamp
        lock = lockout_s(self.failures)
        if 0 <= elapsed < lock:
            return lock - elapsed
        return 0

    def locked_until(self):
        """Stamp at which the current lock-out ends (0 when fewer than 3 failures)."""
        lock = lockout_s(self.failures)
        return self.fail_stamp + lock if lock else 0

    def fail(self, now):
        """Count one failed compact token at `now` (None: no clock, the stamp is kept)."""
        if now is not None:
            if self.failures and not 0 <= now - self.fail_stamp < FORGIVE_S:
                self.failures = 0
            self.fail_stamp = now
        if self.failures < _FAILURES_MAX:
            self.failures += 1

    def succeed(self):
        self.failures = 0

    # --- state for the journal

    def to_fields(self):
        m = self.mask
        return (self.high, m & _MASK32, m >> 32, self.failures, self.fail_stamp)

    @classmethod
    def from_fields(cls, fields):
        """A Memory from to_fields()' tuple; ValueError when any field is out of range."""
        if len(fields) != len(STATE_FIELDS):
            raise ValueError("replay state: %d fields expected" % len(STATE_FIELDS))
        high, lo, hi, failures, stamp = fields
        for v in fields:
            if not isinstance(v, int) or v < _I64_MIN or v > _I64_MAX:
                raise ValueError("replay state: not a 64-bit integer: " + repr(v))
        if not 0 <= high <= ID_MAX or not 0 <= lo <= _MASK32 or not 0 <= hi <= _MASK32:
            raise ValueError("replay state: window out of range")
        if not 0 <= failures <= _FAILURES_MAX:
            raise ValueError("replay state: failure count out of range")
        mask = (hi << 32) | lo
        if high <= WINDOW and mask >> (high - 1 if high else 0):
            raise ValueError("replay state: window bits below id 1")
        m = cls()
        m.high = high
        m.mask = mask
        m.failures = failures
        m.fail_stamp = stamp
        return m
