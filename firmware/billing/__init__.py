"""What energy costs and when the supply is cut: integer money, local time, tariffs, the
ledger, credit control, the event log, the settings schema and the meter's one tick.

Imports only storage/ below it: nothing of tokens, comms, ui or service. An energy
reading goes chip -> meter -> tariff -> ledger -> policy and nowhere else.
"""
