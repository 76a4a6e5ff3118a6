"""Fetch the micropython-lib packages the firmware uses into lib/ (CPython, host).

micropython-lib `umqtt.simple` is a dependency, never part of the tree, pinned to one
version (PACKAGES: the version and the SHA-256 of each module file). Its PyPI sdist has
no setup.py, so pip cannot install it: this script downloads the sdist from PyPI, checks
its SHA-256 against the digest PyPI publishes and each module against the pin, and
unpacks the modules into lib/ under the project's own package `meterdeps`
(lib/meterdeps/umqtt/simple.py, imported as `meterdeps.umqtt.simple`). A stock ESP32
image freezes another umqtt.simple as `umqtt.simple` (`.frozen` comes before /lib on the
board): under its own name the pinned copy is the one that loads (docs/board.md).

Usage: python tools/fetch_deps.py [--dest lib]
"""

import argparse
import hashlib
import io
import json
import sys
import tarfile
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INDEX = "https://pypi.org/simple/%s/"  # the simple API (PEP 691 JSON): files and hashes
PACKAGE_DIR = "meterdeps"  # lib/<this>/...: the project's own import path for them
# (PyPI name, version, {module file in the sdist: its SHA-256}, import name)
PACKAGES = [
    (
        "micropython-umqtt.simple",
        "1.3.4",
        {"umqtt/simple.py": "8555d2f654deb8eb0d724f79b0811a78cc94029d070f3d96bbd74288653d63a5"},
        "umqtt.simple",
    ),
]


def pinned(module):
    """(PyPI name, version, lib/-relative path, SHA-256) of a pinned module by its import
    name under the project's package, e.g. "meterdeps.umqtt.simple"."""
    for name, version, members, mod in PACKAGES:
        if PACKAGE_DIR + "." + mod == module:
            member = mod.replace(".", "/") + ".py"
            return name, version, PACKAGE_DIR + "/" + member, members[member]
    raise KeyError(module)


def _normalise(name):
    return "-".join(name.lower().replace("_", "-").replace(".", "-").split("-"))


def fetch(name, version, members, dest):
    req = urllib.request.Request(
        INDEX % _normalise(name), headers={"Accept": "application/vnd.pypi.simple.v1+json"}
    )
    with urllib.request.urlopen(req, timeout=60) as r:
        meta = json.load(r)
    want = ("%s-%s.tar.gz" % (name, version)).lower()
    files = [f for f in meta["files"] if f["filename"].lower() == want]
    if not files:
        raise SystemExit("fetch_deps: no sdist %s on PyPI" % want)
    info = files[0]
    with urllib.request.urlopen(info["url"], timeout=120) as r:
        data = r.read()
    if hashlib.sha256(data).hexdigest() != info["hashes"]["sha256"]:
        raise SystemExit("fetch_deps: %s: SHA-256 mismatch, not unpacked" % info["filename"])
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        names = {Path(m.name).relative_to(Path(m.name).parts[0]).as_posix(): m for m in tar}
        for member, digest in members.items():
            if member not in names:
                raise SystemExit("fetch_deps: %s not in %s" % (member, info["filename"]))
            body = tar.extractfile(names[member]).read()
            if hashlib.sha256(body).hexdigest() != digest:
                raise SystemExit("fetch_deps: %s %s: not the pinned file" % (name, member))
            out = dest / PACKAGE_DIR / member
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(body)
            print("fetch_deps: %s %s -> %s" % (name, version, out.relative_to(ROOT)))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dest", default=str(ROOT / "lib"))
    args = ap.parse_args(argv)
    dest = Path(args.dest).resolve()
    for name, version, members, _ in PACKAGES:
        fetch(name, version, members, dest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
