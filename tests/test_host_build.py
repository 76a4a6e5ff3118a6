"""CPython-only: the build (tools/build.py), deploy (tools/deploy.py) and the technicians'
mpremote shortcuts (tools/mpremote/config.py); flashing is tests/test_host_flash.py.

The image is checked three ways: by littlefs-python (geometry, exact file list, no fake
`machine`), under `micropython` (mounted with vfs.VfsLfs2 over a file-backed block
device, the version hash recomputed by the firmware's own firmware/storage/version.py).
"""

import hashlib
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tools import build, deploy, parttable
from tools.sim.host import micropython_cmd
from firmware.storage import jsonseal
from firmware.tokens import meterid

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


def cli(*args, cwd=ROOT):
    return subprocess.run([PY, "-m", *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def expected_paths():
    out = {"boot.py", "main.py", "version.json", "lib/meterdeps/umqtt/simple.mpy"}
    for d in ("firmware", "drivers"):
        out |= {
            p.relative_to(ROOT).with_suffix(".mpy").as_posix() for p in (ROOT / d).rglob("*.py")
        }
    return out


_EXPECTED = {}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("build")
    _EXPECTED["paths"] = expected_paths()  # the tree as built (others may add files)
    r = cli("tools.build", "--out", str(out), "--no-fetch")
    assert r.returncode == 0, r.stderr
    return out


def built_paths():
    return _EXPECTED["paths"]


# -- the image ---------------------------------------------------------------------------
def test_default_image_is_the_4mb_tables_vfs_partition(built):
    info = json.loads((built / "vfs.json").read_text())
    assert (info["offset"], info["size"], info["block_size"], info["block_count"]) == (
        0x210000,
        0x1F0000,
        4096,
        496,
    )
    assert (info["table"], info["flash_size"]) == ("4MB", 0x400000)
    assert (built / "vfs.bin").stat().st_size == 496 * 4096
    # the table flashed with it is tools/partitions/meter-4MB.csv's
    parts = parttable.from_binary((built / "partitions.bin").read_bytes())
    assert parts == parttable.load("4MB")[0]
    from littlefs import LittleFS
    from littlefs.context import UserContext

    # the superblock itself says 496 blocks (block_count 0: read it from the disk)
    fs = LittleFS(
        context=UserContext(buffer=bytearray((built / "vfs.bin").read_bytes())),
        block_size=4096,
        block_count=0,
    )
    assert fs.fs_stat().block_count == 496


def test_image_holds_exactly_the_software(built):
    files = build.read_image((built / "vfs.bin").read_bytes())
    assert set(files) == built_paths()
    assert not [p for p in files if p.rpartition("/")[2] in ("machine.py", "esp32.py")]
    assert not [p for p in files if p.startswith(("tools/", "tests/"))]
    assert sorted(p for p in files if p.endswith(".py")) == ["boot.py", "main.py"]
    assert files["main.py"] == (ROOT / "main.py").read_bytes()
    for p, data in files.items():  # what the image holds is what was staged
        assert (built / "fs" / p).read_bytes() == data
    mpy = files["firmware/app.mpy"]
    assert mpy[:2] == b"M\x06"  # mpy v6 bytecode


def test_version_manifest_follows_the_hash_rule(built):
    files = build.read_image((built / "vfs.bin").read_bytes())
    v = json.loads(files["version.json"])
    with open(ROOT / "pyproject.toml", "rb") as f:
        assert v["version"] == tomllib.load(f)["project"]["version"]
    assert set(v["files"]) == set(files) - {"version.json"}
    for p, h in v["files"].items():
        assert hashlib.sha256(files[p]).hexdigest() == h
    lines = "".join("%s %s\n" % (p, v["files"][p]) for p in sorted(v["files"]))
    assert v["hash"] == hashlib.sha256(lines.encode()).hexdigest()
    from firmware.storage import version as on_meter  # the meter's own rule, run on CPython

    assert on_meter.combined(v["files"]) == v["hash"]


def test_geometries_are_the_tables_vfs_partitions_and_refusals():
    want = {  # name: (offset, size, blocks, table has a journal)
        "4MB": (0x210000, 0x1F0000, 496, True),
        "8MB": (0x210000, 0x5F0000, 1520, True),
        "16MB": (0x210000, 0xDF0000, 3568, True),
        "8MB-ota": (0x500000, 0x300000, 768, True),
        "stock-4MB": (0x200000, 0x200000, 512, False),  # the port's rule
        "stock-8MB": (0x200000, 0x600000, 1536, False),
        "stock-16MB": (0x200000, 0xE00000, 3584, False),
        "stock-4MB-ota": (0x310000, 0xF0000, 240, False),
    }
    assert set(build.GEOMETRIES) == set(want)
    for name, (off, size, blocks, journal) in want.items():
        g = build.geometry(name)
        assert (g["offset"], g["size"], g["block_count"], g["table"]) == (off, size, blocks, name)
        parts = parttable.load(name)[0]
        assert (parttable.find(parts, "journal") is not None) == journal, name
    custom = build.geometry(offset=0x300000, size=0x100000, block_count=256)
    assert (custom["name"], custom["block_count"], custom["table"]) == ("custom", 256, None)
    with pytest.raises(build.BuildError, match=r"block count 256 does not match.*496 blocks"):
        build.geometry("4MB", block_count=256)
    with pytest.raises(build.BuildError, match="not a whole number of 4096-byte blocks"):
        build.geometry(size=0x100800)
    with pytest.raises(build.BuildError, match="not a multiple"):
        build.geometry(offset=0x200800)
    with pytest.raises(build.BuildError, match="table '4MB-ota': one of"):
        build.geometry("4MB-ota")


def test_cli_refuses_a_block_count_that_is_not_the_partition(tmp_path):
    r = cli("tools.build", "--out", str(tmp_path), "--block-count", "1024", "--no-fetch")
    assert r.returncode != 0
    assert "block count 1024 does not match the partition" in r.stderr
    assert not (tmp_path / "vfs.bin").exists()


def test_ota_geometry_image(tmp_path):
    r = cli("tools.build", "--out", str(tmp_path), "--geometry", "8MB-ota", "--no-fetch")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "vfs.bin").stat().st_size == 768 * 4096
    assert json.loads((tmp_path / "vfs.json").read_text())["offset"] == 0x500000
    parts = parttable.from_binary((tmp_path / "partitions.bin").read_bytes())
    assert [p.name for p in parts if p.type == parttable.APP] == ["ota_0", "ota_1"]
    # a build for a custom vfs has no table, and leaves none of an earlier build behind
    r = cli("tools.build", "--out", str(tmp_path), "--size", "0x100000", "--no-fetch")
    assert r.returncode == 0, r.stderr
    assert not (tmp_path / "partitions.bin").exists()


def test_factory_files_are_in_the_image_not_in_the_software(tmp_path):
    from tools.vend import core

    key = core.meter_key(bytes(32), 4711)
    (tmp_path / "meter.key").write_bytes(core.meter_key_record(key, 0, 255))
    (tmp_path / "settings.json").write_text(json.dumps({"meter_id": "4711"}))
    out = tmp_path / "b"
    r = cli(
        "tools.build",
        "--out",
        str(out),
        "--settings",
        str(tmp_path / "settings.json"),
        "--key",
        str(tmp_path / "meter.key"),
        "--no-fetch",
    )
    assert r.returncode == 0, r.stderr
    for private in (out / "vfs.bin", out / "fs" / "meter.key"):  # both hold the meter's key
        assert os.stat(private).st_mode & 0o777 == 0o600, private
    files = build.read_image((out / "vfs.bin").read_bytes())
    assert files["meter.key"] == (tmp_path / "meter.key").read_bytes()
    # the settings sealed as the meter loads them, and the meter's id kept apart
    assert files["settings.json"] == b'{"meter_id":"4711","seal":"19966d0f"}'
    assert jsonseal.loads(files["settings.json"]) == {"meter_id": "4711"}
    assert meterid.load(files["meter.id"]) == 4711
    v = json.loads(files["version.json"])
    for name in ("settings.json", "meter.key", "meter.id"):
        assert name not in v["files"]
    pkg = json.loads((out / "package.json").read_text())
    assert not [u for u in pkg["urls"] if u[0] in ("settings.json", "meter.key", "meter.id")]
    # a sealed input is checked: a damaged copy is not sealed again as good
    (tmp_path / "rot.json").write_bytes(files["settings.json"].replace(b"4711", b"4710"))
    r = cli("tools.build", "--out", str(out), "--settings", str(tmp_path / "rot.json"))
    assert r.returncode != 0 and "seal: does not match" in r.stderr
    # a setting the meter would refuse is refused here, by name
    (tmp_path / "bad.json").write_text(json.dumps({"low_credit": "lots"}))
    r = cli("tools.build", "--out", str(out), "--settings", str(tmp_path / "bad.json"))
    assert r.returncode != 0 and "low_credit" in r.stderr
    (tmp_path / "bad.key").write_bytes(b"\x00" * 44)
    r = cli("tools.build", "--out", str(out), "--key", str(tmp_path / "bad.key"))
    assert r.returncode != 0 and "meter key" in r.stderr


MOUNT = """
import os, sys, vfs
class Dev:
    def __init__(self, path, blocks):
        self.f = open(path, "r+b")
        self.n = blocks
    def readblocks(self, b, buf, off=0):
        self.f.seek(b * 4096 + off)
        got = self.f.readinto(buf)
        for i in range(got or 0, len(buf)):
            buf[i] = 0xFF
    def writeblocks(self, b, buf, off=None):
        self.f.seek(b * 4096 + (off or 0))
        self.f.write(buf)
    def ioctl(self, op, arg):
        if op == 4: return self.n
        if op == 5: return 4096
        if op == 6:
            self.f.seek(arg * 4096); self.f.write(b"\\xff" * 4096)
        return 0
def walk(d, out):
    for name, kind, *_ in os.ilistdir(d):
        p = d + "/" + name
        if kind == 0x4000: walk(p, out)
        else: out.append(p[len("/img/"):])
    return out
try:
    vfs.mount(vfs.VfsLfs2(Dev(sys.argv[1], int(sys.argv[2]))), "/img")
except OSError as e:
    print("MOUNT-FAILED", e.errno)
    sys.exit(0)
st = os.statvfs("/img")
sys.path.insert(0, "/img")
from firmware.storage import version
got = version.identify("/img")
print({"files": sorted(walk("/img", [])), "bsize": st[0], "blocks": st[2],
       "match": got["match"], "hash": got["hash"], "n": got["files"]})
"""


def _mount(tmp_path, image, blocks):
    script = tmp_path / "mount_img.py"
    script.write_text(MOUNT)
    env = dict(os.environ, MICROPYPATH=".frozen")
    r = subprocess.run(
        [micropython_cmd(), str(script), str(image), str(blocks)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout.strip().splitlines()[-1]


def test_image_mounts_under_micropython_and_identifies_itself(built, tmp_path):
    import ast
    import shutil

    img = tmp_path / "vfs.bin"
    shutil.copyfile(built / "vfs.bin", img)
    got = ast.literal_eval(_mount(tmp_path, img, 496))
    assert set(got["files"]) == built_paths()
    assert (got["bsize"], got["blocks"]) == (4096, 496)
    v = json.loads((built / "version.json").read_text())
    # firmware/storage/version.py, under MicroPython, over the mounted files: the build's hash
    assert got["match"] is True and got["hash"] == v["hash"]
    assert got["n"] == len(v["files"])


def test_wrong_geometry_does_not_mount_under_micropython(tmp_path):
    out = tmp_path / "b"
    r = cli("tools.build", "--out", str(out), "--size", "0x100000", "--no-fetch")
    assert r.returncode == 0, r.stderr
    assert (out / "vfs.bin").stat().st_size == 256 * 4096
    # a 256-block image flashed into the 496-block partition: littlefs refuses it
    assert _mount(tmp_path, out / "vfs.bin", 496) == "MOUNT-FAILED 22"
    assert _mount(tmp_path, out / "vfs.bin", 256).startswith("{")


def test_manifest_py_freezes_the_tree(built):
    calls = []

    def record(name):
        return lambda *a, **kw: calls.append((name, a, kw))

    g = {n: record(n) for n in ("metadata", "include", "require", "package", "module")}
    cwd = os.getcwd()
    os.chdir(built)  # MicroPython's manifestfile resolves paths from the manifest's dir
    try:
        exec(compile((built / "manifest.py").read_text(), "manifest.py", "exec"), g)
        packages = {}
        for name, a, kw in calls:
            if name == "package":
                base = Path(kw["base_path"]).resolve()
                for f in kw["files"]:
                    assert (base / a[0] / f).is_file(), (a[0], f)
                packages[a[0]] = set(kw["files"])
    finally:
        os.chdir(cwd)
    assert calls[0][0] == "metadata" and calls[0][2]["version"] == build.project_version()
    # the pinned umqtt.simple, frozen from lib/ under the project's own name (the port's
    # manifest freezes its own as umqtt.simple: it would shadow one frozen by that name)
    assert not [c for c in calls if c[0] == "require"]
    kw = [c[2] for c in calls if c[0] == "package" and c[1] == ("meterdeps",)][0]
    assert kw["files"] == ("umqtt/simple.py",)
    assert (built / kw["base_path"]).resolve() == ROOT / "lib"
    assert ("include", ("$(PORT_DIR)/boards/manifest.py",), {}) in calls
    for d in ("firmware", "drivers"):
        want = {p[len(d) + 1 : -4] + ".py" for p in built_paths() if p.startswith(d + "/")}
        assert packages[d] == want


def test_package_json_mirrors_the_image(built):
    pkg = json.loads((built / "package.json").read_text())
    assert pkg["version"] == build.project_version()
    files = build.read_image((built / "vfs.bin").read_bytes())
    assert {dest for dest, _ in pkg["urls"]} == set(files)
    for dest, src in pkg["urls"]:
        assert not src.startswith(("/", "http", "github:"))  # relative to package.json
        assert (built / src).read_bytes() == files[dest]


# -- deploy and shortcuts --------------------------------------------------------------------
def test_deploy_push_command(built):
    cmd = deploy.push_command("/dev/ttyUSB0", str(built))
    assert Path(cmd[0]).name == "mpremote"
    assert cmd[1:4] == ["connect", "/dev/ttyUSB0", "resume"]
    stage = str(built / "fs")
    i = cmd.index("-r")
    assert cmd[i - 2 : i] == ["fs", "cp"]
    assert cmd[i + 1 : i + 5] == [stage + "/firmware", stage + "/drivers", stage + "/lib", ":"]
    assert cmd[-4:] == ["fs", "cp", stage + "/version.json", ":"]  # last: identification
    code = cmd[cmd.index("exec") + 1]
    compile(code, "cleanup", "exec")
    assert "os.remove" in code and "'firmware/app.mpy'" in code
    assert not [a for a in cmd if "settings.json" in a or "meter.key" in a]
    assert "reset" not in cmd and "soft-reset" not in cmd
    assert deploy.push_command("socket://h:1", str(built), reset=True)[-2:] == ["+", "reset"]
    r = cli("tools.deploy", "push", "-p", "/dev/ttyUSB0", "--build", str(built), "--dry-run")
    assert r.returncode == 0 and "resume fs cp -r" in r.stdout


def test_shortcuts_expand_with_resume(tmp_path, monkeypatch):
    r = cli("tools.deploy", "install-shortcuts", "--dest", str(tmp_path / "mpremote"))
    assert r.returncode == 0, r.stderr
    installed = tmp_path / "mpremote" / "config.py"
    assert installed.read_bytes() == (ROOT / "tools/mpremote/config.py").read_bytes()
    installed.write_text("commands = {}\n")
    r = cli("tools.deploy", "install-shortcuts", "--dest", str(tmp_path / "mpremote"))
    assert r.returncode != 0 and "--force" in r.stderr
    # mpremote's own config loader and expansion
    from mpremote import main as mp

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "x"))
    monkeypatch.setenv("METER_PORT", "/dev/ttyUSB7")
    (tmp_path / "x" / "mpremote").mkdir(parents=True)
    (tmp_path / "x" / "mpremote" / "config.py").write_bytes(
        (ROOT / "tools/mpremote/config.py").read_bytes()
    )
    mp.prepare_command_expansions(mp.load_user_config())
    for name in ("status", "registers", "events", "journal", "settings", "set", "version"):
        assert name in mp._command_expansions
    for name in ("audit", "topup", "calibrate", "relay-test"):
        assert name in mp._command_expansions
    args = ["meter", "status"]
    mp.do_command_expansion(args)
    assert args == ["connect", "/dev/ttyUSB7", "resume", "status"]
    args = args[3:]
    mp.do_command_expansion(args)
    assert args[:2] == ["resume", "exec"] and "tech.status()" in args[2]
    compile(args[2], "status", "exec")
    args = ["topup", "48313235137846774352"]
    mp.do_command_expansion(args)
    assert args[:2] == ["exec", "token=48313235137846774352"] and args[2] == "resume"
    args = ["events"]
    mp.do_command_expansion(args)
    assert args[:2] == ["exec", "n=20"]


def test_the_pinned_mqtt_client_is_in_the_image_under_the_projects_name(
    built, tmp_path, monkeypatch
):
    from tools import fetch_deps

    dist, version, path, digest = fetch_deps.pinned(build.MQTT_CLIENT)
    assert (dist, version, path) == (
        "micropython-umqtt.simple",
        "1.3.4",
        "meterdeps/umqtt/simple.py",
    )
    assert hashlib.sha256((ROOT / "lib" / path).read_bytes()).hexdigest() == digest
    files = build.read_image((built / "vfs.bin").read_bytes())
    assert "lib/meterdeps/umqtt/simple.mpy" in files
    assert not [p for p in files if p.startswith("lib/umqtt/")]  # a stock image's name
    v = json.loads(files["version.json"])
    assert v["libraries"] == {
        "meterdeps.umqtt.simple": {
            "dist": dist,
            "version": version,
            "file": "lib/meterdeps/umqtt/simple.mpy",
        }
    }
    # a lib/ whose copy is not the pinned file is refused, not built
    other = tmp_path / "lib"
    (other / "meterdeps/umqtt").mkdir(parents=True)
    (other / path).write_bytes((ROOT / "lib" / path).read_bytes() + b"# changed\n")
    monkeypatch.setattr(build, "LIB", str(other))
    with pytest.raises(build.BuildError, match="not the pinned version"):
        build.ensure_deps(fetch=False)
