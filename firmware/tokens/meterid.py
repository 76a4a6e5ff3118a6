"""The meter's own id file (`meter.id`, beside `meter.key`): which meter this is, kept
apart from the settings so that a meter whose settings are all damaged (running on the
defaults) still knows its number and accepts its tokens.

One fixed 16-byte record: b"PMI1", the meter id (u64 big-endian, 1 .. 10**19 - 1), the
CRC-32 of bytes 0..11 (little-endian, firmware/storage/conffile.py's seal). Loaded with
conffile.load (a damaged copy falls back to the last good one, `key_fallback`; none good:
`key_bad`). Written at the factory (tools/build.py), by `python -m tools.settings id`, or
by the meter itself once, from a good settings file naming a valid id, when there is no
file yet (firmware/config.py). See docs/settings.md.
"""

from firmware.billing.settings import parse_meter_id
from firmware.storage.conffile import seal, sealed

MAGIC = b"PMI1"
SIZE = 16


def to_bytes(meter_id):
    """The record of `meter_id` (an int or a string of digits); ValueError when invalid."""
    buf = bytearray(SIZE)
    buf[0:4] = MAGIC
    buf[4:12] = parse_meter_id(meter_id).to_bytes(8, "big")
    return seal(buf)


def load(data):
    """The meter id (int) of a record; ValueError when the record is not valid."""
    if len(data) != SIZE or bytes(data[0:4]) != MAGIC:
        raise ValueError("not a meter id record")
    if not sealed(data):
        raise ValueError("meter id record: CRC mismatch")
    return parse_meter_id(int.from_bytes(bytes(data[4:12]), "big"))
