"""A live meter: the firmware on the simulated board in real time, talking MQTT to a real
broker through the cellular modem model (which opens real TCP connections).

    micropython tools/sim/live.py CONFIG.json   (MICROPYPATH: the tree and lib/;
                                                 tools/sim/live_host.py starts it)

CONFIG: {"dir": state directory (settings.json and meter.key are written there the
first time; the journal's flash image is kept there at quit, so a restart resumes),
"settings": {meter settings, with mqtt_host/mqtt_port/meter_id}, "key": hex of the
44-byte meter key record, "watts": load, "tick_ms": 1000, "start":
"YYYY-MM-DDTHH:MM:SS", "modem_timeouts": {...}}. The meter is made by the firmware's
own builder (firmware/start.py build), so comms, modem driver and app are wired as on
the board. Commands arrive on stdin, one JSON object a line, and each gets one JSON line
on stdout:
  {"do": "status"}                 balance, relay, control state, comms and modem figures
  {"do": "watts", "w": N}          change the load
  {"do": "fault", "name": F, ...}  modem faults: drop_link, reboot, mute (on), sim, reg
                                   (stat), slow (ms), garbage, reboot_on_send (on)
  {"do": "quit"}                   stop (the comms session closes cleanly)
Started, it prints {"ready": true}. Used by the end-to-end tests and tools/bench.py.
With "console": true in CONFIG, stdin and stdout are the technician's REPL port instead
(firmware/console.py, `tech` attached, as main.py runs it on the board) and the meter
stops when stdin closes: what tests/test_host_console.py drives with mpremote.
"""

import asyncio
import binascii
import json
import os
import select
import sys

from firmware import conffile
from firmware import money
from firmware.policy import CONTROL_STATES
from firmware.start import build, key_path_for, parse_settings
from firmware.wallclock import parse_datetime
from tools.sim.board import SimBoard
from tools.sim.rtclock import RealClock


def _out(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    try:
        sys.stdout.flush()
    except AttributeError:
        pass


def make(cfg):
    d = cfg["dir"]
    path = d + "/settings.json"
    try:  # a meter that ran before keeps its settings, key and flash (a restart)
        os.stat(path)
    except OSError:
        conffile.save(path, json.dumps(cfg["settings"]).encode())
        conffile.save(key_path_for(path), binascii.unhexlify(cfg["key"]))
    settings = parse_settings(json.dumps(cfg["settings"]))[0]
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
    board.mains.set_watts(cfg.get("watts", 0))
    app = build(path, board=board, tick_ms=cfg.get("tick_ms", 1000))
    return board, app


def status(board, app):
    m = app.meter
    c = app.comms
    st = {
        "balance": money.format_decimal(m.ledger.balance, m.settings.currency_decimals),
        "balance_units": m.ledger.balance,
        "credited": m.ledger.credited,
        "relay": board.relay_model.closed,
        "control_state": CONTROL_STATES[m.control.control_state],
        "open_reasons": m.control.open_reasons,
        "ticks": app.ticks,
        "late_ms_max": app.late_ms_max,
        "errors": app.errors,
        "boots": app.boots,
        "cmd_id": app.cmd_id,
        "price": m.price_now(),
        "settings": m.settings.raw,
        "events": [e[1] for e in m.log.last(50)],
    }
    if c is not None:
        st["online"] = c.online
        st["queued"] = len(c.queue)
        st["comms"] = c.stats
        st["modem"] = c.link.telemetry()
        st["modem_model"] = {
            "opens": board.modem_model.opens,
            "reboots": board.modem_model.reboots,
        }
    return st


def fault(board, cmd):
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
        s = app.comms.session
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
