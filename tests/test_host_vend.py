"""CPython only: the vending CLI (`python -m tools.vend`): key files created 0600 and never
printed, tokens the firmware accepts, the decoder's explanations and the operator errors.
"""

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from firmware.tokens import envelope, keys, gate as tokens
from firmware.tokens import codes as rc
from tools.vend import core
from tools.vend.cli import main

ROOT = Path(__file__).resolve().parent.parent
METER = "12345678901"
NOW = 850000000


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def make_store(tmp_path):
    ks = tmp_path / "ks.json"
    r = run("keygen", "--out", ks, "--decimals", "2")
    assert r.exit_code == 0, r.output
    return ks


def meter_tokens(tmp_path, ks, revision=0):
    mkf = tmp_path / ("m%d.key" % revision)
    r = run("meter-key", "--key", ks, "--meter-id", METER, "--revision", revision, "--out", mkf)
    assert r.exit_code == 0, r.output
    return tokens.Tokens(METER, keys.load_key(mkf.read_bytes()))


def test_module_help_lists_the_commands():
    proc = subprocess.run(
        [sys.executable, "-m", "tools.vend", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0
    for cmd in ("keygen", "meter-key", "token", "manage", "decode"):
        assert cmd in proc.stdout
    for cmd in ("keygen", "meter-key", "token", "manage", "decode"):
        assert run(cmd, "--help").exit_code == 0


def test_keygen_mode_0600_never_prints_the_key_and_refuses_overwrite(tmp_path):
    ks = tmp_path / "ks.json"
    r = run("keygen", "--out", ks, "--decimals", "2")
    assert r.exit_code == 0
    assert stat.S_IMODE(os.stat(ks).st_mode) == 0o600
    vk = core.load_keystore(str(ks))
    assert len(vk) == 32
    assert vk.hex() not in r.output
    doc = json.loads(ks.read_text())
    assert doc["format"] == core.KEYSTORE_FORMAT
    r = run("keygen", "--out", ks, "--decimals", "2")
    assert r.exit_code != 0 and "exists" in r.output
    assert core.load_keystore(str(ks)) == vk
    assert run("keygen", "--out", ks, "--decimals", "2", "--force", "--bytes", "16").exit_code == 0
    assert len(core.load_keystore(str(ks))) == 16
    assert stat.S_IMODE(os.stat(ks).st_mode) == 0o600


def test_meter_key_file_loads_in_the_firmware(tmp_path):
    ks = make_store(tmp_path)
    out = tmp_path / "m.key"
    r = run(
        "meter-key", "--key", ks, "--meter-id", METER, "--revision", 2, "--ken", 99, "--out", out
    )
    assert r.exit_code == 0, r.output
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    mk = keys.load_key(out.read_bytes())
    vk = core.load_keystore(str(ks))
    assert mk.revision == 2 and mk.ken == 99
    assert mk.key == keys.derive_meter_key(vk, int(METER), 2)
    assert mk.key.hex() not in r.output and mk.fingerprint() in r.output
    assert run("meter-key", "--key", ks, "--meter-id", METER, "--out", out).exit_code != 0


def test_token_compact_and_envelope_accepted_by_the_firmware(tmp_path):
    ks = make_store(tmp_path)
    t = meter_tokens(tmp_path, ks)
    r = run("token", "--key", ks, "--meter-id", METER, "--amount", "10.00", "--token-id", 1)
    assert r.exit_code == 0
    tok = r.output.strip()
    assert len(tok) == 20 and tok.isdigit()
    res = t.check(tok, NOW)
    assert (res.code, res.amount) == (rc.ACCEPT, 1000)
    t.commit(res, NOW)
    assert t.check(tok, NOW).code == rc.USED
    r = run(
        "token", "--key", ks, "--meter-id", METER, "--amount", "250.05", "--token-id", 2,
        "--format", "envelope", "--issued", NOW - 5, "--valid-for", 600,
    )  # fmt: skip
    assert r.exit_code == 0
    hx = r.output.strip()
    assert len(hx) == 2 * envelope.SIZE
    res = t.check(hx, NOW)
    assert (res.code, res.amount, res.expiry) == (rc.ACCEPT, 25005, NOW + 595)
    assert t.check(hx, NOW + 600).code == rc.OLD
    r = run(
        "token", "--key", ks, "--meter-id", METER, "--amount", "0.07", "--token-id", 3,
        "--decimals", "2", "--format", "envelope",
    )  # fmt: skip
    assert t.check(r.output.strip(), None).amount == 7


def test_token_errors(tmp_path):
    ks = make_store(tmp_path)
    base = ["token", "--key", ks, "--meter-id", METER, "--token-id", 1]
    r = run(*base, "--amount", "250.05")
    assert r.exit_code != 0 and "can't be carried exactly" in r.output
    assert "250.04" in r.output and "250.14" in r.output
    assert run(*base, "--amount", "10.0.0").exit_code != 0
    assert run(*base, "--amount", "1.234").exit_code != 0
    assert run(*base, "--amount", "0").exit_code != 0
    assert run(*base, "--amount", "-5").exit_code != 0
    assert run("token", "--key", ks, "--meter-id", "0", "--token-id", 1, "--amount", "1").exit_code
    assert run(
        "token", "--key", ks, "--meter-id", "x1", "--token-id", 1, "--amount", "1"
    ).exit_code
    big = ["token", "--key", ks, "--meter-id", METER, "--amount", "1", "--token-id", 1 << 24]
    assert "16777215" in run(*big).output
    assert run(*big, "--format", "envelope").exit_code == 0
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    r = run("token", "--key", bad, "--meter-id", METER, "--token-id", 1, "--amount", "1")
    assert r.exit_code != 0 and "not a vending key store" in r.output


def test_world_readable_key_store_warns(tmp_path):
    ks = make_store(tmp_path)
    os.chmod(ks, 0o644)
    r = CliRunner().invoke(
        main, ["token", "--key", str(ks), "--meter-id", METER, "--amount", "1", "--token-id", "1"]
    )
    assert r.exit_code == 0 and "readable by others" in r.output


def test_manage_tokens(tmp_path):
    ks = make_store(tmp_path)
    t = meter_tokens(tmp_path, ks)
    base = ["--key", ks, "--meter-id", METER]
    cases = (
        (["max-power", "5000"], "max_power", 5000),
        (["low-credit", "2.50"], "low_credit", 250),
        (["clear-tamper"], "clear_tamper", 0),
        (["payment-mode", "postpaid"], "payment_mode", 1),
        (["payment-mode", "prepaid"], "payment_mode", 2),
    )
    tid = 10
    for fmt in ("compact", "envelope"):
        for args, kind, value in cases:
            r = run("manage", *args, *base, "--token-id", tid, "--format", fmt)
            assert r.exit_code == 0, r.output
            res = t.check(r.output.strip(), NOW)
            assert (res.code, res.kind, res.value) == (rc.ACCEPT, kind, value), args
            tid += 1
    assert run("manage", "max-power", *base, "--token-id", 1).exit_code != 0  # no value
    assert run("manage", "max-power", "5000", *base).exit_code != 0  # no token id
    assert run("manage", "payment-mode", "free", *base, "--token-id", 1).exit_code != 0


def test_key_change_compact_and_envelope(tmp_path):
    ks = make_store(tmp_path)
    t = meter_tokens(tmp_path, ks)
    old = run("token", "--key", ks, "--meter-id", METER, "--amount", "1", "--token-id", 1)
    r = run("manage", "key-change", "--key", ks, "--meter-id", METER, "--ken", 200)
    halves = r.output.split()
    assert r.exit_code == 0 and len(halves) == 2
    for half, code in zip(halves, (rc.KCT1, rc.KCT2)):
        res = t.check(half, NOW)
        assert res.code == code
        t.commit(res, NOW)
    assert t.key.revision == 1 and t.key.ken == 200
    assert t.check(old.output.strip(), NOW).code == rc.CRC
    new = run(
        "token", "--key", ks, "--meter-id", METER, "--amount", "1", "--token-id", 1,
        "--revision", 1,
    )  # fmt: skip
    assert t.check(new.output.strip(), NOW).code == rc.ACCEPT
    # revision 1 -> 2 as one envelope
    r = run(
        "manage", "key-change", "--key", ks, "--meter-id", METER, "--revision", 1,
        "--format", "envelope", "--token-id", 5,
    )  # fmt: skip
    res = t.check(r.output.strip(), NOW)
    assert res.code == rc.KCT2 and res.new_key.revision == 2
    t.commit(res, NOW)
    vk = core.load_keystore(str(ks))
    assert t.key.key == core.meter_key(vk, METER, 2)


def test_decode_explains_and_exits_1_when_invalid(tmp_path):
    ks = make_store(tmp_path)
    tok = run("token", "--key", ks, "--meter-id", METER, "--amount", "12.34", "--token-id", 7)
    tok = tok.output.strip()
    r = run("decode", "--key", ks, "--meter-id", METER, tok)
    assert r.exit_code == 0
    assert "amount: 12.34 (1234 minor units)" in r.output
    assert "token id: 7" in r.output and "valid: yes" in r.output
    r = run("decode", "--key", ks, "--meter-id", "5", tok)
    assert r.exit_code == 1 and "CRC fails" in r.output
    env = run(
        "token", "--key", ks, "--meter-id", METER, "--amount", "3.00", "--token-id", 8,
        "--format", "envelope", "--issued", NOW,
    )  # fmt: skip
    env = env.output.strip()
    r = run("decode", "--key", ks, "--meter-id", METER, env)
    assert r.exit_code == 0 and "amount: 3.00" in r.output and "issued: %d" % NOW in r.output
    bad = env[:100] + ("0" if env[100] != "0" else "1") + env[101:]
    r = run("decode", "--key", ks, "--meter-id", METER, bad)
    assert r.exit_code == 1 and "tag fails" in r.output
    r = run("decode", "--key", ks, "--meter-id", "42", env)
    assert r.exit_code == 1 and "addressed to meter 12345678901" in r.output
    r = run("decode", "--key", ks, "--meter-id", METER, "1234")
    assert r.exit_code == 1 and "not 20 digits" in r.output
    halves = run("manage", "key-change", "--key", ks, "--meter-id", METER).output.split()
    r = run("decode", "--key", ks, "--meter-id", METER, halves[1])
    assert r.exit_code == 0 and "key_change_2" in r.output and "ken: 255" in r.output


def test_amounts_are_read_at_the_meters_recorded_scale_never_a_guessed_one(tmp_path):
    ks = make_store(tmp_path)  # the store's meters bill with 2 decimals
    other = "2001"  # a meter of a currency without minor units
    r = run("meter-key", "--key", ks, "--meter-id", other, "--out", tmp_path / "o.key",
            "--decimals", 0)  # fmt: skip
    assert r.exit_code == 0, r.output
    assert stat.S_IMODE(os.stat(ks).st_mode) == 0o600  # rewritten, still private
    base = ["token", "--key", ks, "--format", "envelope", "--issued", NOW, "--token-id", 1]
    env = run(*base, "--meter-id", other, "--amount", "10")
    assert env.exit_code == 0, env.output
    r = run("decode", "--key", ks, "--meter-id", other, env.output.strip())
    assert "amount: 10 (10 minor units)" in r.output, r.output
    r = run(*base, "--meter-id", other, "--amount", "10.00")  # 10, not 1,000 under a guess of 2
    r = run("decode", "--key", ks, "--meter-id", other, r.output.strip())
    assert "amount: 10 (10 minor units)" in r.output, r.output
    r = run(*base, "--meter-id", other, "--amount", "10.5")
    assert r.exit_code != 0 and "more than 0 decimals" in r.output
    r = run(*base, "--meter-id", other, "--amount", "10", "--decimals", 2)
    assert r.exit_code != 0 and "bills with 0 currency decimals" in r.output
    assert run(*base, "--meter-id", METER, "--amount", "10.00").exit_code == 0
    for amount in ("\u0665", "1\u00b2", "\uff11"):  # Arabic-Indic five, superscript, fullwidth
        r = run(*base, "--meter-id", METER, "--amount", amount)
        assert r.exit_code != 0 and "ASCII digits" in r.output, amount


def test_a_store_without_recorded_decimals_refuses_until_they_are_given(tmp_path):
    ks = tmp_path / "bare.json"
    core.keygen(str(ks))  # no scale recorded
    base = ["token", "--key", ks, "--meter-id", METER, "--token-id", 1, "--amount", "1"]
    r = run(*base)
    assert r.exit_code != 0 and "currency decimals of meter %s unknown" % METER in r.output
    assert run(*base, "--decimals", 2).exit_code == 0
    assert run("keygen", "--out", tmp_path / "x.json").exit_code != 0  # --decimals required
    bad = json.loads(ks.read_text())
    bad["currency_decimals"] = 9
    ks.write_text(json.dumps(bad))
    r = run(*base, "--decimals", 2)
    assert r.exit_code != 0 and "currency decimals 0..4" in r.output
