"""mlstack rollback SPEC: put the previous version back in service."""

from __future__ import annotations

import argparse
import sys

HELP = "put the previous (or a named) version back in service; the current one stops"


def register(sub) -> None:
    p = sub.add_parser("rollback", help=HELP, description=HELP + ".")
    p.add_argument("spec", metavar="SPEC", nargs="?", default="mlstack.yaml",
                   help="spec file (default: mlstack.yaml)")
    p.add_argument("--to", metavar="VERSION", help="the version to restore (e.g. v2)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from mlstack.ops.local.lifecycle import rollback

    result = rollback(args.spec, to=args.to)
    sys.stdout.write(f"Rolled back {result.from_version} -> {result.to_version} (model "
                     f"{result.model_tag}) at {result.endpoint}\n")
    return 0
