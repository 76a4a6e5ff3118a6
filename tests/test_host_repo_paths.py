"""No file of the repository names a path outside it.

Facts the code cites live in docs/ with their public sources, so every reference in
firmware/, drivers/, tools/, tests/, boot.py, main.py, README.md, CHANGES.md and docs/
resolves inside the repository. A file that names the shared folder beside the checkout,
the machine's work directory or someone's home directory (OUTSIDE below) fails with the
file, the line and the text. Planted paths show the check can fail.
"""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TREES = ("firmware", "drivers", "tools", "tests", "docs")
FILES = ("boot.py", "main.py", "README.md", "CHANGES.md")
TEXT = {".py", ".md", ".json", ".csv", ".toml", ".txt", ".mako", ".cfg", ".ini", ".sh"}

# written in pieces so that this file does not name them itself
OUTSIDE = re.compile(
    "|".join(
        (
            r"\.\./" + "shared",
            r"(?<![\w.])/" + "work/",
            r"(?<![\w.])/" + r"home/[A-Za-z0-9_.-]+",
            r"(?<![\w.])/" + r"Users/[A-Za-z0-9_.-]+",
            r"(?<![\w.])/" + "root/",
        )
    )
)


def repo_files():
    out = [ROOT / name for name in FILES if (ROOT / name).exists()]
    for tree in TREES:
        for path in sorted((ROOT / tree).rglob("*")):
            if path.is_file() and path.suffix in TEXT and "__pycache__" not in path.parts:
                out.append(path)
    return out


def outside_paths(text):
    """[(line number, matched text)] of every path outside the repository in `text`."""
    return [
        (n, m.group(0))
        for n, line in enumerate(text.splitlines(), 1)
        for m in OUTSIDE.finditer(line)
    ]


def test_the_files_are_found():
    names = {p.relative_to(ROOT).as_posix() for p in repo_files()}
    for must in ("README.md", "boot.py", "firmware/app.py", "drivers/at.py", "tools/bench.py"):
        assert must in names
    assert any(n.startswith("docs/") for n in names)
    assert any(n.startswith("tests/") for n in names)


@pytest.mark.parametrize("path", repo_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_names_no_path_outside_the_repo(path):
    text = path.read_text(encoding="utf-8", errors="replace")
    found = outside_paths(text)
    rel = path.relative_to(ROOT).as_posix()
    assert not found, "\n".join("%s:%d: %s" % (rel, n, t) for n, t in found)


@pytest.mark.parametrize(
    "planted",
    [
        "see ../" + "shared/specs/modems.md 3.3",
        "# from /" + "work/main/README.md",
        "open('/" + "home/alice/notes.txt')",
        "/" + "Users/bob/src/meter",
        "cd /" + "root/meter",
    ],
)
def test_a_planted_path_fails(planted):
    assert outside_paths("fine\n" + planted + "\n") == [(2, outside_paths(planted)[0][1])]


@pytest.mark.parametrize(
    "fine",
    [
        "docs/lorawan.md, payload limits",
        "lib/meterdeps/umqtt/simple.mpy on the board's /lib",
        "~/.config/mpremote/config.py",
        "tools/sim/fakes/machine.py",
        "a relative ../docs/board.md link",
        "the_work/ folder and x.home/y",
    ],
)
def test_paths_inside_the_repo_pass(fine):
    assert outside_paths(fine) == []


# A citation of a document's numbered section ("spec 2.7", "modems.md 1.6") names a file
# outside the repository; the code cites docs/<file>.md "<section>" instead, and every such
# section must exist.
SECTION_NUMBER = re.compile(r"\b(?:spec|specs?/\w+\.md|modems\.md) \d+\.\d+")
DOC_SECTION = re.compile(r'docs/(\w+)\.md "([^"]+)"')
CODE_TREES = ("firmware", "drivers", "tools")


def cited_sections(text):
    """[(line, doc name, section)] of every docs/<name>.md "<section>" in text."""
    return [
        (n, m.group(1), m.group(2))
        for n, line in enumerate(text.splitlines(), 1)
        for m in DOC_SECTION.finditer(line)
    ]


def headings(doc):
    text = (ROOT / "docs" / (doc + ".md")).read_text(encoding="utf-8")
    return {line.lstrip("#").strip() for line in text.splitlines() if line.startswith("#")}


def code_files():
    return [p for tree in CODE_TREES for p in sorted((ROOT / tree).rglob("*.py"))]


def test_code_cites_docs_sections_not_numbered_specs():
    bad, missing = [], []
    for path in code_files():
        rel = path.relative_to(ROOT).as_posix()
        text = path.read_text(encoding="utf-8")
        for n, line in enumerate(text.splitlines(), 1):
            for m in SECTION_NUMBER.finditer(line):
                bad.append("%s:%d: %s" % (rel, n, m.group(0)))
        for n, doc, section in cited_sections(text):
            if not (ROOT / "docs" / (doc + ".md")).exists() or section not in headings(doc):
                missing.append('%s:%d: docs/%s.md "%s"' % (rel, n, doc, section))
    assert not bad, "\n".join(bad)
    assert not missing, "\n".join(missing)


def test_a_planted_numbered_citation_or_a_missing_section_is_found():
    assert SECTION_NUMBER.search("# Defaults in ms (spec 2.7)")
    assert SECTION_NUMBER.search("see modems.md 1.6")
    assert not SECTION_NUMBER.search('# Defaults in ms (docs/modems.md "Timeouts")')
    assert cited_sections('x (docs/modems.md "Quectel")') == [(1, "modems", "Quectel")]
    assert "Quectel" in headings("modems") and "Quectel 2" not in headings("modems")
