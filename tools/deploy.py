"""Update the software of a running meter with mpremote (CPython host tool).

    python -m tools.deploy push -p PORT [--build build] [--reset] [--dry-run]
    python -m tools.deploy install-shortcuts [--force] [--dry-run]

`push` copies the built software files (build/fs from `python -m tools.build`: boot.py,
main.py, firmware/**/*.mpy, drivers/**/*.mpy, lib/meterdeps/umqtt/simple.mpy, version.json last) to the
board without stopping the meter:

    mpremote connect PORT resume fs cp -r build/fs/firmware build/fs/drivers build/fs/lib :
      + fs cp build/fs/boot.py build/fs/main.py : + exec "<remove stale files>"
      + fs cp build/fs/version.json : [+ reset]

`resume` keeps mpremote from soft-resetting the board (the meter's console answers raw
REPL beside the running loop). mpremote skips files whose SHA-256 already matches. Then
every .py in firmware/ and drivers/ (a .py would shadow its .mpy) and every .mpy there
or in lib/meterdeps (and lib/umqtt, where older builds put umqtt.simple) that the build
does not have is removed; version.json goes last, so a
push cut short shows as a hash mismatch in `tech.version()`. The new code runs from the
next start: `--reset` resets the board at the end (the meter comes back in the state
its journal holds). The meter's own files (settings.json, meter.id, meter.key, logs,
state) are never touched.

`install-shortcuts` copies tools/mpremote/config.py (the technicians' `mpremote status`,
`mpremote meter topup ...`, ...) to mpremote's user config directory.
"""

import filecmp
import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[1]
SHORTCUTS = ROOT / "tools/mpremote/config.py"
CODE_DIRS = ("firmware", "drivers", "lib")
TOP_FILES = ("boot.py", "main.py")
STALE_DIRS = ("firmware", "drivers", "lib/meterdeps", "lib/umqtt")  # lib/umqtt: older builds'


class DeployError(Exception):
    pass


def mpremote_cmd():
    local = Path(sys.executable).with_name("mpremote")
    if local.exists():
        return [str(local)]
    found = shutil.which("mpremote")
    return [found] if found else [sys.executable, "-m", "mpremote"]


def software_files(stage):
    """Tree-relative paths of the software in the staged tree (version.json's list)."""
    manifest = Path(stage) / "version.json"
    if not manifest.is_file():
        raise DeployError("%s: no build (python -m tools.build)" % stage)
    files = json.loads(manifest.read_text())["files"]
    for p in files:
        if not (Path(stage) / p).is_file():
            raise DeployError("%s: %s listed in version.json is missing" % (stage, p))
    return sorted(files)


def cleanup_code(keep):
    """MicroPython source run on the board: remove code files the build does not have,
    in the code directories and their sub-packages."""
    return (
        "import os\n"
        "_keep = %r\n"
        "_dirs = list(%r)\n"
        "while _dirs:\n"
        "    _d = _dirs.pop()\n"
        "    try:\n"
        "        _names = list(os.ilistdir(_d))\n"
        "    except OSError:\n"
        "        continue\n"
        "    for _e in _names:\n"
        "        _p = _d + '/' + _e[0]\n"
        "        if _e[1] & 0x4000:\n"
        "            _dirs.append(_p)\n"
        "        elif (_p.endswith('.py') or _p.endswith('.mpy')) and _p not in _keep:\n"
        "            os.remove(_p)\n"
        "            print('removed', _p)\n"
    ) % (tuple(keep), STALE_DIRS)


def push_command(port, build="build", reset=False):
    """The mpremote argv for `push`."""
    stage = Path(build) / "fs"
    files = software_files(stage)
    dirs = [str(stage / d) for d in CODE_DIRS if (stage / d).is_dir()]
    cmd = mpremote_cmd() + ["connect", port, "resume"]
    if dirs:
        cmd += ["fs", "cp", "-r", *dirs, ":", "+"]
    cmd += ["fs", "cp", *[str(stage / f) for f in TOP_FILES if f in files], ":", "+"]
    cmd += ["exec", cleanup_code(files), "+"]
    cmd += ["fs", "cp", str(stage / "version.json"), ":"]
    if reset:
        cmd += ["+", "reset"]
    return cmd


def config_dir():
    import platformdirs

    return Path(platformdirs.user_config_dir(appname="mpremote", appauthor=False))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main():
    """Update a running meter's software with mpremote; install the technicians' shortcuts."""


@main.command()
@click.option("-p", "--port", required=True, help="Serial port or URL (socket://, rfc2217://).")
@click.option("--build", default=str(ROOT / "build"), show_default="build/", help="Build dir.")
@click.option("--reset", is_flag=True, help="Reset the board afterwards (new code runs).")
@click.option("--dry-run", is_flag=True, help="Print the mpremote command, do not run it.")
def push(port, build, reset, dry_run):
    """Copy the built software to a running board (no soft reset)."""
    try:
        cmd = push_command(port, build, reset)
    except DeployError as e:
        raise click.ClickException(str(e)) from None
    click.echo(shlex.join(cmd))
    if not dry_run:
        sys.exit(subprocess.call(cmd))


@main.command("install-shortcuts")
@click.option("--dest", type=click.Path(file_okay=False), help="Config dir (default mpremote's).")
@click.option("--force", is_flag=True, help="Replace a different config.py.")
@click.option("--dry-run", is_flag=True, help="Say where it would go, copy nothing.")
def install_shortcuts(dest, force, dry_run):
    """Install tools/mpremote/config.py as mpremote's user config."""
    target = (Path(dest) if dest else config_dir()) / "config.py"
    if target.exists() and not filecmp.cmp(target, SHORTCUTS, shallow=False) and not force:
        raise click.ClickException("%s exists and differs: --force replaces it" % target)
    click.echo("%s -> %s" % (SHORTCUTS, target))
    if not dry_run:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(SHORTCUTS, target)


if __name__ == "__main__":
    main()
