"""CPython-only: flashing (tools/flash.py) puts the bootloader, the project's partition
table, the app and the image where the table says, and refuses what would not boot.

The firmware is made the way micropython.org's .bin is (ports/esp32/makeimg.py: the
bootloader, the firmware's own partition table at 0x8000, the app at 0x10000, FF
between), with MicroPython's stock table in it; the commands are checked with --dry-run
and the parts cut out of the firmware byte for byte, the factory file of merge-bin by
where everything landed.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tools import flash, parttable

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


def cli(*args):
    return subprocess.run([PY, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def build(out, *args):
    r = cli("tools.build", "--out", str(out), "--no-fetch", *args)
    assert r.returncode == 0, r.stderr
    return out


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return build(tmp_path_factory.mktemp("build"))


def stock_firmware(path, base=0x1000, app_size=300000, table="stock-4MB"):
    """A merged firmware .bin for flashing at `base`: bootloader, stock table, app."""
    boot = b"\xe9" + bytes((i * 5 + 3) % 251 for i in range(0x4FFF))
    app = b"\xe9" + bytes((i * 7 + 1) % 251 for i in range(app_size - 1))
    data = bytearray(b"\xff" * (0x10000 - base))
    data[: len(boot)] = boot
    tab = parttable.to_binary(parttable.load(table)[0])
    data[0x8000 - base : 0x8000 - base + len(tab)] = tab
    path.write_bytes(bytes(data) + app)
    return path


@pytest.fixture()
def firmware_bin(tmp_path):
    return stock_firmware(tmp_path / "ESP32_GENERIC-v1.28.0.bin")


def _dry(*args):
    r = cli("tools.flash", *args, "--dry-run")
    assert r.returncode == 0, r.stderr
    return r.stdout.strip().splitlines()[-1].split()


def test_write_puts_bootloader_table_app_and_image_where_the_table_says(built, firmware_bin):
    img = str(built / "vfs.bin")
    cmd = _dry("write", "-p", "/dev/ttyUSB0", "--firmware", str(firmware_bin), "--image", img)
    assert Path(cmd[0]).name == "esptool"
    fl = built / "flash"
    want = (
        "--chip esp32 -p /dev/ttyUSB0 -b 460800 write-flash --flash-size 4MB"
        " 0x1000 %s 0x8000 %s 0x10000 %s 0x210000 %s"
        % (fl / "bootloader.bin", built / "partitions.bin", fl / "app.bin", img)
    )
    assert cmd[1:] == want.split()
    fw = firmware_bin.read_bytes()
    assert (fl / "bootloader.bin").read_bytes() == fw[: 0x8000 - 0x1000]  # not the table
    assert (fl / "app.bin").read_bytes() == fw[0x10000 - 0x1000 :]
    assert (
        parttable.from_binary((built / "partitions.bin").read_bytes())
        == (parttable.load("4MB")[0])
    )
    # the image alone: the table and the firmware stay as they are
    cmd = _dry("write", "-p", "COM3", "--app-only", "--image", img)
    assert cmd[1:] == ("--chip esp32 -p COM3 -b 460800 write-flash 0x210000 %s" % img).split()
    r = cli("tools.flash", "write", "-p", "X", "--image", img, "--dry-run")
    assert r.returncode != 0 and "--firmware" in r.stderr
    r = cli("tools.flash", "write", "-p", "X", "--app-only", "--erase", "--image", img)
    assert r.returncode != 0 and "erase" in r.stderr


def test_chips_whose_firmware_starts_at_0(built, tmp_path):
    img = str(built / "vfs.bin")
    fw = stock_firmware(tmp_path / "fw-s3.bin", base=0)
    for chip in ("esp32s3", "esp32c3", "esp32c6"):
        cmd = _dry(
            "write", "-p", "/dev/ttyACM0", "--chip", chip, "--erase",
            "--firmware", str(fw), "--image", img,
        )  # fmt: skip
        assert cmd[7:11] == ["write-flash", "--erase-all", "--flash-size", "4MB"]
        assert cmd[11:13] == ["0x0", str(built / "flash/bootloader.bin")]
        assert cmd[-2:] == ["0x210000", img]
    assert (built / "flash/bootloader.bin").read_bytes() == fw.read_bytes()[:0x8000]


def test_ota_table_gets_a_blank_otadata_and_the_app_in_ota_0(tmp_path):
    out = build(tmp_path / "b", "--geometry", "8MB-ota")
    fw = stock_firmware(tmp_path / "fw.bin", app_size=0x260000)  # too big for 4 MB's factory
    img = str(out / "vfs.bin")
    cmd = _dry("write", "-p", "P", "--firmware", str(fw), "--image", img)
    fl = out / "flash"
    assert cmd[8:10] == ["--flash-size", "8MB"]
    assert cmd[10:] == [
        "0x1000", str(fl / "bootloader.bin"), "0x8000", str(out / "partitions.bin"),
        "0xd000", str(fl / "otadata.bin"), "0x10000", str(fl / "app.bin"), "0x500000", img,
    ]  # fmt: skip
    assert (fl / "otadata.bin").read_bytes() == b"\xff" * 0x2000  # both slots' records blank


def test_refuses_a_firmware_that_does_not_fit_its_app_partition(built, tmp_path):
    img = str(built / "vfs.bin")
    big = stock_firmware(tmp_path / "big.bin", app_size=0x1F0000 + 1)
    with pytest.raises(
        flash.FlashError, match="the app is 2031617 bytes, the factory partition 2031616"
    ):
        flash.write_command("P", firmware=str(big), image=img)
    fits = stock_firmware(tmp_path / "fits.bin", app_size=0x1F0000)
    assert flash.write_command("P", firmware=str(fits), image=img)[-2:] == ["0x210000", img]
    raw = tmp_path / "raw.bin"  # not a merged image: no bootloader header, no table
    raw.write_bytes(bytes((i * 7 + 1) % 251 for i in range(300000)))
    with pytest.raises(flash.FlashError, match="not a MicroPython firmware .bin"):
        flash.write_command("P", firmware=str(raw), image=img)
    r = cli("tools.flash", "write", "-p", "P", "--firmware", str(big), "--image", img, "--dry-run")
    assert r.returncode != 0 and "factory partition" in r.stderr


def test_refuses_an_image_that_is_not_its_tables_vfs(built, tmp_path):
    d = tmp_path / "short"
    d.mkdir()
    (d / "vfs.bin").write_bytes((built / "vfs.bin").read_bytes()[: 256 * 4096])
    (d / "vfs.json").write_text((built / "vfs.json").read_text())
    (d / "partitions.bin").write_bytes((built / "partitions.bin").read_bytes())
    with pytest.raises(flash.FlashError, match="partition is 2031616"):
        flash.write_command("P", image=str(d / "vfs.bin"), app_only=True)
    # a vfs.json moved to the stock offset: not where the table puts vfs
    d = tmp_path / "moved"
    d.mkdir()
    (d / "vfs.bin").write_bytes((built / "vfs.bin").read_bytes())
    info = json.loads((built / "vfs.json").read_text())
    (d / "vfs.json").write_text(json.dumps(dict(info, offset=0x200000)))
    (d / "partitions.bin").write_bytes((built / "partitions.bin").read_bytes())
    with pytest.raises(flash.FlashError, match="does not match table 4MB's vfs partition"):
        flash.write_command("P", image=str(d / "vfs.bin"), app_only=True)
    # a partitions.bin that is not the named table (a stale build)
    (d / "vfs.json").write_text(json.dumps(info))
    stock = parttable.to_binary(parttable.load("stock-4MB")[0])
    (d / "partitions.bin").write_bytes(stock)
    with pytest.raises(flash.FlashError, match="is not table 4MB"):
        flash.write_command("P", image=str(d / "vfs.bin"), app_only=True)


def test_merge_bin_lays_out_the_whole_flash(built, firmware_bin, tmp_path):
    out = tmp_path / "factory.bin"
    r = cli(
        "tools.flash", "merge-bin", "--firmware", str(firmware_bin),
        "--image", str(built / "vfs.bin"), "-o", str(out),
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    data = out.read_bytes()
    img = (built / "vfs.bin").read_bytes()
    fw = firmware_bin.read_bytes()
    table = (built / "partitions.bin").read_bytes()
    assert len(data) == 0x400000
    assert data[:0x1000] == b"\xff" * 0x1000
    assert data[0x1000:0x8000] == fw[:0x7000]  # the firmware's bootloader
    assert data[0x8000:0x8C00] == table  # the project's table, not the firmware's
    assert parttable.from_binary(data[0x8000:0x9000]) == parttable.load("4MB")[0]
    app = fw[0xF000:]
    assert data[0x10000 : 0x10000 + len(app)] == app
    assert data[0x200000:0x210000] == b"\xff" * 0x10000  # the journal: blank
    assert data[0x210000:] == img


def test_custom_vfs_builds_flash_the_image_only(tmp_path, firmware_bin):
    out = build(tmp_path / "c", "--offset", "0x300000", "--size", "0x100000")
    img = str(out / "vfs.bin")
    assert _dry("write", "-p", "P", "--app-only", "--image", img)[-2:] == ["0x300000", img]
    with pytest.raises(flash.FlashError, match="no partition table to write"):
        flash.write_command("P", firmware=str(firmware_bin), image=img)
