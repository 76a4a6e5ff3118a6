"""pytest setup for the CPython side of the suite.

- Import paths: the repo root and tests/ go first on sys.path, so tests import
  `firmware.x`, `drivers.x`, `tools.sim.x` and `support` exactly as under MicroPython
  (test_zz_micropython.py). No test imports `machine`: the firmware reaches the
  hardware through the board object tests build (tools/sim/board.py).
- Hypothesis: profile "ci" is loaded unless HYPOTHESIS_PROFILE names another.
- Summary: one `runtimes:` line saying how many tests ran under each interpreter.
"""

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
BRIDGE = "test_zz_micropython.py"

for _p in (str(TESTS), str(ROOT)):
    if _p in sys.path:
        sys.path.remove(_p)
    sys.path.insert(0, _p)

try:
    from hypothesis import HealthCheck, settings
except ImportError:  # hypothesis is a dev dependency; portable tests don't need it
    pass
else:
    settings.register_profile(
        "ci",
        deadline=None,
        max_examples=100,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow],
    )
    settings.register_profile("thorough", deadline=None, max_examples=2000, print_blob=True)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


# Per-session tallies: CPython test calls, and (module, passed, failed, build) per bridge run.
_cpython_ran = 0
_mpy_runs = []


@pytest.fixture
def mpy_results():
    """List the MicroPython bridge appends (module, passed, failed, build) tuples to."""
    return _mpy_runs


def pytest_runtest_logreport(report):
    global _cpython_ran
    if report.when == "call" and not report.nodeid.split("::")[0].endswith(BRIDGE):
        _cpython_ran += 1


def pytest_terminal_summary(terminalreporter):
    if not (_cpython_ran or _mpy_runs):
        return  # e.g. --collect-only
    parts = ["CPython %d tests" % _cpython_ran]
    for build in ("64", "32"):
        runs = [r for r in _mpy_runs if r[3] == build]
        parts.append(
            "MicroPython %s-bit %d tests in %d modules"
            % (build, sum(r[1] + r[2] for r in runs), len(runs))
        )
    terminalreporter.write_line("runtimes: " + ", ".join(parts))
