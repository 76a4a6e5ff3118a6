"""Only what the meter runs is in the image: the image's code (tools/build.code_sources:
firmware/, drivers/ and the pinned libraries) is exactly the modules the import
statements reach from boot.py and main.py, lazy imports inside functions included, plus
the modules tools/build.LAZY declares the meter loads by a computed name. A test or
simulator helper left in firmware/ or drivers/ fails here: it belongs in tests/ or
tools/sim/. Planted modules show the check can fail both ways."""

import ast

from tools import build


def image_modules(sources):
    """{dotted module name: source Path} of code_sources() rows."""
    out = {}
    for src, _, dest in sources:
        name = dest[: -len(".mpy")]
        if name.startswith(build.LIB + "/"):
            name = name[len(build.LIB) + 1 :]
        name = name.replace("/", ".")
        if name.endswith(".__init__"):
            name = name[: -len(".__init__")]
        out[name] = src
    return out


def named(source, module, is_package):
    """Every module name an import statement of `source` may load, at any depth: `from
    a.b import c` names a.b and a.b.c (c may be a submodule)."""
    out = set()
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")
                up = up[: len(up) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            out.add(base)
            out |= {base + "." + a.name for a in node.names}
    return out


def reached(modules, roots):
    """The modules of `modules` ({name: Path}) that imports reach from the `roots` sources
    (a package's __init__ comes with each of its modules)."""
    seen, todo = set(), []

    def add(name):
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            m = ".".join(parts[:i])
            if m in modules and m not in seen:
                seen.add(m)
                todo.append(m)

    for root in roots:
        for name in named(root.read_text(), "__main__", False):
            add(name)
    while todo:
        m = todo.pop()
        src = modules[m]
        for name in named(src.read_text(), m, src.name == "__init__.py"):
            add(name)
    return seen


ROOTS = [build.ROOT / f for f in build.SOURCE_FILES]


def test_the_image_holds_exactly_the_modules_the_meter_imports():
    modules = image_modules(build.code_sources())
    got = reached(modules, ROOTS) | set(build.LAZY)
    assert sorted(set(modules) - got) == []  # in the image, never imported
    assert sorted(got - set(modules)) == []  # declared lazy but not in the image
    assert not set(build.LAZY) & reached(modules, ROOTS)  # an import reaches it: not lazy
    assert {"firmware.start", "firmware.app", "drivers.board", build.MQTT_CLIENT} <= got


def test_a_module_nobody_imports_or_a_lost_lazy_one_is_found(tmp_path):
    stray = tmp_path / "minter.py"
    stray.write_text("def mint():\n    return 1\n")
    sources = build.code_sources() + [(stray, "firmware/minter.py", "firmware/minter.mpy")]
    modules = image_modules(sources)
    unreached = set(modules) - reached(modules, ROOTS)
    assert sorted(unreached - set(build.LAZY)) == ["firmware.minter"]
    user = tmp_path / "user.py"  # the same module, now imported lazily by one that is
    user.write_text("def f():\n    from firmware import minter\n\n    return minter.mint()\n")
    modules["firmware.tokens.user"] = user
    tokens = modules["firmware.tokens"]
    assert "firmware.minter" not in reached(modules, ROOTS)
    modules["firmware.tokens"] = tmp_path / "__init__.py"
    modules["firmware.tokens"].write_text(tokens.read_text() + "\nfrom . import user\n")
    assert "firmware.minter" in reached(modules, ROOTS)


def test_test_and_simulator_helpers_are_not_in_the_image():
    names = set(image_modules(build.code_sources()))
    assert not [n for n in names if n.split(".")[0] not in ("firmware", "drivers", "meterdeps")]
    assert "firmware.tokens.tokenmint" not in names and "firmware.tokenmint" not in names
