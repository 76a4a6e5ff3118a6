"""No firmware module touches another's private members.

Every firmware file is read with `ast`: an attribute `x._name` where x is not `self` or
`cls` (another object's private member, e.g. `app._error` or `intake._set`), and a
`from m import _name`, fail the test with the file, the line and the expression.
Dunder names (`__name__`, `__class__`) are Python's, not a module's, and pass. Planted
wrong accesses show the check can fail.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIRMWARE = ROOT / "firmware"


def _private(name):
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_uses(source):
    """[(line, text)] of the private members a module's source reaches in others."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            v = node.value
            if isinstance(v, ast.Name) and v.id in ("self", "cls"):
                continue
            out.append((node.lineno, ast.unparse(node)))
        elif isinstance(node, ast.ImportFrom):
            for a in node.names:
                if _private(a.name):
                    out.append((node.lineno, "from %s import %s" % (node.module, a.name)))
    return out


def test_no_firmware_module_uses_another_s_private_members():
    bad = []
    files = sorted(FIRMWARE.rglob("*.py"))
    assert len(files) > 40
    for path in files:
        for line, text in private_uses(path.read_text()):
            bad.append("%s:%d: %s" % (path.relative_to(ROOT), line, text))
    assert bad == [], "\n".join(bad)


def test_a_planted_private_access_fails():
    planted = (
        "from firmware.billing.meter import _FLAG_EC\n"
        "def f(app):\n"
        "    app._error('x', None)\n"
        "    app.meter.control._apply()\n"
    )
    assert private_uses(planted) == [
        (1, "from firmware.billing.meter import _FLAG_EC"),
        (3, "app._error"),
        (4, "app.meter.control._apply"),
    ]


def test_own_members_and_dunders_pass():
    fine = (
        "class A:\n"
        "    def f(self):\n"
        "        self._x = type(self).__name__\n"
        "    @classmethod\n"
        "    def g(cls):\n"
        "        return cls._y\n"
        "from firmware.billing import meter\n"
    )
    assert private_uses(fine) == []
