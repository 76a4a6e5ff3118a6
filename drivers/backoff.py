"""Exponential backoff with jitter, for the modems' reconnects and joins.

    b = Backoff(2000, 300000)   # base and ceiling, ms
    await sleep_ms(b.next_ms()) # attempt k waits a random time in [d/2, d],
    b.reset()                   #   d = min(max_ms, base_ms * 2**k); reset on success

The jitter keeps a street of meters that lost the network together from coming back at
the same instant. A port without `random` waits the lower bound, d/2.
"""

try:
    import random
except ImportError:  # a port without random: no jitter
    random = None


class Backoff:
    def __init__(self, base_ms=2000, max_ms=300000, rand=None):
        self.base_ms = base_ms
        self.max_ms = max_ms
        self.rand = rand  # rand(n) -> int in [0, n); default the random module
        self.attempt = 0

    def reset(self):
        self.attempt = 0

    def next_ms(self):
        d = self.base_ms
        k = self.attempt
        while k > 0 and d < self.max_ms:
            d *= 2
            k -= 1
        if d > self.max_ms:
            d = self.max_ms
        self.attempt += 1
        half = d // 2
        return half + _rand(self.rand, d - half + 1)


def _rand(rand, n):
    if n <= 1:
        return 0
    if rand is not None:
        return rand(n)
    if random is not None:
        return random.getrandbits(30) % n
    return 0
