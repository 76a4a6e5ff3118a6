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
import time
from pathlib import Path

import pytest
from broker import broker_fixture  # noqa: F401  (the `broker` fixture)

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


def tiny_image(path, files, table="4MB"):
    """An image of the given {path: text} files (no firmware) for a table's vfs."""
    data, _ = build.make_image({p: t.encode() for p, t in files.items()}, build.geometry(table))
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
    # the flash is the build's partition table: the journal where meter-4MB.csv puts it,
    # and the state in the ring there (erased as the ring is entered)
    assert ["journal", 0x200000, 0x10000] in rep["partitions"]
    assert ["vfs", 0x210000, 0x1F0000] in rep["partitions"]
    assert rep["state_store"] == "journal" and rep["journal_erases"] > 0
    assert "no 'journal' partition" not in r["stdout"]
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
    probe_files = {
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
    }
    probe = tiny_image(tmp_path / "probe.bin", probe_files, "stock-4MB")
    world = {"held_low": [0], "table": "stock-4MB"}
    r = emu.boot(probe, tmp_path / "probe", world, seconds=5)
    assert r["rc"] == 4 and r["report"]["end"] == "machine_reset", r["stdout"]
    # the board's path, with the stock frozen modules' stand-ins in .frozen's place (their
    # mount point shows in the root's listing; on a board nothing does)
    assert (
        "path ['', '.frozen', '/frozen', '/lib'] ['boot.py', 'frozen', 'main.py']" in (r["stdout"])
    )
    # the stock table's data partitions, and the vfs the port adds after the app
    assert "strap 0 cause 1" in r["stdout"] and "vfs ['nvs', 'phy_init', 'vfs']" in r["stdout"]
    assert ["vfs", 0x200000, 0x200000] in r["report"]["partitions"]
    # the display model answers at 3CH; nothing else on the bus acknowledges: ENODEV
    assert "i2c [60] 19" in r["stdout"] and r["report"]["i2c_transfers"] == 2
    probe = tiny_image(tmp_path / "probe2.bin", probe_files)  # for the meter's 4MB table
    r = emu.boot(probe, tmp_path / "probe2", {}, seconds=5)
    assert "vfs ['nvs', 'phy_init', 'journal', 'vfs']" in r["stdout"]
    r = emu.boot(probe, tmp_path / "probe2", {}, seconds=5)
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
    # a 256-block image in the 4MB table's 496-block vfs: what a board does with it
    r = emu.boot(tmp_path / "small.bin", tmp_path / "c", seconds=5)
    assert r["rc"] == 6 and r["report"]["end"] == "fs_corrupted"
    assert "The filesystem appears to be corrupted" in r["stdout"] and "never" not in r["stdout"]
    (tmp_path / "blank.bin").write_bytes(b"\xff" * 0x1F0000)  # the erased vfs partition
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
    meter_files = {"version.json", "settings.json", "meter.id", "meter.key"}
    assert set(software) | meter_files == set(files)
    # and the meter runs from what mip installed
    r = emu.boot(frozen, tmp_path / "s", {"load_w": 1000}, seconds=2.5)
    assert r["rc"] == 0 and r["report"]["end"] == "time_limit", r["stdout"] + r["stderr"]
    assert r["report"]["energy_reads"] >= 1 and r["report"]["journal"]["boots"] == 1


def _factory_build(tmp_path, factory, settings, *extra):
    (tmp_path / "settings.json").write_text(json.dumps(settings))
    out = tmp_path / "b"
    r = subprocess.run(
        [sys.executable, "-m", "tools.build", "--out", str(out), "--no-fetch"]
        + ["--settings", str(tmp_path / "settings.json")]
        + ["--key", str(factory["dir"] / "meter.key"), *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    return out / "vfs.bin"


def test_modem_model_answers_on_the_modem_uart(factory, tmp_path):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # a port nobody listens on: the broker is down
    image = _factory_build(
        tmp_path, factory, dict(SETTINGS, mqtt_host="127.0.0.1", mqtt_port=port)
    )
    r = emu.boot(image, tmp_path / "s", {"modem": {"dialect": "simcom"}}, seconds=3)
    rep = r["report"]
    assert r["rc"] == 0 and rep["end"] == "time_limit", r["stdout"] + r["stderr"]
    # the cellular driver brought the modem up over AT and tried the broker's TCP port
    assert rep["modem"]["commands"] >= 5 and rep["modem"]["opens"] >= 1
    assert rep["energy_reads"] >= 1  # metering never waits for the network


def test_on_a_stock_table_the_fallback_is_announced_and_keeps_the_state(factory, tmp_path):
    # an image for MicroPython's own 4 MB table (no journal, vfs by the port's rule),
    # booted on that table: what a board flashed with the stock layout runs
    image = _factory_build(tmp_path, factory, SETTINGS, "--geometry", "stock-4MB")
    token = core.compact_credit(factory["key"], 3, 1000)
    r = emu.boot(
        image,
        tmp_path / "s",
        {"load_w": 3000},
        seconds=5,
        stdin=("tech.topup('%s')\r\ntech.events(5)\r\n" % token).encode(),
    )
    rep = r["report"]
    assert r["rc"] == 0 and rep["end"] == "time_limit", r["stdout"] + r["stderr"]
    assert [p[0] for p in rep["partitions"]] == ["nvs", "phy_init", "factory", "vfs"]
    # announced on the console and as an event in the meter's log
    assert "storage: no 'journal' partition: state in littlefs files" in r["stdout"]
    assert "storage_fallback" in r["stdout"]  # tech.events(), typed at the console
    assert "answer: Accepted" in r["stdout"]
    assert rep["state_store"] == "statefile" and "journal_erases" not in rep
    j = rep["journal"]  # the newest state record, from the littlefs state files
    assert j["boots"] == 1 and j["credited"] == 1000 and j["charged"] > 0
    assert j["balance"] == 1000 - j["charged"]
    # the state is safe across a restart: the next boot takes it up from the files
    r2 = emu.boot(image, tmp_path / "s", {"load_w": 3000}, seconds=4, stdin=b"tech.events(5)\r\n")
    rep2 = r2["report"]
    assert r2["rc"] == 0 and rep2["end"] == "time_limit", r2["stdout"] + r2["stderr"]
    assert "storage: no 'journal' partition" in r2["stdout"] and "storage_fallback" in r2["stdout"]
    j2 = rep2["journal"]
    assert j2["boots"] == 2 and j2["credited"] == 1000
    assert j2["charged"] > j["charged"] and j2["balance"] == 1000 - j2["charged"]
    assert rep2["relay_closed"] is True


def test_the_mqtt_client_that_runs_is_the_images_while_frozen_holds_another(
    factory, tmp_path, broker
):
    import paho.mqtt.client as paho

    settings = dict(SETTINGS, mqtt_host="127.0.0.1", mqtt_port=broker.port)
    image = _factory_build(tmp_path, factory, settings)
    # what the image holds, and what it would not: the old way's /lib/umqtt/simple.mpy,
    # which on a board (and here) the stock image's frozen umqtt.simple shadows
    built = build.read_image(image.read_bytes())
    img = tmp_path / "img.bin"
    img.write_bytes(
        build.edit_image(
            image.read_bytes(), {"lib/umqtt/simple.mpy": built["lib/meterdeps/umqtt/simple.mpy"]}
        )
    )
    states = []
    sub = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="backoffice-probe")
    sub.on_message = lambda c, u, m: states.append(m.payload)
    sub.connect("127.0.0.1", broker.port)
    sub.subscribe("meters/%d/state" % METER_ID, 1)
    sub.loop_start()
    try:
        r = emu.boot(
            img,
            tmp_path / "s",
            {"modem": {"dialect": "simcom"}},
            seconds=8,
            stdin=b"import umqtt.simple as u\r\nprint('umqtt.simple is', u.STAND_IN)\r\n",
        )
        deadline = time.time() + 5
        while not states and time.time() < deadline:
            time.sleep(0.1)
    finally:
        sub.loop_stop()
        sub.disconnect()
    rep = r["report"]
    assert r["rc"] == 0 and rep["end"] == "time_limit", r["stdout"] + r["stderr"]
    assert states, "the meter published no state: " + r["stdout"][-2000:]
    # the name umqtt.simple is the frozen one, as on a board (.frozen before /lib) ...
    assert "umqtt.simple is stock image's frozen umqtt.simple 1.7.0" in r["stdout"]
    assert rep["frozen_imports"] == ["umqtt.simple"]  # ... imported by that line only
    # ... and the client that talked to the broker is the image's pinned copy
    client = rep["mqtt_client"]
    assert client["loaded"] is True and client["file"] == "/lib/meterdeps/umqtt/simple.mpy"
    assert client["version"] == "1.3.4" and client["dist"] == "micropython-umqtt.simple"
    # the back office hears the same: the state names the client and the software
    state = [o for o in map(json.loads, states) if "balance" in o][0]  # not the last will
    assert state["mqtt_client"] == "1.3.4"
    manifest = json.loads(built["version.json"])
    assert state["software"] == "%s+%s" % (manifest["version"], manifest["hash"][:12])
