"""Settings the spec leaves to mlstack, derived from the SLOs and the target, with reasons.

Each derived value is recorded through `record(setting, value, reason)` so that
`mlstack plan --explain` can show where it came from.
"""

from __future__ import annotations

import math

from mlstack.frontend.ir import catalog
from mlstack.frontend.ir import nodes as ir
from mlstack.frontend.spec.models import SystemSpec
from mlstack.frontend.spec.types import memory_mib, parse_gate


def batching_budget_ms(p99_ms: float, online_store: str, algorithm: str,
                       has_transforms: bool) -> tuple[float, str]:
    """What is left of the p99 budget for queueing in the batcher, and the arithmetic."""
    fetch = catalog.FETCH_MS[online_store]
    model = catalog.MODEL_MS.get(algorithm, 5.0)
    transform = catalog.TRANSFORM_MS if has_transforms else 0.0
    spent = catalog.HTTP_OVERHEAD_MS + fetch + model + transform
    return p99_ms - spent, (
        f"p99 {p99_ms:g} ms - http {catalog.HTTP_OVERHEAD_MS:g} - feature fetch "
        f"({online_store}) {fetch:g} - model ({algorithm}) {model:g}"
        + (f" - transforms {transform:g}" if transform else "") + f" = {p99_ms - spent:g} ms")


def derive_target(spec: SystemSpec, slo: ir.SloNode, record) -> ir.TargetNode:
    t = spec.target
    store = t.online_store
    if store == "auto":
        store = catalog.ONLINE_STORE_DEFAULT[t.kind]
        record("target.online_store", store, f"the default online store for a {t.kind} target")
    capacity = catalog.CAPACITY_RPS_PER_CPU * t.serving.cpu
    rmin, rmax = t.serving.replicas.min, t.serving.replicas.max
    per_replica = None
    if t.kind == "local":
        if (rmin, rmax) != (1, 1):
            record("target.serving.replicas", {"min": 1, "max": 1},
                   "the local target runs one service process (one per version during rollout)")
        rmin = rmax = 1
    elif slo.throughput_rps:
        needed = max(1, math.ceil(slo.throughput_rps / capacity))
        if needed > rmin:
            record("target.serving.replicas.min", needed,
                   f"throughput {slo.throughput_rps:g} rps / {capacity:g} rps per replica "
                   f"({catalog.CAPACITY_RPS_PER_CPU:g} rps per CPU x {t.serving.cpu:g} CPU)")
            rmin = needed
        if rmax < rmin:
            record("target.serving.replicas.max", rmin, "raised to at least replicas.min")
            rmax = rmin
        per_replica = round(capacity * catalog.AUTOSCALE_UTILISATION, 1)
        record("target.serving.autoscale_rps_per_replica", per_replica,
               f"scale out at {catalog.AUTOSCALE_UTILISATION:.0%} of the {capacity:g} rps one "
               "replica sustains")
    namespace = t.namespace or spec.metadata.name
    return ir.TargetNode(
        kind=t.kind, region=t.region, namespace=namespace, online_store=store,
        serving=ir.ResourcesNode(cpu=t.serving.cpu, memory_mib=int(memory_mib(t.serving.memory)),
                                 gpu=t.serving.gpu, gpu_type=t.serving.gpu_type),
        training=ir.ResourcesNode(cpu=t.training.cpu,
                                  memory_mib=int(memory_mib(t.training.memory)),
                                  gpu=t.training.gpu, gpu_type=t.training.gpu_type,
                                  spot=t.training.spot),
        replicas_min=rmin, replicas_max=rmax, autoscale_target_rps_per_replica=per_replica)


def _power_of_two_at_least(n: float) -> int:
    return 1 << max(0, math.ceil(math.log2(max(1.0, n))))


def derive_serving(spec: SystemSpec, slo: ir.SloNode, model: ir.ModelNode,
                   target: ir.TargetNode, has_transforms: bool, record) -> ir.ServingNode:
    s = spec.serving
    b = s.batching
    p99 = slo.p99_ms or catalog.DEFAULT_P99_MS
    if b.mode == "off":
        batching = ir.BatchingNode(enabled=False, max_batch_size=1, max_latency_ms=1,
                                   derived=False)
    elif b.mode == "fixed" and b.max_batch_size and b.max_latency_ms:
        batching = ir.BatchingNode(enabled=True, max_batch_size=b.max_batch_size,
                                   max_latency_ms=b.max_latency_ms, derived=False)
    else:
        budget, arithmetic = batching_budget_ms(p99, target.online_store, model.algorithm,
                                                has_transforms)
        source = "the p99 SLO" if slo.p99_ms else f"the default p99 of {p99:g} ms (no SLO)"
        hard = max(1, math.floor(p99 - catalog.HTTP_OVERHEAD_MS))
        latency = b.max_latency_ms or hard
        if b.max_latency_ms is None:
            record("serving.batching.max_latency_ms", latency,
                   "BentoML's max_latency_ms is a hard per-request budget for the queue and the "
                   f"batched call (fetch, transforms, model), beyond which it answers 503: "
                   f"{source} minus HTTP overhead ({p99:g} - {catalog.HTTP_OVERHEAD_MS:g} ms); "
                   f"of it the queue keeps {arithmetic}")
        rps = (slo.throughput_rps or 100.0) / max(1, target.replicas_min)
        window = max(1.0, budget)
        size = b.max_batch_size or min(128, max(8, _power_of_two_at_least(
            rps * window / 1000.0 * 4)))
        if b.max_batch_size is None:
            record("serving.batching.max_batch_size", size,
                   f"{rps:g} rps per replica x {window:g} ms of queueing x 4 burst headroom, as "
                   "a power of two in [8, 128]")
        batching = ir.BatchingNode(enabled=budget > 0, max_batch_size=size,
                                   max_latency_ms=latency, derived=True)
        if budget <= 0:
            record("serving.batching.enabled", False, f"no room for batching: {arithmetic}")
    r = s.rollout
    latency_gate = error_gate = None
    if r.abort_if.latency_p99_ms is not None:
        op, value = parse_gate(r.abort_if.latency_p99_ms)
        latency_gate = ir.GateNode(metric="latency_p99_ms", op=op, threshold=value)
    if r.abort_if.error_rate is not None:
        op, value = parse_gate(r.abort_if.error_rate)
        error_gate = ir.GateNode(metric="error_rate", op=op, threshold=value)
    return ir.ServingNode(
        protocol=s.protocol, batching=batching,
        rollout=ir.RolloutNode(strategy=r.strategy, steps=tuple(r.steps),
                               step_seconds=r.step_seconds, abort_latency_p99=latency_gate,
                               abort_error_rate=error_gate),
        timeout_ms=s.timeout_ms)


SCHEDULE_SECONDS = {"@hourly": 3600, "@daily": 86400, "@weekly": 7 * 86400,
                    "@monthly": 30 * 86400, "@yearly": 365 * 86400}


def schedule_interval_seconds(schedule: str | None) -> int | None:
    """The nominal interval of a schedule (cron lines: the common minute/hour patterns)."""
    if schedule is None:
        return None
    if schedule in SCHEDULE_SECONDS:
        return SCHEDULE_SECONDS[schedule]
    minute, hour, day, month, weekday = schedule.split()
    if minute.startswith("*/") and hour == "*":
        return 60 * int(minute[2:])
    if minute == "*":
        return 60
    if hour == "*":
        return 3600
    if hour.startswith("*/"):
        return 3600 * int(hour[2:])
    if day == "*" and weekday == "*":
        return 86400
    if day == "*":
        return 7 * 86400
    return 30 * 86400


def materialize_interval(spec: SystemSpec, record) -> int:
    """Online features are refreshed at half the freshness SLO (at least every minute)."""
    from mlstack.frontend.spec.types import duration_seconds

    if spec.slos.feature_freshness is None:
        interval = schedule_interval_seconds(spec.training.schedule) or 86400
        record("pipelines.materialize.interval_seconds", interval,
               "no feature_freshness SLO: materialize with the training schedule (or daily)")
        return interval
    fresh = duration_seconds(spec.slos.feature_freshness)
    interval = max(60, fresh // 2)
    record("pipelines.materialize.interval_seconds", interval,
           f"half the feature_freshness SLO ({spec.slos.feature_freshness}), at least 60 s, so "
           "served values are never older than the SLO")
    return interval
