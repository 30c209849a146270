"""The `mlstack` command line. Errors become exit codes here, and only here.

Exit codes: 0 success; 1 findings in a spec, a failed stage or a refused write; 2 usage or
I/O errors; 130 interrupted; 70 an internal error (a bug: set MLSTACK_DEBUG=1 for details).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from mlstack import __version__


def build_parser() -> argparse.ArgumentParser:
    from mlstack.cli.commands import VERBS

    parser = argparse.ArgumentParser(
        prog="mlstack",
        description="Compile one YAML system spec into a working ML stack: a Feast feature "
                    "repo, Prefect flows, a BentoML service and infrastructure code.",
        epilog="Run 'mlstack VERB --help' for a verb's options. Docs: docs/cli.md.")
    parser.add_argument("--version", action="version", version=f"mlstack {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for verb in VERBS:
        importlib.import_module(f"mlstack.cli.commands.{verb.replace('-', '_')}").register(sub)
    return parser


def _print_error(message: str, hint: str | None = None) -> None:
    sys.stderr.write(f"error: {message}\n")
    if hint:
        sys.stderr.write(f"  hint: {hint}\n")


def _error_exit_code(args: argparse.Namespace, code: int) -> int:
    """`plan --detailed-exitcode` keeps 2 for "changes", so every error is 1 there."""
    return 1 if getattr(args, "detailed_exitcode", False) else code


def main(argv: list[str] | None = None) -> int:
    from mlstack.diagnostics.errors import MlstackError, SpecError

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help/--version (0) or a usage error (2)
        detailed = "--detailed-exitcode" in (sys.argv[1:] if argv is None else argv)
        return 1 if detailed and exc.code == 2 else int(exc.code or 0)
    if not getattr(args, "run", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.run(args) or 0)
    except SpecError as exc:
        from mlstack.diagnostics.formats import render_text

        sys.stderr.write(render_text(exc.diagnostics))
        return _error_exit_code(args, exc.exit_code)
    except MlstackError as exc:
        _print_error(exc.message, exc.hint)
        return _error_exit_code(args, exc.exit_code)
    except KeyboardInterrupt:
        _print_error("interrupted")
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # a bug in mlstack, not a user mistake
        if os.environ.get("MLSTACK_DEBUG"):
            raise
        _print_error(f"internal error: {type(exc).__name__}: {exc}",
                     "this is a bug in mlstack; rerun with MLSTACK_DEBUG=1 for the traceback")
        return 70


if __name__ == "__main__":
    raise SystemExit(main())
