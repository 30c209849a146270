"""mlstack init DIR --blueprint NAME: scaffold a project from a bundled blueprint."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "scaffold a project (spec, small data, README) from a blueprint"


def register(sub) -> None:
    p = sub.add_parser("init", help=HELP, description=HELP + ".")
    p.add_argument("directory", nargs="?", type=Path, help="folder to create (must be empty)")
    p.add_argument("--blueprint", "-b", default="churn", help="blueprint name (default: churn)")
    p.add_argument("--list", action="store_true", help="list the bundled blueprints and exit")
    p.add_argument("--force", action="store_true", help="write into a non-empty folder")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from mlstack.diagnostics.errors import UsageError
    from mlstack.workspace.blueprints import init_project, list_blueprints

    if args.list:
        for bp in list_blueprints():
            sys.stdout.write(f"{bp.name:16} {bp.summary}\n")
        return 0
    if args.directory is None:
        raise UsageError("init needs a folder", "mlstack init DIR --blueprint churn")
    result = init_project(args.directory, args.blueprint, force=args.force)
    sys.stdout.write(f"Created {result.directory} from blueprint '{result.blueprint}' "
                     f"({len(result.files)} files).\nNext:\n  cd {result.directory}\n"
                     "  mlstack lint mlstack.yaml\n  mlstack plan mlstack.yaml\n")
    return 0
