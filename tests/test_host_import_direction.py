"""The direction of imports inside firmware/ (the rule in firmware/__init__.py's docstring).

Every `import` and `from ... import` of every firmware module, at any depth (lazy ones
inside functions included), is read with `ast`; an import from a room above the
importer's, or between comms and ui, fails the test with the file, the line and the
arrow. A planted wrong import shows the check can fail.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIRMWARE = ROOT / "firmware"

# room -> level; a module may import its own room and rooms of a lower level only.
# comms and ui share a level and may not import each other.
LEVELS = {
    "storage": 0,
    "billing": 1,
    "tokens": 2,
    "comms": 3,
    "ui": 3,
    "app": 4,
    "config": 4,
    "service": 5,
    "build": 6,
    "start": 7,
}
# Only start-up meets the hardware: drivers/ is imported from these rooms alone (the
# board, its clock and reset; the metering chip's calibration check of a settings file).
DRIVER_ROOMS = ("build", "config", "start")


def room_of_module(name):
    """'firmware.billing.ledger' -> 'billing'; 'firmware.app' -> 'app'; None: not firmware."""
    parts = name.split(".")
    if parts[0] != "firmware" or len(parts) < 2:
        return None
    return parts[1]


def room_of_file(path):
    rel = path.relative_to(FIRMWARE).parts
    return rel[0][:-3] if len(rel) == 1 else rel[0]


def imports(source, module_name):
    """[(line, imported module name)] of a module's source, at any depth."""
    out = []
    package = module_name.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")
                up = up[: len(up) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            if base == "firmware":  # from firmware import app: the module is firmware.app
                out += [(node.lineno, "firmware." + a.name) for a in node.names]
            else:
                out.append((node.lineno, base))
    return out


def wrong_arrows(path, source):
    """[(line, text)] of the imports of one firmware file that break the rule."""
    rel = path.relative_to(ROOT).with_suffix("")
    name = ".".join(rel.parts)
    if name.endswith(".__init__"):
        name = name[: -len(".__init__")] + ".x"
    mine = room_of_file(path)
    bad = []
    for line, target in imports(source, name):
        if target.split(".")[0] == "drivers" and mine not in DRIVER_ROOMS:
            bad.append((line, "%s -> %s (firmware imports no driver)" % (mine, target)))
            continue
        theirs = room_of_module(target)
        if theirs is None or theirs == mine:
            continue
        if theirs not in LEVELS:
            bad.append((line, "%s -> %s (no such room)" % (mine, target)))
        elif LEVELS[theirs] >= LEVELS[mine]:
            bad.append((line, "%s -> %s" % (mine, target)))
    return bad


def firmware_files():
    return sorted(FIRMWARE.rglob("*.py"))


def test_every_room_is_known():
    rooms = {room_of_file(p) for p in firmware_files()} - {"__init__"}
    assert rooms == set(LEVELS), rooms ^ set(LEVELS)


@pytest.mark.parametrize("path", firmware_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_down(path):
    bad = wrong_arrows(path, path.read_text())
    assert not bad, "\n".join("%s:%d: %s" % (path.relative_to(ROOT), n, t) for n, t in bad)


@pytest.mark.parametrize(
    "rel, planted",
    [
        ("firmware/billing/policy.py", "from firmware.tokens import codes\n"),
        ("firmware/billing/ledger.py", "    from firmware.comms import signed\n"),
        ("firmware/comms/sms.py", "from firmware.ui import screens\n"),
        ("firmware/ui/screens.py", "from firmware.comms.mqtt import session\n"),
        ("firmware/storage/journal.py", "from firmware.billing import money\n"),
        ("firmware/tokens/intake.py", "from firmware import app\n"),
        ("firmware/app.py", "from drivers import relay\n"),
        ("firmware/service/tech.py", "from firmware.start import main\n"),
    ],
)
def test_a_planted_wrong_import_fails(rel, planted):
    path = ROOT / rel
    source = path.read_text()
    assert not wrong_arrows(path, source)
    if planted.startswith(" "):
        planted = "def _planted():\n" + planted
    assert wrong_arrows(path, source + "\n" + planted)
