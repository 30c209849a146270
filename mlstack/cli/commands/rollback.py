"""mlstack rollback [SPEC]: put the previous version back in service."""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict

from mlstack.cli.arguments import add_format, add_spec, add_verb, port_number, spec_of

HELP = "put the previous (or a named) version back in service; the current one stops"


def register(sub) -> None:
    p = add_verb(sub, "rollback", HELP, HELP + ". --to the current version restarts it when it "
                 "is not running. The router stays on its port; after down it starts on the "
                 "port deployed, or --port.")
    add_spec(p)
    p.add_argument("--to", metavar="VERSION", help="the version to restore (e.g. v2)")
    p.add_argument("--port", type=port_number, metavar="PORT",
                   help="local endpoint port (default: the one deployed)")
    add_format(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from mlstack.cli.output import write_json
    from mlstack.ops.local.lifecycle import rollback

    result = rollback(spec_of(args), to=args.to, port=args.port)
    if args.format == "json":
        write_json(asdict(result))
        return 0
    for note in result.reconciled:
        sys.stdout.write(f"  reconciled: {note}\n")
    if result.restarted:
        sys.stdout.write(f"Restarted {result.to_version} (model {result.model_tag}) at "
                         f"{result.endpoint}\n")
        return 0
    sys.stdout.write(f"Rolled back {result.from_version} -> {result.to_version} (model "
                     f"{result.model_tag}) at {result.endpoint}\n")
    return 0
