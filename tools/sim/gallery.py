"""The main screens of the customer's display as PNG files (docs/screens/*.png).

    python -m tools.sim.gallery [OUT_DIR]        (host; default docs/screens)

The host runs this same file under `micropython` (framebuf's font is there): each shot
is a meter (the App on the simulated board with the OLED and keypad models) brought to
a state, its display task run in virtual time, and the panel model's glass printed as
one JSON line {"name", "glass" (hex, 1024 bytes), "contrast"}; the host writes each as
OUT_DIR/NAME.png with tools/sim/png.py (4x, pixel grid).
"""

import json
import sys

METER_ID = 4711002
RAW = {
    "meter_id": str(METER_ID),
    "tariff": {"type": "flat", "price_per_kwh": "0.2500"},
    "low_credit": "2.00",
    "reconnect_min": "1.00",
}
# name: (settings, balance, watts, at_ms, keys [(at_ms, keys)])
SHOTS = (
    ("balance", None, 1234, 450, 2000, ()),
    ("kwh_left", None, 1234, 450, 6000, ()),
    ("power", {"max_power_w": 5000}, 1234, 450, 10000, ()),
    ("state", None, 1234, 450, 14000, ()),
    ("meter_id", None, 1234, 450, 18000, ()),
    ("low_credit", None, 150, 450, 2100, ()),
    ("no_credit", None, 0, 0, 2000, ()),
    ("typing", None, 1234, 450, 2500, ((2000, "TOKEN:11"),)),
    ("accepted", None, 1234, 450, 3500, ((2000, "TOKEN"), (3000, "#"))),
    ("rejected", None, 1234, 450, 4500, ((2000, "TOKEN#"), (4000, "TOKEN#"))),
)


def shot(name, raw, balance, watts, at_ms, keys):
    """The glass of one meter at at_ms: (bytes, contrast)."""
    import asyncio

    from firmware.tokens import keys as keymod
    from tools.sim import tokenmint
    from tools.sim import commission
    from firmware.app import App
    from firmware.ui.display import Display
    from firmware.billing.settings import Settings
    from tools.sim.board import SimBoard

    cfg = dict(RAW)
    cfg.update(raw or {})
    settings = Settings(cfg)
    board = SimBoard(
        (2026, 1, 5, 12 * 3600),
        None,
        settings,
        meter="ideal",
        flash_sectors=4,
        keypad=True,
        display=True,
    )
    asyncio.new_event_loop()
    key = keymod.MeterKey(keymod.derive_meter_key(bytes(range(32)), METER_ID))
    app = App(board, settings, key=key)
    commission.open_account(app.meter, balance)
    board.mains.set_watts(watts)
    display = getattr(app, "display", None)
    if display is None:  # the App runs no display of its own (yet): run one here
        display = Display(app, board.display, board.clock)
        app.extra_tasks.append(display.run())
    token = tokenmint.compact_credit(key, 1, 500, rnd=5)  # the same digits every time

    def typer(text):
        if text.startswith("TOKEN"):
            rest = text[5:]
            if rest.startswith(":"):
                text = token[: int(rest[1:])]
            else:
                text = token + rest

        def go():
            for ch in text:
                app.entry.key(ch)

        return go

    got = []
    calls = [(t, typer(k)) for t, k in keys]
    calls.append((at_ms, lambda: got.append(bytes(board.display_model.glass()))))

    async def main():
        tasks = [asyncio.create_task(t) for t in app.tasks()]

        async def call(t, fn):
            await board.clock.sleep_ms(t)
            fn()

        for t, fn in calls:
            tasks.append(asyncio.create_task(call(t, fn)))
        await board.clock.run(at_ms + 1)
        for t in tasks:
            t.cancel()
        for _ in range(3):
            await asyncio.sleep(0)

    asyncio.run(main())
    return got[0], board.display_model.contrast


def mpy_main():
    for name, raw, balance, watts, at_ms, keys in SHOTS:
        glass, contrast = shot(name, raw, balance, watts, at_ms, keys)
        line = {"name": name, "glass": glass.hex(), "contrast": contrast}
        sys.stdout.write(json.dumps(line) + "\n")


def render(out_dir, scale=4, grid=True):
    """Host: run the shots under micropython, write OUT_DIR/NAME.png; returns
    [(name, path, glass bytes, contrast)]."""
    import os
    import subprocess

    from tools.sim import png
    from tools.sim.host import ROOT, micropython_cmd, mpy_env

    proc = subprocess.run(
        [micropython_cmd(), "-X", "heapsize=256wk", str(ROOT / "tools/sim/gallery.py")],
        cwd=str(ROOT),
        env=mpy_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode != 0:
        raise RuntimeError("gallery failed:\n" + proc.stdout + proc.stderr)
    os.makedirs(out_dir, exist_ok=True)
    out = []
    for line in proc.stdout.splitlines():
        if not line.startswith("{"):
            continue
        obj = json.loads(line)
        glass = bytes.fromhex(obj["glass"])
        path = os.path.join(out_dir, obj["name"] + ".png")
        png.write_panel(path, glass, obj["contrast"], scale=scale, grid=grid)
        out.append((obj["name"], path, glass, obj["contrast"]))
    return out


if __name__ == "__main__":
    if sys.implementation.name == "micropython":
        mpy_main()
    else:
        for name, path, _, _ in render(sys.argv[1] if len(sys.argv) > 1 else "docs/screens"):
            print(path)
