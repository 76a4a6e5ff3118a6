"""firmware/comms/lora/conversation.py: the meter's LoRaWAN conversation, on the simulated board.

Portable (CPython pytest and `micropython`), virtual time. The meter is made by the
firmware's own builder (firmware/build.py: settings.json, meter.key and lora.key in
a temporary directory) on a SimBoard whose LoRaWAN modem is tools/sim/rak3172.py's model
with its in-process network side. What the network receives is read back with
lorapayload.Receiver under the meter's key, as the back office would.
"""

import asyncio

import support

from drivers import lorawan as lw_mod
from drivers.backoff import Backoff
from firmware.storage import conffile, jsonseal
from firmware.tokens import keys
from firmware.comms.lora import appkey as lorakey
from firmware.billing import events as ev
from firmware.comms.lora import payload as lp
from firmware import config
from firmware.build import build
from firmware.tokens import codes as rc
from tools.sim import tokenmint as mint
from tools.sim import commission
from firmware.comms.lora.conversation import AIR_EVENTS, LoRaComms
from firmware.billing.settings import LORA_REGIONS, Settings
from tools.sim.board import SimBoard

METER_ID = 4711002
KEY = keys.MeterKey(keys.derive_meter_key(bytes(range(32)), METER_ID))
APPKEY = "00112233445566778899AABBCCDDEEFF"
DEV_EUI = "70B3D57ED0000001"
JOIN_EUI = "0000000000000001"
MONDAY_NOON = (2026, 1, 5, 12 * 3600)
RAW = {
    "meter_id": str(METER_ID),
    "tariff": {"type": "flat", "price_per_kwh": "100.0000"},  # 3.6 kW: 10 cents a second
    "low_credit": "2.00",
    "reconnect_min": "1.00",
    "transport": "lorawan",
    "lora_dev_eui": DEV_EUI,
    "lora_join_eui": JOIN_EUI,
}


def _meter(d, extra=None, model_kw=None, lora_kw=None, appkey=APPKEY):
    raw = dict(RAW)
    raw.update(extra or {})
    path = d + "/settings.json"
    support.write_file(path, jsonseal.dumps(raw))
    conffile.save(config.key_path_for(path), KEY.to_bytes())
    if appkey is not None:
        lorakey.save(d + "/lora.key", appkey)
    board = SimBoard(MONDAY_NOON, d, Settings(raw), meter="ideal", flash_sectors=4)
    kw = {"backoff": Backoff(1000, 16000, rand=lambda n: n - 1), "poll_ms": 20}
    kw.update(lora_kw or {})
    board.lora_kw = kw
    board.lora_model_kw = model_kw or {}
    asyncio.new_event_loop()
    app = build(path, board=board)
    return board, app


def _with_meter(fn, **kw):
    """fn(board, app) on a fresh meter; support.run_app's end times are absolute."""
    d = support.tmpdir()
    try:
        board, app = _meter(d, **kw)
        return fn(board, app)
    finally:
        support.rmtree(d)


def _received(board):
    """What the back office reads off the network server: the decoded uplinks, and
    how many the receiver refused (replays)."""
    rx = lp.Receiver(KEY.msg_mac(), keys.meter_id_bytes(METER_ID))
    got, refused = [], 0
    for port, data, confirmed in board.lora_model.uplinks:
        assert port == lp.UPLINK_PORT and len(data) == lp.SIZE
        try:
            f = rx.decode(data)
        except ValueError:
            refused += 1
            continue
        f["confirmed"] = confirmed
        got.append(f)
    return got, refused


def _of(got, kind):
    return [f for f in got if f["type"] == kind]


def _down(board, payload, dup=False):
    return lambda: board.lora_model.downlink(lp.TOPUP_PORT, payload, dup=dup)


def test_settings_name_the_field_and_the_regions_are_the_drivers():
    for name in LORA_REGIONS:
        assert LORA_REGIONS[name] == len(lw_mod.REGIONS[name][0])
    assert sorted(LORA_REGIONS) == sorted(lw_mod.REGIONS)
    s = Settings({})
    assert s.transport == "cellular" and s.lora_class == "C" and s.lora_dr is None
    assert s.lora_state_period_s == 3600 and s.lora_region == "EU868"
    assert Settings(RAW).transport == "lorawan"
    for bad, field in (
        ({"transport": "wifi"}, "transport"),
        ({"lora_region": "CN470"}, "lora_region"),
        ({"lora_class": "B"}, "lora_class"),
        ({"lora_dr": 5, "lora_region": "US915"}, "lora_dr"),
        ({"lora_dr": "3"}, "lora_dr"),
        ({"lora_dev_eui": "70B3D57ED000000"}, "lora_dev_eui"),
        ({"lora_join_eui": "00000000000000XY"}, "lora_join_eui"),
        ({"lora_state_period_s": 60}, "lora_state_period_s"),
        ({"meter_id": "0"}, "meter_id"),
    ):
        raw = dict(RAW)
        raw.update(bad)
        e = support.raises(ValueError, Settings, raw)
        assert str(e).startswith(field + ":"), (bad, str(e))
    e = support.raises(ValueError, Settings, {"transport": "lorawan", "meter_id": "1"})
    assert str(e).startswith("lora_dev_eui:")
    assert Settings(dict(RAW, lora_dr=4, lora_region="US915")).lora_dr == 4


def test_the_appkey_file_round_trips_and_never_shows_the_key():
    d = support.tmpdir()
    try:
        k = lorakey.save(d + "/lora.key", APPKEY)
        assert APPKEY not in repr(k) and APPKEY not in str(k)
        got, source, reason = conffile.load(d + "/lora.key", lorakey.load)
        assert source == conffile.MAIN and got.hex() == APPKEY
        data = bytearray(support.read_file(d + "/lora.key"))
        assert len(data) == lorakey.SIZE
        data[7] ^= 1
        e = support.raises(ValueError, lorakey.load, bytes(data))
        assert "CRC" in str(e) and APPKEY not in str(e)
        support.raises(ValueError, lorakey.LoRaKey, "00" * 15)
    finally:
        support.rmtree(d)


def test_a_downlinked_compact_token_credits_once_and_is_acked():
    token = mint.compact_credit(KEY, 9, 1234)

    def go(board, app):
        assert isinstance(app.comms, LoRaComms) and not app.comms.online
        support.run_app(board, app, 60000, [(20000, _down(board, lp.compact_bytes(token)))])
        got, refused = _received(board)
        acks = _of(got, "ack")
        assert [(a["code"], a["token16"], a["balance"]) for a in acks] == [(rc.ACCEPT, 9, 1234)]
        assert acks[0]["confirmed"] and refused == 0
        assert app.meter.ledger.credited == 1234 and app.errors == 0
        # the first uplink of the start is a state (the join), boot journaled before it
        assert got[0]["type"] == "state" and got[0]["boot"] == app.boots and app.boots_saved
        after = [f for f in got if f["seq"] > acks[0]["seq"] and f["type"] == "state"]
        assert after and after[0]["balance"] == 1234
        assert _of(got, "meter")[0]["energy_wh"] == 0
        assert [f["seq"] for f in got] == list(range(1, len(got) + 1))  # air order
        st = app.comms.stats
        assert st["topups"] == 1 and st["acks"] == 1 and app.comms.outbox.items == []
        assert board.lora_model.oversize == 0 and board.lora_model.keys["APPKEY"] == APPKEY

    _with_meter(go)


def test_a_duplicate_downlink_answers_used_and_credits_nothing():
    token = mint.compact_credit(KEY, 12, 500)
    data = lp.compact_bcd(token)  # the 10-byte BCD form this time

    def go(board, app):
        calls = [(15000, _down(board, data, dup=True)), (60000, _down(board, data))]
        support.run_app(board, app, 100000, calls)
        got, _ = _received(board)
        acks = [(a["code"], a["token16"], a["balance"]) for a in _of(got, "ack")]
        assert acks == [(rc.ACCEPT, 12, 500), (rc.USED, 12, 500), (rc.USED, 12, 500)]
        assert app.meter.ledger.credited == 500 and app.comms.stats["topups"] == 3
        # not a token at all: answered format, credits nothing
        support.run_app(board, app, 130000, [(1000, _down(board, b"\xff" * 9))])
        got, _ = _received(board)
        a = _of(got, "ack")[-1]
        assert (a["code"], a["token16"]) == (rc.FORMAT, 0) and app.meter.ledger.credited == 500

    _with_meter(go)


def test_events_and_state_go_up_within_the_duty_cycle():
    token = mint.compact_credit(KEY, 3, 300)  # 3.00 at 10 cents a second: 30 s of supply

    def go(board, app):
        board.mains.set_watts(3600)
        support.run_app(board, app, 200000, [(20000, _down(board, lp.compact_bytes(token)))])
        got, refused = _received(board)
        model = board.lora_model
        events = [f["event"] for f in _of(got, "event")]
        for kind in ("reconnect", "low_credit", "disconnect"):
            assert kind in events, events
        for kind in events:
            assert kind in AIR_EVENTS
        assert "topup" not in events and app.comms.stats["skipped"] > 0
        assert not [f for f in _of(got, "event") if f["confirmed"]]
        states = _of(got, "state")
        assert states[-1]["control_state"] == "disconnected" and states[-1]["relay"] == "open"
        assert any(s["relay"] == "closed" for s in states)
        # EU868's 1 %: at DR5 an 11-byte uplink (62 ms) holds the band 6.2 s
        lw = app.comms.link
        gap = lw.airtime_ms(11, 5) * 100
        t = model.uplink_times
        assert len(t) == len(got) + refused >= 8
        assert min(t[i + 1] - t[i] for i in range(len(t) - 1)) >= gap
        assert model.duty_refusals == 0 and app.comms.stats["held"] > 0
        assert app.errors == 0 and app.ticks >= 195

    _with_meter(go, model_kw={"duty": True})


def test_the_state_and_the_meter_reading_every_period():
    def go(board, app):
        board.mains.set_watts(360)  # 0.1 Wh a second, 1 cent a second
        commission.open_account(app.meter, 100000)
        support.run_app(board, app, 1250000)
        got, _ = _received(board)
        meters = _of(got, "meter")
        assert len(meters) == 3  # at the start, at 600 s and at 1200 s
        assert meters[-1]["energy_wh"] >= 119 and meters[-1]["errors"] == 0
        assert len(_of(got, "state")) >= 3

    _with_meter(go, extra={"lora_state_period_s": 600}, lora_kw={"poll_ms": 100})


def test_join_failures_then_success_and_nothing_goes_up_before():
    def go(board, app):
        support.run_app(board, app, 20000)
        model = board.lora_model
        assert not app.comms.online and model.uplinks == [] and model.join_requests == 3
        assert app.comms.outbox.items and app.ticks >= 19 and app.errors == 0
        support.run_app(board, app, 60000)
        got, _ = _received(board)
        assert app.comms.online and model.joins == 1 and app.comms.link.join_failures == 3
        assert got and got[0]["type"] == "state"

    _with_meter(go, model_kw={"join_fail": 3})


def test_a_modem_reboot_rejoins_and_an_ack_cut_by_it_is_sent_again_unchanged():
    token = mint.compact_credit(KEY, 21, 700)

    def go(board, app):
        model = board.lora_model

        def cut_the_ack():
            model.reboot_on_send = True  # the next uplink (the ack) dies with the modem
            model.downlink(lp.TOPUP_PORT, lp.compact_bytes(token))

        support.run_app(board, app, 120000, [(30000, cut_the_ack)])
        assert model.reboots == 1 and app.comms.link.resets == 1
        assert app.comms.stats["joins"] == 2 and app.meter.ledger.credited == 700
        sent = [u[1] for u in model.uplinks]
        acks = [u for u in sent if u[0] >> 6 == lp.ACK]
        assert len(acks) == 2 and acks[0] == acks[1]  # the same bytes: the same seq
        got, refused = _received(board)
        assert refused == 1  # the back office drops the repeat
        assert [(a["code"], a["token16"]) for a in _of(got, "ack")] == [(rc.ACCEPT, 21)]
        joins = [f for f in got if f["type"] == "state"]
        assert len(joins) >= 2 and app.errors == 0

    _with_meter(go)


def test_an_uplink_the_data_rate_cannot_carry_is_never_sent():
    token = mint.compact_credit(KEY, 5, 250)

    def go(board, app):
        model = board.lora_model

        def faster():
            model.dr = 1  # ADR moves the meter to DR1: 53 bytes (52 with the margin)

        calls = [(20000, _down(board, lp.compact_bytes(token))), (40000, faster)]
        support.run_app(board, app, 39000, calls[:1])
        assert model.uplinks == [] and model.oversize == 0
        assert app.comms.stats["refused"] >= 3 and app.meter.ledger.credited == 250
        assert app.comms.link.telemetry()["refused"] == app.comms.stats["refused"]
        second = lp.compact_bytes(mint.compact_credit(KEY, 6, 100))
        support.run_app(board, app, 60000, [(1000, faster), (2000, _down(board, second))])
        got, _ = _received(board)
        acks = [(a["code"], a["token16"]) for a in _of(got, "ack")]
        assert acks == [(rc.ACCEPT, 6)] and model.oversize == 0  # the first ack was dropped
        assert _of(got, "state")[-1]["balance"] == 350
        assert app.errors == 0

    _with_meter(
        go,
        extra={"lora_region": "US915"},
        model_kw={"dr": 0},
        lora_kw={"fopts_margin": 1},  # 10 bytes of room at US915 DR0
    )


def test_a_fault_in_the_conversation_is_counted_and_the_next_top_up_goes_through():
    first = lp.compact_bytes(mint.compact_credit(KEY, 40, 100))
    second = lp.compact_bytes(mint.compact_credit(KEY, 41, 200))

    def go(board, app):
        real = app.intake.enter
        calls = []

        def broken_once(token):
            calls.append(token)
            if len(calls) == 1:
                raise RuntimeError("flash busy")
            return real(token)

        app.intake.enter = broken_once
        support.run_app(
            board, app, 60000, [(20000, _down(board, first)), (30000, _down(board, second))]
        )
        got, _ = _received(board)
        assert [(a["code"], a["token16"]) for a in _of(got, "ack")] == [(rc.ACCEPT, 41)]
        assert app.meter.ledger.credited == 200 and app.errors == 1
        st = app.comms.stats
        assert st["errors"] == 1 and "flash busy" in st["last_error"] and app.ticks >= 59
        # the back office sends the first again: it was never credited, so it is now
        support.run_app(board, app, 80000, [(1000, _down(board, first))])
        got, _ = _received(board)
        assert _of(got, "ack")[-1]["code"] == rc.ACCEPT and app.meter.ledger.credited == 300

    _with_meter(go)


def test_no_usable_appkey_means_no_lora_and_the_meter_meters():
    for appkey in (None, "corrupt"):
        d = support.tmpdir()
        try:
            if appkey == "corrupt":
                support.write_file(d + "/lora.key", b"PLK1" + bytes(20))
            board, app = _meter(d, appkey=None)
            assert app.comms is None and board.lora_model is None
            support.run_app(board, app, 5000)
            assert app.ticks >= 4 and app.errors == 0
        finally:
            support.rmtree(d)


def test_tech_status_shows_the_lora_link():
    from firmware.service import tech

    def go(board, app):
        support.run_app(board, app, 30000)
        tech.attach(app, board.state_dir + "/settings.json")
        st = tech.status()
        assert st["online"] is True and st["queued"] == 0
        assert st["modem_state"] == lw_mod.JOINED and st["modem_dr"] == 5
        assert st["modem_airtime_ms"] > 0
        assert APPKEY not in repr(st) and APPKEY not in repr(app.comms.telemetry())
        assert app.comms.telemetry()["joined"] and app.comms.telemetry()["seq"] >= 2
        board.lora_model.downlink(lp.TOPUP_PORT, b"\x00" * 9, rssi=-97, snr=-4)
        support.run_app(board, app, 32000)
        assert tech.status()["modem_rssi_dbm"] == -97 and tech.status()["modem_snr"] == -4

    _with_meter(go)


def test_the_event_list_names_real_event_kinds():
    names = [getattr(ev, n) for n in dir(ev) if n.isupper()]
    for kind in AIR_EVENTS:
        assert kind in names and kind in lp.EVENT_KINDS
