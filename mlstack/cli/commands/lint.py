"""mlstack lint FILE...: validate specs and run the semantic checks."""

from __future__ import annotations

import argparse
import os
import sys
from contextlib import contextmanager

HELP = "validate specs and run the semantic checks (for editors, pre-commit and CI)"


def register(sub) -> None:
    p = sub.add_parser("lint", help=HELP, description=HELP + ". Exit 0 when clean, 1 on "
                       "findings, 2 on usage or I/O errors.")
    p.add_argument("files", nargs="+", metavar="FILE", help="spec files (or project folders)")
    p.add_argument("--format", choices=("text", "json", "sarif", "github"), default="text",
                   help="output format (default: text)")
    p.add_argument("--strict", action="store_true", help="treat warnings as errors")
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
        from mlstack.frontend.analysis import analyze_spec

        diagnostics, failed = [], False
        for file in args.files:
            analysis = analyze_spec(file)
            diagnostics.extend(analysis.diagnostics)
            failed = failed or analysis.failed(args.strict)
    sys.stdout.write(render(diagnostics, args.format, files=len(args.files)))
    return 1 if failed else 0
