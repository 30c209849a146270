"""mlstack compile [SPEC] [-o DIR]: write the generated stack (through the one writer)."""

from __future__ import annotations

import argparse
import sys

from mlstack.cli.arguments import add_format, add_spec, add_verb, spec_of

HELP = "compile a spec into the generated stack (Feast repo, Prefect flows, BentoML service)"


def register(sub) -> None:
    p = add_verb(sub, "compile", HELP, HELP + ". Only changed files are written; a generated "
                 "file you edited is not overwritten without --force. Lint's warnings are "
                 "shown too (on stderr; in the JSON with --format json). Exit 0 on success, 1 "
                 "on spec errors or a refused write, 2 while another mlstack command works on "
                 "the project.")
    add_spec(p)
    p.add_argument("-o", "--output", metavar="DIR",
                   help="output folder (default: <spec folder>/build)")
    p.add_argument("--force", action="store_true",
                   help="overwrite generated files that were edited by hand")
    p.add_argument("--dry-run", action="store_true", help="show what would change; write nothing")
    add_format(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from mlstack.cli.output import write_json, write_warnings
    from mlstack.cli.plan_output import SYMBOLS
    from mlstack.ops.deploy import compile_project

    compiled, result = compile_project(spec_of(args), args.output, force=args.force,
                                    dry_run=args.dry_run)
    counts = {a: len(result.paths(a)) for a in ("create", "update", "delete", "unchanged")}
    if args.format == "json":
        write_json({"out_dir": str(result.out_dir), "dry_run": result.dry_run,
                    "written": result.written, "counts": counts,
                    "changes": [c.as_dict() for c in result.changed],
                    "warnings": [d.as_dict() for d in compiled.warnings]})
        return 0
    write_warnings(compiled.warnings)
    for change in result.changed:
        sys.stdout.write(f"  {SYMBOLS[change.action]} {change.path}\n")
    tally = (f"{counts['create']} created, {counts['update']} updated, "
             f"{counts['delete']} deleted, {counts['unchanged']} unchanged")
    if args.dry_run:
        sys.stdout.write(f"Dry run: nothing written to {result.out_dir} ({tally}).\n")
    elif result.written:
        sys.stdout.write(f"Wrote {result.out_dir} ({tally}).\n")
    else:
        sys.stdout.write(f"{result.out_dir} is up to date ({len(result.changes)} files).\n")
    return 0
