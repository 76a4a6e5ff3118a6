"""The prepaid meter's core: one tick turns energy into money and decides the supply.

`Meter` owns the clock, ledger, tariff and credit control for one meter and is what
the asyncio app, the simulator and the technician's REPL drive. `tick()` is the
steady-state path: it allocates nothing unless an event fires. Its state is captured
by `snapshot()` (a fixed tuple of integers for the journal) and `restore()`.
"""

from firmware.billing import events as ev
from firmware.billing.events import EventLog
from firmware.billing.ledger import Ledger
from firmware.billing.policy import CONNECTED, TRIPS_KEPT, CreditControl

# The meter's fields of the journal record (integers, snapshot() order); the record
# reads and writes them by name (firmware/storage/layouts.py says where each sits).
STATE_FIELDS = (
    "stamp",
    "balance",
    "carry",
    "standing_carry",
    "debt",
    "energy_wh",
    "energy_mwh",
    "month_wh",
    "month_mwh",
    "month_key",
    "credited",
    "charged",
    "recovered",
    "control_state",
    "open_reasons",
    "flags",
    "mp_clock",
    "mp_retry_at",
    "mp_trips",
) + tuple("mp_trip%d" % (k + 1) for k in range(TRIPS_KEPT))
_NB = 16  # the fields before the max-power state
_FLAG_EC = 1
_FLAG_LOW_ARMED = 2


class Meter:
    def __init__(self, settings, clock, log=None):
        self.settings = settings
        self.clock = clock
        self.log = log if log is not None else EventLog()
        self.ledger = Ledger()
        self.control = CreditControl(settings, self.ledger, clock, self.log)
        self.month_key = clock.year * 100 + clock.month
        self.power_w = 0

    def tick(self, seconds, mwh, power_w):
        """Bill `mwh`, the energy of the `seconds` now ending, then advance the clock and
        update credit control.

        A tick is priced at its start: the tariff, time-of-use band and block tier in
        force when its interval began (the passive tariff's activation follows the same
        rule, firmware/app.py), and its energy counts in the month it began in.
        """
        c = self.clock
        led = self.ledger
        s = self.settings
        if mwh:
            led.charge_energy(s.tariff.cost(mwh, c, led.month_wh, led.month_mwh))
            led.add_energy(mwh)
        c.advance(seconds)
        if c.new_month:
            self._new_month()
        if s.standing_charge_per_day and (
            s.standing_charge_when_off or self.control.control_state == CONNECTED
        ):
            led.charge_standing(s.standing_charge_per_day, seconds)
        self.power_w = power_w
        self.control.update(seconds, power_w)

    def _new_month(self):
        self.ledger.new_month()
        self.month_key = self.clock.year * 100 + self.clock.month
        self.log.emit(self.clock.stamp(), ev.BILLING_MONTH, self.ledger.balance, self.month_key)

    def credit(self, amount):
        """Add a verified top-up (minor units); returns the part that repaid debt."""
        if amount <= 0:
            raise ValueError("amount: must be positive")
        to_debt = self.ledger.credit(amount, self.settings.debt_recovery_percent)
        stamp = self.clock.stamp()
        self.log.emit(stamp, ev.TOPUP, self.ledger.balance, amount)
        if to_debt:
            self.log.emit(stamp, ev.DEBT_RECOVERED, self.ledger.balance, to_debt)
        self.control.after_credit()
        return to_debt

    def set_balance(self, balance):
        """A verified set-credit token (OpenPAYGO SET_TIME): `balance` (minor units)
        becomes the balance, the debt is left alone; credit control re-evaluates at once."""
        self.ledger.set_balance(balance)
        self.control.after_credit()

    def configure(self, settings):
        self.settings = settings
        self.control.configure(settings)

    def price_now(self):
        """Current price in price units (1/100 minor unit per kWh)."""
        return self.settings.tariff.price_now(self.clock, self.ledger.month_wh)

    def relay_closed(self):
        return self.control.relay_closed()

    # -- persistence ------------------------------------------------------------
    def snapshot(self):
        led = self.ledger
        ctl = self.control
        flags = (_FLAG_EC if ctl.ec_invoked else 0) | (_FLAG_LOW_ARMED if ctl.low_armed else 0)
        return (
            self.clock.stamp(),
            led.balance,
            led.carry,
            led.standing_carry,
            led.debt,
            led.energy_wh,
            led.energy_mwh,
            led.month_wh,
            led.month_mwh,
            self.month_key,
            led.credited,
            led.charged,
            led.recovered,
            ctl.control_state,
            ctl.open_reasons,
            flags,
        ) + ctl.max_power_state()

    def restore(self, state):
        """Take a snapshot back (after a reboot); the clock must already be set."""
        led = self.ledger
        ctl = self.control
        (
            saved_at,
            led.balance,
            led.carry,
            led.standing_carry,
            led.debt,
            led.energy_wh,
            led.energy_mwh,
            led.month_wh,
            led.month_mwh,
            month_key,
            led.credited,
            led.charged,
            led.recovered,
            ctl.control_state,
            ctl.open_reasons,
            flags,
        ) = state[:_NB]
        ctl.ec_invoked = bool(flags & _FLAG_EC)
        ctl.low_armed = bool(flags & _FLAG_LOW_ARMED)
        # The max-power protection goes on where it was (its trips and retry time, the
        # time since the record counted); a low-credit reminder is not fired the moment
        # the meter is back.
        ctl.restore_max_power(state[_NB:], max(0, self.clock.stamp() - saved_at))
        ctl.next_reminder = ctl.now + self.settings.low_credit_repeat_s
        self.month_key = month_key
        if month_key != self.clock.year * 100 + self.clock.month:
            self._new_month()
