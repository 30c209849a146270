"""mlstack logs [SPEC]: the logs of the serving version, the router and the last workers."""

from __future__ import annotations

import argparse
import sys

from mlstack.cli.arguments import add_format, add_spec, add_verb, count, spec_of

HELP = "print the last lines of a deployment's logs (service, router, training, skew check)"


def register(sub) -> None:
    p = add_verb(sub, "logs", HELP, HELP + ".")
    add_spec(p)
    p.add_argument("--version", help="a version other than the current one (e.g. v2)")
    p.add_argument("-n", "--lines", type=count, default=40, help="lines per log (default 40)")
    add_format(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from mlstack.cli.output import write_json
    from mlstack.ops.local.lifecycle import log_files

    logs = []
    for path in log_files(spec_of(args), args.version):
        lines = path.read_text(errors="replace").splitlines()[-args.lines:] if args.lines else []
        logs.append((path, lines))
    if args.format == "json":
        write_json({"logs": [{"path": str(path), "lines": lines} for path, lines in logs]})
        return 0
    for path, lines in logs:
        sys.stdout.write(f"==> {path} <==\n" + "\n".join(lines) + "\n")
    return 0
