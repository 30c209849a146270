"""The tool's own errors. The CLI maps each to an exit code in one place (mlstack.cli.main)."""

from __future__ import annotations

from mlstack.diagnostics.diagnostic import Diagnostic


class MlstackError(Exception):
    """Base for every error mlstack raises on purpose. Carries a user-facing message."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint


class UsageError(MlstackError):
    """Bad command-line use or unreadable input (exit 2)."""

    exit_code = 2


class SpecError(MlstackError):
    """The spec has errors; carries the diagnostics (exit 1)."""

    exit_code = 1

    def __init__(self, diagnostics: list[Diagnostic]):
        first = diagnostics[0] if diagnostics else None
        message = f"{first.location}: {first.code} {first.message}" if first else "invalid spec"
        super().__init__(message)
        self.diagnostics = diagnostics


class WriteConflictError(MlstackError):
    """A generated file was edited by hand and would be overwritten (exit 1)."""

    exit_code = 1


class StageError(MlstackError):
    """A deploy stage failed; names the stage (exit 1)."""

    exit_code = 1

    def __init__(self, stage: str, message: str, hint: str | None = None):
        super().__init__(f"stage '{stage}' failed: {message}", hint)
        self.stage = stage
