"""The token front door on both runtimes: accept once, replay (also after a reboot),
another meter, management tokens, range and function errors, key expiry, key change, the
replay window, the lock-out, and check() changing nothing.
"""

from firmware.tokens import envelope, keys, replay, gate as tokens
from tools.sim import tokenmint
from firmware.tokens import codes as rc

VK = bytes(range(32))
METER = 12345678901
OTHER = 12345678902
NOW = 850000000  # 2026-12-09


def meter_key(meter=METER, revision=0, ken=255):
    return keys.MeterKey(keys.derive_meter_key(VK, meter, revision), revision, ken)


def setup(meter=METER):
    mk = meter_key(meter)
    return mk, tokens.Tokens(meter, mk)


def enter(t, token, now=NOW, balance=None):
    r = t.check(token, now, balance)
    t.commit(r, now)
    return r


def reboot(t):
    """A new Tokens from what the app would have journaled and stored."""
    fields = tuple(t.memory.to_fields())
    return tokens.Tokens(
        t.meter_id, keys.load_key(t.key.to_bytes()), replay.Memory.from_fields(fields)
    )


def test_compact_credit_accepted_once_then_used_also_after_reboot():
    mk, t = setup()
    tok = tokenmint.compact_credit(mk, 1, 1000)
    r = enter(t, tok)
    assert r.code == rc.ACCEPT and r.accepted and r.word == "Accepted" and r.dlms == 3
    assert (r.format, r.kind, r.amount, r.value, r.token_id) == (
        "compact",
        "credit",
        1000,
        1000,
        1,
    )
    assert (r.cls, r.subclass) == (0, 4)
    assert enter(t, tok).code == rc.USED
    t2 = reboot(t)
    assert t2.check(tok, NOW).code == rc.USED
    assert enter(t2, tokenmint.compact_credit(mk, 2, 5)).code == rc.ACCEPT


def test_envelope_credit_binary_and_hex_accepted_once():
    mk, t = setup()
    e = tokenmint.envelope_credit(mk, METER, 7, 25005, NOW - 60)
    assert len(e) == envelope.SIZE
    r = enter(t, e)
    assert (r.code, r.format, r.amount, r.token_id, r.issued) == (
        rc.ACCEPT,
        "envelope",
        25005,
        7,
        NOW - 60,
    )
    assert enter(t, e).code == rc.USED
    assert enter(t, envelope.to_hex(e)).code == rc.USED
    assert enter(t, envelope.to_hex(e).upper()).code == rc.USED
    assert reboot(t).check(e, NOW).code == rc.USED
    e2 = tokenmint.envelope_credit(mk, METER, 8, 1, NOW)
    assert enter(t, envelope.to_hex(e2).encode()).code == rc.ACCEPT


def test_compact_and_envelope_share_one_id_space():
    mk, t = setup()
    assert enter(t, tokenmint.compact_credit(mk, 3, 100)).code == rc.ACCEPT
    assert enter(t, tokenmint.envelope_credit(mk, METER, 3, 100, NOW)).code == rc.USED


def test_other_meter_rejected():
    mk_other, _ = setup(OTHER)
    _, t = setup()
    # compact: the other meter's key decrypts to noise -> CRC
    r = t.check(tokenmint.compact_credit(mk_other, 1, 1000), NOW)
    assert r.code == rc.CRC and r.word == "Invalid" and r.dlms == 5
    # envelope: addressed to the other meter
    e = tokenmint.envelope_credit(mk_other, OTHER, 1, 1000, NOW)
    assert t.check(e, NOW).code == rc.WRONG_METER
    # envelope with our id in the header but sealed under the other meter's key -> tag fails
    forged = tokenmint.envelope_credit(mk_other, METER, 1, 1000, NOW)
    assert t.check(forged, NOW).code == rc.CRC


def test_input_forms():
    mk, t = setup()
    tok = tokenmint.compact_credit(mk, 1, 1000)
    spaced = " ".join(tok[i : i + 4] for i in range(0, 20, 4))
    assert t.check(spaced, NOW).code == rc.ACCEPT
    assert t.check(tok.encode(), NOW).code == rc.ACCEPT
    assert t.check(bytearray(tok.encode()), NOW).code == rc.ACCEPT
    assert t.check(tok.encode() + b"\r\n", NOW).code == rc.ACCEPT
    assert t.check("\t" + tok + "\n", NOW).code == rc.ACCEPT
    for bad in ("", "hello", tok[:19], tok + "1", None, 42, [1], b"", b"\x01" * 10):
        r = t.check(bad, NOW)
        assert r.code == rc.FORMAT, (bad, r)
    assert t.check("9" * 20, NOW).code == rc.FORMAT  # above 2**66
    assert t.check("zz" * 70, NOW).code == rc.FORMAT


def test_check_changes_nothing():
    mk, t = setup()
    before = t.memory.to_fields()
    for tok in (
        tokenmint.compact_credit(mk, 1, 1000),
        "12345678901234567890",
        tokenmint.envelope_credit(mk, METER, 2, 5, NOW),
    ):
        for _ in range(5):
            t.check(tok, NOW)
    assert t.memory.to_fields() == before
    assert t.check(tokenmint.compact_credit(mk, 1, 1000), NOW).code == rc.ACCEPT


def test_management_tokens():
    mk, t = setup()
    cases = (
        ("max_power", 5000, 5000),
        ("low_credit", 250, 250),
        ("clear_tamper", 0, 0),
        ("payment_mode", tokens.PAYMENT_CREDIT, 1),
        ("payment_mode", tokens.PAYMENT_PREPAID, 2),
    )
    tid = 1
    for kind, value, expect in cases:
        r = enter(t, tokenmint.compact_management(mk, kind, tid, value))
        assert (r.code, r.kind, r.value, r.token_id, r.cls) == (rc.ACCEPT, kind, expect, tid, 2)
        tid += 1
        r = enter(t, tokenmint.envelope_management(mk, METER, tid, kind, value, NOW))
        assert (r.code, r.kind, r.value, r.token_id) == (rc.ACCEPT, kind, expect, tid)
        tid += 1
    assert enter(t, tokenmint.compact_management(mk, "max_power", 1, 10)).code == rc.USED


def test_range_errors():
    mk, t = setup()
    bad = (
        tokenmint.compact_management(mk, "clear_tamper", 1, 1),
        tokenmint.compact_management(mk, "payment_mode", 2, 3),
        tokenmint.compact_management(mk, "payment_mode", 3, 0),
        tokenmint.envelope_management(mk, METER, 4, "max_power", 65536, NOW),
        tokenmint.envelope_credit(mk, METER, 5, 0, NOW),
        tokenmint.envelope_credit(mk, METER, 6, tokens.MAX_CREDIT + 1, NOW),
        tokenmint.envelope_management(mk, METER, 7, "low_credit", tokens.MAX_CREDIT + 1, NOW),
        tokenmint.envelope_credit(mk, METER, 8, 5, NOW, expiry=NOW - 10 - 1000),  # expiry<issue
    )
    for tok in bad:
        assert t.check(tok, NOW).code == rc.RANGE
    # a compact credit of 0 can be encoded but is refused
    c = tokenmint.compact_management(mk, "low_credit", 9, 0)
    assert t.check(c, NOW).code == rc.ACCEPT  # a threshold of 0 is fine
    zero = tokens.compact.encode(tokens.Cipher64(mk.f64_key()), 0, 4, 1, 10, 0)
    assert t.check(zero, NOW).code == rc.RANGE
    # token id 0
    assert t.check(tokenmint.envelope_credit(mk, METER, 0, 5, NOW), NOW).code == rc.RANGE


def test_function_errors():
    mk, t = setup()
    c = tokens.Cipher64(mk.f64_key())
    for cls, sub in ((0, 0), (0, 5), (2, 1), (2, 2), (2, 6), (2, 15)):
        tok = tokens.compact.encode(c, cls, sub, 0, 1, 100)
        r = t.check(tok, NOW)
        assert r.code == rc.FUNCTION and r.dlms == 6, (cls, sub, r)
    # class 1 (non-meter-specific, in clear) with a good CRC: none implemented
    tok = tokens.compact.encode(None, 1, 0, 0, 0, 0)
    assert t.check(tok, NOW).code == rc.FUNCTION
    from firmware.tokens import envelope as env

    for kind in (0x00, 0x05, 0x24, 0x21, 0x30):
        e = env.seal(mk, METER, 1, NOW, 0, kind, 1)
        assert t.check(e, NOW).code == rc.FUNCTION, hex(kind)
    e = env.seal(mk, METER, 1, NOW, 0, 0x44, 1)
    assert t.check(e, NOW).code == rc.FORMAT
    # reserved body bytes
    e = env.seal(mk, METER, 1, NOW, 0, 0x04, 1, aux=1)
    assert t.check(e, NOW).code == rc.FORMAT
    e = env.seal(mk, METER, 1, NOW, 0, 0x04, 1, material=b"\x00" * 9 + b"\x01")
    assert t.check(e, NOW).code == rc.FORMAT


def test_overflow_with_balance():
    mk, t = setup()
    tok = tokenmint.compact_credit(mk, 1, 16000)
    assert t.check(tok, NOW, balance=tokens.SMALL_INT_MAX - 16000).code == rc.ACCEPT
    r = t.check(tok, NOW, balance=tokens.SMALL_INT_MAX - 15999)
    assert r.code == rc.OVERFLOW and r.dlms == 7


def test_key_expiry():
    mk = meter_key(ken=NOW >> 24)
    t = tokens.Tokens(METER, mk)
    later = ((NOW >> 24) + 1) << 24
    tok = tokenmint.compact_credit(mk, 1, 100)
    assert t.check(tok, NOW).code == rc.ACCEPT
    assert t.check(tok, later).code == rc.KEY_EXPIRED
    assert t.check(tok, None).code == rc.ACCEPT  # clock unknown: not checked
    assert t.check(tokenmint.envelope_credit(mk, METER, 2, 5, later), NOW).code == rc.KEY_EXPIRED
    assert t.check(tokenmint.envelope_credit(mk, METER, 2, 5, NOW), later).code == rc.ACCEPT
    # a key change still works with an expired key (otherwise the meter could never recover)
    h1, h2 = tokenmint.compact_key_change(mk, keys.key_material(VK, METER, 1), 255)
    assert enter(t, h1, later).code == rc.KCT1
    assert enter(t, h2, later).code == rc.KCT2
    assert t.key.ken == 255


def test_envelope_expiry():
    mk, t = setup()
    e = tokenmint.envelope_credit(mk, METER, 1, 5, NOW - 100, expiry=NOW)
    assert t.check(e, NOW).code == rc.ACCEPT
    r = t.check(e, NOW + 1)
    assert r.code == rc.OLD and r.word == "Old"
    assert t.check(e, None).code == rc.ACCEPT


def test_not_ready_without_key():
    mk = meter_key()
    t = tokens.Tokens(METER, None)
    assert t.check(tokenmint.compact_credit(mk, 1, 5), NOW).code == rc.NOT_READY
    assert t.check(tokenmint.envelope_credit(mk, METER, 1, 5, NOW), NOW).code == rc.NOT_READY
    assert t.check(tokenmint.envelope_credit(mk, OTHER, 1, 5, NOW), NOW).code == rc.WRONG_METER


def test_replay_window_out_of_order_old_and_jump():
    mk, t = setup()
    assert enter(t, tokenmint.compact_credit(mk, 100, 1)).code == rc.ACCEPT
    assert enter(t, tokenmint.compact_credit(mk, 40, 1)).code == rc.ACCEPT  # 60 below
    assert enter(t, tokenmint.compact_credit(mk, 36, 1)).code == rc.ACCEPT  # 64 below: last
    assert enter(t, tokenmint.compact_credit(mk, 35, 1)).code == rc.OLD  # 65 below
    assert enter(t, tokenmint.compact_credit(mk, 40, 1)).code == rc.USED
    assert enter(t, tokenmint.compact_credit(mk, 100, 1)).code == rc.USED
    assert enter(t, tokenmint.compact_credit(mk, 120, 1)).code == rc.ACCEPT
    assert enter(t, tokenmint.compact_credit(mk, 100, 1)).code == rc.USED
    assert enter(t, tokenmint.compact_credit(mk, 40, 1)).code == rc.OLD  # 80 below now
    assert enter(t, tokenmint.compact_credit(mk, 56, 1)).code == rc.ACCEPT  # 64 below 120
    assert enter(t, tokenmint.compact_credit(mk, 120 + 65536, 1)).code == rc.ACCEPT
    big = 120 + 2 * 65536 + 1
    assert t.check(tokenmint.envelope_credit(mk, METER, big, 1, NOW), NOW).code == rc.RANGE
    assert t.check(tokenmint.compact_credit(mk, 120, 1), NOW).code == rc.OLD


def test_replay_memory_unit():
    m = replay.Memory()
    assert m.status(0) == rc.RANGE and m.status(65537) == rc.RANGE and m.status(1) == 0
    for i in range(1, 200, 3):
        assert m.status(i) == 0
        m.mark(i)
        assert m.status(i) == rc.USED
    for i in range(135, 200):  # the window: 199 and the 64 ids below it
        assert m.status(i) == (rc.USED if (i - 1) % 3 == 0 else 0), i
    assert m.status(134) == rc.OLD and m.status(133) == rc.OLD
    # fields round trip, every field a signed 64-bit integer, at most 8 of them
    f = m.to_fields()
    assert len(f) == len(replay.STATE_FIELDS) <= 8
    for v in f:
        assert -(1 << 63) <= v < 1 << 63
    m2 = replay.Memory.from_fields(f)
    assert m2.to_fields() == f
    for i in range(120, 260):
        assert m2.status(i) == m.status(i)


def test_replay_from_fields_refuses_bad_state():
    good = replay.Memory().to_fields()
    bad = (
        good[:4],
        (-1, 0, 0, 0, 0),
        (1 << 32, 0, 0, 0, 0),
        (5, 1 << 32, 0, 0, 0),
        (5, 1 << 4, 0, 0, 0),  # a window bit for an id below 1
        (0, 1, 0, 0, 0),
        (70, 0, 0, -1, 0),
        (70, 0, 0, 1001, 0),
        (70, 0, 0, 0, 1 << 63),
        (70, 0, 0, 0, "x"),
    )
    import support

    for f in bad:
        support.raises(ValueError, replay.Memory.from_fields, f)
    assert replay.Memory.from_fields((70, 0xFFFFFFFF, 0xFFFFFFFF, 3, -5)).failures == 3


def test_compact_key_change_either_order():
    for order in (0, 1):
        mk, t = setup()
        old_tok = tokenmint.compact_credit(mk, 5, 100)
        material = keys.key_material(VK, METER, 1)
        halves = tokenmint.compact_key_change(mk, material, 180)
        first, second = (halves[0], halves[1]) if order == 0 else (halves[1], halves[0])
        assert enter(t, tokenmint.compact_credit(mk, 1, 100)).code == rc.ACCEPT
        r1 = enter(t, first)
        assert r1.code == rc.KCT1 and r1.kind == "key_change" and r1.new_key is None
        assert t.key.revision == 0
        r2 = t.check(second, NOW)
        assert r2.code == rc.KCT2 and r2.word == "Key changed" and r2.new_key.revision == 1
        assert r2.new_key.key == keys.derive_meter_key(VK, METER, 1)
        assert r2.new_key.ken == 180
        t.commit(r2, NOW)
        assert t.key.revision == 1
        # old-key tokens rejected, new-key tokens accepted, spent ids stay spent
        assert t.check(old_tok, NOW).code == rc.CRC
        assert t.check(halves[0], NOW).code == rc.CRC
        mk1 = meter_key(revision=1)
        assert enter(t, tokenmint.compact_credit(mk1, 5, 100)).code == rc.ACCEPT
        assert enter(t, tokenmint.compact_credit(mk1, 1, 100)).code == rc.USED
        e_old = tokenmint.envelope_credit(mk, METER, 9, 100, NOW)
        assert t.check(e_old, NOW).code == rc.KEY_TYPE
        assert enter(t, tokenmint.envelope_credit(mk1, METER, 9, 100, NOW)).code == rc.ACCEPT
        assert reboot(t).check(tokenmint.compact_credit(mk1, 9, 1), NOW).code == rc.USED


def test_compact_key_change_needs_both_halves_in_time():
    mk, t = setup()
    h1, h2 = tokenmint.compact_key_change(mk, keys.key_material(VK, METER, 1), 255)
    assert enter(t, h1).code == rc.KCT1
    assert enter(t, h1).code == rc.KCT1  # the same half again: still waiting
    r = t.check(h2, NOW + tokens.KCT_TIMEOUT_S + 1)
    assert r.code == rc.KCT1  # the first half went stale: this one is staged instead
    assert enter(t, h2, NOW + 10).code == rc.KCT2
    # a half staged before a reboot is gone (RAM only)
    mk1 = t.key
    g1, g2 = tokenmint.compact_key_change(mk1, keys.key_material(VK, METER, 2), 255)
    assert enter(t, g1).code == rc.KCT1
    t2 = reboot(t)
    assert enter(t2, g2).code == rc.KCT1


def test_envelope_key_change():
    mk, t = setup()
    e = tokenmint.envelope_key_change(mk, METER, 4, keys.key_material(VK, METER, 1), 77, NOW)
    r = t.check(e, NOW)
    assert r.code == rc.KCT2 and r.token_id == 4 and r.new_key.revision == 1
    assert r.new_key.key == keys.derive_meter_key(VK, METER, 1) and r.new_key.ken == 77
    t.commit(r, NOW)
    assert t.key.revision == 1
    assert t.check(e, NOW).code == rc.KEY_TYPE  # made under revision 0
    assert t.check(tokenmint.compact_credit(mk, 5, 1), NOW).code == rc.CRC
    mk1 = meter_key(revision=1)
    assert t.check(tokenmint.compact_credit(mk1, 4, 1), NOW).code == rc.USED
    assert t.check(tokenmint.compact_credit(mk1, 5, 1), NOW).code == rc.ACCEPT


def test_last_key_revision_refuses_key_change():
    mk = keys.MeterKey(bytes(32), 255)
    t = tokens.Tokens(METER, mk)
    h1, h2 = tokenmint.compact_key_change(mk, bytes(10), 255)
    assert t.check(h1, NOW).code == rc.KEY_TYPE
    e = tokenmint.envelope_key_change(mk, METER, 1, bytes(10), 255, NOW)
    assert t.check(e, NOW).code == rc.KEY_TYPE


def test_lockout_doubling_cap_and_reboot():
    mk, t = setup()
    bad = "12345678901234567891"
    assert t.check(bad, NOW).code in (rc.CRC, rc.FORMAT)
    now = NOW
    expected = (0, 0, 10, 20, 40, 80, 160, 320, 640, 1280, 1280, 1280)
    for n, lock in enumerate(expected, 1):
        r = t.check(bad, now)
        assert r.code != rc.LOCKOUT and r.counted, (n, r)
        t.commit(r, now)
        assert t.memory.failures == n
        assert t.lockout_remaining(now) == lock, (n, lock)
        assert replay.lockout_s(n) == lock
        assert t.memory.locked_until() == (now + lock if lock else 0)
        if lock:
            r = t.check(tokenmint.compact_credit(mk, n, 1), now + lock - 1)
            assert r.code == rc.LOCKOUT and r.word == "Locked" and not r.counted
            t.commit(r, now + lock - 1)  # entries during the lock-out don't count
            assert t.memory.failures == n
            # the state survives a reboot
            t2 = reboot(t)
            assert t2.lockout_remaining(now + 1) == lock - 1
            assert t2.check(bad, now + lock - 1).code == rc.LOCKOUT
        now += lock
    # envelopes are never locked out and never count
    e = tokenmint.envelope_credit(mk, METER, 1, 5, NOW)
    t.commit(t.check(bad, now), now)
    assert t.check(e, now + 1).code == rc.ACCEPT
    forged = bytearray(e)
    forged[60] ^= 1
    r = t.check(bytes(forged), now + 1)
    assert r.code == rc.CRC and not r.counted
    # an accepted token clears the count
    t.commit(t.check(e, now + 5000), now + 5000)
    assert t.memory.failures == 0 and t.lockout_remaining(now + 5000) == 0


def test_lockout_forgiven_after_a_day_and_on_clock_jump_back():
    _, t = setup()
    bad = "12345678901234567891"
    for i in range(3):
        t.commit(t.check(bad, NOW + i), NOW + i)
    assert t.lockout_remaining(NOW + 2) == 10
    assert t.lockout_remaining(NOW - 100) == 0  # the clock went back: no endless lock
    t.commit(t.check(bad, NOW + 2 + 86400), NOW + 2 + 86400)
    assert t.memory.failures == 1
    t.commit(t.check(bad, None), None)  # no clock: counted, stamp kept
    assert t.memory.failures == 2 and t.memory.fail_stamp == NOW + 2 + 86400
