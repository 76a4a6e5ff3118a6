"""drivers/lorawan.py against the LoRaWAN modem model (tools/sim/rak3172.py), virtual time.

Portable (CPython pytest and `micropython`). Everything runs on tools/sim's VirtualClock:
join delays, backoffs and duty-cycle holds of minutes pass at once and times are exact.
The credit-path test runs an App on the simulated board and gives it the downlinks.
"""

import asyncio

import support

from drivers import lorawan as lw_mod
from drivers.backoff import Backoff
from drivers.lorawan import LoRaError, LoRaWAN, time_on_air_us
from firmware.tokens import keys
from firmware.comms.lora import payload as lp
from firmware.tokens import codes as rc
from tools.sim import tokenmint as mint
from tools.sim.rak3172 import LoRaModemModel
from tools.sim.uart import SimUART
from tools.sim.vclock import VirtualClock

DEV_EUI = "70B3D57ED0000001"
APP_EUI = "0000000000000001"
APP_KEY = "00112233445566778899AABBCCDDEEFF"


def _rig(dialect="rui3", region="EU868", model_kw=None, **kw):
    clock = VirtualClock()
    uart = SimUART(clock)
    model = LoRaModemModel(uart, clock, dialect=dialect)
    for k, v in (model_kw or {}).items():
        setattr(model, k, v)  # the model's switches, before anything runs
    events = []
    lw = LoRaWAN(
        uart,
        clock,
        region=region,
        dev_eui=DEV_EUI,
        app_eui=APP_EUI,
        app_key=APP_KEY,
        dialect=dialect,
        backoff=Backoff(1000, 16000, rand=lambda n: n - 1),  # jitter at its top: exact
        on_event=lambda k: events.append((clock.now, k)),
        **kw,
    )
    return clock, model, lw, events


def _play(clock, lw, scenario, end_ms=900000):
    """Run lw.run() and scenario() together in virtual time; scenario's result."""
    out = {}

    async def sc():
        try:
            out["v"] = await scenario()
        except Exception as e:
            out["e"] = e
        out["done"] = True

    async def main():
        asyncio.create_task(lw.run())
        asyncio.create_task(sc())
        while "done" not in out and clock.now < end_ms:
            await clock.run(clock.now + 100)
        lw.stop()
        await clock.run(clock.now + 100)

    asyncio.run(main())
    if "e" in out:
        raise out["e"]
    assert "done" in out, "scenario still waiting at %d ms" % clock.now
    return out.get("v")


async def _until(clock, pred, limit_ms=600000):
    start = clock.now
    while not pred():
        assert clock.now - start < limit_ms, "condition not met in time"
        await clock.sleep_ms(50)


def _joined(clock, lw):
    return _until(clock, lambda: lw.joined)


async def _error(coro):
    try:
        await coro
    except LoRaError as e:
        return e
    raise AssertionError("expected LoRaError")


# -- dialects -----------------------------------------------------------------------


def _forget_dialect_modules():
    import sys

    for name in list(sys.modules):
        if name.startswith("drivers.lorawan_"):
            del sys.modules[name]


def test_each_dialect_is_its_own_module_and_the_other_is_never_imported():
    import sys

    for mine, other in (("rui3", "e5"), ("e5", "rui3")):
        _forget_dialect_modules()
        clock, model, lw, events = _rig(dialect=mine)
        assert "drivers.lorawan_" + mine in sys.modules
        assert "drivers.lorawan_" + other not in sys.modules, other
        assert type(lw.dialect) is sys.modules["drivers.lorawan_" + mine].Dialect
        _play(clock, lw, lambda: _joined(clock, lw))
        assert lw.joined
        assert "drivers.lorawan_" + other not in sys.modules, other


def test_an_unknown_dialect_is_refused_naming_the_known_ones():
    import sys

    _forget_dialect_modules()
    clock = VirtualClock()
    kw = {"dev_eui": DEV_EUI, "app_eui": APP_EUI, "app_key": APP_KEY, "dialect": "rak811"}
    e = support.raises(ValueError, LoRaWAN, SimUART(clock), clock, **kw)
    assert "rak811" in str(e) and "rui3, e5" in str(e), str(e)
    assert not [n for n in sys.modules if n.startswith("drivers.lorawan_")]


# -- time on air and limits ----------------------------------------------------------


def test_time_on_air_follows_the_lora_formula():
    # 11-byte FRMPayload (24-byte PHYPayload): the well-known 61.7 ms at SF7 and
    # 1482.8 ms at SF12 (125 kHz, CR 4/5, 8 preamble symbols, low data rate optimise)
    assert time_on_air_us(7, 125, 11) == 61696
    assert time_on_air_us(12, 125, 11) == 1482752
    assert time_on_air_us(10, 125, 11) == 370688  # US915 DR0
    assert time_on_air_us(7, 250, 11) == 30848
    assert time_on_air_us(12, 125, 51) > time_on_air_us(12, 125, 11)
    clock, model, lw, _ = _rig(region="US915", dr=0)
    assert lw.max_payload() == 11 and lw.max_payload(1) == 53 and lw.max_payload(4) == 242
    assert lw.airtime_ms(11) == 371


def test_configuration_and_join_and_keys_stay_out_of_sight():
    clock, model, lw, events = _rig()
    support.drive(clock, lw.start())
    assert lw.joined and model.joined and events == [(6000, "joined")]
    assert model.keys == {"DEVEUI": DEV_EUI, "APPEUI": APP_EUI, "APPKEY": APP_KEY}
    assert model.cls == "C" and model.band == 4
    log = model.log
    assert log.index("AT+BAND=4") < log.index("AT+JOIN=1:0:8:1")
    t = lw.telemetry()
    assert t["joined"] and t["dr"] == 5 and t["joins"] == 1
    assert APP_KEY not in repr(t) and APP_KEY not in repr(lw.__dict__.get("at"))
    # a modem refusing the key: the error names the command, never the key
    clock, model, lw, _ = _rig(model_kw={"refuse": ("APPKEY",)})
    e = support.raises(LoRaError, support.drive, clock, lw.start())
    assert e.reason == lw_mod.CONFIG and "APPKEY" in str(e) and APP_KEY not in str(e)
    support.raises(ValueError, LoRaWAN, None, clock, dev_eui="xyz", app_eui=APP_EUI,
                   app_key=APP_KEY)  # fmt: skip


def test_join_retries_with_exponential_backoff_after_failures():
    clock, model, lw, events = _rig(model_kw={"join_fail": 3})

    async def sc():
        await _joined(clock, lw)

    _play(clock, lw, sc)
    assert model.join_requests == 4 and lw.join_failures == 3 and lw.joins == 1
    assert [k for _, k in events] == ["join_failed"] * 3 + ["joined"]
    # each failure is reported at join_ms; the next request waits 1 s, 2 s, 4 s
    t = model.join_times
    gaps = [t[i + 1] - t[i] for i in range(3)]
    assert [g - 6000 for g in gaps] == [1000, 2000, 4000], gaps
    assert lw.backoff.attempt == 0  # reset by the success


def test_a_lost_joined_event_is_recovered_by_asking_the_join_state():
    clock, model, lw, events = _rig(model_kw={"lose_event": 1})
    support.drive(clock, lw.start())
    assert lw.joined and "AT+NJS=?" in model.log and lw.join_failures == 0
    assert clock.now >= lw.timeouts["join"]  # after the join's deadline


def test_a_lost_tx_done_is_a_failed_uplink_with_a_deadline():
    clock, model, lw, _ = _rig(duty_div=0)

    async def sc():
        await _joined(clock, lw)
        model.lose_event = 1
        t0 = clock.now
        e = await _error(lw.send(2, b"\x01"))
        return e, clock.now - t0, await lw.send(2, b"\x02")

    e, took, ok = _play(clock, lw, sc)
    assert e.reason == lw_mod.TIMEOUT and lw.timeouts["tx"] <= took < lw.timeouts["tx"] + 500
    assert ok and lw.failed == 1 and lw.tx_done == 1


def test_a_join_that_never_succeeds_keeps_retrying_at_the_ceiling():
    clock, model, lw, events = _rig(model_kw={"join_fail": -1})

    async def sc():
        await clock.sleep_ms(200000)

    _play(clock, lw, sc)
    t = model.join_times
    assert len(t) >= 8 and not lw.joined and lw.state == lw_mod.DOWN
    assert t[-1] - t[-2] == 6000 + 16000  # backoff capped at 16 s
    assert lw.telemetry()["last_error"] == lw_mod.JOIN_FAILED


def test_uplinks_unconfirmed_confirmed_and_unacknowledged():
    clock, model, lw, _ = _rig(duty_div=0)

    async def sc():
        await _joined(clock, lw)
        r1 = await lw.send(2, b"\x01\x02", confirmed=False)
        r2 = await lw.send(3, b"\xaa", confirmed=True)
        model.ack = False
        r3 = await lw.send(3, b"\xbb", confirmed=True)
        return r1, r2, r3

    assert _play(clock, lw, sc) == (True, True, False)
    assert model.uplinks == [(2, b"\x01\x02", False), (3, b"\xaa", True), (3, b"\xbb", True)]
    assert "AT+SEND=2:0102" in model.log and "AT+CFM=1" in model.log
    t = lw.telemetry()
    assert t["uplinks"] == 3 and t["confirmed"] == 1 and t["failed"] == 1
    assert t["airtime_ms"] > 0


def test_older_spelling_of_the_confirmation_events():
    clock, model, lw, _ = _rig(duty_div=0, model_kw={"join_fail": 1})
    model.spaces = True  # "+EVT:JOIN FAILED", "+EVT:SEND CONFIRMED OK"

    async def sc():
        await _joined(clock, lw)
        return await lw.send(2, b"\x01", confirmed=True)

    assert _play(clock, lw, sc) is True
    assert lw.join_failures == 1 and lw.confirmed == 1


def test_sending_before_the_join_is_refused():
    clock, model, lw, _ = _rig()
    e = support.raises(LoRaError, support.drive, clock, lw.send(2, b"\x01"))
    assert e.reason == lw_mod.NOT_JOINED and model.uplinks == []
    support.raises(ValueError, support.drive, clock, lw.send(0, b"\x01"))


def _downlinks(rx_format):
    clock, model, lw, _ = _rig(duty_div=0)
    model.rx_format = rx_format

    async def sc():
        await _joined(clock, lw)
        model.downlink(15, b"\x00\x01\x02\xff", rssi=-70, snr=-3)  # class C: any time
        a = await lw.recv(5000)
        model.cls = "A"  # class A: after the next uplink, in RX1
        model.downlink(16, b"\x10\x20", rssi=-88, snr=7)
        none = await lw.recv(3000)
        await lw.send(2, b"\x05")
        b = await lw.recv(5000)
        return a, none, b

    return _play(clock, lw, sc), lw


def test_one_line_downlinks_are_parsed():
    (a, none, b), lw = _downlinks("one")
    assert a == (15, b"\x00\x01\x02\xff", -70, -3)
    assert none is None and b == (16, b"\x10\x20", -88, 7)
    t = lw.telemetry()
    assert t["rssi"] == -88 and t["snr"] == 7 and t["downlinks"] == 2


def test_older_three_line_downlinks_are_parsed():
    (a, none, b), lw = _downlinks("multi")
    assert a == (15, b"\x00\x01\x02\xff", -70, -3)
    assert none is None and b == (16, b"\x10\x20", -88, 7)
    assert lw.unknown_events == 0


def test_lost_downlink_is_not_invented_and_the_inbox_is_bounded():
    clock, model, lw, _ = _rig(inbox=2)

    async def sc():
        await _joined(clock, lw)
        model.downlink(15, b"\x01", lost=True)
        for i in range(4):
            model.downlink(15, bytes([i + 2]))
        await clock.sleep_ms(500)

    _play(clock, lw, sc)
    assert model.lost == 1 and lw.downlinks == 4 and lw.dropped == 2
    assert lw.take()[1] == b"\x04" and lw.take()[1] == b"\x05" and lw.take() is None


def test_duplicate_downlink_is_delivered_twice_and_credited_once():
    from firmware.app import App
    from firmware.billing.settings import Settings
    from tools.sim.board import SimBoard

    meter_id = 4711002
    key = keys.MeterKey(keys.derive_meter_key(bytes(range(32)), meter_id))
    raw = {
        "meter_id": str(meter_id),
        "tariff": {"type": "flat", "price_per_kwh": "1.0000"},
        "low_credit": "2.00",
        "reconnect_min": "1.00",
    }
    s = Settings(raw)
    board = SimBoard((2026, 1, 5, 12 * 3600), None, s, meter="ideal", flash_sectors=4)
    asyncio.new_event_loop()
    app = App(board, s, key=key)
    token = mint.compact_credit(key, 9, 1234)
    envl = mint.envelope_credit(key, meter_id, 10, 500, 26 * 365 * 86400)
    clock, model, lw, _ = _rig(duty_div=0)
    up = lp.Uplinks(key.msg_mac(), keys.meter_id_bytes(meter_id), 1)

    async def sc():
        await _joined(clock, lw)
        model.downlink(lp.TOPUP_PORT, lp.compact_bytes(token), dup=True)
        got = []
        for _ in range(2):
            d = await lw.recv(5000)
            r, bal, tid = lp.apply_downlink(app, d[1])  # the credit path decides
            await lw.send(lp.UPLINK_PORT, up.ack(r.code, tid, bal))  # and is answered
            got.append((d, r, bal, tid))
        return got

    got = _play(clock, lw, sc)
    assert [g[0][:2] for g in got] == [(lp.TOPUP_PORT, lp.compact_bytes(token))] * 2
    (_, r1, b1, t1), (_, r2, b2, t2) = got
    assert r1.code == rc.ACCEPT and b1 == 1234 and t1 == 9
    assert r2.code == rc.USED and b2 == 1234 and t2 == 9
    assert app.meter.ledger.credited == 1234
    # the back office reads the two acks off the network server
    rx = lp.Receiver(key.msg_mac(), keys.meter_id_bytes(meter_id))
    acks = [rx.decode(u[1]) for u in model.uplinks]
    assert [(a["code"], a["token16"], a["balance"]) for a in acks] == [
        (rc.ACCEPT, 9, 1234),
        (rc.USED, 9, 1234),
    ]
    r, bal, tid = lp.apply_downlink(app, envl)  # an envelope where the data rate allows
    assert r.code == rc.ACCEPT and bal == 1734 and tid == 10
    assert lp.apply_downlink(app, envl)[0].code == rc.USED
    assert lp.apply_downlink(app, b"\xff" * 9) is None  # not a token: not the credit path


def test_oversized_uplink_is_refused_and_never_sent():
    clock, model, lw, _ = _rig(region="US915", duty_div=0)
    model.band = 5

    async def sc():
        await _joined(clock, lw)
        model.dr = 0  # ADR moved the meter to DR0: 11 bytes
        e = await _error(lw.send(2, bytes(12)))
        ok = await lw.send(2, bytes(11))
        model.dr = 1
        ok2 = await lw.send(2, bytes(53))
        e2 = await _error(lw.send(2, bytes(54)))
        return e, ok, ok2, e2

    e, ok, ok2, e2 = _play(clock, lw, sc)
    assert e.reason == lw_mod.TOO_LONG and "12 bytes > 11 at US915 DR0" in str(e)
    assert e2.reason == lw_mod.TOO_LONG and ok and ok2
    assert model.oversize == 0 and [len(u[1]) for u in model.uplinks] == [11, 53]
    assert lw.telemetry()["refused"] == 2


def test_duty_cycle_holds_an_uplink_and_refuses_one_that_cannot_wait():
    clock, model, lw, _ = _rig(dr=0)  # EU868 DR0 (SF12): 1 %
    ticks = [0]

    async def ticker():
        while True:
            ticks[0] += 1
            await clock.sleep_ms(100)

    async def sc():
        asyncio.create_task(ticker())
        await _joined(clock, lw)
        await lw.send(2, bytes(11))
        t_first = clock.now
        e = await _error(lw.send(2, bytes(11), timeout_ms=30000))
        before = ticks[0]
        await lw.send(2, bytes(11))  # held, then sent
        return e, t_first, ticks[0] - before

    e, t_first, ticked = _play(clock, lw, sc)
    assert e.reason == lw_mod.DUTY_CYCLE
    toa = lw.airtime_ms(11)
    assert toa == 1483
    t = model.uplink_times
    assert len(t) == 2 and t[1] - t[0] >= toa * 100 and t[1] - t[0] < toa * 100 + 1000
    assert ticked > 1000  # the loop ran on through the 148 s hold
    assert lw.telemetry()["airtime_ms"] == 2 * 1483 - 1 and lw.refused == 1


def test_a_reboot_ends_a_duty_cycle_hold_early():
    clock, model, lw, _ = _rig(dr=0)

    async def sc():
        await _joined(clock, lw)
        await lw.send(2, bytes(11))
        t0 = clock.now
        model.reboot(delay_ms=10000)  # 10 s into the 148 s hold
        e = await _error(lw.send(2, bytes(11)))
        return e, clock.now - t0

    e, took = _play(clock, lw, sc)
    assert e.reason == lw_mod.MODEM_RESET and took < 20000 and len(model.uplinks) == 1


def test_daily_airtime_budget():
    clock, model, lw, _ = _rig(dr=0, duty_div=0, daily_airtime_ms=3000)

    async def sc():
        await _joined(clock, lw)
        await lw.send(2, bytes(11))
        await lw.send(2, bytes(11))  # 2.97 s of 3 s used
        e = await _error(lw.send(2, bytes(11)))
        return e, lw.hold_ms(11)

    e, wait = _play(clock, lw, sc)
    assert e.reason == lw_mod.DUTY_CYCLE and len(model.uplinks) == 2
    assert 40000000 < wait < 86400000  # most of a day for the bucket to drain enough


def test_modem_reacting_with_its_own_duty_cycle_refusal():
    clock, model, lw, _ = _rig(duty_div=0, model_kw={"duty": True})

    async def sc():
        await _joined(clock, lw)
        await lw.send(2, bytes(5))
        return await _error(lw.send(2, bytes(5)))

    e = _play(clock, lw, sc)
    assert e.reason == lw_mod.DUTY_CYCLE and model.duty_refusals == 1


def test_modem_reboot_mid_uplink_fails_it_then_the_driver_joins_again():
    clock, model, lw, events = _rig(duty_div=0)

    async def sc():
        await _joined(clock, lw)
        model.reboot_on_send = True
        e = await _error(lw.send(2, b"\x01", confirmed=True))
        await _until(clock, lambda: lw.joins == 2)
        ok = await lw.send(2, b"\x02", confirmed=True)
        return e, ok

    e, ok = _play(clock, lw, sc)
    assert e.reason == lw_mod.MODEM_RESET and ok
    assert model.reboots == 1 and lw.resets == 1 and lw.failed == 1
    kinds = [k for _, k in events]
    assert kinds == ["joined", "reset", "joined"]
    assert model.log.count("AT+APPKEY=<elided>") == 2  # configured again after the boot


def test_garbage_on_the_line_is_ignored():
    clock, model, lw, _ = _rig(duty_div=0, model_kw={"garbage_every_ms": 250})

    async def sc():
        await _joined(clock, lw)
        model.garbage(b"\r\n+EVT:RX_1:zz:yy\r\n")
        model.garbage(b"\r\n+EVT:7:nothex\r\n")
        ok = await lw.send(2, b"\x01", confirmed=True)
        model.downlink(20, b"\x42")
        return ok, await lw.recv(5000)

    ok, d = _play(clock, lw, sc)
    assert ok and d[:2] == (20, b"\x42")
    assert lw.at.noise > 5 and lw.unknown_events >= 3


def test_wio_e5_dialect_join_retry_uplinks_and_downlinks():
    clock, model, lw, events = _rig(dialect="e5", duty_div=0, model_kw={"join_fail": 1})

    async def sc():
        await _joined(clock, lw)
        r1 = await lw.send(8, b"\x01\xa2", confirmed=True)
        model.ack = False
        r2 = await lw.send(9, b"\x03", confirmed=True)
        model.downlink(15, b"Hello", rssi=-43, snr=10)
        d = await lw.recv(5000)
        model.cls = "A"
        model.downlink(16, b"\x99")
        r3 = await lw.send(9, b"\x04")
        d2 = await lw.recv(5000)
        return r1, r2, d, r3, d2

    r1, r2, d, r3, d2 = _play(clock, lw, sc)
    assert (r1, r2, r3) == (True, False, True)
    assert d[:2] == (15, b"Hello") and d2[:2] == (16, b"\x99")
    assert lw.rssi == -61 and lw.snr == 9  # the RXWIN line of the last downlink
    assert 'AT+CMSGHEX="01A2"' in model.log and "AT+PORT=9" in model.log
    assert model.uplinks[0] == (8, b"\x01\xa2", True)
    assert lw.join_failures == 1 and lw.joins == 1
    assert model.keys["APPKEY"] == APP_KEY and model.keys["DEVEUI"] == DEV_EUI


def test_wio_e5_key_refused_without_showing_it():
    clock, model, lw, _ = _rig(dialect="e5", model_kw={"refuse": ("KEY",)})
    e = support.raises(LoRaError, support.drive, clock, lw.start())
    assert e.reason == lw_mod.CONFIG and "APPKEY" in str(e) and APP_KEY not in str(e)
    assert not lw.joined and model.join_requests == 0


def test_wio_e5_oversize_and_reboot():
    clock, model, lw, _ = _rig(dialect="e5", duty_div=0)

    async def sc():
        await _joined(clock, lw)
        e = await _error(lw.send(8, bytes(243)))
        model.joined = False  # the network forgot the session
        e2 = await _error(lw.send(8, b"\x01"))
        await _until(clock, lambda: lw.joins == 2)
        return e, e2

    e, e2 = _play(clock, lw, sc)
    assert e.reason == lw_mod.TOO_LONG and e2.reason == lw_mod.NOT_JOINED
    assert model.oversize == 0
