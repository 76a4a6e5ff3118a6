"""Bridge: runs every portable test module under the MicroPython unix port, twice: on the
64-bit interpreter from PyPI (the venv's `micropython`) and on the 32-bit one built from the
pinned source (tools/mpy32.py, `make mpy32`), whose 4-byte objects and 31-bit small ints are
the ESP32's. One pytest item per `tests/test_*.py` (except `test_host_*.py` and this file)
and interpreter, `test_x.py@64` and `test_x.py@32`, each running

    micropython -X heapsize=2048k tests/mpy_runner.py tests/test_x.py

The heap is stated in bytes, the same on both (a module may ask for another with a line
`# mpy-heapsize: 4096k`): the portable tests check behaviour, and their simulator fixtures
(whole-flash copies, panel pictures) are sized in bytes; heap figures are the bench's.

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

from tools import mpy32

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
HEAPSIZE = "2048k"
BUILDS = ("64", "32")
MPY32 = mpy32.INTERPRETER
TIMEOUT_S = 300
MICROPYPATH = ":".join([str(TESTS), str(ROOT), str(ROOT / "lib"), ".frozen"])
SUMMARY = re.compile(r"^(\d+) passed, (\d+) failed(?:, (\d+) skipped)?$", re.M)

PORTABLE = sorted(
    p.name
    for p in TESTS.glob("test_*.py")
    if not p.name.startswith("test_host_") and p.name != Path(__file__).name
)


HEAP_MARK = re.compile(r"^# mpy-heapsize: (\d+[km])$", re.M)


def heapsize(module):
    """HEAPSIZE, or a module's own `# mpy-heapsize: NNNNk` line (tests whose fixtures, not
    the firmware, need more contiguous heap: whole-flash copies in cut sweeps)."""
    m = HEAP_MARK.search((TESTS / module).read_text())
    return m.group(1) if m else HEAPSIZE


def find_micropython(build="64"):
    """The interpreter of one build: "64" (PyPI's, beside the venv's python) or "32"."""
    if build == "32":
        return str(MPY32) if MPY32.exists() else None
    local = Path(sys.executable).with_name("micropython")
    if local.exists():
        return str(local)
    return shutil.which("micropython")


HOW = {"64": "run `make venv`", "32": "run `make mpy32` (needs gcc-multilib)"}


@pytest.mark.parametrize(
    "module,build",
    [(m, b) for m in PORTABLE for b in BUILDS],
    ids=["%s@%s" % (m, b) for m in PORTABLE for b in BUILDS],
)
def test_micropython(module, build, mpy_results):
    exe = find_micropython(build)
    if exe is None:
        pytest.fail("no %s-bit `micropython`: %s" % (build, HOW[build]))
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
        mpy_results.append((module, 0, 0, build))
        pytest.fail(
            "timed out after %d s: %s\n%s" % (TIMEOUT_S, " ".join(cmd), out), pytrace=False
        )

    counts = SUMMARY.findall(proc.stdout)
    passed, failed = (int(counts[-1][0]), int(counts[-1][1])) if counts else (0, 0)
    mpy_results.append((module, passed, failed, build))
    if proc.returncode != 0:
        failures = re.findall(r"^FAIL (.+?): ", proc.stdout, re.M)
        headline = "under %s-bit MicroPython: " % build + (
            ", ".join(failures) or "crashed or ran no test"
        )
        pytest.fail(
            "%s\nexit status %d, MICROPYPATH=%s\n$ %s\n%s"
            % (headline, proc.returncode, MICROPYPATH, " ".join(cmd), proc.stdout),
            pytrace=False,
        )
