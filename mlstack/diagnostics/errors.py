"""The tool's own errors. The CLI maps each to an exit code in one place (mlstack.cli.main).

Each error has a stable `code` (a word, for the JSON error object of `--format json`) and an
`exit_code`.
"""

from __future__ import annotations

from pathlib import Path

from mlstack.diagnostics.diagnostic import Diagnostic

# The optional extras, and the top-level modules that only they install. A missing one of these
# is a missing extra (exit 2, naming the extra), never a bug.
EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    "runtime": ("prefect", "bentoml", "feast", "sklearn", "pandas", "numpy", "pyarrow", "httpx",
                "uv"),
    "test": ("pytest", "hypothesis", "jsonschema", "build", "yamllint"),
    # model.framework: the libraries a model of that framework trains and serves with
    "xgboost": ("xgboost",),
    "lightgbm": ("lightgbm",),
    "pytorch": ("torch",),
}


def extra_for_module(module: str | None) -> str | None:
    """The extra that installs `module` (a dotted name; its top-level package counts)."""
    top = (module or "").split(".")[0]
    return next((extra for extra, names in EXTRA_MODULES.items() if top in names), None)


class MlstackError(Exception):
    """Base for every error mlstack raises on purpose. Carries a user-facing message."""

    exit_code = 2
    code = "error"

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint


class UsageError(MlstackError):
    """Bad command-line use or unreadable input (exit 2)."""

    exit_code = 2
    code = "usage_error"


class MissingExtraError(MlstackError):
    """What was asked needs an optional extra that is not installed (exit 2)."""

    exit_code = 2
    code = "missing_extra"

    def __init__(self, extra: str, module: str, needed_for: str = "this command"):
        super().__init__(f"{needed_for} needs the '{extra}' extra of mlstack ({module} is not "
                         "installed)", f"pip install 'mlstack[{extra}]'")
        self.extra = extra
        self.module = module


class SpecError(MlstackError):
    """The spec has errors; carries the diagnostics (exit 1)."""

    exit_code = 1
    code = "spec_error"

    def __init__(self, diagnostics: list[Diagnostic]):
        first = diagnostics[0] if diagnostics else None
        message = f"{first.location}: {first.code} {first.message}" if first else "invalid spec"
        super().__init__(message, first.hint if first else None)
        self.diagnostics = diagnostics


class WriteConflictError(MlstackError):
    """A generated file was edited by hand and would be overwritten (exit 1)."""

    exit_code = 1
    code = "write_conflict"


class StageError(MlstackError):
    """A deploy stage failed; names the stage (exit 1)."""

    exit_code = 1
    code = "stage_failed"
    # set by a failed deploy, not always: the report so far (read as getattr(exc, "result"))
    result: object

    def __init__(self, stage: str, message: str, hint: str | None = None):
        super().__init__(f"stage '{stage}' failed: {message}", hint)
        self.stage = stage


class JournalError(MlstackError):
    """The deploy journal (.mlstack/deployments.json) cannot be read as one, or is missing
    while the project runs (exit 2). Names the file, what is wrong with it, and the command
    that repairs it (in the hint)."""

    exit_code = 2
    code = "journal_error"

    def __init__(self, path: Path, problem: str, hint: str | None = None) -> None:
        super().__init__(f"the deploy journal {path} is unusable: {problem}", hint)
        self.path = path
        self.problem = problem
