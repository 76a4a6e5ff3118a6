"""The one credit path: every token, whatever brought it (keypad, technician REPL, MQTT,
LoRaWAN, SMS), is checked, applied, journaled and answered here.

    answer = intake.enter(token)   # token: 20 digits, or an envelope (bytes or hex)

Order, so that no power cut can split a credit from its token id:
1. `Tokens.check()` decides (pure; never raises);
2. a key change stores the new key file first (atomic, firmware/conffile.py): a cut
   after it leaves the old id unspent, and the same token applies again;
3. the effect (credit, or a management change) goes into RAM, `Tokens.commit()` spends
   the id (or counts a failed guess toward the lock-out);
4. one journal record holds the balance and the spent id together (App.save), and only
   then is the answer given. A cut before 4 loses both; after it, both are kept.

Management tokens: max power (W), low-credit threshold (minor units), clear tamper
(clears a max-power lock-out), payment mode (1 postpaid: never disconnect for credit,
2 prepaid). Setting changes go through the settings schema and `on_settings(raw)` (the
settings file, when the builder wires it). Every answer is also an event:
`token_rejected` (detail: the result code) or, for management tokens,
`token_accepted` (detail: the token id); a credit logs `topup` as before.
"""

from firmware import events as ev
from firmware import money, replay
from firmware.settings import Settings
from firmware.tokens import Tokens  # a token without a key answers NotReady

STATE_FIELDS = replay.STATE_FIELDS


class Intake:
    def __init__(self, app, key=None, key_path=None, on_settings=None):
        self.app = app
        self.meter = app.meter
        try:
            self.tokens = Tokens(self.meter.settings.meter_id, key)
        except ValueError:  # no meter id yet (factory default): a memory, no key
            self.tokens = Tokens(1, None)
        self.key_path = key_path
        self.on_settings = on_settings
        self.last = None  # (result, balance) of the latest token, for displays and acks

    def to_fields(self):
        return self.tokens.memory.to_fields()

    def restore(self, fields):
        """Replay memory from the journal; a state that is not valid (an old record
        without it reads as zeros, which is valid) starts a fresh memory."""
        try:
            self.tokens.memory = replay.Memory.from_fields(fields)
        except ValueError:
            self.tokens.memory = replay.Memory()

    def enter(self, token):
        """Check and apply one token; returns (Result, balance after)."""
        m = self.meter
        now = m.clock.stamp()
        r = self.tokens.check(token, now, m.ledger.balance)
        if r.accepted:
            if r.new_key is not None and self.key_path:
                from firmware import conffile

                conffile.save(self.key_path, r.new_key.to_bytes())
            self._apply(r, now)
        self.tokens.commit(r, now)
        if r.accepted or r.counted:
            self.app.save()  # balance and spent id in one record, before the answer
            self.app.request_relay()
        if not r.accepted:
            m.log.emit(now, ev.TOKEN_REJECTED, m.ledger.balance, r.code)
        elif r.kind != "credit":
            m.log.emit(now, ev.TOKEN_ACCEPTED, m.ledger.balance, r.token_id)
        self.last = (r, m.ledger.balance)
        return self.last

    def _apply(self, r, now):
        m = self.meter
        kind = r.kind
        if kind == "credit":
            if r.amount > 0:
                m.credit(r.amount)
        elif kind == "max_power":
            self._set("max_power_w", r.value)
        elif kind == "low_credit":
            self._set("low_credit", money.format_decimal(r.value, m.settings.currency_decimals))
        elif kind == "clear_tamper":
            m.control.clear_lockout()
        elif kind == "payment_mode":
            self._set("postpaid", r.value == 1)

    def _set(self, key, value):
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
