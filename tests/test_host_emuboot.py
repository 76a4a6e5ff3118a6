"""CPython-only: the built image booted on the emulated board (tools/sim/emuboot.py under
`micropython`, driven by tools/sim/emu.py), and mpremote talking to it.

A factory image (tools/build with a settings file and a meter key) boots as the ESP32
boots it: the image mounted at "/" through a file-backed block device, boot.py and
main.py from it, the fake `machine`/`esp32` wired to the chip, relay and NOR flash
models. The reports say what the hardware saw (energy register reads, relay contacts,
watchdog) and what the journal holds (decoded by the image's own firmware).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tools import build
from tools.sim import emu
from tools.vend import core

ROOT = Path(__file__).resolve().parent.parent
METER_ID = 4711000001
SETTINGS = {
    "meter_id": str(METER_ID),
    "tariff": {"type": "flat", "price_per_kwh": "50.00"},  # 5 cents a Wh: quick to see
    "persist_min_s": 1,
    "watchdog_s": 5,
}
MPREMOTE = str(Path(sys.executable).with_name("mpremote"))


@pytest.fixture(scope="module")
def factory(tmp_path_factory):
    d = tmp_path_factory.mktemp("factory")
    key = core.meter_key(bytes(range(32)), METER_ID)
    (d / "meter.key").write_bytes(core.meter_key_record(key, 0, 255))
    (d / "settings.json").write_text(json.dumps(SETTINGS))
    for name, extra in (("build", []), ("frozen", ["--frozen"])):
        r = subprocess.run(
            [sys.executable, "-m", "tools.build", "--out", str(d / name), "--no-fetch"]
            + ["--settings", str(d / "settings.json"), "--key", str(d / "meter.key")]
            + extra,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert r.returncode == 0, r.stderr
    return {"dir": d, "image": d / "build/vfs.bin", "key": key}


def tiny_image(path, files):
    """A 16-block image of the given {path: text} files (no firmware at all)."""
    geo = build.geometry(offset=0x200000, size=16 * 4096)
    data, _ = build.make_image({p: t.encode() for p, t in files.items()}, geo)
    Path(path).write_bytes(data)
    return path


def total_mwh(j):
    return j["energy_wh"] * 1000 + j["energy_mwh"]


def test_meter_bills_and_keeps_balance_and_relay_over_a_reboot(factory, tmp_path):
    token = core.compact_credit(factory["key"], 1, 1000)  # 10.00
    r = emu.boot(
        factory["image"],
        tmp_path / "s",
        {"load_w": 3000},
        seconds=6,
        stdin=("tech.topup('%s')\r\n" % token).encode(),
    )
    rep = r["report"]
    assert r["rc"] == 0 and rep["end"] == "time_limit", r["stdout"] + r["stderr"]
    assert "answer: Accepted" in r["stdout"]  # typed at the meter's console
    assert rep["energy_reads"] >= 4  # the metering task ticks once a second
    assert rep["relay_closed"] is True and rep["relay_faults"] == 0
    j = rep["journal"]
    assert j["boots"] == 1 and j["credited"] == 1000 and j["control_state"] == 1
    assert 0 < total_mwh(j) <= rep["energy_wh"] * 1000 + 50  # saved energy, chip's truth
    assert abs(j["charged"] - total_mwh(j) * 5 / 1000) <= 1  # 50.00/kWh
    assert j["balance"] == 1000 - j["charged"] and j["charged"] > 0
    assert json.loads((tmp_path / "s/state.json").read_text())["relay_closed"] is True

    r2 = emu.boot(factory["image"], tmp_path / "s", {"load_w": 3000}, seconds=4)
    rep2 = r2["report"]
    assert r2["rc"] == 0 and rep2["end"] == "time_limit", r2["stdout"] + r2["stderr"]
    j2 = rep2["journal"]
    assert j2["boots"] == 2 and j2["credited"] == 1000
    assert j2["charged"] > j["charged"] and j2["balance"] == 1000 - j2["charged"]
    assert total_mwh(j2) > total_mwh(j)
    assert rep2["relay_closed"] is True and rep2["relay_operations"] <= 1  # same direction


def test_open_relay_stays_open_over_a_reboot(factory, tmp_path):
    r = emu.boot(factory["image"], tmp_path / "s", {"load_w": 3000}, seconds=2.5)
    rep = r["report"]
    assert r["rc"] == 0, r["stdout"] + r["stderr"]
    j = rep["journal"]
    assert rep["relay_closed"] is False  # no credit: the meter opened it
    assert j["control_state"] == 0 and j["open_reasons"] and j["balance"] == 0
    r2 = emu.boot(factory["image"], tmp_path / "s", {"load_w": 3000}, seconds=2.5)
    rep2 = r2["report"]
    assert rep2["end"] == "time_limit" and rep2["journal"]["boots"] == 2
    assert rep2["relay_closed"] is False and rep2["energy_wh"] == 0.0  # never closed


def test_safe_mode_skips_the_meter(factory, tmp_path):
    img = tmp_path / "safe.bin"
    img.write_bytes(build.edit_image(factory["image"].read_bytes(), {"safemode": b""}))
    r = emu.boot(img, tmp_path / "a", {"load_w": 3000}, seconds=5)
    rep = r["report"]
    assert r["rc"] == 0 and rep["end"] == "repl" and rep["safe_mode"] is True
    assert "safe mode (file 'safemode')" in r["stdout"]
    assert rep["energy_reads"] == 0 and rep["relay_operations"] == 0
    assert rep["watchdog"]["timeout_ms"] == 0  # nothing armed it
    r = emu.boot(factory["image"], tmp_path / "b", {"held_low": [0]}, seconds=5)
    assert r["report"]["safe_mode"] is True and "safe mode (strap pin held)" in r["stdout"]
    assert r["report"]["energy_reads"] == 0


def test_watchdog_resets_a_meter_whose_bus_hangs(factory, tmp_path):
    r = emu.boot(
        factory["image"], tmp_path / "s", {"load_w": 3000, "spi_hang_after_reads": 1}, seconds=30
    )
    rep = r["report"]
    assert r["rc"] == 3 and rep["end"] == "wdt_reset", r["stdout"] + r["stderr"]
    assert rep["watchdog"]["timeout_ms"] == 5000 and rep["watchdog"]["feeds"] >= 1
    assert 5000 <= rep["uptime_ms"] <= 9000
    assert json.loads((tmp_path / "s/state.json").read_text())["reset_cause"] == 3
    r2 = emu.boot(factory["image"], tmp_path / "s", {}, seconds=1.5)
    assert r2["report"]["reset_cause"] == 3 and r2["report"]["end"] == "time_limit"


def test_fake_machine_watchdog_reset_and_pins(tmp_path):
    busy = tiny_image(
        tmp_path / "busy.bin",
        {"main.py": "import machine\nw = machine.WDT(timeout=300)\nwhile True:\n    pass\n"},
    )
    r = emu.boot(busy, tmp_path / "busy", seconds=20, timeout=20)
    assert r["rc"] == 3 and r["report"]["end"] == "wdt_reset"  # a hung loop, no I/O
    assert r["report"]["uptime_ms"] < 3000
    probe = tiny_image(
        tmp_path / "probe.bin",
        {
            "boot.py": "import sys, os\nprint('path', sys.path, sorted(os.listdir('/')))\n",
            "main.py": (
                "import machine, esp32\n"
                "p = machine.Pin(0, machine.Pin.IN, machine.Pin.PULL_UP)\n"
                "print('strap', p.value(), 'cause', machine.reset_cause())\n"
                "print('vfs', [x.info()[4] for x in esp32.Partition.find(1)])\n"
                "i2c = machine.I2C(0, scl=machine.Pin(22), sda=machine.Pin(21))\n"
                "i2c.writeto(0x3C, b'\\x80\\xaf')\n"
                "try:\n"
                "    i2c.writeto(0x50, b'\\x00')\n"
                "except OSError as e:\n"
                "    print('i2c', i2c.scan(), e.args[0])\n"
                "machine.reset()\n"
            ),
        },
    )
    r = emu.boot(probe, tmp_path / "probe", {"held_low": [0], "journal": None}, seconds=5)
    assert r["rc"] == 4 and r["report"]["end"] == "machine_reset", r["stdout"]
    assert "path ['', '.frozen', '/lib'] ['boot.py', 'main.py']" in r["stdout"]
    assert "strap 0 cause 1" in r["stdout"] and "vfs ['vfs']" in r["stdout"]
    # the display model answers at 3CH; nothing else on the bus acknowledges: ENODEV
    assert "i2c [60] 19" in r["stdout"] and r["report"]["i2c_transfers"] == 2
    r = emu.boot(probe, tmp_path / "probe", {"journal": None}, seconds=5)
    assert "strap 1 cause 5" in r["stdout"]  # pulled up; machine.reset() is SOFT_RESET
    armed = tiny_image(
        tmp_path / "armed.bin", {"main.py": "import machine\nmachine.WDT(timeout=400)\n"}
    )
    r = emu.boot(armed, tmp_path / "armed", seconds=5)
    assert r["rc"] == 3 and "(at the REPL)" in r["stdout"]  # main returned, nobody feeds


def test_corrupted_and_blank_filesystems(tmp_path, factory):
    small = build.geometry(size=256 * 4096)
    data, _ = build.make_image({"main.py": b"print('never')\n"}, small)
    (tmp_path / "small.bin").write_bytes(data)
    # a 256-block image in the 512-block partition: what a board does with it
    r = emu.boot(tmp_path / "small.bin", tmp_path / "c", seconds=5, partition_blocks=512)
    assert r["rc"] == 6 and r["report"]["end"] == "fs_corrupted"
    assert "The filesystem appears to be corrupted" in r["stdout"] and "never" not in r["stdout"]
    (tmp_path / "blank.bin").write_bytes(b"\xff" * 16 * 4096)
    r = emu.boot(tmp_path / "blank.bin", tmp_path / "b", seconds=5)
    assert r["rc"] == 0 and "Performing initial setup" in r["stdout"]
    assert build.read_image((tmp_path / "b/vfs.bin").read_bytes()) == {}  # formatted


def _mpremote(args, env=None, timeout=60):
    r = subprocess.run([MPREMOTE, *args], capture_output=True, text=True, timeout=timeout, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def test_mpremote_shortcuts_and_deploy_on_a_running_meter(factory, tmp_path):
    built = factory["dir"] / "build"
    good = (built / "fs/firmware/tokens/openpaygo/keyfile.mpy").read_bytes()
    # the board holds a stray .py and an out-of-date module the meter does not import
    img = build.edit_image(
        factory["image"].read_bytes(),
        {
            "firmware/stale.py": b"x = 1\n",
            "firmware/billing/stale.mpy": b"old",
            "firmware/tokens/openpaygo/keyfile.mpy": b"old",
        },
    )
    (tmp_path / "img.bin").write_bytes(img)
    d = emu.prepare(tmp_path / "img.bin", tmp_path / "s", {"load_w": 1000}, seconds=60)
    srv = emu.PortServer(d).start()
    try:
        cfg = tmp_path / "cfg"
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "tools.deploy",
                "install-shortcuts",
                "--dest",
                str(cfg / "mpremote"),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        assert r.returncode == 0, r.stderr
        env = dict(os.environ, XDG_CONFIG_HOME=str(cfg), METER_PORT=srv.device)
        out = _mpremote(["meter", "version"], env)
        assert (
            "match: False" in out and "changed: ['firmware/tokens/openpaygo/keyfile.mpy']" in out
        )
        token = core.compact_credit(factory["key"], 2, 500)
        # as the shortcuts' doc says: a token is typed as a number, but one that starts
        # with 0 is not a Python number and goes quoted
        arg = "'%s'" % token if token.startswith("0") else token
        out = _mpremote(["meter", "topup", arg], env)
        assert "answer: Accepted" in out and "balance: 5.00" in out
        out = _mpremote(["meter", "status"], env)
        assert "meter_id: %d" % METER_ID in out and "credit: in_credit" in out
        push = subprocess.run(
            [
                sys.executable,
                "-m",
                "tools.deploy",
                "push",
                "-p",
                srv.device,
                "--build",
                str(built),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert push.returncode == 0, push.stdout + push.stderr
        assert "removed firmware/stale.py" in push.stdout
        assert "removed firmware/billing/stale.mpy" in push.stdout
        out = _mpremote(["meter", "version"], env)
        assert "match: True" in out
        _mpremote(["connect", srv.device, "resume", "reset"])
        res = srv.wait(timeout=30)
    finally:
        if srv.proc.poll() is None:
            srv.stop()
    assert res["rc"] == 4 and res["report"]["end"] == "machine_reset"
    assert res["report"]["journal"]["credited"] == 500
    files = build.read_image((tmp_path / "s/vfs.bin").read_bytes())
    assert "firmware/stale.py" not in files and "firmware/billing/stale.mpy" not in files
    assert files["firmware/tokens/openpaygo/keyfile.mpy"] == good


def test_mip_install_onto_a_board_in_safe_mode(factory, tmp_path):
    frozen = factory["dir"] / "frozen/vfs.bin"  # boot.py, main.py, meter files: no code
    assert not [p for p in build.read_image(frozen.read_bytes()) if p.endswith(".mpy")]
    d = emu.prepare(frozen, tmp_path / "s", {"held_low": [0]}, seconds=0)
    srv = emu.PortServer(d, repl=True).start()  # MicroPython's own REPL after safe mode
    try:
        pkg = factory["dir"] / "build/package.json"
        out = _mpremote(
            ["connect", srv.device, "resume", "mip", "install", "--target", "/", str(pkg)]
        )
        assert "Installing: //firmware/app.mpy" in out and "Done" in out
        out = _mpremote(
            ["connect", srv.device, "resume", "exec", "import os; print(os.listdir())"]
        )
        assert "'firmware'" in out and "'lib'" in out
    finally:
        srv.stop()
    files = build.read_image((tmp_path / "s/vfs.bin").read_bytes())
    software = json.loads((factory["dir"] / "build/version.json").read_text())["files"]
    assert set(software) | {"version.json", "settings.json", "meter.key"} == set(files)
    # and the meter runs from what mip installed
    r = emu.boot(frozen, tmp_path / "s", {"load_w": 1000}, seconds=2.5)
    assert r["rc"] == 0 and r["report"]["end"] == "time_limit", r["stdout"] + r["stderr"]
    assert r["report"]["energy_reads"] >= 1 and r["report"]["journal"]["boots"] == 1


def test_modem_model_answers_on_the_modem_uart(factory, tmp_path):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # a port nobody listens on: the broker is down
    settings = dict(SETTINGS, mqtt_host="127.0.0.1", mqtt_port=port)
    (tmp_path / "settings.json").write_text(json.dumps(settings))
    out = tmp_path / "b"
    r = subprocess.run(
        [sys.executable, "-m", "tools.build", "--out", str(out), "--no-fetch"]
        + [
            "--settings",
            str(tmp_path / "settings.json"),
            "--key",
            str(factory["dir"] / "meter.key"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    r = emu.boot(out / "vfs.bin", tmp_path / "s", {"modem": {"dialect": "simcom"}}, seconds=3)
    rep = r["report"]
    assert r["rc"] == 0 and rep["end"] == "time_limit", r["stdout"] + r["stderr"]
    # the cellular driver brought the modem up over AT and tried the broker's TCP port
    assert rep["modem"]["commands"] >= 5 and rep["modem"]["opens"] >= 1
    assert rep["energy_reads"] >= 1  # metering never waits for the network
