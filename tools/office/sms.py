"""The SMS fallback's senders: an object with send(phone, text), chosen by `sms_sender`:

  log            writes the message to the office's log (no SMS leaves)
  record:PATH    appends {"phone", "text"} as one JSON line to PATH (tests, dry runs)
  module:name    a gateway of the operator's: module.name() returns the sender
A sender raises on failure; the worker then raises an "sms" alert.
"""

import importlib
import json
import logging

log = logging.getLogger("office.sms")


class LogSender:
    def send(self, phone, text):
        log.warning("SMS to %s: %s", phone, text)


class RecordSender:
    def __init__(self, path):
        self.path = path

    def send(self, phone, text):
        with open(self.path, "a") as f:
            f.write(json.dumps({"phone": phone, "text": text}) + "\n")


def sender_of(spec):
    if spec == "log":
        return LogSender()
    if spec.startswith("record:"):
        return RecordSender(spec[len("record:") :])
    module, sep, name = spec.partition(":")
    if not sep:
        raise ValueError("sms_sender: log, record:PATH or module:name, not %r" % spec)
    return getattr(importlib.import_module(module), name)()


def token_text(meter_id, amount_text, compact, token_id):
    """The message: the 20 digits in groups of four, as the keypad takes them."""
    groups = " ".join(compact[i : i + 4] for i in range(0, 20, 4))
    return "Meter %s: %s credit, token %s (id %d). Type it on the meter's keypad." % (
        meter_id,
        amount_text,
        groups,
        token_id,
    )
