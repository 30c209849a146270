"""Settings the spec leaves to mlstack, derived from the SLOs and the target, with reasons.

Each derived value is recorded through `record(setting, value, reason)` so that
`mlstack plan --explain` can show where it came from.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mlstack.frontend.ir import catalog
from mlstack.frontend.ir import nodes as ir
from mlstack.frontend.spec.models import FeedbackTest, Rollout, ShadowRules, SystemSpec
from mlstack.frontend.spec.types import duration_seconds, memory_mib, parse_gate

# records a setting the spec left to mlstack: (setting, value, reason)
Record = Callable[[str, object, str], None]


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


def derive_target(spec: SystemSpec, slo: ir.SloNode, record: Record) -> ir.TargetNode:
    t = spec.target
    store: str = t.online_store
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
    # a cluster still gets a GPU node for the training job; the flow decides at run time
    preferred = t.training.gpu == "preferred"
    return ir.TargetNode(
        kind=t.kind, region=t.region, namespace=namespace, online_store=store,
        serving=ir.ResourcesNode(cpu=t.serving.cpu, memory_mib=int(memory_mib(t.serving.memory)),
                                 gpu=t.serving.gpu, gpu_type=t.serving.gpu_type),
        training=ir.ResourcesNode(cpu=t.training.cpu,
                                  memory_mib=int(memory_mib(t.training.memory)),
                                  gpu=1 if preferred else t.training.gpu,
                                  gpu_type=t.training.gpu_type, spot=t.training.spot,
                                  gpu_preferred=preferred),
        replicas_min=rmin, replicas_max=rmax, autoscale_target_rps_per_replica=per_replica)


def training_device(framework: str, gpu: int, preferred: bool) -> tuple[str, str]:
    """Which device training uses (cpu, cuda, or cuda when visible), and why; the flow
    decides at run time with mlstack.runtime.devices by the same rule."""
    if framework not in catalog.GPU_FRAMEWORKS:
        if gpu:
            return "cpu", (f"{framework} trains on the CPU; the GPU of target.training is "
                           "reserved but unused")
        return "cpu", "target.training.gpu is 0"
    if preferred:
        return "cuda if visible, else cpu", (
            f"gpu: preferred: {framework} trains on a CUDA device when one is visible at run "
            "time, else on the CPU (the flow logs and records which)")
    if gpu:
        return "cuda", (f"target.training.gpu is {gpu}: {framework} trains on a CUDA device; "
                        "the flow stops before training when none is visible")
    return "cpu", "target.training.gpu is 0"


# Batch sizes considered (BentoML and the service's batcher take any; powers of two keep the
# choice stable); the throughput headroom a choice must leave.
BATCH_SIZES = (2, 4, 8, 16, 32, 64, 128)
THROUGHPUT_HEADROOM = 2.0


@dataclass(frozen=True)
class BatchingChoice:
    """Batching chosen from the cost of one call per batch size, and why: (setting, value,
    reason) for each setting it decided."""

    enabled: bool
    max_batch_size: int
    max_latency_ms: int
    reasons: tuple[tuple[str, object, str], ...]


def estimated_call_ms(online_store: str, algorithm: str, has_transforms: bool,
                      size: int) -> float:
    """A rough cost of one batched call (fetch, transforms, model) before any measurement:
    the catalog's one-row figures, a batch of 8 costing twice one row."""
    one = (catalog.FETCH_MS[online_store] + catalog.MODEL_MS.get(algorithm, 5.0)
           + (catalog.TRANSFORM_MS if has_transforms else 0.0))
    return one * (1 + (size - 1) / 8)


def call_cost(call_ms: dict[int, float], rows: float) -> float:
    """The cost (ms) of one call of `rows` rows, from the measured sizes: linear between the
    two sizes around it, and past the largest on the slope of the last two."""
    if rows in call_ms:
        return call_ms[int(rows)]
    sizes = sorted(call_ms)
    if rows <= sizes[0]:
        return call_ms[sizes[0]]
    for low, high in zip(sizes, sizes[1:], strict=False):
        if rows <= high:
            return call_ms[low] + (call_ms[high] - call_ms[low]) * (rows - low) / (high - low)
    low, high = sizes[-2], sizes[-1]
    return call_ms[high] + (call_ms[high] - call_ms[low]) / (high - low) * (rows - high)


def choose_batching(*, rate_rps: float, p99_ms: float, call_ms: dict[int, float],
                    http_ms: float = catalog.HTTP_OVERHEAD_MS, measured: str = "estimated",
                    rows_per_request: float = 1.0) -> BatchingChoice:
    """Batching from the cost of one call (fetch + transforms + model) per batch size
    (`call_ms`: 1 and BATCH_SIZES), for requests of `rows_per_request` rows each (1 for
    /predict; a ranking model's /rank request scores all its candidates in one call).

    The service's batcher (mlstack.runtime.batching) never holds a request for a batch to
    fill: a request runs at once when the model is free, and only the requests that queued
    behind a running call go together. So batching adds no waiting at any rate and stays on
    whenever the p99 budget has room for it; the hold window a holding batcher would need is
    zero, and the reasons say whether the throughput needs batches at all (one replica
    sustaining `rate_rps` unbatched with THROUGHPUT_HEADROOM: batches then form only under
    bursts). The size is the largest batch (rows) whose call takes at most a quarter of the
    p99 budget (p99 - HTTP); max_latency_ms sheds a request only once it could no longer be
    answered within p99 behind a full batch and then its own call: p99 - HTTP - the batch's
    cost - its own (the larger of a full batch and its own rows), not the whole p99 budget.
    A request larger than the batch runs alone (the batcher never splits one)."""
    per = max(1.0, float(rows_per_request))
    shape = "" if per == 1 else f" (a request of {per:g} rows: /rank's candidates)"
    own = call_cost(call_ms, per)
    one = http_ms + own
    unbatched = 1000.0 / one
    wanted = rate_rps * THROUGHPUT_HEADROOM
    budget = p99_ms - http_ms
    fits = [b for b in BATCH_SIZES if call_ms[b] <= budget / 4]
    size = fits[-1] if fits else BATCH_SIZES[0]
    # behind a full batch, then its own call: a full batch too for /predict's one-row
    # requests; for larger ones the larger of a full batch and its own rows
    behind = call_ms[size] + (call_ms[size] if per == 1 else max(call_ms[size], own))
    latency = math.floor(p99_ms - http_ms - behind)
    if latency < 1:
        return BatchingChoice(False, 1, 1, (("serving.batching.enabled", False, (
            f"off: no room for batching in the p99 budget: p99 {p99_ms:g} ms - {http_ms:g} ms "
            f"HTTP - {behind:.3g} ms (a batch of {size} and a request's own call{shape}, "
            f"{measured}) < 1 ms"),),))
    unbatched_line = (f"unbatched one replica answers {unbatched:.0f} rps (1000 / ({http_ms:g} "
                      f"ms HTTP + {own:.3g} ms per call{shape}, {measured}))")
    if wanted <= unbatched:
        needed = (f"on, holding no request: {unbatched_line}, at least {rate_rps:g} rps x "
                  f"{THROUGHPUT_HEADROOM:g} headroom, so no request waits for a batch to "
                  "fill; only requests that queue behind a running call (bursts, many "
                  "clients) go together, which costs them no extra wait")
    else:
        needed = (f"on, holding no request: {unbatched_line}, under {rate_rps:g} rps x "
                  f"{THROUGHPUT_HEADROOM:g} headroom; requests that queue behind a running "
                  "call go together")
    together = max(1, math.floor(size / per))  # requests in one batch
    capacity = 1000.0 * together / (together * http_ms + call_cost(call_ms, together * per))
    own_line = ("its own full batch: p99 {p:g} - {h:g} ms HTTP - 2 x {c:.3g} ms (a batch's "
                "call)" if per == 1 else
                "a full batch and then its own call{shape}: p99 {p:g} - {h:g} ms HTTP - "
                "{b:.3g} ms").format(p=p99_ms, h=http_ms, c=call_ms[size], b=behind,
                                     shape=shape)
    reasons = [
        ("serving.batching.enabled", True, needed),
        ("serving.batching.max_batch_size", size, (
            f"the largest batch whose call ({call_ms[size]:.3g} ms, {measured}) fits a "
            f"quarter of the p99 budget (p99 {p99_ms:g} - {http_ms:g} ms HTTP)")),
        ("serving.batching.max_latency_ms", latency, (
            f"shed a request only when it can no longer be answered within p99 behind "
            f"{own_line}"))]
    if capacity < wanted:
        reasons.append(("serving.batching.capacity_rps", round(capacity), (
            f"one replica answers about {capacity:.0f} rps with batches of {size}"
            f"{' rows' if shape else ''}{shape}: less than {rate_rps:g} rps x {THROUGHPUT_HEADROOM:g} headroom; add "
            "replicas or CPU")))
    return BatchingChoice(True, size, latency, tuple(reasons))


def derive_serving(spec: SystemSpec, slo: ir.SloNode, model: ir.ModelNode,
                   target: ir.TargetNode, has_transforms: bool, record: Record) -> ir.ServingNode:
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
        rps = (slo.throughput_rps or 100.0) / max(1, target.replicas_min)
        cost = {n: estimated_call_ms(target.online_store, model.algorithm, has_transforms, n)
                for n in (1, *BATCH_SIZES)}
        choice = choose_batching(rate_rps=rps, p99_ms=p99, call_ms=cost,
                                 measured="estimated; measured at a local deploy")
        source = "" if slo.p99_ms else f" (no p99 SLO: {p99:g} ms assumed)"
        if b.mode == "fixed":  # one size given: batching stays on, the other is derived
            size = b.max_batch_size or (choice.max_batch_size if choice.enabled else 8)
            latency = b.max_latency_ms or max(1, math.floor(
                p99 - catalog.HTTP_OVERHEAD_MS - 2 * estimated_call_ms(
                    target.online_store, model.algorithm, has_transforms, size)))
            left_out = ("serving.batching.max_latency_ms" if b.max_batch_size
                        else "serving.batching.max_batch_size")
            record(left_out, latency if b.max_batch_size else size,
                   "left out of a fixed batching: "
                   + ("p99 - HTTP - 2 x the estimated cost of a full batch" if b.max_batch_size
                      else "the largest batch whose estimated call fits a quarter of the p99 "
                      "budget") + source)
            enabled = True
        else:
            size, latency, enabled = (choice.max_batch_size, choice.max_latency_ms,
                                      choice.enabled)
            for setting, value, reason in choice.reasons:
                record(setting, value, reason + source)
        batching = ir.BatchingNode(enabled=enabled, max_batch_size=size,
                                   max_latency_ms=latency, derived=True)
    r = s.rollout
    latency_gate = error_gate = None
    if r.abort_if.latency_p99_ms is not None:
        op, value = parse_gate(r.abort_if.latency_p99_ms)
        latency_gate = ir.GateNode(metric="latency_p99_ms", op=op, threshold=value)
    if r.abort_if.error_rate is not None:
        op, value = parse_gate(r.abort_if.error_rate)
        error_gate = ir.GateNode(metric="error_rate", op=op, threshold=value)
    shadow, ab, guard = _shadow(r), _ab(r, model), _feedback_guard(r)
    limits, reasons = router_limits(serving_workers(target), batching, s.timeout_ms)
    for setting, value, reason in reasons:
        record(setting, value, reason)
    return ir.ServingNode(
        router=ir.RouterLimitsNode(**limits), protocol=s.protocol, batching=batching,
        rollout=ir.RolloutNode(strategy=r.strategy, steps=tuple(r.steps),
                               step_seconds=r.step_seconds, abort_latency_p99=latency_gate,
                               abort_error_rate=error_gate, shadow=shadow, ab=ab,
                               feedback=guard),
        timeout_ms=s.timeout_ms, runtime=s.runtime, max_request_rows=s.max_request_rows)


def _shadow(r: Rollout) -> ir.ShadowNode | None:
    """The shadow comparison of strategy shadow (its defaults where the spec names none)."""
    if r.strategy != "shadow":
        return None
    rules = r.shadow or ShadowRules()
    op, value = parse_gate(rules.min_agreement)
    return ir.ShadowNode(min_agreement=ir.GateNode(metric="agreement", op=op, threshold=value),
                         tolerance=rules.tolerance, min_requests=rules.min_requests)


def _ab(r: Rollout, model: ir.ModelNode) -> ir.AbNode | None:
    """The experiment of strategy ab; its key defaults to the group key of a ranking model
    (one query, one arm), else the first entity join key. None without an ab mapping (lint
    refuses strategy ab without one)."""
    if r.strategy != "ab" or r.ab is None:
        return None
    a = r.ab
    key = a.key or model.group_by or (model.request_keys[0].name if model.request_keys
                                      else "")
    return ir.AbNode(key=key, split=a.split, **_feedback_test(a))


def _feedback_test(t: FeedbackTest) -> dict[str, Any]:
    """The fields of a FeedbackTestNode, from the spec's test (an A/B's or a guard's)."""
    return dict(metric=t.metric, higher_is_better=t.higher_is_better, baseline=t.baseline,
                minimum_lift=t.minimum_lift, tau=t.minimum_lift * t.baseline, alpha=t.alpha,
                min_samples=t.min_samples, max_samples=t.max_samples,
                max_duration_seconds=duration_seconds(t.max_duration))


def _feedback_guard(r: Rollout) -> ir.FeedbackGuardNode | None:
    """A canary's feedback guard, held at its last step below 100 (None without one, or
    without such a step: lint refuses both)."""
    held = [w for w in r.steps if w < 100]
    if r.strategy != "canary" or r.feedback is None or not held:
        return None
    return ir.FeedbackGuardNode(weight=held[-1], **_feedback_test(r.feedback))


def serving_workers(target: ir.TargetNode) -> int:
    """The service's worker processes: one per whole serving core (the BentoML backend's
    rule, codegen.backends.bentoml.workers)."""
    return max(1, int(target.serving.cpu))


ROUTER_PER_WORKER_MIN = 8  # requests a worker without batching works on at once (its loop)
ROUTER_IN_FLIGHT = (16, 1024)
ROUTER_QUEUE_ROUNDS = 4


def router_limits(workers: int, batching: ir.BatchingNode, timeout_ms: int
                  ) -> tuple[dict[str, Any], list[tuple[str, object, str]]]:
    """The local router's admission control from what the service can hold, not from the
    throughput objective: a spec's rps is what it must reach, and a router sized by it
    (20 in flight and 20 queued for 0.1 s at churn's 50 rps) refused 97.8% of requests at 64
    concurrent clients while the service had capacity. Returns the limits and the reasons
    (setting, value, reason)."""
    batch = batching.max_batch_size if batching.enabled else 1
    per_worker = max(ROUTER_PER_WORKER_MIN, 2 * batch)
    low, high = ROUTER_IN_FLIGHT
    in_flight = min(high, max(low, workers * per_worker))
    queue = ROUTER_QUEUE_ROUNDS * in_flight
    timeout_s = timeout_ms / 1000
    queue_timeout = round(min(10.0, max(0.05, timeout_s)), 3)
    backend = max(5.0, 3 * timeout_s)
    holds = (f"a batch of {batch} being scored and the next one forming" if batch > 1
             else f"{ROUTER_PER_WORKER_MIN} requests on its event loop (no batching)")
    reasons: list[tuple[str, object, str]] = [
        ("serving.router.max_in_flight", in_flight,
         f"what the service holds at once: {workers} worker(s) (one per whole serving core) x "
         f"{per_worker} requests each ({holds}), within {low}-{high}; not the throughput "
         "objective, which is what it must reach, not what it can hold"),
        ("serving.router.max_queue", queue,
         f"{ROUTER_QUEUE_ROUNDS} rounds of what the service holds wait for a slot: a burst of "
         "concurrent clients queues at the router instead of being refused while the service "
         "has capacity"),
        ("serving.router.queue_timeout_s", queue_timeout,
         "a request waits for a slot as long as the service would work on it "
         "(serving.timeout_ms); refused sooner, a burst the service absorbs turns into 503s"),
        ("serving.router.backend_timeout_s", backend,
         "three times the service's own timeout (at least 5 s): a version that does not "
         "answer by then is hung, not slow"),
    ]
    return ({"max_in_flight": in_flight, "max_queue": queue, "queue_timeout_s": queue_timeout,
             "backend_timeout_s": backend}, reasons)


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


def materialize_interval(spec: SystemSpec, record: Record) -> int:
    """Online features are refreshed at half the freshness SLO (at least every minute)."""

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
