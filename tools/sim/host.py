"""Host side of the simulator: run a scenario under `micropython`, build the report.

The report (public format, docs/simulator.md): money as decimal strings at the meter's full
internal precision (the currency's minor unit), energy in Wh with mWh decimals.
"""

import datetime
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from firmware.billing.money import format_decimal
from firmware.billing.policy import CONTROL_STATES
from tools.sim.scenario import ScenarioError, normalise
from tools.vend import core

ROOT = Path(__file__).resolve().parents[2]


def micropython_cmd():
    here = Path(sys.executable).parent / "micropython"
    if here.exists():
        return str(here)
    found = shutil.which("micropython")
    if not found:
        raise RuntimeError("micropython not found: run `make test` or `make demo` to set up .venv")
    return found


def mpy_env(first=None):
    """Environment for `micropython` from the repo root; `first`: a directory searched
    before the tree (compiled .mpy firmware, as on the board), or ".frozen" for an
    interpreter with the firmware frozen in (frozen modules ahead of the tree, as on the
    board)."""
    env = dict(os.environ)
    tail = ":.frozen" if first != ".frozen" else ""
    env["MICROPYPATH"] = (
        (first + ":" if first else "") + str(ROOT) + ":" + str(ROOT / "lib") + tail
    )
    return env


def compile_firmware(out_dir, mpy_cross=None, march="x64"):
    """firmware/ and drivers/ as .mpy in out_dir (mpy-cross for the host: viper code needs
    the native arch, x64 for the 64-bit interpreter, x86 for tools/mpy32's)."""
    exe = Path(mpy_cross or Path(sys.executable).parent / "mpy-cross")
    for pkg in ("firmware", "drivers"):
        for src in sorted((ROOT / pkg).rglob("*.py")):
            rel = src.relative_to(ROOT).with_suffix(".mpy")
            dst = os.path.join(out_dir, str(rel))
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            subprocess.run(
                [
                    str(exe) if exe.exists() else "mpy-cross",
                    "-march=" + march,
                    "-o",
                    dst,
                    str(src),
                ],
                check=True,
                cwd=str(ROOT),
            )


def vend_topups(norm):
    """Turn the scenario's top-ups into real tokens, vended by the back office's own
    implementation (tools/vend: `cryptography` and the standard hmac) for the meter's
    key: a 20-digit token where the amount fits one exactly, else an envelope (hex).
    Without a `vending_key` key store a fresh vending key and (when the settings name
    none) a fresh meter id are made, so every scenario runs. Adds "meter_key" (the key
    file the meter loads, hex)."""
    path = norm.get("vending_key")
    try:
        vk = core.load_keystore(path) if path else secrets.token_bytes(32)
    except core.VendError as e:
        raise ScenarioError("vending_key: " + str(e)) from e
    settings = norm["settings"]
    meter_id = settings.get("meter_id")
    try:
        meter_id = core.parse_meter_id(meter_id) if meter_id is not None else 0
    except core.VendError:
        meter_id = 0
    if not meter_id:
        meter_id = 1000000000 + secrets.randbelow(9000000000)
    settings["meter_id"] = str(meter_id)
    key = core.meter_key(vk, meter_id)
    norm["meter_key"] = core.meter_key_record(key, 0, 255).hex()
    y, mo, dd, sod = norm["start"]
    t0 = core.stamp_of(datetime.datetime(y, mo, dd) + datetime.timedelta(seconds=sod))
    vended = []
    for i, (at_s, amount) in enumerate(norm["topups"]):
        token_id = i + 1
        if core.amount_field(amount) is not None:
            tok = core.compact_credit(key, token_id, amount)
        else:
            tok = core.envelope(key, 0, meter_id, token_id, t0 + at_s, 0, "credit", amount).hex()
        vended.append([at_s, tok, amount])
    norm["topups"] = vended


def run(scenario, progress=None, heap="512wk", timeout=3600, mpy_dir=None, screens=None, exe=None):
    """Validate and simulate `scenario` (a dict); returns the report dict.

    Raises tools.sim.scenario.ScenarioError on bad input, RuntimeError if the
    firmware run fails. `progress(t_s, duration_s)` is called as time advances.
    `mpy_dir`: run the firmware from .mpy files there (see compile_firmware).
    `screens`: a directory for PNG pictures of the display (tools/sim/screenshots.py);
    the report then lists them under "screens". `exe`: the interpreter (default the
    venv's micropython; tools/mpy32's 32-bit one).
    """
    norm = normalise(scenario)
    vend_topups(norm)
    norm["screens_out"] = screens is not None
    d = norm["currency_decimals"]
    with tempfile.TemporaryDirectory(prefix="meter-sim-") as tmp:
        norm["state_dir"] = tmp
        path = os.path.join(tmp, "scenario.json")
        with open(path, "w") as f:
            json.dump(norm, f)
        cmd = [
            str(exe or micropython_cmd()),
            "-X",
            "heapsize=" + heap,
            str(ROOT / "tools/sim/runner.py"),
            path,
            str(norm["flash_sectors"] if norm.get("store", "journal") == "journal" else 0),
        ]
        proc = subprocess.Popen(
            cmd,
            cwd=str(ROOT),
            env=mpy_env(mpy_dir),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        events, series, final, other, answers = [], [], None, [], []
        shots = []
        for line in proc.stdout:
            if not line.startswith("{"):
                other.append(line.rstrip())
                continue
            obj = json.loads(line)
            if "ans" in obj:
                t, token, code, name, bal = obj["ans"]
                answers.append(
                    {
                        "t_s": t,
                        "token": token,
                        "result": "accepted" if code == 1 else name,
                        "code": code,
                        "balance": format_decimal(bal, d),
                    }
                )
            elif "ev" in obj:
                t, kind, bal, value = obj["ev"]
                events.append(
                    {"t_s": t, "kind": kind, "balance": format_decimal(bal, d), "value": value}
                )
            elif "s" in obj:
                t, watts, bal, relay, state = obj["s"]
                series.append(
                    {
                        "t_s": t,
                        "power_w": watts,
                        "balance": format_decimal(bal, d),
                        "relay": "closed" if relay else "open",
                        "state": state,
                    }
                )
            elif "scr" in obj:
                shots.append(obj["scr"])
            elif "p" in obj:
                if progress:
                    progress(obj["p"], norm["duration_s"])
            elif "final" in obj:
                final = obj["final"]
        err = proc.stderr.read()
        rc = proc.wait(timeout=timeout)
    if rc != 0 or final is None:
        raise RuntimeError("firmware run failed (exit %d):\n%s\n%s" % (rc, "\n".join(other), err))
    report = {
        "final": {
            "balance": format_decimal(final["balance"], d),
            "energy_wh": format_decimal(final["energy_mwh"], 3),
            "relay": final["relay"],
            "state": final["state"],
            "control_state": CONTROL_STATES[final["control_state"]],
            "debt": format_decimal(final["debt"], d),
            "carry": final["carry"],
            "credited": format_decimal(final["credited"], d),
            "charged": format_decimal(final["charged"], d),
            "recovered": format_decimal(final["recovered"], d),
            "true_energy_wh": format_decimal(final["true_mwh"], 3),
            "chip_lost_energy_wh": format_decimal(final["lost_mwh"], 3),
            "meter_lost_energy_wh": format_decimal(final["seen_lost_mwh"], 3),
            "meter_lost_reads": final["seen_lost_reads"],
            "meter_lost_resets": final["seen_lost_resets"],
            "spi_garbage_flips": final["spi_garbage_flips"],
            "load_energy_wh": format_decimal(final["load_mwh"], 3),
            "relay_operations": final["relay_operations"],
            "relay_faults": final["relay_faults"],
            "ticks": final["ticks"],
            "errors": final["errors"],
            "saves": final["saves"],
            "power_cuts": final["power_cuts"],
            "cut_lost_energy_wh": format_decimal(final["cut_lost_mwh"], 3),
            "cut_lost_charge": format_decimal(final["cut_lost_charge"], d),
            "cut_lost_charge_max": format_decimal(final["cut_lost_charge_max"], d),
            "flash_erases": final["flash_erases"],
            "flash_erases_max": final["flash_erases_max"],
            "live_heap_peak": final["live_heap_peak"],
            "model_heap": final["model_heap"],
            "code_heap": final["code_heap"],
            "imported_heap": final["imported_heap"],
            "late_imports": final["late_imports"],
            "meter_faults": final["meter_faults"],
            "spi_transfers": final["spi_transfers"],
        },
        "events": events,
        "answers": answers,
        "series": series,
        "warnings": [line for line in other if line],
    }
    if screens is not None:
        report["screens"] = write_screens(shots, screens)
    return report


def write_screens(shots, out_dir):
    """PNG files of the display pictures [t_s, label, glass hex, contrast] in out_dir,
    named DDDdHHMMSS_LABEL.png (simulated time since the start); returns their list."""
    from tools.sim import png

    os.makedirs(out_dir, exist_ok=True)
    listed = []
    for t, label, glass, contrast in shots:
        when = (t // 86400, t // 3600 % 24, t // 60 % 60, t % 60)
        name = "%03dd%02d%02d%02d_" % when + label + ".png"
        png.write_panel(os.path.join(out_dir, name), bytes.fromhex(glass), contrast)
        listed.append({"t_s": t, "name": label, "file": name})
    return listed
