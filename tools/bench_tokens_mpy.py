"""MicroPython side of the token figures: the cost of checking one token, per format.

Usage: micropython tools/bench_tokens_mpy.py -> one JSON line:
token_verify_us_compact / _envelope (median of check() on a valid credit token, which
decrypts, verifies and runs every rule), their p99, the heap each check allocates, and the
cost of refusing a random 20-digit string (decrypt + CRC) and a forged envelope (tag).
"""

import gc
import json
import time

from firmware.tokens import keys, gate as tokens
from tools.sim import tokenmint

N = 2000
METER = 12345678901
NOW = 850000000


def measure(t, token):
    for _ in range(20):
        t.check(token, NOW)
    samples = []
    for _ in range(N):
        t0 = time.ticks_us()
        t.check(token, NOW)
        samples.append(time.ticks_diff(time.ticks_us(), t0))
    samples.sort()
    gc.collect()
    gc.disable()
    before = gc.mem_alloc()
    for _ in range(10):
        t.check(token, NOW)
    alloc = (gc.mem_alloc() - before) // 10
    gc.enable()
    return samples[N // 2], samples[N * 99 // 100], alloc


def main():
    mk = keys.MeterKey(keys.derive_meter_key(bytes(range(32)), METER))
    t = tokens.Tokens(METER, mk)
    compact = tokenmint.compact_credit(mk, 1, 1000)
    env = tokenmint.envelope_credit(mk, METER, 2, 123456, NOW - 10)
    forged = bytearray(env)
    forged[40] ^= 1
    assert t.check(compact, NOW).code == tokens.ACCEPT
    assert t.check(env, NOW).code == tokens.ACCEPT
    c = measure(t, compact)
    e = measure(t, env)
    r = measure(t, "12345678901234567890")
    f = measure(t, bytes(forged))
    print(
        json.dumps(
            {
                "token_verify_us_compact": c[0],
                "token_verify_us_compact_p99": c[1],
                "token_verify_alloc_bytes_compact": c[2],
                "token_verify_us_envelope": e[0],
                "token_verify_us_envelope_p99": e[1],
                "token_verify_alloc_bytes_envelope": e[2],
                "token_reject_us_random_digits": r[0],
                "token_reject_us_forged_envelope": f[0],
            }
        )
    )


main()
