"""tools/mpy32.py and the 32-bit interpreter it builds: the ESP32's sizes, the pinned source."""

import subprocess

import pytest

from tools import mpy32

MPY32 = mpy32.INTERPRETER

PROBE = """
import sys, micropython
print(sys.implementation.version[:3], sys.maxsize)
n = 1 << 29
micropython.heap_lock()
try:
    m = n + n   # 2**30: a small int on 64 bits, a heap-allocated long int on 32 bits
    print("small")
except MemoryError:
    print("long")
micropython.heap_unlock()
"""


def run(exe):
    proc = subprocess.run([str(exe), "-c", PROBE], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout.split()


def test_the_32_bit_interpreter_has_the_boards_sizes_and_the_pinned_version():
    if not MPY32.exists():
        pytest.fail("no 32-bit micropython at %s: run `make mpy32`" % MPY32)
    assert run(MPY32) == ["(1,", "28,", "0)", str(2**31 - 1), "long"]
    assert mpy32.is_current(MPY32.parent)


def test_the_64_bit_wheel_is_what_the_32_bit_build_corrects():
    from tools.sim.host import micropython_cmd

    out = run(micropython_cmd())
    assert out[3:] == [str(2**63 - 1), "small"]


def test_a_tarball_that_is_not_the_pinned_source_is_refused(tmp_path):
    bad = tmp_path / "micropython.tar.gz"
    bad.write_bytes(b"not the source")
    with pytest.raises(mpy32.BuildError, match="SHA-256"):
        mpy32.build(bad, tmp_path / "out")
    with pytest.raises(mpy32.BuildError, match="not found"):
        mpy32.build(tmp_path / "missing.tar.gz", tmp_path / "out")
    assert not (tmp_path / "out" / "micropython").exists()


def test_a_build_is_kept_only_while_its_stamp_names_the_source_and_manifest(tmp_path):
    out = tmp_path / "b"
    out.mkdir()
    (out / "micropython").write_bytes(b"")
    assert not mpy32.is_current(out)
    (out / "source.sha256").write_text(mpy32.stamp_text(None))
    assert mpy32.is_current(out)
    manifest = tmp_path / "manifest.py"
    manifest.write_text("freeze('.')\n")
    assert not mpy32.is_current(out, manifest)  # a frozen build is another build
    (out / "source.sha256").write_text("0" * 64 + " -\n")
    assert not mpy32.is_current(out)
