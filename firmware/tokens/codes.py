"""Token result codes: the keypad meters' token result enum, their names, display words and
the DLMS token gateway status each one maps to.

Codes 1-16 keep the numbers of the IEC 62055-41 token result register as keypad meters show
it (Conlog BEC62 short code #078#); 17 is ours (STS reserves 17-255). Every token the meter
is given gets exactly one of these. `dlms_status(code)` is the final token_status of the
DLMS/COSEM token gateway (IC 115): 3 execution OK, 4 format, 5 authentication, 6 validation
or 7 execution failure (2 for the first half of a key change, which validated but waits).
"""

try:
    from micropython import const
except ImportError:  # CPython, for host tests and tools

    def const(x):
        return x


ACCEPT = const(1)  # accepted and applied
KCT1 = const(2)  # one half of a key change entered, waiting for the other
KCT2 = const(3)  # the second half entered: the key has changed
OVERFLOW = const(4)  # the credit would overflow the balance register
KEY_TYPE = const(5)  # made under another key revision, or breaks the key change rules
FORMAT = const(6)  # not a token: wrong length, characters, version or reserved bits
RANGE = const(7)  # a value outside its range (amount 0, id 0 or too far ahead, ...)
FUNCTION = const(8)  # a class/subclass this meter does not implement
OLD = const(9)  # older than the replay window, or past the envelope's expiry
USED = const(10)  # this token id was accepted before
KEY_EXPIRED = const(11)  # the meter key's expiry number is behind the token's time
DDTK = const(12)  # (STS: credit under a default key; never given here)
CRC = const(13)  # integrity check failed: CRC after decryption, or the envelope's MAC
MFR_CODE = const(14)  # (STS: class 1 manufacturer code; never given here)
LOCKOUT = const(15)  # entry lock-out after repeated bad tokens: not examined
NOT_READY = const(16)  # no meter key installed (not commissioned)
WRONG_METER = const(17)  # an envelope addressed to another meter id

# DLMS token gateway (IC 115) token_status codes
DLMS_FORMAT_OK = const(0)
DLMS_AUTH_OK = const(1)
DLMS_VALIDATION_OK = const(2)
DLMS_EXECUTION_OK = const(3)
DLMS_FORMAT_FAILURE = const(4)
DLMS_AUTH_FAILURE = const(5)
DLMS_VALIDATION_FAILURE = const(6)
DLMS_EXECUTION_FAILURE = const(7)
DLMS_NOT_PROCESSED = const(8)

# code -> (name, display word, DLMS token_status); index 0 is "no code"
_TABLE = (
    ("none", "?", 8),
    ("accept", "Accepted", 3),
    ("kct1", "Key 1 of 2", 2),
    ("kct2", "Key changed", 3),
    ("overflow", "Overflow", 7),
    ("key_type", "Key type", 5),
    ("format", "Format", 4),
    ("range", "Range", 6),
    ("function", "Function", 6),
    ("old", "Old", 6),
    ("used", "Used", 6),
    ("key_expired", "Key expired", 5),
    ("ddtk", "Default key", 5),
    ("crc", "Invalid", 5),
    ("mfr_code", "Mfr code", 6),
    ("lockout", "Locked", 7),
    ("not_ready", "Not ready", 7),
    ("wrong_meter", "Wrong meter", 6),
)

CODES = tuple(range(1, len(_TABLE)))


def name(code):
    """Identifier of a code ("accept", "crc", ...), as reports and logs use it."""
    return _TABLE[code][0] if 0 < code < len(_TABLE) else "none"


def word(code):
    """Short English word for the display (at most 11 characters)."""
    return _TABLE[code][1] if 0 < code < len(_TABLE) else "?"


def dlms_status(code):
    """The DLMS token gateway token_status for a result code."""
    return _TABLE[code][2] if 0 < code < len(_TABLE) else DLMS_NOT_PROCESSED


def accepted(code):
    """True for the codes after which the token took effect (or was staged)."""
    return code == ACCEPT or code == KCT1 or code == KCT2
