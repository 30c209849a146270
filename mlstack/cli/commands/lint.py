"""mlstack lint [PATH...]: validate specs and run the semantic checks."""

from __future__ import annotations

import argparse
import os
import sys
from contextlib import contextmanager

from mlstack.cli.arguments import add_format, add_verb

HELP = "validate specs and run the semantic checks (for editors, pre-commit and CI)"


def register(sub) -> None:
    p = add_verb(sub, "lint", HELP, HELP + ". Folders are searched for mlstack.yaml at any "
                 "depth (skipping what .gitignore excludes, build/, .mlstack/, node_modules/ "
                 "and virtual environments); quoted glob patterns ('*/mlstack.yaml', "
                 "'**/mlstack.yaml') are expanded. A path that names no spec is a finding "
                 "(MLS012) and the others are still linted. Exit 0 when clean, 1 on findings, "
                 "2 when a path names no spec or on usage errors.")
    p.add_argument("files", nargs="*", metavar="PATH", default=["."],
                   help="spec files, project folders or glob patterns (default: the current "
                        "folder and below)")
    add_format(p, ("text", "json", "sarif", "github"),
               help="output format (default: text); sarif: for code scanning; github: "
                    "workflow annotations")
    p.add_argument("--strict", action="store_true", help="treat warnings as errors")
    p.add_argument("--data", action="store_true",
                   help="also check each file source's data against its declared columns and "
                        "types (MLS216), reading only the files' schemas: a parquet footer, a "
                        "CSV header and its first 1000 rows; needs the 'runtime' extra")
    p.set_defaults(run=run)


@contextmanager
def _no_pydantic_plugins():
    """Build mlstack's models without looking for pydantic plugins: the look-up scans the
    entry points of every installed distribution (~15 ms of a ~250 ms lint in a venv with
    the runtime extras), and no plugin has a use for lint's own validation. Restored after,
    so nothing else in the process (or started by it) is affected."""
    if "PYDANTIC_DISABLE_PLUGINS" in os.environ:
        yield
        return
    os.environ["PYDANTIC_DISABLE_PLUGINS"] = "__all__"
    try:
        yield
    finally:
        os.environ.pop("PYDANTIC_DISABLE_PLUGINS", None)


def run(args: argparse.Namespace) -> int:
    with _no_pydantic_plugins():
        from mlstack.diagnostics.formats import render
        from mlstack.frontend.lint import lint_paths

        result = lint_paths(args.files, strict=args.strict, data=args.data)
    sys.stdout.write(render(result.diagnostics, args.format, files=result.paths))
    if result.unreadable:
        return 2
    return 1 if result.failed else 0
