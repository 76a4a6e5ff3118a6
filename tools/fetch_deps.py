"""Fetch the micropython-lib packages the firmware uses into lib/ (CPython, host).

micropython-lib `umqtt.simple` is a dependency, never part of the tree. Its PyPI sdist
(1.3.4) has no setup.py, so pip cannot install it: this script downloads the sdist
from PyPI, checks its SHA-256 against the digest PyPI publishes, and unpacks the
package's modules into lib/ (on MICROPYPATH for the tests and the simulator). The
ESP32 image freezes umqtt.simple already; the build brings its own copy.

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
PACKAGES = [("micropython-umqtt.simple", "1.3.4", ["umqtt/simple.py"])]


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
        for member in members:
            if member not in names:
                raise SystemExit("fetch_deps: %s not in %s" % (member, info["filename"]))
            out = dest / member
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(tar.extractfile(names[member]).read())
            print("fetch_deps: %s %s -> %s" % (name, version, out.relative_to(ROOT)))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dest", default=str(ROOT / "lib"))
    args = ap.parse_args(argv)
    dest = Path(args.dest).resolve()
    for name, version, members in PACKAGES:
        fetch(name, version, members, dest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
