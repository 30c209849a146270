"""Render diagnostics for people and machines: text, json, sarif (2.1.0), github annotations."""

from __future__ import annotations

import json
from pathlib import Path, PurePath

from mlstack import __version__
from mlstack.diagnostics.codes import CODES, EXPLANATIONS
from mlstack.diagnostics.diagnostic import Diagnostic, Severity

FORMATS = ("text", "json", "sarif", "github")
SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
# docs/diagnostics.md of this version; each code is a `### MLSnnn` heading there, whose anchor
# (GitHub's, from the heading text) is the code in lower case.
DIAGNOSTICS_DOC = f"https://github.com/mlstack/mlstack/blob/v{__version__}/docs/diagnostics.md"


def help_uri(code: str) -> str:
    return f"{DIAGNOSTICS_DOC}#{code.lower()}"


def render_text(diagnostics: list[Diagnostic], files: int = 1) -> str:
    lines = []
    for d in diagnostics:
        lines.append(f"{d.location}: {d.severity.value}: {d.code} {d.message}")
        if d.hint:
            lines.append(f"    hint: {d.hint}")
    errors = sum(d.severity is Severity.ERROR for d in diagnostics)
    warnings = len(diagnostics) - errors
    noun = "file" if files == 1 else "files"
    if diagnostics:
        lines.append(f"{errors} error(s), {warnings} warning(s) in {files} {noun}")
    else:
        lines.append(f"{files} {noun} clean")
    return "\n".join(lines) + "\n"


def render_json(diagnostics: list[Diagnostic]) -> str:
    return json.dumps({"version": __version__,
                       "diagnostics": [d.as_dict() for d in diagnostics]}, indent=2,
                      sort_keys=True) + "\n"


def _artifact_uri(file: str) -> str:
    """A relative path stays relative (to the repository root, for code scanning); an
    absolute one becomes a file:// URI."""
    path = PurePath(file)
    return Path(file).as_uri() if path.is_absolute() else path.as_posix()


def render_sarif(diagnostics: list[Diagnostic], failure: tuple[str, int] | None = None) -> str:
    """SARIF 2.1.0. `failure` (message, exit code): the run itself failed (a usage error), so
    the log has no results and an invocation that says why."""
    used = sorted({d.code for d in diagnostics})
    rules = [{"id": code, "name": code, "shortDescription": {"text": CODES.get(code, code)},
              "fullDescription": {"text": EXPLANATIONS.get(code, CODES.get(code, code))},
              "help": {"text": EXPLANATIONS.get(code, CODES.get(code, code))},
              "helpUri": help_uri(code)}
             for code in used]
    results = []
    for d in diagnostics:
        text = d.message + (f" (hint: {d.hint})" if d.hint else "")
        results.append({
            "ruleId": d.code,
            "ruleIndex": used.index(d.code),
            "level": "error" if d.severity is Severity.ERROR else "warning",
            "message": {"text": text},
            "locations": [{"physicalLocation": {
                "artifactLocation": {"uri": _artifact_uri(d.location.file)},
                "region": {"startLine": d.location.line, "startColumn": d.location.column},
            }}],
        })
    run = {
        "tool": {"driver": {"name": "mlstack", "version": __version__,
                            "informationUri": "https://pypi.org/project/mlstack/",
                            "rules": rules}},
        "columnKind": "unicodeCodePoints",
        "results": results,
    }
    if failure is not None:
        message, exit_code = failure
        run["invocations"] = [{"executionSuccessful": False, "exitCode": exit_code,
                               "toolExecutionNotifications": [
                                   {"level": "error", "message": {"text": message}}]}]
    doc = {"$schema": SARIF_SCHEMA, "version": "2.1.0", "runs": [run]}
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def render_github(diagnostics: list[Diagnostic]) -> str:
    lines = []
    for d in diagnostics:
        level = "error" if d.severity is Severity.ERROR else "warning"
        text = d.message + (f" (hint: {d.hint})" if d.hint else "")
        lines.append(f"::{level} file={_escape_property(d.location.file)},"
                     f"line={d.location.line},col={d.location.column},"
                     f"title={_escape_property(d.code)}::{_escape_data(text)}")
    return "\n".join(lines) + ("\n" if lines else "")


def render_github_error(message: str) -> str:
    """A failed run (not a finding in a file) as a workflow error annotation."""
    return f"::error title=mlstack::{_escape_data(message)}\n"


def render(diagnostics: list[Diagnostic], fmt: str, files: int = 1) -> str:
    if fmt == "json":
        return render_json(diagnostics)
    if fmt == "sarif":
        return render_sarif(diagnostics)
    if fmt == "github":
        return render_github(diagnostics)
    return render_text(diagnostics, files)
