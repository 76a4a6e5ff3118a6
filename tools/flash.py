"""Flash the meter over USB with esptool 5 (CPython host tool).

    python -m tools.flash write -p PORT --firmware ESP32_GENERIC-v1.xx.bin [--erase]
    python -m tools.flash write -p PORT --app-only        # only the filesystem image
    python -m tools.flash merge-bin --firmware FW.bin [-o build/meter-factory.bin]
    (every command takes --dry-run: print the exact esptool command, run nothing)

`write` puts the stock MicroPython firmware (a .bin from micropython.org that you give:
nothing is downloaded) at 0x1000 on the ESP32 and ESP32-S2, 0x0 on the S3, C3 and C6,
and the LittleFS image (build/vfs.bin from `python -m tools.build`) at the vfs offset
that build/vfs.json records (0x200000 for the 4MB geometry):

    esptool --chip esp32 -p PORT -b 460800 write-flash 0x1000 FW.bin 0x200000 build/vfs.bin

--erase adds write-flash's --erase-all (a first flashing: nothing of an old partition
table or filesystem survives); --app-only writes the image alone (a software update that
keeps the MicroPython firmware, and replaces the meter's files: settings, logs and the
A/B state files with them; the journal partition, if the table has one, is untouched).
`merge-bin` makes one file for a production programmer, flashed at 0x0:

    esptool --chip esp32 merge-bin -o meter-factory.bin 0x1000 FW.bin 0x200000 build/vfs.bin
"""

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import click

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
    """The geometry tools/build recorded beside the image (vfs.json), checked."""
    image = Path(image)
    if not image.is_file():
        raise FlashError("%s: no image (python -m tools.build)" % image)
    meta = image.with_name("vfs.json")
    if not meta.is_file():
        raise FlashError("%s: no vfs.json beside the image: give --offset" % image)
    info = json.loads(meta.read_text())
    if image.stat().st_size != info["size"]:
        raise FlashError(
            "%s is %d bytes, vfs.json says the partition is %d"
            % (image, image.stat().st_size, info["size"])
        )
    return info


def _hex(n):
    return "0x%x" % n


def _parts(chip, firmware, image, offset, app_only):
    info = None
    if offset is None:
        info = image_info(image)
        offset = info["offset"]
    elif not Path(image).is_file():
        raise FlashError("%s: no image (python -m tools.build)" % image)
    if info is not None:
        want = CHIP_MARCH.get(chip, "rv32imc")
        if info.get("march") != want:
            click.echo(
                "flash: warning: the image's code is for %s, %s runs %s (bytecode loads"
                " anyway; native code does not)" % (info.get("march"), chip, want),
                err=True,
            )
    parts = []
    if not app_only:
        if firmware is None:
            raise FlashError("--firmware FW.bin is required (or --app-only)")
        if not Path(firmware).is_file():
            raise FlashError("%s: no such firmware file" % firmware)
        fw_off = FIRMWARE_OFFSET[chip]
        if fw_off + Path(firmware).stat().st_size > offset:
            raise FlashError(
                "%s does not fit below the vfs partition at 0x%x" % (firmware, offset)
            )
        parts += [_hex(fw_off), str(firmware)]
    parts += [_hex(offset), str(image)]
    return parts


def write_command(
    port,
    chip="esp32",
    firmware=None,
    image=None,
    offset=None,
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
    return cmd + _parts(chip, firmware, image, offset, app_only)


def merge_command(output, chip="esp32", firmware=None, image=None, offset=None):
    image = image or str(ROOT / "build/vfs.bin")
    cmd = esptool_cmd() + ["--chip", chip, "merge-bin", "-o", str(output)]
    return cmd + _parts(chip, firmware, image, offset, False)


def _run(cmd, dry_run):
    click.echo(shlex.join(cmd))
    if dry_run:
        return 0
    return subprocess.call(cmd)


def _offset(text):
    if text is None:
        return None
    try:
        n = int(text, 0)
    except ValueError:
        raise click.BadParameter("%r: a number (0x200000)" % text) from None
    if n % 4096:
        raise click.BadParameter("0x%x: not on a 4096-byte sector" % n)
    return n


CHIPS = click.Choice(sorted(FIRMWARE_OFFSET))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main():
    """Flash the MicroPython firmware and the meter's filesystem image with esptool."""


@main.command()
@click.option("-p", "--port", required=True, help="Serial port, e.g. /dev/ttyUSB0.")
@click.option("--chip", type=CHIPS, default="esp32", show_default=True)
@click.option("--firmware", type=click.Path(dir_okay=False), help="Stock MicroPython .bin.")
@click.option("--image", type=click.Path(dir_okay=False), help="Image (default build/vfs.bin).")
@click.option("--offset", help="vfs offset (default: vfs.json beside the image).")
@click.option("-b", "--baud", type=int, default=DEFAULT_BAUD, show_default=True)
@click.option("--app-only", is_flag=True, help="Write only the filesystem image.")
@click.option("--erase", is_flag=True, help="Erase the whole flash first (--erase-all).")
@click.option("--dry-run", is_flag=True, help="Print the esptool command, do not run it.")
def write(port, chip, firmware, image, offset, baud, app_only, erase, dry_run):
    """Write the firmware and the image (or only the image) to a board."""
    try:
        cmd = write_command(port, chip, firmware, image, _offset(offset), baud, app_only, erase)
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
@click.option("--offset", help="vfs offset (default: vfs.json beside the image).")
@click.option("--dry-run", is_flag=True, help="Print the esptool command, do not run it.")
def merge_bin(output, chip, firmware, image, offset, dry_run):
    """One factory image (firmware + filesystem), to be flashed at 0x0."""
    try:
        cmd = merge_command(output, chip, firmware, image, _offset(offset))
    except FlashError as e:
        raise click.ClickException(str(e)) from None
    sys.exit(_run(cmd, dry_run))


if __name__ == "__main__":
    main()
