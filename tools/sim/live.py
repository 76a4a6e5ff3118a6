"""A live meter: the firmware on the simulated board in real time, talking MQTT to a real
broker through the cellular modem model (which opens real TCP connections).

    micropython tools/sim/live.py CONFIG.json   (MICROPYPATH: the tree and lib/;
                                                 tools/sim/live_host.py starts it)

CONFIG: {"dir": state directory (settings.json and meter.key are written there the
first time; the journal's flash image is kept there at quit, so a restart resumes),
"settings": {meter settings, with mqtt_host/mqtt_port/meter_id}, "key": hex of the
44-byte meter key record, "watts": load, "tick_ms": 1000, "start":
"YYYY-MM-DDTHH:MM:SS", "modem_timeouts": {...}}. LoRaWAN mode ("transport": "lorawan"):
"netserver": [host, port] of a network-server stand-in (tools/sim/netserver.py: the
rak3172 model's air, JSON lines over TCP), "dev_eui", "join_eui" (16 hex digits each,
into the settings), "appkey" (32 hex digits, written to the state directory's lora.key
the first time), optional "duty_div" (the driver's duty cycle: 0 none, default the
region's), "lora_model": {the modem model's switches, e.g. "tx_ms"}; no broker then.
The meter is made by the firmware's
own builder (firmware/build.py), so comms, modem driver and app are wired as on
the board. Commands arrive on stdin, one JSON object a line, and each gets one JSON line
on stdout:
  {"do": "status"}                 balance, relay, control state, comms and modem figures
  {"do": "watts", "w": N}          change the load
  {"do": "fault", "name": F, ...}  modem faults: drop_link, reboot, mute (on), sim, reg
                                   (stat), slow (ms), garbage, reboot_on_send (on);
                                   LoRaWAN: reboot, garbage, reboot_on_send (on),
                                   join_fail (n), ack (on)
  {"do": "quit"}                   stop (the comms session closes cleanly)
Started, it prints {"ready": true}. Used by the end-to-end tests and tools/bench.py.
With "console": true in CONFIG, stdin and stdout are the technician's REPL port instead
(firmware/service/console.py, `tech` attached, as main.py runs it on the board) and the meter
stops when stdin closes: what tests/test_host_console.py drives with mpremote.
"""

import asyncio
import binascii
import json
import os
import select
import sys

from firmware.storage import conffile
from firmware.billing import money
from firmware.billing.policy import CONTROL_STATES
from firmware.build import build
from firmware.config import key_path_for, parse_settings, seal_settings
from firmware.billing.wallclock import parse_datetime
from tools.sim.board import SimBoard
from tools.sim.rtclock import RealClock


def _out(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    try:
        sys.stdout.flush()
    except AttributeError:
        pass


def _lora(cfg):
    """The settings of a LoRaWAN live meter (the config's EUIs in them)."""
    s = dict(cfg["settings"])
    if cfg.get("transport") == "lorawan":
        s["transport"] = "lorawan"
        s["lora_dev_eui"] = cfg["dev_eui"]
        s["lora_join_eui"] = cfg["join_eui"]
    return s


def make(cfg):
    d = cfg["dir"]
    path = d + "/settings.json"
    raw = _lora(cfg)
    lora = raw.get("transport") == "lorawan"
    try:  # a meter that ran before keeps its settings, key and flash (a restart)
        os.stat(path)
    except OSError:
        conffile.save(path, seal_settings(raw))
        conffile.save(key_path_for(path), binascii.unhexlify(cfg["key"]))
    if lora and not conffile.exists(d + "/lora.key"):
        from firmware.comms.lora import appkey as lorakey

        lorakey.save(d + "/lora.key", cfg["appkey"])
    settings = parse_settings(seal_settings(raw))[0]
    start = parse_datetime(cfg.get("start", "2026-11-25T10:00:00"))
    board = SimBoard(
        start,
        d,
        settings,
        relay_closed=cfg.get("relay_closed", False),
        meter="ideal",
        clock=RealClock(),
    )
    board.modem_timeouts = cfg.get("modem_timeouts")
    if lora:
        from drivers.backoff import Backoff

        ns = cfg.get("netserver")
        board.lora_air = (ns[0], ns[1]) if ns else None
        board.lora_kw = {"backoff": Backoff(500, 5000)}  # joins again within seconds
        if cfg.get("duty_div") is not None:
            board.lora_kw["duty_div"] = cfg["duty_div"]
        board.lora_model_kw = cfg.get("lora_model") or {}
    board.mains.set_watts(cfg.get("watts", 0))
    app = build(path, board=board, tick_ms=cfg.get("tick_ms", 1000))
    return board, app


def status(board, app):
    m = app.meter
    c = app.comms
    now = app.status()
    st = {
        "balance": money.format_decimal(now["balance"], m.settings.currency_decimals),
        "balance_units": now["balance"],
        "credited": now["credited"],
        "relay": board.relay_model.closed,
        "control_state": CONTROL_STATES[now["control_state"]],
        "open_reasons": now["open_reasons"],
        "ticks": now["ticks"],
        "late_ms_max": now["late_ms_max"],
        "errors": now["errors"],
        "boots": now["boots"],
        "cmd_id": now["cmd_id"],
        "price": now["price"],
        "settings": m.settings.raw,
        "events": [e[1] for e in m.log.last(50)],
    }
    if c is not None:
        st["online"] = now["online"]
        st["queued"] = now["queued"]
        st["comms"] = c.stats
        st["modem"] = now["modem"]
    lm = board.lora_model
    if lm is not None:
        st["lora_model"] = {
            "joins": lm.joins,
            "join_requests": lm.join_requests,
            "uplinks": len(lm.uplinks),
            "reboots": lm.reboots,
            "air_opens": lm.air_opens,
            "air_drops": lm.air_drops,
            "air_lines": lm.air_lines,
            "air_bad": lm.air_bad,
        }
    elif c is not None:
        st["modem_model"] = {
            "opens": board.modem_model.opens,
            "reboots": board.modem_model.reboots,
        }
    return st


def lora_fault(lm, cmd):
    name = cmd.get("name")
    if name == "reboot":
        lm.reboot()
    elif name == "garbage":
        lm.garbage()
    elif name == "reboot_on_send":
        lm.reboot_on_send = bool(cmd.get("on", True))
    elif name == "join_fail":
        lm.join_fail = cmd.get("n", 1)
    elif name == "ack":
        lm.ack = bool(cmd.get("on", True))
    else:
        raise ValueError("unknown LoRaWAN fault " + repr(name))


def fault(board, cmd):
    if board.lora_model is not None:
        return lora_fault(board.lora_model, cmd)
    mm = board.modem_model
    name = cmd.get("name")
    if name == "drop_link":
        mm.drop_link()
    elif name == "reboot":
        mm.reboot()
    elif name == "mute":
        mm.mute = bool(cmd.get("on", True))
    elif name == "sim":
        mm.sim = cmd.get("state", "absent")
    elif name == "reg":
        mm.set_reg(cmd.get("stat", 0))
    elif name == "slow":
        mm.slow_ms = cmd.get("ms", 0)
    elif name == "garbage":
        mm.garbage()
    elif name == "reboot_on_send":
        mm.reboot_on_send = bool(cmd.get("on", True))
    else:
        raise ValueError("unknown fault " + repr(name))


async def commands(board, app, stop):
    p = select.poll()
    p.register(sys.stdin, select.POLLIN)
    while True:
        if not p.poll(0):
            await app.board.clock.sleep_ms(20)
            continue
        line = sys.stdin.readline()
        if not line:
            break  # stdin closed: quit
        try:
            cmd = json.loads(line)
            do = cmd.get("do")
            if do == "status":
                _out(status(board, app))
            elif do == "watts":
                board.mains.set_watts(cmd["w"])
                _out({"ok": True})
            elif do == "fault":
                fault(board, cmd)
                _out({"ok": True})
            elif do == "quit":
                break
            else:
                _out({"error": "unknown command " + repr(do)})
        except Exception as e:
            _out({"error": repr(e)})
    stop.set()


async def console_main(cfg):
    from firmware.start import attach_console

    board, app = make(cfg)
    attach_console(app, cfg["dir"] + "/settings.json")
    tasks = [asyncio.create_task(t) for t in app.tasks()]
    await tasks[-1]  # the console: until its port closes
    board.save_image()
    for t in tasks:
        t.cancel()


async def main(cfg):
    if cfg.get("console"):
        return await console_main(cfg)
    board, app = make(cfg)
    stop = asyncio.Event()
    tasks = [asyncio.create_task(t) for t in app.tasks()]
    tasks.append(asyncio.create_task(commands(board, app, stop)))
    _out({"ready": True})
    await stop.wait()
    if app.comms is not None:
        app.comms.stop()
        s = getattr(app.comms, "session", None)
        if s is not None:
            try:
                await s.close(clean=True)
            except Exception:
                pass
    board.save_image()
    _out({"bye": status(board, app)})
    for t in tasks:
        t.cancel()


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        asyncio.run(main(json.load(f)))
