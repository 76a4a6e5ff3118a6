"""Credit control: when the supply is on, warned, held or cut (DLMS names where they fit).

Disconnect control (DLMS class 70) has three control states: CONNECTED, DISCONNECTED
and READY_FOR_RECONNECTION. The supply is cut while any reason in `open_reasons` is
set (credit, max power trip, max power lockout, remote, tamper). When the last reason
clears the supply returns at once, or, with `reconnect_needs_button`, waits in
READY_FOR_RECONNECTION for the customer's button so an unattended house is never
energised by surprise.

Credit: cut when the balance reaches the disconnect level (0, or minus the emergency
credit once the customer has invoked it), never inside a friendly window (weekday and
time ranges, listed holidays) -- the debt is then recovered from the next top-up;
restored when the balance is back at `reconnect_min` (hysteresis: no chatter).
Low credit: an event once per crossing below `low_credit`, then a reminder every
`low_credit_repeat_s` while the supply is on (none while it is off for any reason). Max power: trip after `max_power_trip_s` over the limit, retry
after `max_power_retry_s`, lock out after `max_power_lockout_trips` trips within
`max_power_lockout_window_s` until cleared by a technician or the back office.
`update()` runs every tick and allocates nothing unless an event fires.
"""

from firmware.billing import events as ev
from firmware.billing.tariff import in_windows

DISCONNECTED = 0
CONNECTED = 1
READY_FOR_RECONNECTION = 2
CONTROL_STATES = ("disconnected", "connected", "ready_for_reconnection")


def relay_word(closed):
    """The contacts as the relay driver knows them (True, False, None) in words."""
    return "closed" if closed is True else ("open" if closed is False else "unknown")


OPEN_CREDIT = 1
OPEN_MAX_POWER = 2
OPEN_LOCKOUT = 4
OPEN_REMOTE = 8
OPEN_TAMPER = 16

_NO_TRIP = -1  # a slot of the ring of max-power trip times that holds none
TRIPS_KEPT = 8  # newest trip times the journal keeps (max_power_state)

# Account credit status names (DLMS Account current_credit_status, simplified)
IN_CREDIT = "in_credit"
LOW_CREDIT = "low_credit"
EMERGENCY = "emergency_credit"
FRIENDLY = "friendly_credit"
OUT_OF_CREDIT = "out_of_credit"


class CreditControl:
    def __init__(self, settings, ledger, clock, log):
        self.s = settings
        self.ledger = ledger
        self.clock = clock
        self.log = log
        self.control_state = CONNECTED
        self.open_reasons = 0
        self.now = 0  # seconds since start-up: timers
        self.low_armed = True  # a low_credit event is due at the next crossing
        self.next_reminder = 0
        self.ec_invoked = False
        self.friendly_now = False
        self.held = False  # out of credit but held on by a friendly window
        self.over_s = 0
        self.retry_at = 0
        self.trips = [_NO_TRIP] * settings.max_power_lockout_trips  # ring of trip times
        self.trip_i = 0

    # -- configuration -------------------------------------------------------
    def configure(self, settings):
        """Take new settings (technician or back office change) and re-evaluate."""
        self.s = settings
        if len(self.trips) != settings.max_power_lockout_trips:
            self.trips = [_NO_TRIP] * settings.max_power_lockout_trips
            self.trip_i = 0
        self._credit_rules()
        self._apply()

    def disconnect_level(self):
        return -self.s.emergency_credit if self.ec_invoked else 0

    def in_friendly(self):
        c = self.clock
        for h in self.s.holidays:
            if h == c.date_code:
                return True
        return in_windows(self.s.friendly, c)

    # -- the tick ------------------------------------------------------------
    def update(self, seconds, power_w):
        self.now += seconds
        self.friendly_now = self.in_friendly()
        self._credit_rules()
        if self.s.max_power_w:
            self._max_power(seconds, power_w)
        self._apply()

    def _credit_rules(self):
        bal = self.ledger.balance
        s = self.s
        if s.postpaid:  # prepayment disabled: billing goes on, credit never cuts
            self.open_reasons &= ~OPEN_CREDIT
            self.held = False
            self.low_armed = True
            return
        if bal < s.low_credit:
            if self.low_armed:
                self.low_armed = False
                self.next_reminder = self.now + s.low_credit_repeat_s
                self._emit(ev.LOW_CREDIT, 0)
            elif (
                s.low_credit_repeat_s
                and self.now >= self.next_reminder
                and self.control_state == CONNECTED  # no reminder while off, for any reason
            ):
                self.next_reminder = self.now + s.low_credit_repeat_s
                self._emit(ev.LOW_CREDIT_REMINDER, 0)
        elif not self.low_armed:
            self.low_armed = True
        if self.open_reasons & OPEN_CREDIT:
            if bal >= s.reconnect_min:
                self.open_reasons &= ~OPEN_CREDIT
        elif bal <= self.disconnect_level():
            if self.friendly_now:
                if not self.held:
                    self.held = True
                    self._emit(ev.FRIENDLY_HOLD, 0)
            else:
                self.open_reasons |= OPEN_CREDIT
        if self.held and (bal > self.disconnect_level() or self.open_reasons & OPEN_CREDIT):
            self.held = False

    def _max_power(self, seconds, power_w):
        s = self.s
        if self.open_reasons & OPEN_MAX_POWER:
            if self.now >= self.retry_at:
                self.open_reasons &= ~OPEN_MAX_POWER
                self._emit(ev.MAX_POWER_RETRY, 0)
            return
        if self.control_state != CONNECTED or power_w <= s.max_power_w:
            self.over_s = 0
            return
        self.over_s += seconds
        if self.over_s < s.max_power_trip_s:
            return
        self.over_s = 0
        self.trips[self.trip_i] = self.now
        self.trip_i = (self.trip_i + 1) % len(self.trips)
        first = self.trips[self.trip_i]  # the trip (lockout_trips - 1) trips ago
        self._emit(ev.MAX_POWER_TRIP, power_w)
        if first != _NO_TRIP and self.now - first <= s.max_power_lockout_window_s:
            self.open_reasons |= OPEN_LOCKOUT
            self._emit(ev.MAX_POWER_LOCKOUT, power_w)
        else:
            self.open_reasons |= OPEN_MAX_POWER
            self.retry_at = self.now + s.max_power_retry_s

    def _apply(self):
        """Move the disconnect control state after the reasons changed."""
        if self.open_reasons:
            if self.control_state != DISCONNECTED:
                self.control_state = DISCONNECTED
                self._emit(ev.DISCONNECT, self.open_reasons)
        elif self.control_state == DISCONNECTED:
            if self.s.reconnect_needs_button:
                self.control_state = READY_FOR_RECONNECTION
                self._emit(ev.READY_FOR_RECONNECTION, 0)
            else:
                self.control_state = CONNECTED
                self._emit(ev.RECONNECT, 0)

    def _emit(self, kind, value):
        self.log.emit(self.clock.stamp(), kind, self.ledger.balance, value)

    # -- requests from outside the tick -------------------------------------
    def after_credit(self):
        """Re-evaluate at once after a top-up (the relay must not wait for a tick).

        A top-up that repays the emergency credit in full makes it selectable again;
        one that lands exactly on zero keeps it in use, or paying would cut the supply.
        """
        if self.ec_invoked and self.ledger.balance > 0:
            self.ec_invoked = False
        self.evaluate()

    def evaluate(self):
        """Apply the credit rules now (at start-up: before the relay task looks), with
        the friendly window as the clock stands now: a reboot inside one keeps the supply."""
        self.friendly_now = self.in_friendly()
        self._credit_rules()
        self._apply()

    def press_button(self):
        """The customer's button: reconnect from READY_FOR_RECONNECTION.

        Returns True when the supply was restored.
        """
        if self.control_state == READY_FOR_RECONNECTION and not self.open_reasons:
            self.control_state = CONNECTED
            self._emit(ev.RECONNECT, 0)
            return True
        return False

    def invoke_emergency_credit(self):
        """Customer request; allowed below the low-credit threshold, once per debt."""
        if self.ec_invoked or not self.s.emergency_credit:
            return False
        if self.ledger.balance >= self.s.low_credit:
            return False
        self.ec_invoked = True
        self._emit(ev.EMERGENCY_CREDIT, self.s.emergency_credit)
        if self.ledger.balance > self.disconnect_level():
            self.open_reasons &= ~OPEN_CREDIT
        self._credit_rules()
        self._apply()
        return True

    def clear_lockout(self):
        if not self.open_reasons & OPEN_LOCKOUT:
            return False
        self.open_reasons &= ~OPEN_LOCKOUT
        for i in range(len(self.trips)):
            self.trips[i] = _NO_TRIP
        self._emit(ev.LOCKOUT_CLEARED, 0)
        self._apply()
        return True

    def remote(self, open_):
        """The back office's relay command: open cuts the supply whatever the credit
        (until a close); close lifts only that reason (credit rules still apply, and
        `reconnect_needs_button` still waits for the customer). True when it changed."""
        before = self.open_reasons
        if open_:
            self.open_reasons |= OPEN_REMOTE
        else:
            self.open_reasons &= ~OPEN_REMOTE
        self._apply()
        return self.open_reasons != before

    # -- the journal ---------------------------------------------------------
    def max_power_state(self):
        """The max-power protection for the journal: (running seconds, retry time, trips
        in the ring, then the TRIPS_KEPT newest trip times, newest first, _NO_TRIP for
        none). Times are in the protection's own seconds (`now`), which the journal
        carries across a power cut (restore_max_power), so a cut restarts neither the
        trip count nor the retry time."""
        out = [self.now, self.retry_at, 0] + [_NO_TRIP] * TRIPS_KEPT
        n = len(self.trips)
        for k in range(n):
            t = self.trips[(self.trip_i - 1 - k) % n]
            if t != _NO_TRIP:
                if k < TRIPS_KEPT:
                    out[3 + k] = t
                out[2] += 1
        return tuple(out)

    def restore_max_power(self, state, elapsed):
        """Take max_power_state() back, `elapsed` seconds after it was saved (the wall
        clock's difference; 0 when the clock is behind the record, so an untrusted clock
        can only make the retry longer and the trips more recent, never the reverse).
        Trips beyond the TRIPS_KEPT newest come back at the oldest kept time (later than
        they were: a lock-out comes no later than it would have). A retry time of -1 (a
        record from before this state was kept) waits the full retry from now."""
        now, retry_at, count = state[0] + elapsed, state[1], state[2]
        self.now = now
        self.retry_at = retry_at if retry_at >= 0 else now + self.s.max_power_retry_s
        n = len(self.trips)
        kept = [t for t in state[3 : 3 + TRIPS_KEPT] if t != _NO_TRIP]
        for k in range(n):
            if k < min(count, n) and kept:
                self.trips[n - 1 - k] = kept[min(k, len(kept) - 1)]
            else:
                self.trips[n - 1 - k] = _NO_TRIP
        self.trip_i = 0

    # -- reporting ------------------------------------------------------------
    def credit_status(self):
        bal = self.ledger.balance
        if self.open_reasons & OPEN_CREDIT:
            return OUT_OF_CREDIT
        if self.held:
            return FRIENDLY
        if self.ec_invoked:
            return EMERGENCY
        if bal < self.s.low_credit:
            return LOW_CREDIT
        return IN_CREDIT

    def relay_closed(self):
        return self.control_state == CONNECTED
