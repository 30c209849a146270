"""mlstack down SPEC: stop everything a local deployment started, by PID."""

from __future__ import annotations

import argparse
import sys

HELP = "stop every process the project's deploys started (services and router)"


def register(sub) -> None:
    p = sub.add_parser("down", help=HELP, description=HELP + ". Exit 1 if one would not stop.")
    p.add_argument("spec", metavar="SPEC", nargs="?", default="mlstack.yaml",
                   help="spec file (default: mlstack.yaml)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from mlstack.ops.local.lifecycle import down

    result = down(args.spec)
    stopped = ", ".join(result.stopped) or "nothing was running"
    sys.stdout.write(f"Stopped: {stopped}\n")
    if result.still_alive:
        sys.stderr.write(f"error: still running: pids {result.still_alive}\n")
        return 1
    return 0
