"""Meter state kept in two alternating files (A/B) on the filesystem.

Each save writes the whole record to the slot not holding the newest copy, so a
power cut during a write leaves the previous record intact; loading takes the valid
record with the highest sequence number. The record (record.py) carries its own CRC
and is read by field name from any released layout.
"""

import os

from firmware.storage import record


class StateFile:
    def __init__(self, directory, codec=record.STATE, name="state"):
        self.paths = (directory + "/" + name + ".a", directory + "/" + name + ".b")
        self.codec = codec
        self.seq = 0
        self.slot = 0
        self.saves = 0

    def load(self):
        """Newest valid state fields, or None on a fresh meter."""
        best = None
        for i, path in enumerate(self.paths):
            try:
                with open(path, "rb") as f:
                    got = self.codec.unpack(f.read())
            except OSError:
                got = None
            if got is not None and (best is None or _newer(got[0], best[0])):
                best = got
                self.slot = i
        if best is None:
            return None
        self.seq = best[0]
        return best[1]

    def save(self, fields):
        """Write `fields` (the newest layout's) to the older file; a value that does not
        fit its field raises ValueError before either file is opened."""
        seq = (self.seq + 1) & 0xFFFFFFFF
        data = self.codec.pack(seq, fields)
        self.seq = seq
        self.slot ^= 1
        with open(self.paths[self.slot], "wb") as f:
            f.write(data)
        self.saves += 1

    def erase(self):
        for path in self.paths:
            try:
                os.remove(path)
            except OSError:
                pass
        self.seq = 0


def _newer(a, b):
    """Sequence comparison that survives the 32-bit wrap."""
    return 0 < ((a - b) & 0xFFFFFFFF) < 0x80000000
