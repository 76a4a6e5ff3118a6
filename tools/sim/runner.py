"""Runs one normalised scenario through the real firmware under MicroPython.

Usage: micropython tools/sim/runner.py NORMALISED.json
Prints one JSON object per line: {"ev": [t_s, kind, balance, value]} for each meter
event, {"s": [t_s, power_w, balance, relay, state]} once per `series_s`,
{"p": t_s} as progress and finally {"final": {...}}.
"""

import asyncio
import json
import gc
import sys

from firmware.app import App
from firmware.settings import Settings
from tools.sim.board import SimBoard


def out(obj):
    sys.stdout.write(json.dumps(obj))
    sys.stdout.write("\n")


def main(path):
    with open(path) as f:
        sc = json.load(f)
    settings = Settings(sc["settings"])
    board = SimBoard(tuple(sc["start"]), sc["state_dir"], settings, sc.get("relay_closed", True))
    if sc.get("fresh", True):
        board.store.erase()
    app = App(board, settings, tick_ms=sc["step_s"] * 1000)
    meter = app.meter
    start = meter.clock.stamp()
    clock = board.clock
    meter.log.listeners.append(
        lambda stamp, kind, bal, value: out({"ev": [stamp - start, kind, bal, value]})
    )
    if sc.get("fresh", True):
        meter.ledger.balance = sc["balance"]
        meter.ledger.debt = sc.get("debt", 0)
        meter.control.after_credit()
        app.save()
    for at_s, watts in sc["load"]:
        clock.at(at_s * 1000, lambda w=watts: board.source.set_watts(w))
    answers = []
    for at_s, amount in sc["topups"]:
        clock.at(at_s * 1000, lambda a=amount, t=at_s: answers.append([t, app.topup(a)]))
    acts = {
        "button": app.press_button,
        "emergency_credit": meter.control.invoke_emergency_credit,
        "clear_lockout": meter.control.clear_lockout,
    }
    for at_s, what in sc.get("actions", []):
        clock.at(at_s * 1000, acts[what])
    series_s = sc.get("series_s", 60)
    progress_s = sc.get("progress_s", 3600)

    peak = [0]

    def sample():
        t_s = clock.now // 1000
        gc.collect()
        if gc.mem_alloc() > peak[0]:
            peak[0] = gc.mem_alloc()
        out(
            {
                "s": [
                    t_s,
                    board.source.watts if board.relay_model.closed else 0,
                    meter.ledger.balance,
                    1 if board.relay_model.closed else 0,
                    meter.control.credit_status(),
                ]
            }
        )
        if t_s % progress_s == 0:
            out({"p": t_s})

    clock.every(series_s * 1000, sample)

    async def go():
        for t in app.tasks():
            asyncio.create_task(t)
        await clock.run(sc["duration_s"] * 1000)

    asyncio.run(go())
    board.source.integrate()
    led = meter.ledger
    out(
        {
            "final": {
                "balance": led.balance,
                "carry": led.carry,
                "debt": led.debt,
                "energy_mwh": led.energy_wh * 1000 + led.energy_mwh,
                "true_mwh": board.source.true_mwh,
                "credited": led.credited,
                "charged": led.charged,
                "recovered": led.recovered,
                "relay": "closed" if board.relay_model.closed else "open",
                "control_state": meter.control.control_state,
                "state": meter.control.credit_status(),
                "relay_operations": board.relay_model.operations,
                "relay_faults": board.relay_model.faults,
                "ticks": app.ticks,
                "errors": app.errors,
                "saves": board.store.saves,
                "live_heap_peak": peak[0],
            }
        }
    )


if __name__ == "__main__":
    main(sys.argv[1])
