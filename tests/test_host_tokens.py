"""CPython only: the firmware's token crypto against the vending tool's independent
implementation (stdlib hmac, `cryptography` AES), vend-made tokens decoded by the firmware
under `micropython`, and a hypothesis fuzz of the envelope and digit parsers.
"""

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from firmware.tokens import compact, envelope, keys, replay, gate as tokens
from tools.sim import tokenmint
from firmware.tokens import codes as rc
from firmware.tokens.cipher64 import Cipher64
from tools.vend import core

ROOT = Path(__file__).resolve().parent.parent
VK = bytes(range(32))
METER = 12345678901
OTHER = 98765432109
NOW = 850000000


def fw_key(meter=METER, revision=0, ken=255):
    return keys.MeterKey(keys.derive_meter_key(VK, meter, revision), revision, ken)


# --- firmware == host, primitive by primitive


def test_key_derivation_matches_host():
    rng = random.Random(1)
    for _ in range(20):
        vk = rng.randbytes(rng.choice((16, 32)))
        meter = rng.randrange(1, 10**19)
        rev = rng.randrange(0, 4)
        k = keys.derive_meter_key(vk, meter, rev)
        assert k == core.meter_key(vk, meter, rev)
        mk = keys.MeterKey(k, rev, 7)
        enc, mac, f64 = core.subkeys(k)
        assert mk.enc_key() == enc and mk.f64_key() == f64
        assert mk.mac().digest(b"abc") == core._hmac(mac, b"abc")
        assert mk.fingerprint() == core.fingerprint(k)
        assert mk.to_bytes() == core.meter_key_record(k, rev, 7)
        if rev < 255:
            m = core.key_material(vk, meter, rev + 1)
            assert keys.key_material(vk, meter, rev + 1) == m
            assert mk.rotated(m, 9).key == core.meter_key(vk, meter, rev + 1)


def test_hmac_matches_stdlib():
    rng = random.Random(2)
    for n in (0, 1, 31, 32, 63, 64, 65, 200):
        key = rng.randbytes(n)
        msg = rng.randbytes(rng.randrange(0, 300))
        assert keys.hmac_sha256(key, msg) == core._hmac(key, msg)


def test_feistel_matches_host():
    rng = random.Random(3)
    for _ in range(300):
        key = rng.randbytes(32)
        block = rng.getrandbits(64)
        tweak = rng.randrange(4)
        c = Cipher64(key)
        ct = c.encrypt(block, tweak)
        assert ct == core.feistel_encrypt(key, block, tweak)
        assert core.feistel_decrypt(key, ct, tweak) == block == c.decrypt(ct, tweak)


def test_crc_and_amounts_match_host():
    rng = random.Random(4)
    for _ in range(2000):
        data = rng.randbytes(7)
        assert compact.crc16(data) == core.sts_crc(data)
    for field in range(0x10000):
        assert compact.decode_amount(field) == core.amount_of_field(field)
    assert compact.AMOUNT_MAX == core.AMOUNT_MAX
    for _ in range(5000):
        units = rng.randrange(0, compact.AMOUNT_MAX + 10)
        assert compact.encode_amount(units) == core.amount_field(units)
        assert compact.nearest_amounts(units) == core.representable_near(units)


def test_compact_tokens_both_directions():
    rng = random.Random(5)
    mk = fw_key()
    host_key = core.meter_key(VK, METER)
    for i in range(1, 200):
        units = core.amount_of_field(rng.randrange(1, 0x10000))
        rnd = rng.randrange(16)
        tok = core.compact_credit(host_key, i, units, rnd=rnd)
        assert tok == tokenmint.compact_credit(mk, i, units, rnd=rnd)
        r = tokens.Tokens(METER, mk).check(tok, NOW)
        assert (r.code, r.amount, r.token_id) == (rc.ACCEPT, units, i)
        info = core.decode_compact(host_key, tok)
        assert info["valid"] and info["amount"] == units and info["random"] == rnd
    for kind, value in (("max_power", 6000), ("low_credit", 300), ("payment_mode", 1)):
        tok = core.compact_management(host_key, kind, 9, value, rnd=3)
        assert tok == tokenmint.compact_management(mk, kind, 9, value, rnd=3)
    m = core.key_material(VK, METER, 1)
    assert core.compact_key_change(host_key, m, 12) == tokenmint.compact_key_change(mk, m, 12)


def test_envelopes_byte_identical_and_cross_decoded():
    rng = random.Random(6)
    mk = fw_key()
    host_key = core.meter_key(VK, METER)
    for i in range(1, 50):
        iv = rng.randbytes(16)
        amount = rng.randrange(1, 1 << 30)
        issued = rng.randrange(0, 1 << 32)
        ours = tokenmint.envelope_credit(mk, METER, i, amount, issued, iv=iv)
        theirs = core.envelope(host_key, 0, METER, i, issued, 0, "credit", amount, iv=iv)
        assert ours == theirs
        info = core.decode_envelope(host_key, 0, METER, ours)
        assert info["valid"] and info["amount"] == amount and info["token_id"] == i
    m = core.key_material(VK, METER, 1)
    iv = bytes(16)
    assert tokenmint.envelope_key_change(mk, METER, 3, m, 5, NOW, iv=iv) == core.envelope(
        host_key, 0, METER, 3, NOW, 0, "key_change_1", 0, 5, m, iv=iv
    )


# --- vend-made tokens under micropython

MPY_SCRIPT = r"""
import json, sys
from firmware.tokens import keys, replay, gate as tokens, envelope
from firmware.tokens.cipher64 import Cipher64

fx = json.load(open(sys.argv[1]))
NOW = fx["now"]
out = {}

def h(s):
    return bytes.fromhex(s)

def fresh():
    return tokens.Tokens(fx["meter"], keys.load_key(h(fx["key_record"])))

def enter(t, tok):
    r = t.check(tok, NOW)
    t.commit(r, NOW)
    return r

def reboot(t):
    f = t.memory.to_fields()
    return tokens.Tokens(t.meter_id, keys.load_key(t.key.to_bytes()), replay.Memory.from_fields(f))

t = fresh()
seq = []
for tok in fx["credits"]:
    r = enter(t, tok)
    seq.append([r.code, r.amount, r.token_id])
out["credits"] = seq
out["replays"] = [enter(t, tok).code for tok in fx["credits"]]
t2 = reboot(t)
out["after_reboot"] = [t2.check(tok, NOW).code for tok in fx["credits"]]
env = h(fx["envelope"])
out["envelope"] = [enter(t2, env).code, enter(t2, env).code, reboot(t2).check(env, NOW).code]
out["other_meter"] = [fresh().check(tok, NOW).code for tok in fx["other_meter"]]
flips = []
t3 = fresh()
for bit in range(8 * len(env)):
    bad = bytearray(env)
    bad[bit // 8] ^= 0x80 >> (bit % 8)
    flips.append(t3.check(bytes(bad), NOW).code)
out["flips"] = flips
out["management"] = [[r.code, r.kind, r.value] for r in (fresh().check(x, NOW) for x in fx["management"])]
t4 = fresh()
out["kc"] = [enter(t4, x).code for x in fx["key_change"]]
out["kc_after"] = [enter(t4, fx["old_key_token"]).code, enter(t4, fx["new_key_token"]).code]
out["kc_revision"] = t4.key.revision
t5 = fresh()
out["env_kc"] = [enter(t5, h(fx["envelope_key_change"])).code, t5.key.revision,
                 enter(t5, fx["new_key_token"]).code]
# primitives on this runtime (cryptolib AES, hashlib HMAC, the Feistel cipher)
prim = []
for p in fx["primitives"]:
    mk = keys.MeterKey(h(p["key"]))
    aes = envelope._aes(mk.enc_key(), 2, h(p["iv"])).encrypt(h(p["block"]))
    prim.append([mk.mac().digest(h(p["msg"])).hex(), aes.hex(),
                 Cipher64(mk.f64_key()).encrypt(p["x"], p["tweak"])])
out["primitives"] = prim
print(json.dumps(out))
"""


def find_micropython():
    local = Path(sys.executable).with_name("micropython")
    return str(local) if local.exists() else None


def test_vend_tokens_under_micropython(tmp_path):
    exe = find_micropython()
    if exe is None:
        pytest.fail("no `micropython` next to %s" % sys.executable)
    hk = core.meter_key(VK, METER)
    hk1 = core.meter_key(VK, METER, 1)
    ok = core.meter_key(VK, OTHER)
    rng = random.Random(7)
    prims = []
    for _ in range(20):
        prims.append(
            {
                "key": rng.randbytes(32).hex(),
                "iv": rng.randbytes(16).hex(),
                "block": rng.randbytes(32).hex(),
                "msg": rng.randbytes(rng.randrange(100)).hex(),
                "x": rng.getrandbits(64),
                "tweak": rng.randrange(4),
            }
        )
    material = core.key_material(VK, METER, 1)
    fx = {
        "now": NOW,
        "meter": METER,
        "key_record": core.meter_key_record(hk, 0, 255).hex(),
        "credits": [core.compact_credit(hk, i, 100 * i) for i in range(1, 11)],
        "envelope": core.envelope(hk, 0, METER, 20, NOW - 10, NOW + 60, "credit", 123456).hex(),
        "other_meter": [
            core.compact_credit(ok, 1, 100),
            core.envelope(ok, 0, OTHER, 1, NOW, 0, "credit", 100).hex(),
        ],
        "management": [
            core.compact_management(hk, "max_power", 30, 4000),
            core.compact_management(hk, "low_credit", 31, 250),
            core.compact_management(hk, "clear_tamper", 32, 0),
            core.compact_management(hk, "payment_mode", 33, 1),
            core.envelope(hk, 0, METER, 34, NOW, 0, "max_power", 7000).hex(),
        ],
        "key_change": list(core.compact_key_change(hk, material, 255)),
        "old_key_token": core.compact_credit(hk, 40, 100),
        "new_key_token": core.compact_credit(hk1, 41, 100),
        "envelope_key_change": core.envelope(
            hk, 0, METER, 42, NOW, 0, "key_change_1", 0, 255, material
        ).hex(),
        "primitives": prims,
    }
    (tmp_path / "fx.json").write_text(json.dumps(fx))
    (tmp_path / "run.py").write_text(MPY_SCRIPT)
    env = dict(os.environ, MICROPYPATH=":".join([str(ROOT), ".frozen"]))
    proc = subprocess.run(
        [exe, "-X", "heapsize=256wk", str(tmp_path / "run.py"), str(tmp_path / "fx.json")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["credits"] == [[rc.ACCEPT, 100 * i, i] for i in range(1, 11)]
    assert out["replays"] == [rc.USED] * 10
    assert out["after_reboot"] == [rc.USED] * 10
    assert out["envelope"] == [rc.ACCEPT, rc.USED, rc.USED]
    assert out["other_meter"] == [rc.CRC, rc.WRONG_METER]
    expect = [rc.FORMAT] * 8 + [rc.KEY_TYPE] * 8 + [rc.WRONG_METER] * 64 + [rc.CRC] * 480
    assert out["flips"] == expect
    assert out["management"] == [
        [rc.ACCEPT, "max_power", 4000],
        [rc.ACCEPT, "low_credit", 250],
        [rc.ACCEPT, "clear_tamper", 0],
        [rc.ACCEPT, "payment_mode", 1],
        [rc.ACCEPT, "max_power", 7000],
    ]
    assert out["kc"] == [rc.KCT1, rc.KCT2] and out["kc_revision"] == 1
    assert out["kc_after"] == [rc.CRC, rc.ACCEPT]
    assert out["env_kc"] == [rc.KCT2, 1, rc.ACCEPT]
    for p, (mac, aes, x) in zip(prims, out["primitives"]):
        k = bytes.fromhex(p["key"])
        enc, mackey, f64 = core.subkeys(k)
        assert mac == core._hmac(mackey, bytes.fromhex(p["msg"])).hex()
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

        e = Cipher(algorithms.AES(enc), modes.CBC(bytes.fromhex(p["iv"]))).encryptor()
        assert aes == (e.update(bytes.fromhex(p["block"])) + e.finalize()).hex()
        assert x == core.feistel_encrypt(f64, p["x"], p["tweak"])


# --- fuzz: never an exception, never a credit

MK = fw_key()
HOST_KEY = core.meter_key(VK, METER)
GOOD_COMPACT = tokenmint.compact_credit(MK, 50, 1000, rnd=1)
GOOD_ENVELOPE = tokenmint.envelope_credit(MK, METER, 51, 1000, NOW, iv=bytes(16))
HEADER = bytes([1, 0]) + METER.to_bytes(8, "big")


def fresh_tokens():
    m = replay.Memory.from_fields((60, 0, 0, 0, 0))
    return tokens.Tokens(METER, MK, m)


def assert_refused(t, token, now):
    r = t._check(token, now, None)  # the inner path: an exception would surface here
    assert r.code != rc.ACCEPT or _genuine(token), (token, r)
    assert r.code in rc.CODES
    r2 = t.check(token, now)
    assert r2.code == r.code
    t.commit(r2, now)  # commit must not raise either


def _genuine(token):
    """True only for a compact token the independent decoder also finds authentic (a
    16-bit CRC collision, by design about 1 in 65,536 for a random change)."""
    if isinstance(token, str):
        info = core.decode_compact(HOST_KEY, token)
        return info.get("valid", False)
    return False


@given(st.text(max_size=200), st.none() | st.integers(-(2**40), 2**40))
def test_fuzz_text(text, now):
    assert_refused(fresh_tokens(), text, now)


@given(st.binary(max_size=200))
def test_fuzz_bytes(data):
    assert_refused(fresh_tokens(), data, NOW)


@given(st.binary(min_size=60, max_size=60))
def test_fuzz_envelope_with_our_header(rest):
    t = fresh_tokens()
    data = HEADER + rest
    assert_refused(t, data, NOW)
    assert_refused(t, data.hex(), NOW)


@given(st.text(alphabet="0123456789", min_size=20, max_size=20))
def test_fuzz_twenty_digits(digits):
    assert_refused(fresh_tokens(), digits, NOW)


@given(st.lists(st.tuples(st.integers(0, 19), st.sampled_from("0123456789 -x")), min_size=1))
def test_fuzz_mutated_compact(changes):
    s = list(GOOD_COMPACT)
    for pos, ch in changes:
        s[pos] = ch
    text = "".join(s)
    assume(text != GOOD_COMPACT)
    assert_refused(fresh_tokens(), text, NOW)


@given(st.lists(st.tuples(st.integers(0, 69), st.integers(1, 255)), min_size=1, max_size=8))
def test_fuzz_mutated_envelope(changes):
    data = bytearray(GOOD_ENVELOPE)
    for pos, x in changes:
        data[pos] ^= x
    assume(bytes(data) != GOOD_ENVELOPE)
    t = fresh_tokens()
    r = t._check(bytes(data), NOW, None)
    assert r.code != rc.ACCEPT and r.amount == 0
    assert_refused(t, envelope.to_hex(data), NOW)
