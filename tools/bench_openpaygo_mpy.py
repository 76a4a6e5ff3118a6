"""MicroPython side of the OpenPAYGO figures: our decoder beside the stock one, same tokens.

Usage, from the repo root (MICROPYPATH must reach `firmware`, e.g. "."):

    micropython -X heapsize=8M tools/bench_openpaygo_mpy.py [SITE_PACKAGES]

prints one JSON line. SITE_PACKAGES holds the stock `openpaygo` and `siphash` packages
(default: the first .venv/lib/python*/site-packages). The stock decoder does not import
under MicroPython as shipped (docs/tokens.md, "The stock decoder under MicroPython":
`codecs` and `struct.Struct` are missing, and `openpaygo/__init__` pulls in the metrics
modules, which need `copy`/`datetime`), so this script imports only `openpaygo.token_decode`, behind three shims installed in
sys.modules for the time of the import: `codecs.decode` (hex) on binascii, a `struct`
with `Struct` on MicroPython's struct, and an `openpaygo` package object whose __path__
skips its __init__. Nothing is copied or changed on disk. If that import still fails,
"opg_stock" says why and the ratios are taken against the figures documented there
(2914 us and 1927008 bytes per decode at count 100), with "opg_stock_source": "docs".

Figures: time per decode (mean of N runs, us) and heap allocated by one decode (bytes,
gc.mem_alloc delta with the gc disabled) for a valid add token at count 102 on a device
at count 100 (`*_c100`, the documented case), one at count 2 on a fresh device (`*_c1`),
and a token that matches nothing at count 100 (the whole window, 165 steps, `*_bad`).
The stock allocation needs about 2 MB of free heap; without it the figure is null.
"""

import gc
import json
import os
import sys
import time

from firmware.tokens.openpaygo import decoder as openpaygo

# Made once with openpaygo 0.6.3 on CPython: generate_token(secret_key=KEY,
# count=C, value=V, token_type=TokenType.ADD_TIME) -> (new count, token).
KEY = "a29ab82edc5fbbc41ec9530f6dac86b1"
CASES = (
    # name, device count, token, expected (kind, value, count) from our decoder
    ("c100", 100, "274335033", (openpaygo.ADD_CREDIT, 30, 102)),  # C=100, V=30
    ("c1", 0, "295662004", (openpaygo.ADD_CREDIT, 1, 2)),  # C=0, V=1
    ("bad", 100, "274335034", (openpaygo.INVALID, 0, -1)),  # last digit changed
)
N_OURS = 500
N_STOCK = 10
DOCS_STOCK_US = 2914
DOCS_STOCK_ALLOC = 1927008


def measure(fn, n):
    fn()  # warm up (and first-call allocations)
    gc.collect()
    gc.disable()
    try:
        a = gc.mem_alloc()
        fn()
        alloc = gc.mem_alloc() - a
    except MemoryError:
        alloc = None
    gc.enable()
    gc.collect()
    t0 = time.ticks_us()
    for _ in range(n):
        fn()
    us = time.ticks_diff(time.ticks_us(), t0) / n
    return round(us, 1), alloc


def find_site():
    root = ".venv/lib"
    try:
        for d in sorted(os.listdir(root)):
            p = root + "/" + d + "/site-packages"
            try:
                os.stat(p + "/openpaygo/token_decode.py")
                return p
            except OSError:
                pass
    except OSError:
        pass
    return None


def import_stock(site):
    import binascii
    import struct as real_struct

    class Struct:
        def __init__(self, fmt):
            self.fmt = fmt

        def pack(self, *args):
            return real_struct.pack(self.fmt, *args)

        def unpack(self, buf):
            return real_struct.unpack(self.fmt, buf)

        def unpack_from(self, buf, offset=0):
            return real_struct.unpack_from(self.fmt, buf, offset)

    class StructShim:
        pass

    StructShim.Struct = Struct
    StructShim.pack = real_struct.pack
    StructShim.unpack = real_struct.unpack
    StructShim.unpack_from = real_struct.unpack_from
    StructShim.calcsize = real_struct.calcsize

    class Codecs:
        @staticmethod
        def decode(text, encoding):
            return binascii.unhexlify(text)

    class Package:
        __path__ = site + "/openpaygo"

    saved = {k: sys.modules.get(k) for k in ("struct", "codecs", "openpaygo")}
    sys.modules["struct"] = StructShim
    sys.modules["codecs"] = Codecs
    sys.modules["openpaygo"] = Package
    if site not in sys.path:
        sys.path.append(site)
    try:
        from openpaygo.token_decode import OpenPAYGOTokenDecoder
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    return OpenPAYGOTokenDecoder


def main():
    out = {"opg_count": 100}
    dec = openpaygo.Decoder(KEY)
    out["opg_backend"] = dec.backend
    for name, count, token, want in CASES:
        dec.from_fields((count, 0))
        got = dec.decode(token)
        if got != want:
            raise SystemExit("our decoder: %s gave %r, expected %r" % (token, got, want))
        us, alloc = measure(lambda: dec.decode(token), N_OURS)
        out["opg_decode_us_" + name] = us
        out["opg_decode_alloc_" + name] = alloc

    site = sys.argv[1] if len(sys.argv) > 1 else find_site()
    stock = None
    if site is None:
        out["opg_stock"] = "unavailable: no site-packages with openpaygo found"
    else:
        try:
            stock = import_stock(site)
            out["opg_stock"] = "measured"
        except Exception as e:
            out["opg_stock"] = "unavailable: %s: %s" % (type(e).__name__, e)
    if stock is not None:
        for name, count, token, want in CASES:
            used = [count] if count else []

            def run():
                return stock.decode_token(
                    token=token, secret_key=KEY, count=count, used_counts=used
                )

            r = run()
            if want[0] == openpaygo.INVALID:
                ok = r[1] == 10
            else:
                ok = r[1] == want[0] and r[0] == want[1] and r[2] == want[2]
            if not ok:
                raise SystemExit("stock decoder: %s gave %r" % (token, r))
            gc.collect()
            us, alloc = measure(run, N_STOCK)
            out["opg_stock_decode_us_" + name] = us
            out["opg_stock_decode_alloc_" + name] = alloc
        out["opg_stock_source"] = "measured"
    else:
        out["opg_stock_decode_us_c100"] = DOCS_STOCK_US
        out["opg_stock_decode_alloc_c100"] = DOCS_STOCK_ALLOC
        out["opg_stock_source"] = "docs"
    ours = out["opg_decode_us_c100"]
    theirs = out["opg_stock_decode_us_c100"]
    out["opg_speedup_c100"] = round(theirs / ours, 1) if ours else None
    a_ours = out["opg_decode_alloc_c100"]
    a_theirs = out["opg_stock_decode_alloc_c100"]
    if a_ours is not None and a_theirs is not None:
        out["opg_alloc_ratio_c100"] = round(a_theirs / max(a_ours, 1), 1)
    print(json.dumps(out))


main()
