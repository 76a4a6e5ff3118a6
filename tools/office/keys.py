"""The office's keys: the vending key read from its key store (tools/vend), never written
anywhere else, and the meter keys derived from it in memory when a token is minted or a
meter's message is verified.

A meter records the fingerprint of the vending key it was added under (key_ref), so a
key store swapped by mistake is refused instead of minting tokens no meter accepts.
"""

from tools.vend import core


class KeyError_(ValueError):
    """The key store cannot serve a meter (wrong store, unreadable)."""


class Keys:
    def __init__(self, keystore_path):
        self.path = keystore_path
        self._vk = None
        self._cache = {}

    @property
    def vending_key(self):
        if self._vk is None:
            try:
                self._vk = core.load_keystore(self.path)
            except core.VendError as e:
                raise KeyError_(str(e)) from e
        return self._vk

    def fingerprint(self):
        return core.fingerprint(self.vending_key)

    def meter_key(self, meter):
        """The meter key of a Meter row (its id and key revision), after checking that
        this key store is the one the meter was added under."""
        fp = self.fingerprint()
        if meter.key_ref != fp:
            raise KeyError_(
                "meter %s was added under vending key %s; the key store %s holds %s"
                % (meter.id, meter.key_ref, self.path, fp)
            )
        k = (meter.id, meter.key_revision)
        if k not in self._cache:
            self._cache[k] = core.meter_key(self.vending_key, int(meter.id), meter.key_revision)
        return self._cache[k]
