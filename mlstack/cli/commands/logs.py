"""mlstack logs SPEC: the logs of the serving version, the router and the last workers."""

from __future__ import annotations

import argparse
import sys

HELP = "print the last lines of a deployment's logs (service, router, training, skew check)"


def register(sub) -> None:
    p = sub.add_parser("logs", help=HELP, description=HELP + ".")
    p.add_argument("spec", metavar="SPEC", nargs="?", default="mlstack.yaml",
                   help="spec file (default: mlstack.yaml)")
    p.add_argument("--version", help="a version other than the current one (e.g. v2)")
    p.add_argument("-n", "--lines", type=int, default=40, help="lines per log (default 40)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from mlstack.ops.local.lifecycle import log_files

    for path in log_files(args.spec, args.version):
        lines = path.read_text(errors="replace").splitlines()[-args.lines:]
        sys.stdout.write(f"==> {path} <==\n" + "\n".join(lines) + "\n")
    return 0
