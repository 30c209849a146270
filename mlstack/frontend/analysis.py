"""The front half of the compiler: load -> validate -> resolve -> check.

`analyze_spec(path)` runs the passes in a fixed order and returns an `Analysis` (diagnostics
and, when the spec resolves, the IR). It never prints and never raises for a user mistake;
an unreadable file raises `UsageError`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mlstack.diagnostics.diagnostic import Diagnostic, Location, Severity
from mlstack.diagnostics.errors import SpecError, UsageError
from mlstack.frontend.ir.nodes import SystemIR
from mlstack.frontend.loader import LoadedDocument, LoadFailed, load_spec_file


@dataclass
class Analysis:
    file: str
    diagnostics: list[Diagnostic] = field(default_factory=list)
    system: SystemIR | None = None
    document: LoadedDocument | None = None

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity is Severity.ERROR]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity is Severity.WARNING]

    def failed(self, strict: bool = False) -> bool:
        return bool(self.errors) or (strict and bool(self.warnings))


def display_path(path: Path) -> str:
    """A path as users should see it in diagnostics: relative to the cwd when inside it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def analyze_spec(path: Path | str, display: str | None = None, *, data: bool = False) -> Analysis:
    """`data`: also check the file sources' data against their declared columns (lint --data;
    reads the files' schemas with pyarrow)."""
    from mlstack.frontend.checks import run_checks
    from mlstack.frontend.ir.resolve import resolve
    from mlstack.frontend.spec.validate import validate_document

    path = Path(path)
    file = display or display_path(path)
    analysis = Analysis(file=file)
    if path.is_dir():
        candidate = path / "mlstack.yaml"
        if not candidate.is_file():
            raise UsageError(f"{file} is a folder with no mlstack.yaml in it")
        path, file = candidate, str(Path(file) / "mlstack.yaml")
        analysis.file = file
    try:
        document = load_spec_file(path, file)
    except FileNotFoundError:
        raise UsageError(f"{file}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"{file} is a folder") from None
    except PermissionError:
        raise UsageError(f"{file}: permission denied") from None
    except OSError as exc:
        raise UsageError(f"{file}: cannot read ({exc.strerror or exc})") from None
    except LoadFailed as exc:
        analysis.diagnostics = exc.diagnostics
        return analysis
    analysis.document = document
    spec, diagnostics = validate_document(document)
    analysis.diagnostics = diagnostics
    if spec is None:
        return analysis
    system, diagnostics = resolve(spec, document.source_map, spec_file=path.name,
                                  project_dir=path.parent)
    analysis.diagnostics.extend(diagnostics)
    if system is not None:
        analysis.system = system
        analysis.diagnostics.extend(run_checks(system, document.source_map))
        if data:
            from mlstack.frontend.checks.data_checks import check_data

            analysis.diagnostics.extend(check_data(system, document.source_map, path.parent))
    analysis.diagnostics.sort(key=Diagnostic.sort_key)
    return analysis


def require_system(path: Path | str, strict: bool = False) -> tuple[SystemIR, Analysis]:
    """Analyze and return the IR, or raise SpecError with the diagnostics."""
    analysis = analyze_spec(path)
    if analysis.failed(strict) or analysis.system is None:
        diags = analysis.errors or analysis.diagnostics or [Diagnostic(
            "MLS103", Severity.ERROR, "the spec did not resolve", Location(analysis.file))]
        raise SpecError(diags)
    return analysis.system, analysis
