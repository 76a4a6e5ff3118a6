"""Write and check a meter's settings file by hand (on the host).

    python -m tools.settings seal FILE [-o OUT] [--edited]
                                                  validate FILE (sealed or not) with the
                                                  meter's own schema and write it sealed
                                                  (in place unless -o); a seal that does
                                                  not match is refused unless --edited
                                                  (you changed the file on purpose)
    python -m tools.settings check FILE           the meter's verdict on FILE: "ok" and
                                                  exit 0, or the field (or seal) and exit 1
    python -m tools.settings show FILE            FILE indented, for reading, seal checked
    python -m tools.settings id METER_ID OUT      write a meter.id record for METER_ID

A file edited by hand must be sealed again before it goes on a meter: the meter refuses
an unsealed copy or one whose seal does not match, as it refuses a damaged one
(docs/settings.md). On a running meter, `tech.set(key, value)` at the console writes a
sealed file itself.
"""

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from firmware import config  # noqa: E402
from firmware.storage import jsonseal  # noqa: E402
from firmware.tokens import meterid  # noqa: E402


def seal(data, edited=False):
    """Sealed bytes of a settings file's bytes; ValueError naming the field or the seal
    (a file that already carries a seal must match it, so that a damaged copy is not
    sealed as good, unless `edited`: the old seal is then dropped)."""
    raw = json.loads(data)
    if isinstance(raw, dict) and jsonseal.SEAL in raw:
        if edited:
            raw.pop(jsonseal.SEAL)
        else:
            raw = jsonseal.loads(data)
    return config.seal_settings(raw)


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="python -m tools.settings", description=__doc__.split("\n")[0]
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("seal", help="validate and write FILE sealed")
    p.add_argument("file", type=Path)
    p.add_argument("-o", "--out", type=Path, help="write here instead of over FILE")
    p.add_argument("--edited", action="store_true", help="reseal a file changed by hand")
    p = sub.add_parser("check", help="validate FILE as the meter loads it")
    p.add_argument("file", type=Path)
    p = sub.add_parser("show", help="print FILE indented (seal checked)")
    p.add_argument("file", type=Path)
    p = sub.add_parser("id", help="write a meter.id record")
    p.add_argument("meter_id")
    p.add_argument("out", type=Path)
    a = ap.parse_args(argv)
    try:
        if a.cmd == "seal":
            out = seal(a.file.read_bytes(), a.edited)
            (a.out or a.file).write_bytes(out)
            print("sealed: %s (seal %s)" % (a.out or a.file, json.loads(out)[jsonseal.SEAL]))
        elif a.cmd == "check":
            config.parse_settings(a.file.read_bytes())
            print("ok")
        elif a.cmd == "show":
            raw = jsonseal.loads(a.file.read_bytes())
            print(json.dumps(raw, indent=1, sort_keys=True, ensure_ascii=False))
        else:
            a.out.write_bytes(meterid.to_bytes(a.meter_id))
            print("meter id %s: %s" % (meterid.load(a.out.read_bytes()), a.out))
    except (OSError, ValueError) as e:
        print("%s: %s" % (a.file if a.cmd != "id" else a.out, e), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
