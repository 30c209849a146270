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
    ok: bool | None  # None: not measured, or not enough samples (see note)
    note: str = ""  # e.g. "not enough samples (40 of 100)"

    @property
    def verdict(self) -> str:
        if self.ok is None:
            return self.note or "not measured"
        return ("met" if self.ok else "MISSED") + (f" ({self.note})" if self.note and
                                                   not self.ok else "")


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
    example_endpoint: str = "predict"  # the endpoint example_request is for (rank: ranking)
    warnings: list[Diagnostic] = field(default_factory=list)  # lint's, of the spec deployed
    failed: str | None = None  # the failed stage's error, when the deploy failed
    serving: str | None = None  # the version serving afterwards (on failure: the old one)

    @property
    def slos_met(self) -> bool:
        return self.failed is None and all(row.ok is not False for row in self.slos)

    def as_dict(self) -> dict:
        data = asdict(self)
        data["slos_met"] = self.slos_met
        data["warnings"] = [d.as_dict() for d in self.warnings]
        return data


def _fmt(value: float | None, unit: str = "") -> str:
    return "-" if value is None else f"{value:g}{unit}"


def slo_rows(system: SystemIR, load: dict, metrics: dict, *,
             latencies: list[float] | None = None,
             freshness: dict | None = None) -> list[SloRow]:
    """The spec's SLOs next to what was measured: a load summary (with its raw `latencies`,
    each percentile is judged only from enough samples: mlstack.ops.local.judge), evaluation
    metrics, and the age of each feature view's newest online row (`freshness`)."""
    from mlstack.ops.local import judge

    slo = system.slos
    rows = []
    for name in ("p50_ms", "p95_ms", "p99_ms"):
        target = getattr(slo, name)
        if target is None:
            continue
        got = load.get(name)
        if latencies is None or got is None:
            rows.append(SloRow(f"latency {name[:3]}", f"<= {target:g} ms", _fmt(got, " ms"),
                               None if got is None else got <= target))
            continue
        verdict = judge.latency_within(latencies, float(name[1:3]), target)
        rows.append(SloRow(f"latency {name[:3]}", f"<= {target:g} ms",
                           _fmt(_round(verdict.value), " ms"), verdict.ok, verdict.note))
    if slo.throughput_rps is not None:
        got = load.get("throughput_rps")
        rows.append(SloRow("throughput", f">= {slo.throughput_rps:g} rps", _fmt(got, " rps"),
                           None if got is None else got >= slo.throughput_rps))
    allowed = (slo.error_rate if slo.error_rate is not None
               else None if slo.availability is None else 1 - slo.availability / 100)
    if allowed is not None:
        got = load.get("error_rate")
        if got is None or not load.get("requests"):
            rows.append(SloRow("error rate", f"<= {allowed:g}", _fmt(got), None))
        else:
            verdict = judge.errors_within(load.get("errors", 0), load["requests"], allowed)
            rows.append(SloRow("error rate", f"<= {allowed:g}", _fmt(got), verdict.ok,
                               verdict.note))
    for gate in slo.quality:
        got = metrics.get(gate.metric)
        rows.append(SloRow(f"quality {gate.metric}", f"{gate.op} {gate.threshold:g}",
                           _fmt(None if got is None else round(got, 4)), gate_holds(gate, got)))
    if slo.feature_freshness_seconds is not None and freshness is not None:
        rows += freshness_rows(slo.feature_freshness_seconds, freshness)
    return rows


def freshness_rows(limit_seconds: int, freshness: dict) -> list[SloRow]:
    """One row per feature view: the age of its newest online row against the SLO."""
    rows = []
    for view, info in sorted(freshness.get("views", {}).items()):
        age = info.get("age_seconds")
        rows.append(SloRow(f"freshness {view}", f"<= {format_age(limit_seconds)}",
                           "no online row" if age is None else format_age(age),
                           False if age is None else age <= limit_seconds))
    return rows


def format_age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if abs(seconds) >= size:
            return f"{seconds / size:.3g} {unit}"
    return f"{seconds:.3g} s"


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
