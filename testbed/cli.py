"""`enilab`: run scenarios, benchmarks and the demo. Exit codes: 0 ok, 1 a check failed, 2 bad input."""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

__all__ = ["main"]


class UsageError(Exception):
    """The user's mistake: printed without a traceback, exit 2."""


def _console():
    from rich.console import Console

    return Console()


def cmd_simulate(args: argparse.Namespace) -> int:
    from testbed.report import print_timeline
    from testbed.runner import run_scenario
    from testbed.scenario import load_scenario

    out = run_scenario(load_scenario(args.file))
    if args.json:
        json.dump(out, sys.stdout, indent=1 if args.pretty else None)
        sys.stdout.write("\n")
    else:
        print_timeline(_console(), out)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from testbed import bench

    result = bench.run(args.what, args)
    if args.json:
        print(json.dumps(result))
    else:
        bench.print_result(_console(), args.what, result)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from testbed.demo import run_demo

    return run_demo(_console(), args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="enilab", description="A testbed for VPC-CNI pod networking (shared-ENI mode).")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    s = sub.add_parser("simulate", help="run a scenario on the sim backend (no root) and print its timeline")
    s.add_argument("file", help="scenario YAML file")
    s.add_argument("--json", action="store_true", help="print the JSON timeline (the public contract)")
    s.add_argument("--pretty", action="store_true", help="indent the JSON")
    s.set_defaults(func=cmd_simulate)

    b = sub.add_parser("bench", help="benchmarks that print their figures and ratios")
    b.add_argument("what", choices=["sim"], help="sim: 1,000 nodes, 50,000 pod creations and deletions, 24 h")
    b.add_argument("--nodes", type=int, default=1000)
    b.add_argument("--pods", type=int, default=50_000, help="pod creations (each is deleted later)")
    b.add_argument("--hours", type=float, default=24.0)
    b.add_argument("--seed", type=int, default=1)
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=cmd_bench)

    d = sub.add_parser("demo", help="the main job: bring up the default topology and prove every path")
    d.add_argument("--topology", default=None, help="topology file (default: fixtures/topologies/default.yaml)")
    d.add_argument("--png", default="topology.png", help="where to draw the topology")
    d.set_defaults(func=cmd_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from testbed.cluster import ClusterError
    from testbed.scenario import ScenarioError

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except (UsageError, ScenarioError, ClusterError) as err:
        print(f"enilab: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("enilab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
