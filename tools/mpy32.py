"""The 32-bit MicroPython the tests and the bench run beside the 64-bit wheel.

An ESP32 has 4-byte objects and pointers and 31-bit small ints; the unix port from PyPI has
8-byte ones and 63-bit small ints. This builds the unix port of the same MicroPython release
family as a 32-bit program from the pinned source tarball (offline, gcc-multilib), so heap
figures are the board's and a value that becomes a long int only on 32 bits shows up here:

    python -m tools.mpy32 [--tarball T] [--out build/mpy32] [--frozen MANIFEST]

The tarball's SHA-256 must be `SOURCE_SHA256`. `--out` receives `micropython` (and
`mpy-cross`) and `source.sha256`; a build whose stamp names the tarball's hash and the same
manifest is kept. `--frozen` freezes a manifest (tools/build's manifest.py) into the
interpreter, the way a frozen ESP32 image keeps the firmware's bytecode in flash.
"""

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TARBALL = ROOT.parent / "shared" / "vendor" / "micropython-1.28.0-src.tar.gz"
SOURCE_SHA256 = "53d7cd21045006bbee6ac42f88c04fa3651f0d6ee8a9c4c016654e6a27b6cf80"
VERSION = "1.28.0"
OUT = ROOT / "build" / "mpy32"
# the interpreter the tests run (MICROPYTHON32 names another)
INTERPRETER = Path(os.environ.get("MICROPYTHON32", OUT / "micropython"))
# The unix port as a 32-bit program: no libffi (32-bit libffi is not in gcc-multilib), no
# btree, axtls for cryptolib (the mbedtls sources are not in the tarball).
MAKE_VARS = (
    "MICROPY_FORCE_32BIT=1",
    "MICROPY_PY_FFI=0",
    "MICROPY_PY_BTREE=0",
    "MICROPY_SSL_AXTLS=1",
    "MICROPY_SSL_MBEDTLS=0",
)


class BuildError(Exception):
    """The 32-bit interpreter could not be built; the message says why."""


def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def stamp_text(frozen):
    return "%s %s\n" % (SOURCE_SHA256, sha256_of(frozen) if frozen else "-")


def is_current(out, frozen=None):
    """True when `out` holds an interpreter built from the pinned source (and manifest)."""
    out = Path(out)
    stamp = out / "source.sha256"
    return (
        (out / "micropython").exists()
        and stamp.exists()
        and stamp.read_text() == stamp_text(frozen)
    )


def check_compiler():
    probe = subprocess.run(
        ["cc", "-m32", "-x", "c", "-", "-o", os.devnull],
        input="int main(void) { return 0; }\n",
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        raise BuildError(
            "cc cannot build 32-bit programs (install gcc-multilib): %s" % probe.stderr.strip()
        )


def build(tarball=DEFAULT_TARBALL, out=OUT, frozen=None, jobs=2, log=None):
    """Build (or keep) the 32-bit interpreter in `out`; return its path."""
    out = Path(out)
    frozen = Path(frozen).resolve() if frozen else None
    if is_current(out, frozen):
        return out / "micropython"
    tarball = Path(tarball)
    if not tarball.exists():
        raise BuildError("MicroPython source tarball not found: %s" % tarball)
    got = sha256_of(tarball)
    if got != SOURCE_SHA256:
        raise BuildError("%s: SHA-256 %s, expected %s" % (tarball, got, SOURCE_SHA256))
    check_compiler()
    src = out / "src"
    if src.exists():
        shutil.rmtree(src)
    src.mkdir(parents=True)
    with tarfile.open(tarball) as t:
        t.extractall(src, filter="data")
    top = src / "mpsrc"
    log = log or sys.stderr

    def make(where, *args):
        cmd = ["make", "-C", str(top / where), "-j%d" % jobs, *args]
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if proc.returncode != 0:
            raise BuildError("%s failed:\n%s" % (" ".join(cmd), proc.stdout[-4000:]))

    print("mpy32: building MicroPython %s, 32-bit, in %s" % (VERSION, top), file=log)
    make("mpy-cross")
    # frozen viper code is compiled for the interpreter's own arch (32-bit x86)
    extra = ["FROZEN_MANIFEST=%s" % frozen, "MPY_CROSS_FLAGS=-march=x86"] if frozen else []
    make("ports/unix", *MAKE_VARS, *extra)
    shutil.copy2(top / "ports/unix/build-standard/micropython", out / "micropython")
    shutil.copy2(top / "mpy-cross/build/mpy-cross", out / "mpy-cross")
    shutil.rmtree(src)  # 40 MB of objects: the two programs are what is kept
    (out / "source.sha256").write_text(stamp_text(frozen))
    return out / "micropython"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tarball", default=str(DEFAULT_TARBALL))
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--frozen", default=None, help="a manifest.py to freeze into it")
    ap.add_argument("-j", "--jobs", type=int, default=2)
    args = ap.parse_args(argv)
    try:
        exe = build(args.tarball, args.out, args.frozen, args.jobs)
    except BuildError as e:
        print("mpy32: %s" % e, file=sys.stderr)
        return 1
    print("mpy32: %s" % exe)
    return 0


if __name__ == "__main__":
    sys.exit(main())
