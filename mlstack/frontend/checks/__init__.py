"""Semantic checks (lint): named passes over the resolved IR, run in a fixed order.

Each pass takes a `CheckContext` and yields Diagnostics; none raises for a user mistake.
Reference resolution (MLS2xx) happens earlier, in `mlstack.frontend.ir.resolve`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from mlstack.diagnostics.diagnostic import Diagnostic, Severity
from mlstack.frontend.ir.nodes import SystemIR
from mlstack.frontend.loader import Path_, SourceMap
from mlstack.frontend.spec.validate import pointer


@dataclass(frozen=True)
class CheckContext:
    system: SystemIR
    smap: SourceMap

    def diag(self, code: str, message: str, path: Path_, hint: str | None = None, *,
             severity: Severity = Severity.ERROR, key: bool = False) -> Diagnostic:
        return Diagnostic(code, severity, message, self.smap.locate(path, key=key), hint,
                          pointer(path))

    def written(self, path: Path_) -> bool:
        return self.smap.has(path)


CheckPass = Callable[[CheckContext], Iterable[Diagnostic]]


class Placed(Protocol):
    """An IR node that came from the spec, at the JSON pointer `at`."""

    @property
    def at(self) -> str: ...


def node_path(node: Placed) -> Path_:
    """The spec path of an IR node that came from the spec (from its JSON pointer `at`)."""
    return tuple(int(p) if p.isdigit() else p for p in node.at.split("/") if p)


def passes() -> list[tuple[str, CheckPass]]:
    from mlstack.frontend.checks import (
        alert_checks,
        compute_checks,
        model_checks,
        orchestrator_checks,
        slo_checks,
        source_checks,
        target_checks,
        usage_checks,
    )

    return [
        ("check_sources", source_checks.check_sources),
        ("check_feature_views", source_checks.check_feature_views),
        ("check_unused", usage_checks.check_unused),
        ("check_model", model_checks.check_model),
        ("check_slos", slo_checks.check_slos),
        ("check_rollout", slo_checks.check_rollout),
        ("check_alerts", alert_checks.check_alerts),
        ("check_target", target_checks.check_target),
        ("check_supported", target_checks.check_supported),
        ("check_compute", compute_checks.check_compute),
        ("check_orchestrator", orchestrator_checks.check_orchestrator),
    ]


def run_checks(system: SystemIR, smap: SourceMap) -> list[Diagnostic]:
    ctx = CheckContext(system, smap)
    found: list[Diagnostic] = []
    for _name, check in passes():
        found.extend(check(ctx))
    return found
