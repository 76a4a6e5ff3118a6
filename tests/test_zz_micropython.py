"""Bridge: runs every portable test module under the MicroPython unix port.

One pytest item per `tests/test_*.py` (except `test_host_*.py` and this file), each
running

    micropython -X heapsize=256wk tests/mpy_runner.py tests/test_x.py

(a module may ask for another heap with a line `# mpy-heapsize: 512wk`)

from the repo root with MICROPYPATH=<root>/tests:<root>:<root>/lib:.frozen (`.frozen` keeps
the interpreter's frozen asyncio etc. importable). The item fails on a non-zero exit and shows
the runner's output. Counts go to conftest's `runtimes:` summary line.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
HEAPSIZE = "256wk"  # `w`: 256 K words, i.e. 256 KB worth of objects on a 32-bit ESP32
TIMEOUT_S = 300
MICROPYPATH = ":".join([str(TESTS), str(ROOT), str(ROOT / "lib"), ".frozen"])
SUMMARY = re.compile(r"^(\d+) passed, (\d+) failed(?:, (\d+) skipped)?$", re.M)

PORTABLE = sorted(
    p.name
    for p in TESTS.glob("test_*.py")
    if not p.name.startswith("test_host_") and p.name != Path(__file__).name
)


HEAP_MARK = re.compile(r"^# mpy-heapsize: (\d+wk)$", re.M)


def heapsize(module):
    """HEAPSIZE, or a module's own `# mpy-heapsize: NNNwk` line (tests whose fixtures, not
    the firmware, need more contiguous heap: whole-flash copies in cut sweeps)."""
    m = HEAP_MARK.search((TESTS / module).read_text())
    return m.group(1) if m else HEAPSIZE


def find_micropython():
    local = Path(sys.executable).with_name("micropython")
    if local.exists():
        return str(local)
    return shutil.which("micropython")


@pytest.mark.parametrize("module", PORTABLE)
def test_micropython(module, mpy_results):
    exe = find_micropython()
    if exe is None:
        pytest.fail("no `micropython` next to %s or on PATH: run `make venv`" % sys.executable)
    cmd = [exe, "-X", "heapsize=" + heapsize(module), "tests/mpy_runner.py", "tests/" + module]
    env = dict(os.environ, MICROPYPATH=MICROPYPATH)
    try:
        proc = subprocess.run(
            cmd,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            timeout=TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as e:
        out = e.output or ""
        if isinstance(out, bytes):
            out = out.decode(errors="replace")
        mpy_results.append((module, 0, 0))
        pytest.fail(
            "timed out after %d s: %s\n%s" % (TIMEOUT_S, " ".join(cmd), out), pytrace=False
        )

    counts = SUMMARY.findall(proc.stdout)
    passed, failed = (int(counts[-1][0]), int(counts[-1][1])) if counts else (0, 0)
    mpy_results.append((module, passed, failed))
    if proc.returncode != 0:
        failures = re.findall(r"^FAIL (.+?): ", proc.stdout, re.M)
        headline = "under MicroPython: " + (", ".join(failures) or "crashed or ran no test")
        pytest.fail(
            "%s\nexit status %d, MICROPYPATH=%s\n$ %s\n%s"
            % (headline, proc.returncode, MICROPYPATH, " ".join(cmd), proc.stdout),
            pytrace=False,
        )
