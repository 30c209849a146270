"""Diagnostics are data: a stable code, a severity, a message, a location and a hint.

Formatting them (text, json, sarif, github) happens at the edge, in `mlstack.diagnostics.formats`.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, order=True)
class Location:
    file: str
    line: int = 1
    column: int = 1

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


@dataclass(frozen=True)
class Diagnostic:
    code: str
    severity: Severity
    message: str
    location: Location
    hint: str | None = None
    pointer: str = ""  # JSON pointer into the spec, e.g. /features/views/0/entity

    def sort_key(self) -> tuple[str, int, int, str]:
        return (self.location.file, self.location.line, self.location.column, self.code)

    def as_dict(self) -> dict[str, object]:
        return {
            "code": self.code,
            "severity": self.severity.value,
            "message": self.message,
            "file": self.location.file,
            "line": self.location.line,
            "column": self.location.column,
            "pointer": self.pointer,
            "hint": self.hint,
        }


@dataclass
class DiagnosticList:
    items: list[Diagnostic] = field(default_factory=list)

    def add(self, diagnostic: Diagnostic) -> None:
        self.items.append(diagnostic)

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.items if d.severity is Severity.ERROR]


def did_you_mean(word: object, candidates: Iterable[object]) -> str | None:
    """A 'did you mean ...?' hint for a misspelt key or name, or None."""
    matches = difflib.get_close_matches(str(word), sorted(set(map(str, candidates))), n=1, cutoff=0.6)
    if matches:
        return f"did you mean '{matches[0]}'?"
    return None


def choices_hint(candidates: Iterable[object], limit: int = 12) -> str | None:
    names = sorted(set(map(str, candidates)))
    if not names:
        return None
    shown = ", ".join(names[:limit]) + (", ..." if len(names) > limit else "")
    return f"expected one of: {shown}"


def hint_for(word: object, candidates: Iterable[object]) -> str | None:
    return did_you_mean(word, candidates) or choices_hint(candidates)
