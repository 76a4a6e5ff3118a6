"""Flash the meter over USB with esptool 5 (CPython host tool).

    python -m tools.flash write -p PORT --firmware ESP32_GENERIC-v1.xx.bin [--erase]
    python -m tools.flash write -p PORT --app-only        # only the filesystem image
    python -m tools.flash merge-bin --firmware FW.bin [-o build/meter-factory.bin]
    (every command takes --dry-run: print the exact esptool command, run nothing)

`write` puts on the board, in one esptool command, what a board of the meter's flash
layout holds (docs/board.md, "Flashing"):
- the bootloader of the stock MicroPython firmware (a .bin from micropython.org that you
  give: nothing is downloaded) at 0x1000 on the ESP32 and ESP32-S2, 0x0 on the S3, C3
  and C6;
- the partition table the build made (build/partitions.bin, from the table named in
  build/vfs.json: tools/partitions/) at 0x8000, in place of the firmware's own;
- for a table with OTA slots, a blank otadata (all FF: the bootloader then starts ota_0);
- the firmware's app at its app partition (0x10000);
- the LittleFS image (build/vfs.bin) at the table's vfs partition:

    esptool --chip esp32 -p PORT -b 460800 write-flash --flash-size 4MB \
        0x1000 build/flash/bootloader.bin 0x8000 build/partitions.bin \
        0x10000 build/flash/app.bin 0x210000 build/vfs.bin

The firmware .bin is micropython.org's merged image (bootloader, its own partition table
at 0x8000, the app at 0x10000): its bootloader and app are cut out of it into
build/flash/. Refused: a .bin that is not such an image, an app larger than the table's
first app partition (factory, or ota_0), an image that is not the size of the table's
vfs partition or a vfs.json whose offset is not the table's, a partitions.bin that is not
the named table (a stale build). The flash size (--flash-size) is the table's.

--erase adds write-flash's --erase-all (a first flashing: nothing of an old partition
table, journal or filesystem survives); --app-only writes the image alone (a software
update that keeps the firmware and the table, and replaces the meter's files: settings,
logs and the A/B state files with them; the journal partition is untouched).
`merge-bin` makes one file of the same parts for a production programmer, flashed at 0x0.
"""

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import click

from tools import parttable

ROOT = Path(__file__).resolve().parents[1]
FIRMWARE_OFFSET = {
    "esp32": 0x1000,
    "esp32s2": 0x1000,
    "esp32s3": 0x0,
    "esp32c3": 0x0,
    "esp32c6": 0x0,
}
CHIP_MARCH = {"esp32": "xtensawin", "esp32s2": "xtensawin", "esp32s3": "xtensawin"}
DEFAULT_BAUD = 460800


class FlashError(Exception):
    pass


def esptool_cmd():
    """esptool's console script beside this interpreter, else on PATH, else -m esptool."""
    local = Path(sys.executable).with_name("esptool")
    if local.exists():
        return [str(local)]
    found = shutil.which("esptool")
    return [found] if found else [sys.executable, "-m", "esptool"]


def image_info(image):
    """The geometry tools/build recorded beside the image (vfs.json), checked against the
    image and, when it names one, the partition table: {..., "parts", "table_bin"}."""
    image = Path(image)
    if not image.is_file():
        raise FlashError("%s: no image (python -m tools.build)" % image)
    meta = image.with_name("vfs.json")
    if not meta.is_file():
        raise FlashError("%s: no vfs.json beside the image (python -m tools.build)" % image)
    info = json.loads(meta.read_text())
    if image.stat().st_size != info["size"]:
        raise FlashError(
            "%s is %d bytes, vfs.json says the partition is %d"
            % (image, image.stat().st_size, info["size"])
        )
    info["parts"] = None
    if info.get("table") is None:
        return info
    try:
        parts, flash = parttable.load(info["table"])
        built = image.with_name("partitions.bin")
        if not built.is_file() or parttable.from_binary(built.read_bytes()) != parts:
            raise FlashError("%s is not table %s: build again" % (built, info["table"]))
    except parttable.TableError as e:
        raise FlashError("partition table: %s" % e) from None
    vfs = parttable.find(parttable.with_vfs(parts, flash), "vfs")
    if (vfs.offset, vfs.size) != (info["offset"], info["size"]):
        raise FlashError(
            "%s does not match table %s's vfs partition (0x%x, %d bytes)"
            % (image, info["table"], vfs.offset, vfs.size)
        )
    info.update(parts=parts, flash_size=flash, table_bin=str(built))
    return info


def _hex(n):
    return "0x%x" % n


def split_firmware(firmware, chip, parts, out_dir):
    """The stock firmware's bootloader and app, cut out of its merged .bin into out_dir:
    [(address, file)]; FlashError if it is not a merged image or its app does not fit
    the table's first app partition."""
    data = Path(firmware).read_bytes()
    base = FIRMWARE_OFFSET[chip]
    at = parttable.TABLE_OFFSET - base
    if data[:1] != b"\xe9" or len(data) <= at:
        raise FlashError(
            "%s: not a MicroPython firmware .bin (bootloader, partition table and app,"
            " as micropython.org ships it, for %s at 0x%x)" % (firmware, chip, base)
        )
    try:
        stock = parttable.from_binary(data[at : at + parttable.TABLE_LEN])
    except parttable.TableError as e:
        raise FlashError("%s: no partition table at 0x8000: %s" % (firmware, e)) from None
    app_part = parttable.first_app(parts)
    stock_app = parttable.first_app(stock)
    if stock_app is None or stock_app.offset != app_part.offset:
        raise FlashError("%s: its app is not at 0x%x" % (firmware, app_part.offset))
    app = data[stock_app.offset - base :]
    if app[:1] != b"\xe9":
        raise FlashError("%s: no app image at 0x%x" % (firmware, stock_app.offset))
    if len(app) > app_part.size:
        raise FlashError(
            "%s: the app is %d bytes, the %s partition %d"
            % (firmware, len(app), app_part.name, app_part.size)
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bootloader.bin").write_bytes(data[:at])
    (out / "app.bin").write_bytes(app)
    return [(base, str(out / "bootloader.bin")), (app_part.offset, str(out / "app.bin"))]


def _parts(chip, firmware, image, app_only):
    """(esptool write options, [address, file, ...]) for the image and, unless
    app_only, the bootloader, the table, a blank otadata and the app."""
    info = image_info(image)
    want = CHIP_MARCH.get(chip, "rv32imc")
    if info.get("march") != want:
        click.echo(
            "flash: warning: the image's code is for %s, %s runs %s (bytecode loads"
            " anyway; native code does not)" % (info.get("march"), chip, want),
            err=True,
        )
    if app_only:
        return [], [_hex(info["offset"]), str(image)]
    if info["parts"] is None:
        raise FlashError(
            "%s was built for a custom vfs (--offset/--size): no partition table to"
            " write; use --app-only, or build with --geometry" % image
        )
    if firmware is None:
        raise FlashError("--firmware FW.bin is required (or --app-only)")
    if not Path(firmware).is_file():
        raise FlashError("%s: no such firmware file" % firmware)
    out_dir = Path(image).with_name("flash")
    (boot, boot_file), (app_off, app_file) = split_firmware(firmware, chip, info["parts"], out_dir)
    pairs = [(boot, boot_file), (parttable.TABLE_OFFSET, info["table_bin"])]
    ota = parttable.find(info["parts"], "otadata")
    if ota is not None:
        blank = out_dir / "otadata.bin"
        blank.write_bytes(b"\xff" * ota.size)
        pairs.append((ota.offset, str(blank)))
    pairs += [(app_off, app_file), (info["offset"], str(image))]
    opts = ["--flash-size", "%dMB" % (info["flash_size"] // parttable.MB)]
    return opts, [x for off, f in pairs for x in (_hex(off), f)]


def write_command(
    port,
    chip="esp32",
    firmware=None,
    image=None,
    baud=DEFAULT_BAUD,
    app_only=False,
    erase=False,
):
    """The esptool argv for `write`."""
    image = image or str(ROOT / "build/vfs.bin")
    cmd = esptool_cmd() + ["--chip", chip, "-p", port, "-b", str(baud), "write-flash"]
    if erase:
        if app_only:
            raise FlashError("--erase with --app-only would erase the MicroPython firmware")
        cmd.append("--erase-all")
    opts, parts = _parts(chip, firmware, image, app_only)
    return cmd + opts + parts


def merge_command(output, chip="esp32", firmware=None, image=None):
    image = image or str(ROOT / "build/vfs.bin")
    cmd = esptool_cmd() + ["--chip", chip, "merge-bin", "-o", str(output)]
    opts, parts = _parts(chip, firmware, image, False)
    return cmd + opts + parts


def _run(cmd, dry_run):
    click.echo(shlex.join(cmd))
    if dry_run:
        return 0
    return subprocess.call(cmd)


CHIPS = click.Choice(sorted(FIRMWARE_OFFSET))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main():
    """Flash the MicroPython firmware and the meter's filesystem image with esptool."""


@main.command()
@click.option("-p", "--port", required=True, help="Serial port, e.g. /dev/ttyUSB0.")
@click.option("--chip", type=CHIPS, default="esp32", show_default=True)
@click.option("--firmware", type=click.Path(dir_okay=False), help="Stock MicroPython .bin.")
@click.option("--image", type=click.Path(dir_okay=False), help="Image (default build/vfs.bin).")
@click.option("-b", "--baud", type=int, default=DEFAULT_BAUD, show_default=True)
@click.option("--app-only", is_flag=True, help="Write only the filesystem image.")
@click.option("--erase", is_flag=True, help="Erase the whole flash first (--erase-all).")
@click.option("--dry-run", is_flag=True, help="Print the esptool command, do not run it.")
def write(port, chip, firmware, image, baud, app_only, erase, dry_run):
    """Write the firmware, the partition table and the image (or only the image)."""
    try:
        cmd = write_command(port, chip, firmware, image, baud, app_only, erase)
    except FlashError as e:
        raise click.ClickException(str(e)) from None
    sys.exit(_run(cmd, dry_run))


@main.command("merge-bin")
@click.option(
    "-o",
    "--output",
    default=str(ROOT / "build/meter-factory.bin"),
    show_default="build/meter-factory.bin",
)
@click.option("--chip", type=CHIPS, default="esp32", show_default=True)
@click.option(
    "--firmware", type=click.Path(dir_okay=False), required=True, help="Stock MicroPython .bin."
)
@click.option("--image", type=click.Path(dir_okay=False), help="Image (default build/vfs.bin).")
@click.option("--dry-run", is_flag=True, help="Print the esptool command, do not run it.")
def merge_bin(output, chip, firmware, image, dry_run):
    """One factory image (firmware, partition table, filesystem), flashed at 0x0."""
    try:
        cmd = merge_command(output, chip, firmware, image)
    except FlashError as e:
        raise click.ClickException(str(e)) from None
    sys.exit(_run(cmd, dry_run))


if __name__ == "__main__":
    main()
