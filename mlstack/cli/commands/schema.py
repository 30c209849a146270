"""mlstack schema: write the JSON Schema of the spec (for editors and CI)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "write the spec's JSON Schema (default: schemas/mlstack.schema.json)"


def register(sub) -> None:
    p = sub.add_parser("schema", help=HELP, description=HELP + ".")
    p.add_argument("-o", "--output", type=Path, default=Path("schemas/mlstack.schema.json"),
                   help="file to write; '-' prints to stdout")
    p.add_argument("--check", action="store_true",
                   help="do not write; exit 1 when the file differs from the models")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from mlstack.frontend.schema import spec_json_schema_text

    text = spec_json_schema_text()
    if str(args.output) == "-":
        sys.stdout.write(text)
        return 0
    if args.check:
        current = args.output.read_text() if args.output.is_file() else None
        if current != text:
            sys.stderr.write(f"{args.output} is stale: run 'mlstack schema'\n")
            return 1
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    sys.stdout.write(f"wrote {args.output}\n")
    return 0
