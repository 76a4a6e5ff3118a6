"""The requirements of one of pyproject.toml's extras, for the Makefile (CPython host tool).

    python tools/extras.py EXTRA  ->  one requirement a line

An extra may name another of this project's extras (`prepaid-meter[tools]`), as pip
reads them; those are expanded here, each requirement listed once, so that `make` can
install an extra with `pip install -r` without packaging the tree.
"""

import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def requirements(extra, project=None):
    """The requirement strings of `extra`, self-references expanded, first mention kept."""
    project = project or tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project.get("optional-dependencies", {})
    own = project["name"] + "["
    out, seen = [], set()

    def walk(name, path):
        if name not in extras:
            raise KeyError("no extra %r in pyproject.toml (known: %s)" % (name, ", ".join(extras)))
        if name in path:
            raise ValueError(
                "extras refer to each other in a loop: %s" % " -> ".join(path + [name])
            )
        for req in extras[name]:
            if req.startswith(own) and req.endswith("]"):
                for sub in req[len(own) : -1].split(","):
                    walk(sub.strip(), path + [name])
            elif req not in seen:
                seen.add(req)
                out.append(req)

    walk(extra, [])
    return out


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tools/extras.py EXTRA")
    try:
        print("\n".join(requirements(sys.argv[1])))
    except (KeyError, ValueError) as e:
        sys.exit("extras: %s" % e.args[0])
