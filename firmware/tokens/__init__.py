"""Money in: token formats (compact, envelope, OpenPAYGO), keys, anti-replay, result
codes, and intake, the one credit path every token goes through whatever brought it.

Imports billing/ and storage/. The credit path owns the ledger's credit writes.
"""
