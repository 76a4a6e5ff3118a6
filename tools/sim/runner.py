"""Runs one normalised scenario through the real firmware under MicroPython.

Usage: micropython tools/sim/runner.py NORMALISED.json [FLASH_SECTORS]
Prints one JSON object per line: {"ev": [t_s, kind, balance, value]} for each meter
event, {"s": [t_s, power_w, balance, relay, state]} once per `series_s`,
{"p": t_s} as progress and finally {"final": {...}}.
"""

import gc
import sys

from tools.sim.nor import NorFlash, PowerCut

# The flash chip's bytes first, while the heap is empty: one large block that later
# allocations cannot fragment out of a small (-X heapsize=64wk) heap.
FLASH = NorFlash(int(sys.argv[2])) if len(sys.argv) > 2 and int(sys.argv[2]) else None

import asyncio  # noqa: E402
import json  # noqa: E402

# The firmware's modules (code and module globals) before anything else of the simulator,
# so the heap they take is known apart from the data the week allocates: `code_heap`
# (tools/bench.py's code/data split of the heap).
gc.collect()
_HEAP_NO_FIRMWARE = gc.mem_alloc()
import drivers.indicator  # noqa: E402, F401  (the simulated board's drivers)
import drivers.relay  # noqa: E402, F401
from firmware.storage import conffile  # noqa: E402
from firmware import config  # noqa: E402
from firmware.build import build  # noqa: E402
from firmware.tokens import codes as tokencodes  # noqa: E402
from firmware.billing.settings import Settings  # noqa: E402

gc.collect()
CODE_HEAP = gc.mem_alloc() - _HEAP_NO_FIRMWARE
from tools.sim.board import SimBoard  # noqa: E402
from tools.sim import commission  # noqa: E402
from tools.sim.screenshots import Screenshots  # noqa: E402

gc.collect()
IMPORTED_HEAP = gc.mem_alloc()  # everything imported, nothing of the meter built yet


def _firmware_modules():
    return [m for m in sys.modules if m.startswith("firmware") or m.startswith("drivers")]


_IMPORTED = _firmware_modules()


def out(obj):
    sys.stdout.write(json.dumps(obj))
    sys.stdout.write("\n")


SPI_GARBAGE_EVERY = 20  # "spi_garbage": one MISO data byte in 20 gets a flipped bit


def inject(chip, what):
    """Scenario fault steps on the chip model."""
    if chip is None:
        raise ValueError("faults need the chip meter")
    if what == "absent_high":
        chip.absent = "high"
    elif what == "absent_low":
        chip.absent = "low"
    elif what == "present":
        chip.absent = None
    elif what == "miso_flip":
        chip.miso_flip(1)
    elif what == "chip_reset":
        chip.reset()
    elif what == "corrupt_cs":
        chip.corrupt(0x23, chip.peek(0x23) ^ 0x0100)  # ESD flips a bit of Lgain
    elif what == "spi_garbage":
        chip.noise_every = SPI_GARBAGE_EVERY
    elif what == "spi_clean":
        chip.noise_every = 0


def main(path):
    with open(path) as f:
        sc = json.load(f)
    settings = Settings(sc["settings"])
    board = SimBoard(
        tuple(sc["start"]),
        sc["state_dir"],
        settings,
        sc.get("relay_closed", True),
        meter=sc.get("meter", "chip"),
        mc=sc.get("meter_constant", 3200),
        store=sc.get("store", "journal"),
        flash=FLASH,
        display=bool(sc.get("screens_out")),
        keypad=bool(sc.get("keys")),
    )
    # --screens: the OLED's pictures at the scenario's screens steps and after events
    shots = Screenshots(board, sc.get("screens", [])) if board.display is not None else None
    if sc.get("fresh", True):
        board.store.erase()
    clock = board.clock
    # the settings file on the meter's file system, read at every boot as on the board
    settings_path = sc["state_dir"] + "/settings.json"
    if sc.get("fresh", True):
        conffile.save(settings_path, config.seal_settings(sc["settings"]))
        if sc.get("meter_key"):  # the meter key file, as provisioning writes it
            conffile.save(config.key_path_for(settings_path), bytes.fromhex(sc["meter_key"]))
    cur = [None]  # the running App: a power cut replaces it
    origin = [None]
    reboots = [0]

    def boot():
        """Start the meter as main.py does after a reset, on the board's hardware."""
        asyncio.new_event_loop()  # the dead meter's tasks die with it
        app = build(settings_path, board=board, tick_ms=sc["step_s"] * 1000)
        cur[0] = app
        if shots is not None:
            shots.attach(app)
        if origin[0] is None:
            origin[0] = app.meter.clock.stamp()
        if app.entry is not None:  # tokens typed on the keypad model: answers reported
            app.entry.on_answer = lambda digits, a: answered(digits, a["code"], a["balance"])

        def report(stamp, kind, bal, value):
            out({"ev": [stamp - origin[0], kind, bal, value]})
            if shots is not None:
                shots.after(kind)

        if reboots[0] or not sc.get("fresh", True):  # a fresh meter's first boot is setup
            for e in app.meter.log.items:  # what start-up logged (the boot event)
                report(*e)
        reboots[0] += 1
        app.meter.log.listeners.append(report)
        return app

    app = boot()
    if sc.get("fresh", True):
        commission.open_account(app.meter, sc["balance"], sc.get("debt", 0))
        app.save()
    mains = board.mains
    for at_s, volts, amps, pf, amps_n, watts in sc["load"]:
        if board.chip is None:
            clock.at(at_s * 1000, lambda w=watts: mains.set_watts(w))
        else:
            clock.at(
                at_s * 1000,
                lambda v=volts, a=amps, p=pf, n=amps_n: mains.set_load(v, a, p, amps_n=n),
            )
    for at_s, what in sc.get("faults", []):
        clock.at(at_s * 1000, lambda w=what: inject(board.chip, w))

    def answered(token, code, balance, t_s=None):
        t_s = clock.now // 1000 if t_s is None else t_s  # a step's answer: its at_s
        out({"ans": [t_s, token, code, tokencodes.name(code), balance]})
        if shots is not None:
            shots.after("token_" + ("accepted" if code == 1 else tokencodes.name(code)))

    def enter(t_s, token):
        r, balance = cur[0].enter(token)
        answered(token, r.code, balance, t_s)

    # top-ups arrive as vended tokens (tools/sim/host.py), through the one credit path
    steps = [(at_s, tok) for at_s, tok, _ in sc["topups"]] + list(sc.get("enter", []))
    for at_s, tok in steps:
        clock.at(at_s * 1000, lambda k=tok, t=at_s: enter(t, k), hold=True)
    acts = {
        "button": lambda: cur[0].press_button(),
        "emergency_credit": lambda: cur[0].meter.control.invoke_emergency_credit(),
        "clear_lockout": lambda: cur[0].meter.control.clear_lockout(),
    }
    for at_s, what in sc.get("actions", []):
        clock.at(at_s * 1000, acts[what], hold=True)
    for at_s, keys in sc.get("keys", []):  # the customer at the keypad
        clock.at(at_s * 1000, lambda k=keys: board.keypad_model.type(k), hold=True)
    outage = [0]

    def cut(for_s):
        outage[0] = for_s
        raise PowerCut

    for at_s, for_s in sc.get("power_cuts", []):
        clock.at(at_s * 1000, lambda n=for_s: cut(n))
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
                    mains.watts_now(),
                    cur[0].meter.ledger.balance,
                    1 if board.relay_model.closed else 0,
                    cur[0].meter.control.credit_status(),
                ]
            }
        )
        if t_s % progress_s == 0:
            out({"p": t_s})

    clock.every(series_s * 1000, sample)

    async def go():
        for t in cur[0].tasks():
            asyncio.create_task(t)
        await clock.run(end_ms)

    end_ms = sc["duration_s"] * 1000
    cuts = 0
    done = {"ticks": 0, "errors": 0, "saves": 0}
    done.update({"lost_mwh": 0, "lost_charge": 0, "lost_charge_max": 0})
    seen = {"mwh": 0, "reads": 0, "resets": 0}  # what the dead meters' drivers counted lost

    def add_seen(src):
        seen["mwh"] += getattr(src, "lost_mwh", 0)
        seen["reads"] += getattr(src, "lost_reads", 0)
        seen["resets"] += getattr(src, "lost_resets", 0)

    while True:
        try:
            asyncio.run(go())
            break
        except PowerCut:  # the supply failed: everything stops at once
            cuts += 1
            dead = cur[0]
            board.power_cut()
            clock.outage(min(end_ms, clock.now + outage[0] * 1000))
            board.power_on()
            saves = board.store.saves
            add_seen(board.source)
            board.boot()
            boot()
            # what the dead meter had billed but not yet journaled
            a, b = dead.meter.ledger, cur[0].meter.ledger
            done["lost_mwh"] += (a.energy_wh - b.energy_wh) * 1000 + a.energy_mwh - b.energy_mwh
            done["lost_charge"] += a.charged - b.charged
            done["lost_charge_max"] = max(done["lost_charge_max"], a.charged - b.charged)
            done["ticks"] += dead.ticks
            done["errors"] += dead.errors
            done["saves"] += saves
            if clock.now >= end_ms:
                break
    app = cur[0]
    meter = app.meter
    if shots is not None:
        shots.snap("end")
    board.save_image()
    if board.chip is None:
        board.mains.integrate()
        true_mwh = board.mains.true_mwh
        lost_mwh = 0
    else:
        board.chip._advance()  # integrate the chip model up to the end
        true_mwh = int(board.chip.true_wh_forward * 1000 + 0.5)
        lost_mwh = int(board.chip.wh_lost_forward * 1000 + 0.5)
    led = meter.ledger
    add_seen(board.source)
    out(
        {
            "final": {
                "balance": led.balance,
                "carry": led.carry,
                "debt": led.debt,
                "energy_mwh": led.energy_wh * 1000 + led.energy_mwh,
                "true_mwh": true_mwh,
                "lost_mwh": lost_mwh,
                "meter_faults": getattr(board.source, "faults", 0),
                "seen_lost_mwh": seen["mwh"],
                "seen_lost_reads": seen["reads"],
                "seen_lost_resets": seen["resets"],
                "spi_garbage_flips": board.chip.noise_flips if board.chip else 0,
                "load_mwh": int(board.chip.load_wh_forward * 1000 + 0.5) if board.chip else 0,
                "spi_transfers": board.chip.transfers if board.chip else 0,
                "credited": led.credited,
                "charged": led.charged,
                "recovered": led.recovered,
                "relay": "closed" if board.relay_model.closed else "open",
                "control_state": meter.control.control_state,
                "state": meter.control.credit_status(),
                "relay_operations": board.relay_model.operations,
                "relay_faults": board.relay_model.faults,
                "ticks": done["ticks"] + app.ticks,
                "errors": done["errors"] + app.errors,
                "saves": done["saves"] + board.store.saves,
                "power_cuts": cuts,
                "cut_lost_mwh": done["lost_mwh"],
                "cut_lost_charge": done["lost_charge"],
                "cut_lost_charge_max": done["lost_charge_max"],
                "flash_erases": sum(board.flash.erases) if board.flash else 0,
                "flash_erases_max": max(board.flash.erases) if board.flash else 0,
                "live_heap_peak": peak[0],
                "model_heap": board.model_heap,
                "code_heap": CODE_HEAP,
                "imported_heap": IMPORTED_HEAP,
                # firmware modules first imported during the run (their code then counts
                # as the week's data): none, for the code/data split to hold
                "late_imports": [m for m in _firmware_modules() if m not in _IMPORTED],
            }
        }
    )


if __name__ == "__main__":
    main(sys.argv[1])
