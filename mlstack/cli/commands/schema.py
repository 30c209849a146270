"""mlstack schema: write (or check) the JSON Schema of the spec, for editors and CI."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mlstack.cli.arguments import add_format, add_verb

HELP = "write the spec's JSON Schema where the project's editors read it"


def register(sub) -> None:
    p = add_verb(sub, "schema", HELP, HELP + ": in a project, the file its mlstack.yaml's "
                 "yaml-language-server modeline names (mlstack.schema.json after mlstack "
                 "init); elsewhere schemas/mlstack.schema.json. It says which file, and why.")
    p.add_argument("-o", "--output", type=Path, default=None,
                   help="file to write instead; '-' prints the schema to stdout")
    p.add_argument("--check", action="store_true",
                   help="do not write; exit 1 when the file is missing or differs from this "
                        "mlstack's schema")
    add_format(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from mlstack.cli.output import write_json
    from mlstack.frontend.schema import spec_json_schema_text
    from mlstack.workspace.schema_file import SchemaTarget, schema_target

    text = spec_json_schema_text()
    if str(args.output) == "-":
        sys.stdout.write(text)
        return 0
    target = (SchemaTarget(args.output, "given with -o") if args.output is not None
              else schema_target())
    current = target.path.read_text(encoding="utf-8") if target.path.is_file() else None
    if args.check:
        state = "up_to_date" if current == text else ("missing" if current is None else "stale")
    else:
        state = "unchanged" if current == text else "written"
        if state == "written":
            target.path.parent.mkdir(parents=True, exist_ok=True)
            target.path.write_text(text, encoding="utf-8")
    if args.format == "json":
        write_json({"path": str(target.path), "reason": target.reason, "check": args.check,
                    "state": state})
    elif state in ("stale", "missing"):
        sys.stderr.write(f"{target.path} ({target.reason}) is {state}: run 'mlstack schema'"
                         + (f" -o {args.output}" if args.output is not None else "") + "\n")
    else:
        words = {"up_to_date": "is up to date", "unchanged": "is up to date",
                 "written": "written"}[state]
        sys.stdout.write(f"{target.path} {words} ({target.reason})\n")
    return 1 if state in ("stale", "missing") else 0
