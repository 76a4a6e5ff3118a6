"""Minimal test runner for portable test modules, for MicroPython (and CPython).

    micropython tests/mpy_runner.py tests/test_x.py [tests/test_y.py ...]

For each file: import it as a top-level module (its directory and the repo root are put
on sys.path), then call every `test_*` function without arguments, in the order the
`def test_*` lines appear in the file (names defined otherwise follow, sorted). A test
must return None (an `async def` test would not run: call asyncio.run inside). Each
result prints as `PASS name`, `SKIP name: reason` or `FAIL name: <repr>` plus a traceback.
The last line is `N passed, M failed` (`, K skipped` appended when K > 0). Exit status is 1
if anything failed or nothing ran at all.
"""

import gc
import sys

IS_MICROPYTHON = sys.implementation.name == "micropython"


def _dirname(path):
    i = path.rfind("/")
    if i < 0:
        return "."
    return path[:i] or "/"


def _add_path(p):
    if p not in sys.path:
        sys.path.insert(0, p)


def _print_traceback(e):
    if IS_MICROPYTHON:
        sys.print_exception(e, sys.stdout)
    else:
        import traceback

        traceback.print_exception(type(e), e, e.__traceback__, file=sys.stdout)


def _defined_order(path):
    """Names of `def test_*` functions in source order (module dicts are unordered)."""
    names = []
    with open(path) as f:
        for line in f:
            if line.startswith("def test_"):
                name = line.split("def ", 1)[1].split("(", 1)[0].strip()
                if name not in names:
                    names.append(name)
    return names


def _collect(mod, path):
    found = [n for n in dir(mod) if n.startswith("test_") and callable(getattr(mod, n))]
    ordered = [n for n in _defined_order(path) if n in found]
    return ordered + sorted(n for n in found if n not in ordered)


class Result:
    def __init__(self):
        self.passed = 0
        self.failed = 0
        self.skipped = 0

    def fail(self, label, e):
        self.failed += 1
        print("FAIL " + label + ": " + repr(e))
        _print_traceback(e)


def run_file(path, result, skip_types):
    modname = path.rsplit("/", 1)[-1]
    if modname.endswith(".py"):
        modname = modname[:-3]
    _add_path(_dirname(path))
    try:
        mod = __import__(modname)
    except Exception as e:
        result.fail("import " + path, e)
        return
    for name in _collect(mod, path):
        label = modname + "." + name
        gc.collect()
        try:
            ret = getattr(mod, name)()
            if ret is not None:
                # e.g. an `async def` test: its body never ran. Use asyncio.run inside.
                if hasattr(ret, "close"):
                    ret.close()
                raise AssertionError("test returned " + repr(ret) + ", expected None")
        except Exception as e:
            if isinstance(e, skip_types):
                result.skipped += 1
                print("SKIP " + label + ": " + str(e))
            else:
                result.fail(label, e)
        else:
            result.passed += 1
            print("PASS " + label)


def main(argv):
    if not argv:
        print("usage: mpy_runner.py tests/test_x.py [...]")
        return 2
    here = _dirname(__file__)
    _add_path(_dirname(here) if here != "." else "..")
    _add_path(here)
    try:
        from support import Skipped

        skip_types = Skipped
    except ImportError:
        skip_types = ()
    result = Result()
    for path in argv:
        run_file(path, result, skip_types)
    line = "%d passed, %d failed" % (result.passed, result.failed)
    if result.skipped:
        line += ", %d skipped" % result.skipped
    print(line)
    ran = result.passed + result.failed + result.skipped
    return 1 if result.failed or not ran else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
