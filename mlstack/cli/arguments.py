"""The grammar every verb shares, so each verb reads the same way:

- `-C DIR` / `--project DIR`: run as if mlstack had been started in DIR (`git -C`,
  `terraform -chdir`); before the verb (`mlstack -C DIR plan`) or after it (`mlstack plan -C DIR`);
- the spec argument, optional: the project in the current folder by default;
- `--format text|json` (lint adds sarif and github; graph mermaid and dot). `--json` is kept as
  a hidden, deprecated spelling of `--format json`;
- a parser that raises `UsageError` instead of printing and exiting, so a usage mistake
  reaches the one error mapping (mlstack.cli.main) and JSON output stays JSON.
"""

from __future__ import annotations

import argparse
import math
import re
from pathlib import Path

from mlstack.diagnostics.errors import UsageError

SPEC_NAMES = ("mlstack.yaml", "mlstack.yml")
_INVALID_CHOICE = re.compile(r"argument (?P<arg>\S+): invalid choice: '(?P<word>.*)' "
                             r"\(choose from (?P<choices>.*)\)$")


class ArgumentUsageError(UsageError):
    """A command line argparse refused; carries the usage line of the verb."""

    def __init__(self, message: str, hint: str | None, usage: str):
        super().__init__(message, hint)
        self.usage = usage


class CliParser(argparse.ArgumentParser):
    """argparse, raising its usage errors (with a did-you-mean for a mistyped choice)."""

    def error(self, message: str):  # argparse's hook: it would print and exit 2
        hint = None
        match = _INVALID_CHOICE.match(message)
        if match:
            from mlstack.diagnostics.diagnostic import did_you_mean

            word = match["word"]
            choices = re.findall(r"'([^']*)'", match["choices"])
            hint = did_you_mean(word, choices)
            if match["arg"] == "VERB":
                message = f"'{word}' is not an mlstack verb"
                hint = hint or f"the verbs: {', '.join(choices)}"
            else:
                hint = hint or f"choose from {', '.join(choices)}"
        raise ArgumentUsageError(message, hint, self.format_usage())


class _DeprecatedJson(argparse.Action):
    """`--json`: sets --format json and notes the deprecation (main warns on stderr)."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, "json")
        deprecated = list(getattr(namespace, "deprecations", None) or [])
        namespace.deprecations = deprecated + ["--json is deprecated: use --format json"]


def _number(text: str, kind: type, what: str, low: float, high: float = math.inf):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not {what}") from None
    if not (math.isfinite(value) and low <= value <= high):
        raise argparse.ArgumentTypeError(f"'{text}' is not {what}")
    return value


def port_number(text: str) -> int:
    """A TCP port to listen on: 1 to 65535 (argparse type)."""
    return _number(text, int, "a port number (1 to 65535)", 1, 65535)


def port_or_zero(text: str) -> int:
    """A TCP port, or 0 for a free one (argparse type)."""
    return _number(text, int, "a port number (0 picks a free one; at most 65535)", 0, 65535)


def positive_number(text: str) -> float:
    """A finite number above 0: seconds, a rate (argparse type)."""
    value = _number(text, float, "a number above 0", 0)
    if value == 0:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number above 0")
    return value


def count(text: str, low: int = 1) -> int:
    """A whole number of at least 1 (argparse type)."""
    return _number(text, int, f"a whole number of at least {low}", low)


def add_verb(sub, name: str, help: str, description: str) -> argparse.ArgumentParser:
    """A verb's parser, with the options every verb takes (-C DIR)."""
    parser = sub.add_parser(name, help=help, description=description)
    parser.add_argument("-C", "--project", dest="chdir", metavar="DIR",
                        default=argparse.SUPPRESS,
                        help="run as if mlstack was started in DIR (like git -C or terraform "
                             "-chdir); relative paths are read from there")
    return parser


def add_spec(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", metavar="SPEC", nargs="?", default=None,
                        help="spec file, or a folder holding mlstack.yaml (default: the "
                             "mlstack.yaml of the current folder, see -C)")


def add_format(parser: argparse.ArgumentParser, choices: tuple[str, ...] = ("text", "json"),
               default: str = "text", help: str | None = None) -> None:
    parser.add_argument("--format", choices=choices, default=default,
                        help=help or f"output format (default: {default}); json: one JSON "
                                     "document on stdout, errors included")
    parser.add_argument("--json", dest="format", action=_DeprecatedJson,
                        help=argparse.SUPPRESS)


def spec_of(args: argparse.Namespace) -> Path:
    """The spec a verb works on: the one given, else the current folder's."""
    if args.spec is not None:
        return Path(args.spec)
    for name in SPEC_NAMES:
        if Path(name).is_file():
            return Path(name)
    raise UsageError(f"no mlstack.yaml in the current folder ({Path.cwd()})",
                     "run mlstack in a project folder, name one with -C DIR, pass a spec file, "
                     "or start a project with 'mlstack init'")


def requested_format(argv: list[str]) -> str:
    """The output format a command line asks for, read before (or without) parsing it: an
    error in parsing is still rendered the way the caller reads the output."""
    fmt = "text"
    for i, arg in enumerate(argv):
        if arg == "--":
            break
        if arg == "--json":
            fmt = "json"
        elif arg == "--format" and i + 1 < len(argv):
            fmt = argv[i + 1]
        elif arg.startswith("--format="):
            fmt = arg.split("=", 1)[1]
    return fmt
