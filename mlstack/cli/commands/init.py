"""mlstack init [DIR] --blueprint NAME: scaffold a project from a bundled blueprint."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mlstack.cli.arguments import add_format, add_verb

HELP = "scaffold a project (spec, small data, README, .gitignore) from a blueprint"


def register(sub) -> None:
    p = add_verb(sub, "init", HELP, HELP + ". The spec's first line points editors at the "
                 "JSON Schema written next to it (mlstack.schema.json); .gitignore keeps build/ "
                 "and .mlstack/ out of version control. The sample data is dated to now (one "
                 "offset for every timestamp: its newest feature row is the moment of init), "
                 "so its features are inside their TTLs when it deploys; without the runtime "
                 "extra it keeps its dates and init says how to move them.")
    p.add_argument("directory", nargs="?", type=Path, default=Path("."),
                   help="folder to create, or an empty one (default: the current folder)")
    p.add_argument("--blueprint", "-b", default="churn", help="blueprint name (default: churn)")
    p.add_argument("--list", action="store_true", help="list the bundled blueprints and exit")
    p.add_argument("--force", action="store_true",
                   help="write into a non-empty folder (a .gitignore there is added to, not "
                        "replaced)")
    add_format(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from mlstack.cli.output import write_json
    from mlstack.workspace.blueprints import init_project, list_blueprints

    if args.list:
        blueprints = list_blueprints()
        if args.format == "json":
            write_json({"blueprints": [{"name": bp.name, "summary": bp.summary}
                                       for bp in blueprints]})
            return 0
        for bp in blueprints:
            sys.stdout.write(f"{bp.name:16} {bp.summary}\n")
        return 0
    result = init_project(args.directory, args.blueprint, force=args.force)
    if args.format == "json":
        write_json({"directory": str(result.directory), "blueprint": result.blueprint,
                    "files": list(result.files), "dated_now": result.dated_now,
                    "dated": result.dated})
        return 0
    here = result.directory.resolve() == Path.cwd().resolve()
    where = "the current folder" if here else str(result.directory)
    sys.stdout.write(f"Created {where} from blueprint '{result.blueprint}' "
                     f"({len(result.files)} files)"
                     + (f"; {result.dated}" if result.dated else "") + ".\nNext:\n"
                     + ("" if here else f"  cd {result.directory}\n")
                     + "  mlstack lint\n  mlstack plan\n  mlstack deploy\n")
    return 0
