"""Configuration files (settings, keys, tariff tables) replaced atomically, loaded with fallback.

Each file `path` has up to three companions: `path.new` (a save in progress), `path.bak`
(the last good copy) and `path.bad` (a file that failed to load, kept for the technician).

`save(path, data)` writes `path.new` completely, renames `path` to `path.bak`, then
renames `path.new` over `path`. On littlefs a file's contents commit on close and a rename
is atomic, so a power cut at any point leaves the old data in `path`, or the new data
complete in `path.new` (the cut fell between the renames: `path` is missing), or the new
data in `path`: a load always finds the old or the new contents.

`load(path, parse)` returns `(value, source, reason)`:
  value   what `parse(bytes)` returned for the file used, or None when no file parsed
          (the caller then uses its defaults);
  source  MAIN ("main": `path` itself), NEW ("new": `path.new`, the save that was cut
          between its renames), BAK ("bak": the last good copy) or None (nothing usable);
  reason  None when source is MAIN; else why `path` was not used: MISSING or the error
          text ("ValueError: ..."); with source None and files present but none good,
          each candidate's reason, "; "-joined.
`parse` raises ValueError (or KeyError, TypeError...) on bad contents: every Exception
counts as a bad file and is reported, never silenced. The caller turns a report with a
source other than MAIN into an event. A load also tidies up, best effort (an OSError here
is ignored: the value is right and the next load tries again): a bad `path` is renamed to
`path.bad` (so a later save cannot rotate it over the good `.bak`); a good `path.new` is
renamed over `path` (finishing the cut save); `path` is restored from a good `.bak`;
a `path.new` left beside a good `path` (a save cut before its renames: never committed)
is removed; and `.bak` is rewritten when it differs from the good `path`, so the last
good copy always exists.
"""

import binascii
import os
import struct

MAIN = "main"
NEW = "new"
BAK = "bak"
MISSING = "missing"
_ENOENT = 2


def save(path, data):
    """Replace the contents of `path` with `data` (bytes), atomically on littlefs.

    The file in `path` becomes `path.bak`: load first (it moves a bad file aside), as the
    meter does at boot, so that what is rotated there is a good copy.
    """
    _write(path + ".new", data)
    if exists(path):
        os.rename(path, path + ".bak")
    os.rename(path + ".new", path)


def load(path, parse):
    """(value, source, reason) of the newest good copy of `path`; see the module doc."""
    value, reason, data = _try(path, parse)
    if reason is None:
        _tidy(path, data)
        return value, MAIN, None
    if reason != MISSING:
        _quietly(os.rename, path, path + ".bad")
    reasons = [reason]
    for source in (NEW, BAK):
        other = path + "." + source
        value, why, data = _try(other, parse)
        if why is None:
            try:
                if source == NEW:
                    os.rename(other, path)  # finish the save that was cut
                else:
                    save(path, data)  # restore the file from the last good copy
                _tidy(path, data)
            except OSError:
                pass  # best effort: the value is right and the next load tries again
            return value, source, reason
        reasons.append(why)
    if reasons == [MISSING, MISSING, MISSING]:
        return None, None, MISSING
    out = []
    for suffix, why in zip(("", ".new", ".bak"), reasons):
        if why != MISSING:
            out.append(path + suffix + ": " + why)
    return None, None, "; ".join(out)


def _try(path, parse):
    """(value, None, data) when `path` reads and parses; else (None, reason, None)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        if e.args and e.args[0] == _ENOENT:
            return None, MISSING, None
        return None, _text(e), None
    try:
        return parse(data), None, data
    except Exception as e:  # any failure of the parse step means a bad file
        return None, _text(e), None


def _tidy(path, data):
    """`path` holds good `data`: drop a stale `.new`, make `.bak` a copy of it."""
    _quietly(os.remove, path + ".new")
    bak = path + ".bak"
    try:
        with open(bak, "rb") as f:
            same = f.read() == data
    except OSError:
        same = False
    if not same:
        _quietly(_write, bak, data)


def _write(path, data):
    with open(path, "wb") as f:
        f.write(data)


def seal(buf):
    """A key record (meter.key, opaygo.key, lora.key) closed with the CRC-32 of all but
    its last 4 bytes, written there little-endian; returns the record's bytes."""
    n = len(buf) - 4
    struct.pack_into("<I", buf, n, binascii.crc32(memoryview(buf)[:n]))
    return bytes(buf)


def sealed(data):
    """True when a key record's last 4 bytes are the CRC-32 of the rest (see seal)."""
    n = len(data) - 4
    (crc,) = struct.unpack_from("<I", data, n)
    return crc == binascii.crc32(memoryview(data)[:n])


def beside(path, name):
    """The file `name` in the directory of `path` (the meter's files live together)."""
    i = path.rfind("/")
    return (path[: i + 1] if i >= 0 else "") + name


def exists(path):
    """True when `path` names something on the filesystem."""
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def _quietly(fn, *args):
    try:
        fn(*args)
    except OSError:
        pass


def _text(e):
    msg = str(e)
    name = type(e).__name__
    return name + ": " + msg if msg else name
