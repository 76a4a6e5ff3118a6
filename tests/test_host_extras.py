"""tools/extras.py: the requirement list of one of pyproject.toml's extras, as make
installs it (self-references expanded, each requirement once, loops refused)."""

import subprocess
import sys

import pytest

from tools import extras

PROJECT = {
    "name": "meter",
    "optional-dependencies": {
        "a": ["x>=1", "y"],
        "b": ["meter[a]", "z", "x>=1"],
        "c": ["meter[a,b]", "w"],
        "loop1": ["meter[loop2]"],
        "loop2": ["meter[loop1]"],
        "bad": ["meter[nope]"],
    },
}


def test_an_extra_naming_others_lists_each_requirement_once_in_order():
    assert extras.requirements("a", PROJECT) == ["x>=1", "y"]
    assert extras.requirements("b", PROJECT) == ["x>=1", "y", "z"]
    assert extras.requirements("c", PROJECT) == ["x>=1", "y", "z", "w"]


def test_a_loop_or_an_unknown_extra_is_refused_with_its_names():
    with pytest.raises(ValueError, match="loop1 -> loop2 -> loop1"):
        extras.requirements("loop1", PROJECT)
    with pytest.raises(KeyError, match="nope"):
        extras.requirements("bad", PROJECT)


def test_the_project_extras_by_use():
    tests = extras.requirements("tests")
    tools = extras.requirements("tools")
    assert set(tools) <= set(tests) and set(extras.requirements("office")) <= set(tests)
    assert any(r.startswith("pytest") for r in tests)
    assert not any(r.startswith("ruff") for r in tests)  # the lint has its own
    assert extras.requirements("lint") == [
        r for r in extras.requirements("dev") if r.startswith("ruff")
    ]
    assert set(tests) | set(extras.requirements("demo")) <= set(extras.requirements("dev"))


def test_the_command_line_prints_one_a_line_or_refuses():
    ok = subprocess.run(
        [sys.executable, "tools/extras.py", "lint"], capture_output=True, text=True
    )
    assert ok.returncode == 0 and ok.stdout.strip().startswith("ruff")
    bad = subprocess.run([sys.executable, "tools/extras.py", "x"], capture_output=True, text=True)
    assert bad.returncode == 1 and "no extra 'x'" in bad.stderr
