"""LoRaWAN payloads: the meter's 11-byte uplinks (signed) and the top-up downlinks.

Hardware-free, for the meter and for host tools alike (pure Python: MicroPython and
CPython). Every uplink fits the smallest LoRaWAN payload, 11 bytes (US915 DR0), so it can
be sent at any data rate in any region. Integers are big-endian.

Byte 0 of every uplink: bits 7..6 the type (0 state, 1 token ack, 2 event, 3 meter
reading), bits 5..0 the low 6 bits of the sequence number. Bytes 7..10: the tag.

    token ack (type 1), the answer to each top-up downlink:
      0   type 1 | seq
      1   result code (firmware/tokens/codes.py: 1 accepted ... 17 wrong meter)
      2-3 token id, low 16 bits (0 when the downlink was not a token)
      4-6 balance after it (the 24-bit money form below)
      7-10 tag
    state (type 0), periodic and on changes:
      0   type 0 | seq
      1   bits 7..5 credit status (0 in_credit, 1 low_credit, 2 emergency_credit,
          3 friendly_credit, 4 out_of_credit), bits 4..3 control state (0 disconnected,
          1 connected, 2 ready_for_reconnection), bits 2..1 relay (0 unknown, 1 closed,
          2 open), bit 0 reserved (0)
      2-4 balance (24-bit money form)
      5-6 power now, W (0..65,535, saturating)
      7-10 tag
    event (type 2), one per event of the meter's log:
      0   type 2 | seq
      1   kind code (EVENT_CODES below; 0 = a kind not in the table)
      2-4 balance after it (24-bit money form)
      5-6 detail (16-bit form below)
      7-10 tag
    meter reading (type 3), with the state when the period comes:
      0   type 3 | seq
      1   bits 4..0 open reasons (policy: 1 credit, 2 max power, 4 lockout, 8 remote,
          16 tamper), bits 7..5 reserved (0)
      2-5 energy total, Wh (u32, saturating)
      6   task errors since start-up (saturating at 255)
      7-10 tag

24-bit money form: bit 23 sign, bits 22..21 exponent e, bits 20..0 mantissa m; value =
+-m * 10^e: exact to +-2,097,151 minor units (20,971.51 at 2 decimals), then toward zero
in steps of 10, 100, 1,000 (to +-2,097,151,000). 16-bit detail form: STS's amount
encoding (firmware/tokens/compact.py): exact 0..16,383, then steps of 10, 100, 1,000 to
18,201,624, rounded down and saturating; a negative detail is sent as 0.

The tag: HMAC-SHA256(K_msg, "PM1 lora" || meter id (u64) || boot (u32) || seq (u32) ||
bytes 0..6)[:4], K_msg the key of the signed MQTT messages (keys.MeterKey.msg_mac(),
firmware/comms/signed.py); the label keeps the two kinds of input apart. The full boot number
and sequence number are covered but not sent (only 6 bits of seq): the receiver
(`Receiver`) finds the next (boot, seq) above the last it accepted whose low bits match
and whose tag holds, the way LoRaWAN itself sends 16 of FCnt's 32 bits. The tradeoff of
the 11 bytes: a 4-byte tag (one forged uplink in 2^32 tries would pass, and LoRaWAN lets
an attacker try only at the air's pace; LoRaWAN's own MIC, AES-CMAC under the network
session key, guards every frame on the air as well, so the tag is what protects against
the network server and the MQTT broker behind it), 16 bits of the token id in an ack (the
back office matches them to the token it sent), a balance rounded beyond +-2,097,151
minor units.

Downlinks (the top-up port, TOPUP_PORT): the compact token as 9 bytes (its 66-bit number,
big-endian, top 6 bits zero), the same 20 digits as 10 bytes of BCD, or the 70-byte remote
envelope (firmware/tokens/envelope.py) where the downlink data rate carries 70 bytes (EU868 DR3+,
US915 DR9+, see downlink_max). `downlink_token()` gives the 20-digit string or the
envelope's bytes, which go to the one credit path, `app.enter(token)`; its anti-replay is
what makes a duplicated downlink harmless.
"""

import struct

from firmware.tokens import compact
from firmware.tokens import envelope as env
from firmware.tokens.keys import compare_digest

try:
    from micropython import const
except ImportError:  # CPython, for host tests and tools

    def const(x):
        return x


SIZE = const(11)
TAG_SIZE = const(4)
STATE = const(0)
ACK = const(1)
EVENT = const(2)
METER = const(3)
UPLINK_PORT = const(2)  # a choice: the meter's uplinks
TOPUP_PORT = const(10)  # a choice: top-up downlinks
_LABEL = b"PM1 lora"

CREDIT_STATUSES = (
    "in_credit",
    "low_credit",
    "emergency_credit",
    "friendly_credit",
    "out_of_credit",
)
CONTROL_STATES = ("disconnected", "connected", "ready_for_reconnection")  # policy's order
RELAY_STATES = ("unknown", "closed", "open")
# event kind -> code (index + 1); firmware/billing/events.py's names
EVENT_KINDS = (
    "low_credit",
    "low_credit_reminder",
    "disconnect",
    "reconnect",
    "ready_for_reconnection",
    "friendly_hold",
    "emergency_credit_invoked",
    "topup",
    "debt_recovered",
    "max_power_trip",
    "max_power_retry",
    "max_power_lockout",
    "lockout_cleared",
    "billing_month",
    "relay_fault",
    "boot",
    "config_fallback",
    "token_rejected",
    "token_accepted",
    "setting_refused",
    "tariff_activated",
    "remote_command",
    "config_defaults",
    "console_session",
    "key_fallback",
    "key_bad",
)

# largest downlink FRMPayload per downlink DR (docs/lorawan.md, payload limits)
DOWNLINK_MAX = {
    "EU868": (51, 51, 51, 115, 242, 242, 242),
    "US915": (0, 0, 0, 0, 0, 0, 0, 0, 53, 129, 242, 242, 242, 242),
    "AU915": (0, 0, 0, 0, 0, 0, 0, 0, 53, 129, 242, 242, 242, 242),
    "AS923": (51, 51, 115, 115, 242, 242, 242),
    "IN865": (51, 51, 51, 115, 242, 242),
}

_M21 = 0x1FFFFF
_AMOUNT_OFF = (0, 16384, 180224, 1818624)
_POW10 = (1, 10, 100, 1000)


def downlink_max(region, dr):
    """Largest downlink at dr in region (0: not a downlink data rate there)."""
    t = DOWNLINK_MAX.get(region)
    return t[dr] if t is not None and 0 <= dr < len(t) else 0


# -- number forms -----------------------------------------------------------------


def money24(v):
    """The 24-bit money form of v minor units (rounded toward zero, saturating)."""
    neg = v < 0
    a = -v if neg else v
    e = 0
    while a > _M21 and e < 3:
        a //= 10
        e += 1
    if a > _M21:
        a = _M21
    return (0x800000 if neg else 0) | (e << 21) | a


def unmoney24(f):
    v = (f & _M21) * _POW10[(f >> 21) & 3]
    return -v if f & 0x800000 else v


def amount16(v):
    """STS's 16-bit amount form of v (rounded down, saturating; negative -> 0)."""
    if v <= 0:
        return 0
    e = 3
    while e > 0 and v < _AMOUNT_OFF[e]:
        e -= 1
    m = (v - _AMOUNT_OFF[e]) // _POW10[e]
    if m > 0x3FFF:
        m = 0x3FFF
    return (e << 14) | m


def unamount16(f):
    e = f >> 14
    return (f & 0x3FFF) * _POW10[e] + _AMOUNT_OFF[e]


def _index(table, name):
    for i in range(len(table)):
        if table[i] == name:
            return i
    raise ValueError("not one of " + ", ".join(table) + ": " + str(name))


# -- uplinks (the meter) ------------------------------------------------------------


def tag(mac, meter_id8, boot, seq, body7):
    h = bytearray(16)
    h[0:8] = meter_id8
    struct.pack_into(">II", h, 8, boot & 0xFFFFFFFF, seq & 0xFFFFFFFF)
    return mac.digest(_LABEL + bytes(h), bytes(body7))[:TAG_SIZE]


class Uplinks:
    """Makes the meter's uplinks: numbers them (seq from 1 in each boot) and signs them.

    mac: keys.MeterKey(...).msg_mac(); meter_id8: keys.meter_id_bytes(meter id); boot:
    the journaled boot number (App.boots)."""

    def __init__(self, mac, meter_id8, boot, seq=0):
        self.mac = mac
        self.meter_id8 = bytes(meter_id8)
        self.boot = boot
        self.seq = seq  # the last one used

    def _seal(self, kind, body):
        self.seq += 1
        body[0] = (kind << 6) | (self.seq & 0x3F)
        out = bytearray(SIZE)
        out[0:7] = body
        out[7:11] = tag(self.mac, self.meter_id8, self.boot, self.seq, body)
        return bytes(out)

    def ack(self, code, token_id, balance):
        b = bytearray(7)
        b[1] = code & 0xFF
        struct.pack_into(">H", b, 2, (token_id or 0) & 0xFFFF)
        _put24(b, 4, money24(balance))
        return self._seal(ACK, b)

    def state(self, balance, credit_status, control_state, relay, power_w):
        b = bytearray(7)
        cs = credit_status if isinstance(credit_status, int) else None
        if cs is None:
            cs = _index(CREDIT_STATUSES, credit_status)
        ctl = control_state if isinstance(control_state, int) else None
        if ctl is None:
            ctl = _index(CONTROL_STATES, control_state)
        if relay is True or relay == "closed":
            r = 1
        elif relay is False or relay == "open":
            r = 2
        else:
            r = 0
        b[1] = (cs << 5) | (ctl << 3) | (r << 1)
        _put24(b, 2, money24(balance))
        p = power_w if power_w > 0 else 0
        struct.pack_into(">H", b, 5, p if p < 0xFFFF else 0xFFFF)
        return self._seal(STATE, b)

    def event(self, kind, balance, detail=0):
        b = bytearray(7)
        code = 0
        for i in range(len(EVENT_KINDS)):
            if EVENT_KINDS[i] == kind:
                code = i + 1
        b[1] = code
        _put24(b, 2, money24(balance))
        struct.pack_into(">H", b, 5, amount16(detail))
        return self._seal(EVENT, b)

    def meter(self, energy_wh, open_reasons=0, errors=0):
        b = bytearray(7)
        b[1] = open_reasons & 0x1F
        e = energy_wh if energy_wh > 0 else 0
        struct.pack_into(">I", b, 2, e if e < 0xFFFFFFFF else 0xFFFFFFFF)
        b[6] = errors if 0 <= errors < 255 else 255
        return self._seal(METER, b)


def _put24(b, i, f):
    b[i] = (f >> 16) & 0xFF
    b[i + 1] = (f >> 8) & 0xFF
    b[i + 2] = f & 0xFF


def _get24(b, i):
    return (b[i] << 16) | (b[i + 1] << 8) | b[i + 2]


# -- uplinks (the receiver: back office, bridge) ----------------------------------


def parse(body7):
    """The fields of an uplink's first 7 bytes (the tag not checked): a dict."""
    b = body7
    kind = b[0] >> 6
    if kind == ACK:
        return {
            "type": "ack",
            "code": b[1],
            "token16": (b[2] << 8) | b[3],
            "balance": unmoney24(_get24(b, 4)),
        }
    if kind == STATE:
        cs, ctl, r = b[1] >> 5, (b[1] >> 3) & 3, (b[1] >> 1) & 3
        if cs >= len(CREDIT_STATUSES) or ctl >= len(CONTROL_STATES) or r > 2 or b[1] & 1:
            raise ValueError("state: bad status byte")
        return {
            "type": "state",
            "credit_status": CREDIT_STATUSES[cs],
            "control_state": CONTROL_STATES[ctl],
            "relay": RELAY_STATES[r],
            "balance": unmoney24(_get24(b, 2)),
            "power_w": (b[5] << 8) | b[6],
        }
    if kind == EVENT:
        code = b[1]
        name = EVENT_KINDS[code - 1] if 1 <= code <= len(EVENT_KINDS) else None
        return {
            "type": "event",
            "event": name,
            "code": code,
            "balance": unmoney24(_get24(b, 2)),
            "value": unamount16((b[5] << 8) | b[6]),
        }
    if b[1] & 0xE0:
        raise ValueError("meter: reserved bits set")
    return {
        "type": "meter",
        "open_reasons": b[1],
        "energy_wh": struct.unpack_from(">I", b, 2)[0],
        "errors": b[6],
    }


class Receiver:
    """Verifies one meter's uplinks in order: finds the (boot, seq) the 6 sent bits stand
    for (the first above the last accepted whose tag holds: the same boot, up to `window`
    ahead, or one of the next `boots` boots, seq 1..window) and refuses anything at or
    below the last accepted (a replay). decode() -> the fields plus "boot" and "seq";
    ValueError when the size, the tag or the freshness is wrong."""

    def __init__(self, mac, meter_id8, boot=0, seq=0, window=4096, boots=4):
        self.mac = mac
        self.meter_id8 = bytes(meter_id8)
        self.boot = boot
        self.seq = seq
        self.window = window
        self.boots = boots

    def _find(self, data):
        low = data[0] & 0x3F
        body = data[:7]
        t = bytes(data[7:11])
        for boot in range(self.boot, self.boot + self.boots + 1):
            s = self.seq + 1 if boot == self.boot else 1
            s += (low - s) & 0x3F
            last = (self.seq if boot == self.boot else 0) + self.window
            while s <= last:
                if compare_digest(tag(self.mac, self.meter_id8, boot, s, body), t):
                    return boot, s
                s += 64
        return None

    def decode(self, data):
        if not isinstance(data, (bytes, bytearray)) or len(data) != SIZE:
            raise ValueError("uplink: %d bytes expected" % SIZE)
        found = self._find(data)
        if found is None:
            raise ValueError("tag: does not verify (or a replay)")
        fields = parse(bytes(data[:7]))
        self.boot, self.seq = found
        fields["boot"], fields["seq"] = found
        return fields


# -- downlinks ------------------------------------------------------------------------

COMPACT = "compact"
COMPACT_BCD = "compact_bcd"
ENVELOPE = "envelope"


def downlink_kind(payload):
    """COMPACT (9 bytes), COMPACT_BCD (10 bytes of decimal digits), ENVELOPE (70 bytes,
    version 1) or None when the payload is none of them."""
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        return None
    n = len(payload)
    if n == 9 and payload[0] < 4:  # 66 bits: the top 6 of 72 are zero
        return COMPACT
    if n == 10:
        for b in payload:
            if b >> 4 > 9 or b & 15 > 9:
                return None
        return COMPACT_BCD
    if n == env.SIZE and payload[0] == env.VERSION:
        return ENVELOPE
    return None


def compact_bytes(digits):
    """The 9-byte downlink of a 20-digit compact token (ValueError if it is not one)."""
    n = compact.parse_digits(digits)
    if n is None:
        raise ValueError("not a 20-digit token")
    out = bytearray(9)
    for i in range(8, -1, -1):
        out[i] = n & 0xFF
        n >>= 8
    return bytes(out)


def compact_bcd(digits):
    """The 10-byte BCD downlink of a 20-digit compact token."""
    n = compact.parse_digits(digits)
    if n is None:
        raise ValueError("not a 20-digit token")
    s = compact.to_digits(n)
    out = bytearray(10)
    for i in range(10):
        out[i] = ((ord(s[2 * i]) - 48) << 4) | (ord(s[2 * i + 1]) - 48)
    return bytes(out)


def downlink_token(payload):
    """What the credit path takes: a 20-digit string, the envelope's 70 bytes, or None."""
    kind = downlink_kind(payload)
    if kind == COMPACT:
        n = 0
        for b in payload:
            n = (n << 8) | b
        return compact.to_digits(n)
    if kind == COMPACT_BCD:
        out = []
        for b in payload:
            out.append(chr(48 + (b >> 4)))
            out.append(chr(48 + (b & 15)))
        return "".join(out)
    if kind == ENVELOPE:
        return bytes(payload)
    return None


def token_id_of(token):
    """The token id an ack names: the envelope header's, or the compact token's after
    the credit path decoded it (pass its Result); None when unknown."""
    if isinstance(token, (bytes, bytearray)) and len(token) == env.SIZE:
        return env.header(token)[3]
    return getattr(token, "token_id", None)


def apply_downlink(app, payload):
    """A top-up downlink into the credit path: (Result, balance, token id) from
    app.enter(), or None when the payload is not a token (the caller answers FORMAT)."""
    token = downlink_token(payload)
    if token is None:
        return None
    r, balance = app.enter(token)
    tid = token_id_of(token)
    if tid is None:
        tid = token_id_of(r)
    return r, balance, tid
