"""Command line: python -m tools.sim SCENARIO.json --report OUT.json [--plot OUT.png]
[--screens DIR]."""

import argparse
import json
import sys

from tools.sim import host
from tools.sim.scenario import ScenarioError


def _progress(t_s, duration_s):
    pct = 100 * t_s // duration_s
    sys.stderr.write(
        "\rsimulating: %3d%%  (%dd %02d:%02d simulated)"
        % (pct, t_s // 86400, t_s // 3600 % 24, t_s // 60 % 60)
    )
    sys.stderr.flush()


def summary(report):
    lines = ["events:"]
    for e in report["events"]:
        t = e["t_s"]
        lines.append(
            "  %3dd %02d:%02d:%02d  %-24s balance %s"
            % (t // 86400, t // 3600 % 24, t // 60 % 60, t % 60, e["kind"], e["balance"])
        )
    f = report["final"]
    lines.append(
        "final: balance %s, energy %s Wh, relay %s, state %s"
        % (f["balance"], f["energy_wh"], f["relay"], f["state"])
    )
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m tools.sim", description=__doc__)
    ap.add_argument("scenario", help="scenario JSON file")
    ap.add_argument("--report", help="write the report JSON here")
    ap.add_argument("--plot", help="write a PNG plot of power, balance and relay here")
    ap.add_argument("--summary", action="store_true", help="print the events and final state")
    ap.add_argument(
        "--screens",
        metavar="DIR",
        help="write the customer's display as PNG files here: at the scenario's screens "
        "steps, a second after each event and token answer, and at the end",
    )
    ap.add_argument("--quiet", action="store_true", help="no progress line")
    args = ap.parse_args(argv)
    try:
        with open(args.scenario) as f:
            scenario = json.load(f)
    except OSError as e:
        print("error: cannot read scenario: %s" % e, file=sys.stderr)
        return 2
    except ValueError as e:
        print("error: scenario is not valid JSON: %s" % e, file=sys.stderr)
        return 2
    try:
        report = host.run(
            scenario, progress=None if args.quiet else _progress, screens=args.screens
        )
    except ScenarioError as e:
        print("error: scenario: %s" % e, file=sys.stderr)
        return 2
    except RuntimeError as e:
        print("error: %s" % e, file=sys.stderr)
        return 1
    if not args.quiet:
        sys.stderr.write("\n")
    if args.report:
        with open(args.report, "w") as f:
            json.dump(report, f, indent=1)
    if args.plot:
        from tools.sim.plot import plot

        plot(report, args.plot)
    if args.summary:
        print(summary(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
