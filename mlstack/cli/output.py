"""Lines the verbs share: a JSON document on stdout, lint's warnings next to another verb's
output, and an error in the format the command line asked for."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence

from mlstack import __version__
from mlstack.diagnostics.diagnostic import Diagnostic


def write_json(data: dict) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def write_warnings(warnings: Iterable[Diagnostic]) -> None:
    """Lint's warnings of the spec a verb compiled, on stderr (stdout is the verb's own)."""
    for d in warnings:
        sys.stderr.write(f"{d.location}: {d.severity.value}: {d.code} {d.message}\n")
        if d.hint:
            sys.stderr.write(f"    hint: {d.hint}\n")


def error_document(code: str, message: str, hint: str | None, exit_code: int,
                   diagnostics: Sequence[Diagnostic] = (), result: dict | None = None) -> dict:
    """The JSON of a command that failed: what, where (the first diagnostic's location, when
    the spec is at fault), a hint, and the exit code the process ends with; `result`: what the
    command got done before it failed (a failed deploy's report, its SLO table included)."""
    first = diagnostics[0] if diagnostics else None
    location = ({"file": first.location.file, "line": first.location.line,
                 "column": first.location.column} if first else None)
    document = {"version": __version__,
                "error": {"code": code, "message": message, "hint": hint, "location": location,
                          "exit_code": exit_code},
                "diagnostics": [d.as_dict() for d in diagnostics]}
    if result is not None:
        document["result"] = result
    return document


def write_error(fmt: str, code: str, message: str, hint: str | None, exit_code: int,
                diagnostics: Sequence[Diagnostic] = (), usage: str | None = None,
                result: dict | None = None) -> None:
    """An error, rendered for the caller: in a machine format (json, sarif, github) one
    document on stdout, so a pipe reading that format still gets one; and always the lines a
    person reads, on stderr (CI logs, and scripts that looked for `error:` there)."""
    if fmt == "json":
        write_json(error_document(code, message, hint, exit_code, list(diagnostics), result))
    elif fmt == "sarif":
        from mlstack.diagnostics.formats import render_sarif

        sys.stdout.write(render_sarif(list(diagnostics), failure=(message, exit_code)))
    elif fmt == "github":
        from mlstack.diagnostics.formats import render_github, render_github_error

        text = message + (f" (hint: {hint})" if hint else "")
        sys.stdout.write(render_github(list(diagnostics)) + render_github_error(text))
    if diagnostics:
        from mlstack.diagnostics.formats import render_text

        sys.stderr.write(render_text(list(diagnostics)))
        return
    if usage and fmt == "text":
        sys.stderr.write(usage)
    sys.stderr.write(f"error: {message}\n")
    if hint:
        sys.stderr.write(f"  hint: {hint}\n")
