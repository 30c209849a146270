"""The `mlstack` command line. Errors become exit codes here, and only here.

Exit codes: 0 success; 1 findings in a spec, a failed stage or a refused write; 2 usage or
I/O errors (a deploy journal that cannot be read among them: the error names the file and
`mlstack repair`), or an optional extra that is not installed; 130 interrupted; 70 an internal
error (a bug: set MLSTACK_DEBUG=1 for details). With `--format json` every outcome is one JSON
document on stdout, errors included: `{"error": {"code", "message", "hint", "location",
"exit_code"}, "diagnostics": [...]}` (the error's text goes to stderr too).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
from collections.abc import Iterator

from mlstack import __version__
from mlstack.cli.arguments import CliParser, requested_format

MACHINE_FORMATS = ("json", "sarif", "github")


def build_parser() -> argparse.ArgumentParser:
    from mlstack.cli.commands import VERBS

    parser = CliParser(
        prog="mlstack",
        description="Compile one YAML system spec into a working ML stack: a Feast feature "
                    "repo, Prefect flows, a BentoML service and infrastructure code.",
        epilog="Run 'mlstack VERB --help' for a verb's options. Docs: docs/cli.md.")
    parser.add_argument("--version", action="version", version=f"mlstack {__version__}")
    parser.add_argument("-C", "--project", dest="chdir_global", metavar="DIR",
                        help="run as if mlstack was started in DIR (every verb takes it too)")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for verb in VERBS:
        importlib.import_module(f"mlstack.cli.commands.{verb.replace('-', '_')}").register(sub)
    return parser


@contextlib.contextmanager
def _working_folder(args: argparse.Namespace) -> Iterator[None]:
    """-C DIR before the verb, then -C DIR after it (relative to the first), as git does."""
    from mlstack.diagnostics.errors import UsageError

    with contextlib.ExitStack() as stack:
        for folder in (getattr(args, "chdir_global", None), getattr(args, "chdir", None)):
            if folder is None:
                continue
            if not os.path.isdir(folder):
                raise UsageError(f"-C {folder}: no such folder")
            stack.enter_context(contextlib.chdir(folder))
        yield


def main(argv: list[str] | None = None) -> int:
    from mlstack.cli.output import write_error
    from mlstack.diagnostics.errors import (
        MissingExtraError,
        MlstackError,
        SpecError,
        UsageError,
        extra_for_module,
    )

    argv = sys.argv[1:] if argv is None else list(argv)
    fmt = requested_format(argv)
    # `plan --detailed-exitcode` keeps 2 for "changes", so every error is 1 there
    detailed = "--detailed-exitcode" in argv

    def fail(code: str, message: str, hint: str | None, exit_code: int, **extra) -> int:
        exit_code = 1 if detailed and exit_code != 130 else exit_code
        write_error(fmt if fmt in MACHINE_FORMATS else "text", code, message, hint, exit_code,
                    **extra)
        return exit_code

    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help and --version print and exit 0
        return int(exc.code or 0)
    except UsageError as exc:
        return fail(exc.code, exc.message, exc.hint, exc.exit_code,
                    usage=getattr(exc, "usage", None))
    if not getattr(args, "run", None):
        build_parser().print_help(sys.stderr)
        return 2
    fmt = getattr(args, "format", fmt)
    for note in getattr(args, "deprecations", None) or ():
        sys.stderr.write(f"warning: {note}\n")
    try:
        with _working_folder(args):
            return int(args.run(args) or 0)
    except SpecError as exc:
        return fail(exc.code, exc.message, exc.hint, exc.exit_code,
                    diagnostics=exc.diagnostics)
    except MlstackError as exc:
        done = getattr(exc, "result", None)  # e.g. a failed deploy's report
        return fail(exc.code, exc.message, exc.hint, exc.exit_code,
                    **({"result": done.as_dict()} if done is not None else {}))
    except KeyboardInterrupt:
        return fail("interrupted", "interrupted", None, 130)
    except BrokenPipeError:
        return 0
    except ModuleNotFoundError as exc:  # an optional extra's library, or a bug
        extra = extra_for_module(exc.name)
        if extra is None:
            return _internal_error(exc, fail)
        assert exc.name is not None  # extra_for_module(None) is None
        missing = MissingExtraError(extra, exc.name)
        return fail(missing.code, missing.message, missing.hint, missing.exit_code)
    except Exception as exc:  # a bug in mlstack, not a user mistake
        return _internal_error(exc, fail)


def _internal_error(exc: Exception, fail) -> int:
    if os.environ.get("MLSTACK_DEBUG"):
        raise exc
    return fail("internal_error", f"internal error: {type(exc).__name__}: {exc}",
                "this is a bug in mlstack; rerun with MLSTACK_DEBUG=1 for the traceback", 70)


if __name__ == "__main__":
    raise SystemExit(main())
