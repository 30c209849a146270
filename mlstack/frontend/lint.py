"""What `mlstack lint` does with its paths: find the specs (mlstack.frontend.discover), analyze
each, and collect every finding. A path that names no spec, or a file that cannot be read, is
one finding (MLS012) among the others, so every output format stays complete."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from mlstack.diagnostics.diagnostic import Diagnostic, Location, Severity
from mlstack.diagnostics.errors import MissingExtraError, UsageError

NO_SPEC = "MLS012"


@dataclass
class LintResult:
    diagnostics: list[Diagnostic] = field(default_factory=list)
    files: int = 0  # spec files analyzed
    unreadable: int = 0  # paths with no spec to analyze (each an MLS012 finding)
    failed: bool = False  # errors, or (strict) warnings

    @property
    def paths(self) -> int:
        """Everything reported on: the specs analyzed and the paths that named none."""
        return self.files + self.unreadable


def _no_spec(file: str, message: str, hint: str | None = None) -> Diagnostic:
    return Diagnostic(NO_SPEC, Severity.ERROR, message, Location(file), hint)


def lint_paths(paths: Sequence[str], strict: bool = False, data: bool = False) -> LintResult:
    """`data`: also check each file source's data against its declared columns (MLS216);
    needs pyarrow (the runtime extra): without it, MissingExtraError before any spec is read."""
    from mlstack.frontend.analysis import analyze_spec
    from mlstack.frontend.discover import Missing, find_specs

    if data:
        try:
            import pyarrow.parquet  # noqa: F401  (only --data reads data files)
        except ModuleNotFoundError as exc:
            raise MissingExtraError("runtime", exc.name or "pyarrow", "lint --data") from None

    result = LintResult()
    for found in find_specs(paths):
        if isinstance(found, Missing):
            result.diagnostics.append(_no_spec(found.given, found.message, found.hint))
            result.unreadable += 1
            continue
        try:
            analysis = analyze_spec(found, data=data)
        except UsageError as exc:  # unreadable: permission, a special file, a dangling link
            result.diagnostics.append(_no_spec(str(found), exc.message, exc.hint))
            result.unreadable += 1
            continue
        result.files += 1
        result.diagnostics.extend(analysis.diagnostics)
        result.failed = result.failed or analysis.failed(strict)
    result.failed = result.failed or result.unreadable > 0
    return result
