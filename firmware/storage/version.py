"""Software identification (legal metrology): the version and a hash of the firmware files.

The build (tools/build) writes `version.json` into the image: the version, the files it
put there with the SHA-256 of each, and the combined hash. `identify()` recomputes the
same hashes over the files as they are on the meter now and says whether they match, so
a technician (and the back office, through `tech.version()`) can tell a meter runs the
software that was certified and that no file was changed or is missing.

Combined hash: SHA-256 over the UTF-8 lines `<path> <sha256 hex of the file's bytes>\\n`
of every file, sorted by path (paths relative to the root, '/' separated). Without a
`version.json` (a development tree) the files hashed are boot.py, main.py and the .py
and .mpy files under firmware/ and drivers/, and the version is "unreleased".

Libraries (`library(name)`): the build records in version.json's "libraries" what each
pinned dependency is (its distribution, version and the image file holding it, None when
frozen). A module identifies itself by the file it was loaded from: when that is the
file the build put there, unchanged (its SHA-256 the one in "files"), its version is the
recorded one; any other file (another copy on the path, a frozen module the build did
not freeze) is "unknown", with the file named. umqtt.simple carries no version of its own.
"""

import binascii
import hashlib
import json
import os

MANIFEST = "version.json"
_DIRS = ("firmware", "drivers")
_S_IFDIR = 0x4000  # os.stat()[0]: a directory (POSIX st_mode, as MicroPython gives it)


def file_hash(path):
    """Hex SHA-256 of a file's bytes, read in small pieces; None when it cannot be read."""
    h = hashlib.sha256()
    buf = bytearray(512)
    mv = memoryview(buf)
    try:
        with open(path, "rb") as f:
            while True:
                n = f.readinto(buf)
                if not n:
                    break
                h.update(mv[:n])
    except OSError:
        return None
    return binascii.hexlify(h.digest()).decode()


def combined(hashes):
    """The combined hash of {path: hex} (see the module docstring)."""
    h = hashlib.sha256()
    for path in sorted(hashes):
        h.update((path + " " + hashes[path] + "\n").encode())
    return binascii.hexlify(h.digest()).decode()


def _manifest(root):
    try:
        with open(_join(root, MANIFEST)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


_software = {}  # root: software_id(), read once (the manifest does not change while running)


def software_id(root=""):
    """The software as the build identified it, short and cheap (no file is hashed):
    "<version>+<first 12 hex of the built combined hash>", or "unreleased" without a
    version.json. What the meter reports in its state; identify() proves the files."""
    got = _software.get(root)
    if got is None:
        manifest = _manifest(root)
        if manifest is None:
            got = "unreleased"
        else:
            got = str(manifest.get("version", "?")) + "+" + str(manifest.get("hash", ""))[:12]
        _software[root] = got
    return got


_libs = {}  # name: what library() found, once the module is loaded (it cannot change)


def library(name, root=""):
    """{"module", "loaded", "file", "version", "dist"} of a library module as the meter
    loaded it (see the module docstring); "loaded" False and no file while nobody has
    imported it."""
    import sys

    got = _libs.get(name)
    if got is not None:
        return got
    manifest = _manifest(root) or {}
    rec = manifest.get("libraries", {}).get(name) or {}
    out = {"module": name, "loaded": False, "file": None, "version": None}
    out["dist"] = rec.get("dist")
    mod = sys.modules.get(name)
    if mod is None:
        return out
    out["loaded"] = True
    path = getattr(mod, "__file__", None)
    out["file"] = path
    out["version"] = "unknown"
    if path is None:
        pass
    elif path.startswith(".frozen/"):
        if manifest.get("frozen") and "version" in rec and rec.get("file") is None:
            out["version"] = rec["version"]  # the build froze it: no file to hash
    else:
        rel = path.lstrip("/")
        if root not in ("", ".", "/") and rel.startswith(root.strip("/") + "/"):
            rel = rel[len(root.strip("/")) + 1 :]
        h = file_hash(path)
        if h is not None and rec.get("file") == rel and manifest["files"].get(rel) == h:
            out["version"] = rec["version"]
        else:
            out["sha256"] = h
    _libs[name] = out
    return out


def _join(root, path):
    return path if root in ("", ".") else root + "/" + path


def _is_dir(path):
    try:
        return os.stat(path)[0] & _S_IFDIR != 0
    except OSError:
        return False


def _tree(root):
    names = []
    for top in ("boot.py", "main.py"):
        try:
            os.stat(_join(root, top))
            names.append(top)
        except OSError:
            pass
    dirs = list(_DIRS)
    while dirs:
        d = dirs.pop()
        try:
            entries = os.listdir(_join(root, d))
        except OSError:
            continue
        for n in entries:
            if n.endswith(".py") or n.endswith(".mpy"):
                names.append(d + "/" + n)
            elif n != "__pycache__" and _is_dir(_join(root, d + "/" + n)):
                dirs.append(d + "/" + n)  # a package
    return names


def identify(root=""):
    """{"version", "hash" (now), "built_hash", "match", "files", "changed", "missing"}.
    Reads and hashes every file at once: from the asyncio loop use identify_async."""
    out = {}
    for _ in _identify(root, out):
        pass
    return out


async def identify_async(sleep_ms, root=""):
    """identify(), giving the loop a turn after each file (sleep_ms: the clock's)."""
    out = {}
    for _ in _identify(root, out):
        await sleep_ms(0)
    return out


def _identify(root, out):
    """Fills `out` (see identify), yielding after each file hashed."""
    manifest = _manifest(root)
    if manifest is not None:
        names = list(manifest.get("files", {}))
        version = manifest.get("version", "?")
    else:
        names = _tree(root)
        version = "unreleased"
    now = {}
    missing = []
    for path in names:
        h = file_hash(_join(root, path))
        if h is None:
            missing.append(path)
        else:
            now[path] = h
        yield
    out["version"] = version
    out["hash"] = combined(now)
    out["files"] = len(now)
    if manifest is not None:
        built = manifest.get("files", {})
        out["built_hash"] = manifest.get("hash")
        out["changed"] = sorted([p for p in now if now[p] != built.get(p)])
        out["missing"] = sorted(missing)
        out["match"] = not out["changed"] and not missing and out["hash"] == out["built_hash"]
    else:
        out["match"] = None
