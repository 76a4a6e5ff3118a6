"""The LoRaWAN AppKey file (`lora.key`, beside `meter.key`): the OTAA root key, a secret.

One fixed 24-byte record:

    0..3    b"PLK1"
    4..19   the 16-byte AppKey
    20..23  CRC-32 of bytes 0..19 (little-endian)

    save(path, key)                                  # build tools, tests, the live meter
    got, source, reason = conffile.load(path, lorakey.load)   # start-up

Written and read through firmware/storage/conffile.py (atomic replace, last good copy as the
fallback). The key never goes into settings.json, a log, an error or the telemetry: a
LoRaKey prints as `LoRaKey(<secret>)` and gives its hex digits only to the driver
(`hex()`, for the modem's AT+APPKEY). `load(data)` raises ValueError saying what is
wrong, never showing the bytes.
"""

import binascii

from firmware.storage import conffile

MAGIC = b"PLK1"
SIZE = 24


class LoRaKey:
    """A 16-byte AppKey that does not show itself."""

    def __init__(self, key):
        if isinstance(key, str):
            if len(key) != 32:
                raise ValueError("lora key: 32 hex digits")
            try:
                key = binascii.unhexlify(key)
            except Exception:
                raise ValueError("lora key: 32 hex digits")
        if not isinstance(key, (bytes, bytearray)) or len(key) != 16:
            raise ValueError("lora key: 16 bytes")
        self._key = bytes(key)

    def hex(self):
        """The 32 upper-case hex digits the modem's key command takes."""
        return binascii.hexlify(self._key).decode().upper()

    def __repr__(self):
        return "LoRaKey(<secret>)"

    __str__ = __repr__

    def to_bytes(self):
        buf = bytearray(SIZE)
        buf[0:4] = MAGIC
        buf[4:20] = self._key
        return conffile.seal(buf)


def load(data):
    """A LoRaKey from its 24-byte record; ValueError saying what is wrong."""
    if len(data) != SIZE or bytes(data[0:4]) != MAGIC:
        raise ValueError("lora key: not a LoRaWAN key record")
    if not conffile.sealed(data):
        raise ValueError("lora key: CRC mismatch")
    return LoRaKey(bytes(data[4:20]))


def save(path, key):
    """Write the key file atomically; key: 16 bytes or 32 hex digits. Returns the LoRaKey."""
    k = key if isinstance(key, LoRaKey) else LoRaKey(key)
    conffile.save(path, k.to_bytes())
    return k
