"""The meter's event log: a bounded ring of (stamp, kind, balance, value) and listeners.

Every event has a time (meter stamp: seconds since 2000-01-01 local), a kind (one of
the names below), the balance after it (minor units) and one integer detail (an
amount, a power in watts or a reason mask). Listeners (indicators, comms, the
simulator's report) are called with the same four values. A listener that raises is
counted in `listener_errors` and handed to `on_error(exc)` (the app counts and logs
it); the event stays logged, the other listeners still hear it and the emitter (the
metering tick, a driver's recovery) carries on. Emitting allocates the record, so events
are kept out of the steady-state tick: they happen on changes.
"""

LOW_CREDIT = "low_credit"
LOW_CREDIT_REMINDER = "low_credit_reminder"
DISCONNECT = "disconnect"
RECONNECT = "reconnect"
READY_FOR_RECONNECTION = "ready_for_reconnection"
FRIENDLY_HOLD = "friendly_hold"
EMERGENCY_CREDIT = "emergency_credit_invoked"
TOPUP = "topup"
DEBT_RECOVERED = "debt_recovered"
MAX_POWER_TRIP = "max_power_trip"
MAX_POWER_RETRY = "max_power_retry"
MAX_POWER_LOCKOUT = "max_power_lockout"
LOCKOUT_CLEARED = "lockout_cleared"
BILLING_MONTH = "billing_month"
RELAY_FAULT = "relay_fault"
BOOT = "boot"
# The settings file did not load; detail 1: the copy of a save cut between its renames
# (settings.json.new), 2: the last good copy (settings.json.bak).
CONFIG_FALLBACK = "config_fallback"
# Tokens (firmware/tokens/intake.py): a refused token (detail: the result code), an accepted
# management token (detail: its token id), a management value the schema refused.
TOKEN_REJECTED = "token_rejected"
TOKEN_ACCEPTED = "token_accepted"
SETTING_REFUSED = "setting_refused"
# The back office (firmware/comms/mqtt/conversation.py): the passive tariff became active (detail: the new
# price now), a command changed the settings or the relay (detail: the command id).
TARIFF_ACTIVATED = "tariff_activated"
REMOTE_COMMAND = "remote_command"
# No usable settings file: running on defaults; detail 0: no file, 1: files all bad.
CONFIG_DEFAULTS = "config_defaults"
# The technician's console (firmware/service/console.py) ran its first command since the
# start (detail 0): someone is at the meter's serial port.
CONSOLE_SESSION = "console_session"
# The partition table has no "journal" partition (a stock MicroPython table): the state
# is kept in the A/B state files on littlefs instead (firmware/build.py); once a start.
STORAGE_FALLBACK = "storage_fallback"
# A key file (meter.key, opaygo.key, lora.key, meter.id) did not load: detail 1: the copy
# of a save cut between its renames (.new), 2: the last good copy (.bak); or none of its
# copies is good (detail 1): key_bad. firmware/config.py's report_key.
KEY_FALLBACK = "key_fallback"
KEY_BAD = "key_bad"


class EventLog:
    def __init__(self, size=100):
        self.size = size
        self.items = []
        self.total = 0
        self.listeners = []
        self.listener_errors = 0
        self.on_error = None  # fn(exc): told of each listener's exception

    def emit(self, stamp, kind, balance, value=0):
        rec = (stamp, kind, balance, value)
        if len(self.items) >= self.size:
            self.items.pop(0)
        self.items.append(rec)
        self.total += 1
        for fn in self.listeners:
            try:
                fn(stamp, kind, balance, value)
            except Exception as e:  # a listener's fault is its own, not the emitter's
                self.listener_errors += 1
                if self.on_error is not None:
                    self.on_error(e)

    def last(self, n=10):
        return self.items[-n:]
