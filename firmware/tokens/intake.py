"""The one credit path: every token, whatever brought it (keypad, technician REPL, MQTT,
LoRaWAN, SMS), is checked, applied, journaled and answered here.

    answer = intake.enter(token)   # token: 20 digits, an envelope (bytes or hex), or
                                   # an OpenPAYGO Token when opaygo.key is installed

Order, so that no power cut can split a credit from its token id:
1. `Tokens.check()` (or the OpenPAYGO decoder) decides (pure; never raises);
2. a key change stores the new key file first (atomic, firmware/storage/conffile.py): a cut
   after it leaves the old id unspent, and the same token applies again;
3. the effect (credit, or a management change) goes into RAM, `Tokens.commit()` spends
   the id (or counts a failed guess toward the lock-out; OpenPAYGO: the decoder's
   commit marks the count used);
4. one journal record holds the balance and the spent id together (`save()`, App.save),
   and only then is the answer given. A cut before 4 loses both; after it, both are kept.

The path of one top-up, from whatever brought it to the relay. Intake is given the
meter and two callbacks (save, request_relay), never the app; the calls go down, and
come back up only through those callbacks and the event log's listeners:

    transport, keypad, tech -> App.enter(token) -> Intake.enter(token)
      Tokens.check / the OpenPAYGO decoder      the answer (pure)
      Meter.credit (set_balance, set_setting)   the effect: the ledger, then
        CreditControl.after_credit              the supply decided at once
        EventLog.emit -> listeners              `topup`, `reconnect`...: the app (persist
                                                flag, indicator), the transport's outbox,
                                                SMS
      Tokens.commit                             the id spent
      save()                                    one journal record (App.save)
      request_relay()                           the relay task looks again
    the answer returns the same way: the transport acks it, the screens show `last`.
A message that carries no token at all is answered by `refuse(code)`: the same
`token_rejected` event, nothing else.

Management tokens: max power (W), low-credit threshold (minor units), clear tamper
(clears a max-power lock-out), payment mode (1 postpaid: never disconnect for credit,
2 prepaid). Setting changes go through the settings schema and `on_settings(raw)` (the
settings file, when the builder wires it). Every answer is also an event:
`token_rejected` (detail: the result code) or, for management tokens,
`token_accepted` (detail: the token id); a credit logs `topup` as before.

OpenPAYGO Token (firmware/tokens/openpaygo/decoder.py), the third keypad format, is on when the file
`opaygo.key` (firmware/tokens/openpaygo/keyfile.py) sits beside the meter key; its part of the path is
firmware/tokens/openpaygo/intake.py, loaded only then. Routing: a digit string of one of its
lengths (9; 15 with the restricted digit set; with extended tokens also 12, or 20 of
digits 1-4) goes to its decoder, except 20 digits, the compact token's length: those are
checked as a compact token first, and only when that answer is neither an acceptance nor
Lockout are they given to the OpenPAYGO decoder, whose answer replaces the compact one
only when the digits match a count of its window (accepted, Used, Range, Overflow).
Digits that are neither keep the compact answer (Format or CRC, counted once). Its two
state integers follow the token memory in the journal record (OPG_FIELDS); they are kept
as they are while no key file is installed.
"""

from firmware.billing import events as ev
from firmware.billing import money
from firmware.tokens import replay
from firmware.tokens import codes as rc
from firmware.storage.conffile import beside, exists
from firmware.billing.settings import Settings
from firmware.tokens.gate import Tokens  # a token without a key answers NotReady
from firmware.tokens.gate import (
    CLEAR_TAMPER,
    CREDIT,
    LOW_CREDIT,
    MAX_POWER,
    PAYMENT_CREDIT,
    PAYMENT_MODE,
)

OPAYGO = "openpaygo"  # Result.format of an OpenPAYGO token
OPAYGO_FILE = "opaygo.key"
# firmware.tokens.openpaygo.decoder.STATE_FIELDS (spelled out: that module loads only when configured)
OPG_FIELDS = ("opg_count", "opg_used")
STATE_FIELDS = replay.STATE_FIELDS + OPG_FIELDS
_NR = len(replay.STATE_FIELDS)
_NS = len(STATE_FIELDS)


def opaygo_path_for(key_path):
    """opaygo.key beside the meter key file."""
    return beside(key_path, OPAYGO_FILE)


class Intake:
    """meter: billing.meter.Meter; save(): journals the meter's record (App.save);
    request_relay(): the relay task looks again (App.request_relay); key: the MeterKey
    or None; key_path: the meter key file (a key change token replaces it, opaygo.key
    sits beside it); on_settings(raw): stores changed settings (the settings file)."""

    def __init__(self, meter, save, request_relay, key=None, key_path=None, on_settings=None):
        self.meter = meter
        self.save = save
        self.request_relay = request_relay
        try:
            self.tokens = Tokens(self.meter.settings.meter_id, key)
        except ValueError:  # no meter id yet (factory default): a memory, no key
            self.tokens = Tokens(1, None)
        self.key_path = key_path
        self.on_settings = on_settings
        self.last = None  # (result, balance) of the latest token, for displays and acks
        self.opaygo = None  # opaygo_intake.Opaygo while opaygo.key is installed
        self.opaygo_report = None  # (source, reason) when opaygo.key is there but bad
        self._opg_state = (0, 0)  # the journaled OpenPAYGO state while it is off
        self.opaygo_path = opaygo_path_for(key_path) if key_path else None
        self.load_opaygo()

    def load_opaygo(self):
        """(Re)read opaygo.key: OpenPAYGO is on when a copy of it is good, off when there
        is none (silently: nothing more is loaded) or none is good (printed, an event and
        `opaygo_report`, see opaygo_intake.load). Returns `opaygo_report` (None: the file
        is good, or there is none). The count window is kept across a reload."""
        state = self.to_fields()[_NR:]
        self.opaygo = None
        self._opg_state = state
        self.opaygo_report = None
        path = self.opaygo_path
        if not path or not (exists(path) or exists(path + ".new") or exists(path + ".bak")):
            return None
        from firmware.tokens.openpaygo import intake as opaygo_intake

        self.opaygo, self.opaygo_report = opaygo_intake.load(self, state)
        return self.opaygo_report

    def msg_mac(self):
        """The message key (keys.MeterKey.msg_mac) of the meter key in force, None without
        one: after a key change token the back-office messages are signed, and commands
        checked, under the new key at once."""
        key = self.tokens.key
        return None if key is None else key.msg_mac()

    def to_fields(self):
        opg = self.opaygo.to_fields() if self.opaygo is not None else self._opg_state
        return self.tokens.memory.to_fields() + tuple(opg)

    def restore(self, fields):
        """Token state from the journal: the first len(STATE_FIELDS) of `fields` (the
        record may go on with other owners' fields); missing ones (an older record) read
        as zeros, which is valid. A part that is not valid starts afresh."""
        fields = tuple(fields[:_NS])
        if len(fields) < _NS:
            fields += (0,) * (_NS - len(fields))
        try:
            self.tokens.memory = replay.Memory.from_fields(fields[:_NR])
        except ValueError:
            self.tokens.memory = replay.Memory()
        if self.opaygo is None:
            self._opg_state = fields[_NR:]
        else:
            self.opaygo.from_fields(fields[_NR:])

    def enter(self, token):
        """Check and apply one token; returns (Result, balance after)."""
        m = self.meter
        now = m.clock.stamp()
        balance = m.ledger.balance
        opg = self.opaygo
        text = opg.digits(token) if opg is not None else None
        if text is not None and len(text) != 20:
            r = opg.check(text, now, balance)[0]
        else:
            r = self.tokens.check(token, now, balance)
            if text is not None and not r.accepted and r.code != rc.LOCKOUT:
                o, matched = opg.check(text, now, balance)
                if matched:
                    r = o
        if r.format == OPAYGO:
            if r.accepted:
                opg.apply(r)
            opg.commit(r, now)
        else:
            if r.accepted:
                if r.new_key is not None and self.key_path:
                    from firmware.storage import conffile

                    conffile.save(self.key_path, r.new_key.to_bytes())
                self._apply(r, now)
            self.tokens.commit(r, now)
        if r.accepted or r.counted:
            self.save()  # balance and spent id in one record, before the answer
            self.request_relay()
        if not r.accepted:
            m.log.emit(now, ev.TOKEN_REJECTED, m.ledger.balance, r.code)
        elif r.kind != CREDIT or r.amount <= 0:  # OpenPAYGO: an add of value 0
            m.log.emit(now, ev.TOKEN_ACCEPTED, m.ledger.balance, r.token_id)
        self.last = (r, m.ledger.balance)
        return self.last

    def refuse(self, code):
        """A message that carries no token at all (a transport found none in it): it is
        answered `code` and logged as `token_rejected`, as a refused token is; nothing
        else changes (no lock-out count, no journal write). Returns the balance."""
        m = self.meter
        balance = m.ledger.balance
        m.log.emit(m.clock.stamp(), ev.TOKEN_REJECTED, balance, code)
        return balance

    def _apply(self, r, now):
        m = self.meter
        kind = r.kind
        if kind == CREDIT:
            if r.amount > 0:
                m.credit(r.amount)
        elif kind == MAX_POWER:
            self.set_setting("max_power_w", r.value)
        elif kind == LOW_CREDIT:
            value = money.format_decimal(r.value, m.settings.currency_decimals)
            self.set_setting("low_credit", value)
        elif kind == CLEAR_TAMPER:
            m.control.clear_lockout()
        elif kind == PAYMENT_MODE:
            self.set_setting("postpaid", r.value == PAYMENT_CREDIT)

    def set_setting(self, key, value):
        """A management change, validated by the schema like any other settings change.
        A value the schema refuses leaves the settings as they were (the token is still
        spent: it was genuine; the event log shows the refusal)."""
        m = self.meter
        raw = dict(m.settings.raw)
        raw[key] = value
        try:
            s = Settings(raw)
        except ValueError:
            m.log.emit(m.clock.stamp(), ev.SETTING_REFUSED, m.ledger.balance, 0)
            return
        m.configure(s)
        if self.on_settings is not None:
            self.on_settings(s.raw)
