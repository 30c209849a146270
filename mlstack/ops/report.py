"""Deploy results as data, and the SLO comparison (measured vs the spec)."""

from __future__ import annotations

import operator
from dataclasses import asdict, dataclass, field
from enum import StrEnum

from mlstack.diagnostics.diagnostic import Diagnostic
from mlstack.frontend.ir.nodes import GateNode, SystemIR

OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt,
       "==": operator.eq}


def gate_holds(gate: GateNode, value: float | None) -> bool | None:
    if value is None:
        return None
    return bool(OPS[gate.op](value, gate.threshold))


@dataclass
class SloRow:
    slo: str
    target: str
    measured: str
    ok: bool | None  # None: not measured


class StageStatus(StrEnum):
    DONE = "done"
    SKIPPED = "skipped"
    FAILED = "failed"


@dataclass
class StageRecord:
    name: str
    status: StageStatus
    seconds: float
    detail: str = ""


@dataclass
class DeployResult:
    system: str
    version: str
    endpoint: str
    model_tag: str | None
    changed: bool
    metrics: dict = field(default_factory=dict)
    load: dict = field(default_factory=dict)
    slos: list[SloRow] = field(default_factory=list)
    skew: dict = field(default_factory=dict)
    rollout: list[dict] = field(default_factory=list)
    stages: list[StageRecord] = field(default_factory=list)
    example_request: dict = field(default_factory=dict)
    warnings: list[Diagnostic] = field(default_factory=list)  # lint's, of the spec deployed

    @property
    def slos_met(self) -> bool:
        return all(row.ok is not False for row in self.slos)

    def as_dict(self) -> dict:
        data = asdict(self)
        data["slos_met"] = self.slos_met
        data["warnings"] = [d.as_dict() for d in self.warnings]
        return data


def _fmt(value: float | None, unit: str = "") -> str:
    return "-" if value is None else f"{value:g}{unit}"


def slo_rows(system: SystemIR, load: dict, metrics: dict) -> list[SloRow]:
    """The spec's SLOs next to what was measured (a load summary and evaluation metrics)."""
    slo = system.slos
    rows = []
    for name in ("p50_ms", "p95_ms", "p99_ms"):
        target = getattr(slo, name)
        if target is not None:
            got = load.get(name)
            rows.append(SloRow(f"latency {name[:3]}", f"<= {target:g} ms", _fmt(got, " ms"),
                               None if got is None else got <= target))
    if slo.throughput_rps is not None:
        got = load.get("throughput_rps")
        rows.append(SloRow("throughput", f">= {slo.throughput_rps:g} rps", _fmt(got, " rps"),
                           None if got is None else got >= slo.throughput_rps))
    if slo.error_rate is not None or slo.availability is not None:
        allowed = slo.error_rate if slo.error_rate is not None else 1 - slo.availability / 100
        got = load.get("error_rate")
        rows.append(SloRow("error rate", f"<= {allowed:g}", _fmt(got),
                           None if got is None else got <= allowed))
    for gate in slo.quality:
        got = metrics.get(gate.metric)
        rows.append(SloRow(f"quality {gate.metric}", f"{gate.op} {gate.threshold:g}",
                           _fmt(None if got is None else round(got, 4)), gate_holds(gate, got)))
    return rows
