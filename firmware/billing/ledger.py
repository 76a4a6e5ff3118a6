"""Money and energy registers: balance, billing carry, debt and energy totals.

Balance is an integer count of minor units (negative when emergency or friendly credit
was used). Energy charges are `(mwh x price + carry) // CHARGE_SCALE` with the
remainder carried (and journaled), so the sum of the charges over any split of the
energy equals the floor of the charge for the total. The standing charge is spread
evenly over the day the same way. Nothing here allocates on the tick path.
"""

from firmware.billing.money import CHARGE_SCALE

SECONDS_PER_DAY = 86400


class Ledger:
    def __init__(self, balance=0):
        self.balance = balance
        self.carry = 0  # 0 .. CHARGE_SCALE-1: energy charge not yet a whole minor unit
        self.standing_carry = 0  # 0 .. 86399: standing charge x seconds not yet billed
        self.debt = 0  # aggregated debt, recovered as a share of each top-up
        self.energy_wh = 0  # lifetime imported energy, Wh + mWh
        self.energy_mwh = 0
        self.month_wh = 0  # this calendar month's energy, for block tiers
        self.month_mwh = 0
        self.credited = 0  # lifetime credit added to the balance (minor units)
        self.charged = 0  # lifetime energy + standing charges (minor units)
        self.recovered = 0  # lifetime debt recovered from top-ups

    def add_energy(self, mwh):
        """Count energy into the lifetime and month registers (after pricing it)."""
        m = self.energy_mwh + mwh
        if m >= 1000:
            self.energy_wh += m // 1000
            m %= 1000
        self.energy_mwh = m
        m = self.month_mwh + mwh
        if m >= 1000:
            self.month_wh += m // 1000
            m %= 1000
        self.month_mwh = m

    def charge_energy(self, numerator):
        """Deduct numerator / CHARGE_SCALE minor units, carrying the remainder."""
        total = numerator + self.carry
        if total >= CHARGE_SCALE:
            amount = total // CHARGE_SCALE
            self.carry = total - amount * CHARGE_SCALE
            self.balance -= amount
            self.charged += amount
            return amount
        self.carry = total
        return 0

    def charge_standing(self, per_day, seconds):
        """Deduct per_day x seconds / 86400 minor units, carrying the remainder."""
        total = per_day * seconds + self.standing_carry
        if total >= SECONDS_PER_DAY:
            amount = total // SECONDS_PER_DAY
            self.standing_carry = total - amount * SECONDS_PER_DAY
            self.balance -= amount
            self.charged += amount
            return amount
        self.standing_carry = total
        return 0

    def new_month(self):
        self.month_wh = 0
        self.month_mwh = 0

    def credit(self, amount, recovery_percent):
        """Add a top-up; `recovery_percent` of it (floor) repays the debt first.

        Returns the part that went to the debt.
        """
        to_debt = 0
        if self.debt > 0 and recovery_percent > 0:
            to_debt = min(self.debt, amount * recovery_percent // 100)
        self.debt -= to_debt
        self.recovered += to_debt
        self.balance += amount - to_debt
        self.credited += amount - to_debt
        return to_debt

    def set_balance(self, balance):
        """Make `balance` the balance; the difference, up or down, is booked to
        `credited`, so balance = credits - charges still holds. The debt is left alone."""
        self.credited += balance - self.balance
        self.balance = balance
