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


_made = [0]


def tmpdir(prefix="meter_test"):
    """A fresh directory under /tmp (os only: MicroPython has no tempfile)."""
    import os

    while True:
        _made[0] += 1
        name = "/tmp/%s_%d_%d" % (prefix, _ticks(), _made[0])
        try:
            os.mkdir(name)
            return name
        except OSError:
            pass


def _ticks():
    import time

    return time.time_ns() // 1000 if hasattr(time, "time_ns") else int(time.time() * 1e6)


def run_delay_us():
    """Microseconds this thread has waited for a CPU while ready to run (Linux
    /proc/thread-self/schedstat, second field; /proc/self/schedstat on a kernel without
    thread-self), or None where the kernel does not say. A wall-clock gap less the run
    delay inside it is what the code itself took, sleeps and blocking calls included:
    other processes' load on the machine is not in it."""
    for path in ("/proc/thread-self/schedstat", "/proc/self/schedstat"):
        try:
            with open(path) as f:
                return int(f.read().split()[1]) // 1000
        except (OSError, ValueError, IndexError):
            pass
    return None


def rmtree(d):
    """Remove a directory tree made by tmpdir()."""
    import os

    for name in os.listdir(d):
        p = d + "/" + name
        try:
            os.remove(p)
        except OSError:
            rmtree(p)
    os.rmdir(d)


def drive(clock, coro, limit_ms=600000):
    """Run coro on a tools.sim VirtualClock until it finishes; return its result or
    raise what it raised (AssertionError if still waiting at limit_ms)."""
    import asyncio

    box = {}

    async def wrap():
        try:
            box["v"] = await coro
        except Exception as e:
            box["e"] = e
        box["done"] = True

    async def main():
        asyncio.create_task(wrap())
        while "done" not in box and clock.now < limit_ms:
            await clock.run(clock.now + 50)

    asyncio.run(main())
    assert "done" in box, "still waiting at %d ms" % clock.now
    if "e" in box:
        raise box["e"]
    return box.get("v")


def run_app(board, app, until_ms, calls=()):
    """Run the app's tasks to until_ms on the board's virtual clock, in one event loop as
    on the board, then stop them. Each (at_ms, fn) in `calls` is called inside the loop
    at that time (as the console calls tech); returns what they returned (or raised)."""
    import asyncio

    got = []

    async def call(at_ms, fn):
        await board.clock.sleep_ms(at_ms)
        try:
            got.append(fn())
        except Exception as e:
            got.append(e)

    async def go():
        tasks = [asyncio.create_task(t) for t in app.tasks()]
        for at_ms, fn in calls:
            tasks.append(asyncio.create_task(call(at_ms, fn)))
        await board.clock.run(until_ms)
        for t in tasks:
            t.cancel()
        for _ in range(3):
            await asyncio.sleep(0)

    asyncio.run(go())
    return got


def topup(app, amount):
    """Credit `amount` minor units the way money comes in: a compact token vended under
    the app's own meter key for the next token id its memory takes, entered through the
    one credit path (App.enter: checked, applied, journaled, answered). Returns the
    balance after it; AssertionError when the meter refused it."""
    from tools.sim import tokenmint

    tokens = app.intake.tokens
    assert tokens.key is not None, "topup: the meter has no key"
    token = tokenmint.compact_credit(tokens.key, tokens.memory.high + 1, amount, rnd=0)
    r, balance = app.enter(token)
    assert r.accepted, "topup: refused with code %d" % r.code
    return balance


def fails(exc_type, clock, coro):
    """drive() a coroutine that must raise exc_type; return the exception."""
    try:
        drive(clock, coro)
    except exc_type as e:
        return e
    raise AssertionError("expected " + exc_type.__name__)


def read_file(path):
    """A file's bytes, or None when it does not exist."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def write_file(path, data):
    with open(path, "wb") as f:
        f.write(data)


def import_umqtt():
    """micropython-lib umqtt.simple is a dependency, never in the tree: the pinned copy in
    lib/meterdeps/ (`make deps`), or in $UMQTT_DIR/meterdeps/; imported by the name the
    firmware uses, `meterdeps.umqtt.simple` (firmware/comms/mqtt/session.py's CLIENT)."""
    import os
    import socket

    if sys.implementation.name != "micropython":
        import binascii
        import struct

        for old, new in (("usocket", socket), ("ustruct", struct), ("ubinascii", binascii)):
            if old not in sys.modules:
                sys.modules[old] = new
    cands = ["lib"]
    d = os.getenv("UMQTT_DIR") if hasattr(os, "getenv") else None
    if d:
        cands.insert(0, d)
    for d in cands:
        try:
            os.stat(d + "/meterdeps/umqtt/simple.py")
        except OSError:
            continue
        if d not in sys.path:
            sys.path.insert(0, d)
        from meterdeps.umqtt import simple

        return simple
    raise AssertionError("umqtt.simple not found in lib/meterdeps/: run `make deps`")
