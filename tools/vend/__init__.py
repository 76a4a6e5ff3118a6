"""Vending and back office on the host (CPython): key store, meter keys, compact tokens and
envelopes, and the support staff's decoder.

`python -m tools.vend --help` is the CLI (tools/vend/cli.py); tools/vend/core.py holds the
pure functions. They are a second, independent implementation of the token formats over
`cryptography` (AES) and the standard `hmac`, so the tests can hold the firmware's own
crypto (firmware/tokens/keys.py, cipher64.py, compact.py, envelope.py) against it.
"""
