"""Small helpers for portable tests (run under both CPython pytest and MicroPython).

Portable test modules import this as `import support` (tests/ is on the path in both
runtimes). Nothing here imports pytest at module level.
"""

import sys

MICROPYTHON = sys.implementation.name == "micropython"


class Skipped(Exception):
    """Raised by skip() outside pytest; tests/mpy_runner.py reports it as skipped."""


def raises(exc_type, fn, *args, **kw):
    """Call fn(*args, **kw), return the exception it raised if it is an exc_type.

    Any other exception propagates; returning normally raises AssertionError.
    """
    try:
        fn(*args, **kw)
    except exc_type as e:
        return e
    name = getattr(exc_type, "__name__", None) or repr(exc_type)
    raise AssertionError("expected " + name + " from " + getattr(fn, "__name__", repr(fn)))


def skip(reason):
    """Skip the current test: pytest.skip under pytest, else raise Skipped for the runner."""
    pytest = sys.modules.get("pytest")
    if pytest is not None:
        pytest.skip(reason)
    raise Skipped(reason)
