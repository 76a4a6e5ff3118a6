"""Commissioning a simulated meter: an opening balance (and debt) on a meter handed over
supplying, for the simulator, the bench and the tests.

The meter takes it as it takes its state after a restart, `Meter.restore()` of a
snapshot, so no money comes in by any path of the firmware's own (credit comes only as a
token through the credit path, firmware/tokens/intake.py); then the credit rules apply
as usual. The caller journals it (App.save) when the meter should keep it.
"""

from firmware.billing.meter import STATE_FIELDS
from firmware.billing.policy import CONNECTED

_BALANCE = STATE_FIELDS.index("balance")
_DEBT = STATE_FIELDS.index("debt")
_CONTROL = STATE_FIELDS.index("control_state")
_REASONS = STATE_FIELDS.index("open_reasons")


def open_account(meter, balance, debt=0):
    """`meter` (firmware/billing/meter.py) supplying with `balance` and `debt` (minor
    units), everything else as it was; credit control decides at once."""
    state = list(meter.snapshot())
    state[_BALANCE] = balance
    state[_DEBT] = debt
    state[_CONTROL] = CONNECTED
    state[_REASONS] = 0
    meter.restore(tuple(state))
    meter.control.after_credit()
