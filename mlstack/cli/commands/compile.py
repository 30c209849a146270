"""mlstack compile SPEC [-o DIR]: write the generated stack (through the one writer)."""

from __future__ import annotations

import argparse
import sys

HELP = "compile a spec into the generated stack (Feast repo, Prefect flows, BentoML service)"


def register(sub) -> None:
    p = sub.add_parser("compile", help=HELP, description=HELP + ". Only changed files are "
                       "written; a generated file you edited is not overwritten without "
                       "--force. Exit 0 on success, 1 on spec errors or a refused write.")
    p.add_argument("spec", metavar="SPEC", help="spec file (or a folder holding mlstack.yaml)")
    p.add_argument("-o", "--output", metavar="DIR",
                   help="output folder (default: <spec folder>/build)")
    p.add_argument("--force", action="store_true",
                   help="overwrite generated files that were edited by hand")
    p.add_argument("--dry-run", action="store_true", help="show what would change; write nothing")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from mlstack.cli.plan_output import SYMBOLS
    from mlstack.workspace.build import compile_spec

    _compiled, result = compile_spec(args.spec, args.output, force=args.force,
                                     dry_run=args.dry_run)
    for change in result.changed:
        sys.stdout.write(f"  {SYMBOLS[change.action]} {change.path}\n")
    counts = {a: len(result.paths(a)) for a in ("create", "update", "delete", "unchanged")}
    tally = (f"{counts['create']} created, {counts['update']} updated, "
             f"{counts['delete']} deleted, {counts['unchanged']} unchanged")
    if args.dry_run:
        sys.stdout.write(f"Dry run: nothing written to {result.out_dir} ({tally}).\n")
    elif result.written:
        sys.stdout.write(f"Wrote {result.out_dir} ({tally}).\n")
    else:
        sys.stdout.write(f"{result.out_dir} is up to date ({len(result.changes)} files).\n")
    return 0
