"""SLO and rollout checks: percentiles in order, batching fits p99, freshness vs TTL."""

from __future__ import annotations

from collections.abc import Iterator

from mlstack.diagnostics.diagnostic import Diagnostic, Severity
from mlstack.frontend.checks import CheckContext, node_path
from mlstack.frontend.ir.catalog import HTTP_OVERHEAD_MS
from mlstack.frontend.ir.derive import batching_budget_ms, schedule_interval_seconds
from mlstack.frontend.ir.nodes import FeedbackTestNode


def check_slos(ctx: CheckContext) -> Iterator[Diagnostic]:
    s = ctx.system
    slo = s.slos
    order = [(name, getattr(slo, name)) for name in ("p50_ms", "p95_ms", "p99_ms")]
    given = [(n, v) for n, v in order if v is not None]
    for (low_name, low), (high_name, high) in zip(given, given[1:], strict=False):
        if low > high:
            yield ctx.diag("MLS401", f"latency {low_name} ({low:g} ms) is above {high_name} "
                           f"({high:g} ms)", ("slos", "latency", high_name),
                           "percentiles must grow: p50 <= p95 <= p99")
    b = s.serving.batching
    if slo.p99_ms is not None and b.enabled:
        budget, arithmetic = batching_budget_ms(slo.p99_ms, s.target.online_store,
                                                s.model.algorithm, bool(s.transforms))
        hard = slo.p99_ms - HTTP_OVERHEAD_MS
        if not b.derived and b.max_latency_ms > hard:
            yield ctx.diag("MLS402", f"batching max_latency_ms {b.max_latency_ms} does not fit "
                           f"in the p99 budget of {slo.p99_ms:g} ms (a request also spends "
                           f"~{HTTP_OVERHEAD_MS:g} ms in HTTP)", ("serving", "batching",
                                                                  "max_latency_ms"),
                           f"lower max_latency_ms to at most {max(1, int(hard))}, or use "
                           "batching: auto")
        elif not b.derived and b.max_latency_ms < slo.p99_ms - budget - HTTP_OVERHEAD_MS:
            yield ctx.diag("MLS402", f"batching max_latency_ms {b.max_latency_ms} is below the "
                           f"time one batched call needs ({arithmetic}): most requests "
                           "would be shed with HTTP 503", ("serving", "batching",
                                                           "max_latency_ms"),
                           "raise max_latency_ms, or use batching: auto",
                           severity=Severity.WARNING)
    no_room = slo.p99_ms is not None and batching_budget_ms(
        slo.p99_ms, s.target.online_store, s.model.algorithm, bool(s.transforms))[0] <= 0
    if not b.enabled and b.derived and no_room:
        yield ctx.diag("MLS402", "the p99 SLO leaves no room for adaptive batching; batching "
                       "is turned off", ("slos", "latency", "p99_ms"),
                       "raise p99_ms or choose a faster model", severity=Severity.WARNING)
    if slo.feature_freshness_seconds is not None:
        for view in s.feature_views:
            if view.ttl_seconds < slo.feature_freshness_seconds:
                yield ctx.diag("MLS403", f"feature view '{view.name}' expires values after "
                               f"{view.ttl_seconds} s, sooner than the feature_freshness SLO "
                               f"({slo.feature_freshness_seconds} s) allows them to age",
                               node_path(view) + ("ttl",),
                               "raise the ttl to at least the freshness SLO",
                               severity=Severity.WARNING)
    staleness = s.monitoring.model_staleness_seconds
    interval = schedule_interval_seconds(s.training.schedule)
    if staleness is not None and interval is not None and staleness < interval:
        yield ctx.diag("MLS404", f"model_staleness ({staleness} s) is shorter than the training "
                       f"schedule's interval ({interval} s): the model is always stale",
                       ("monitoring", "model_staleness"),
                       "retrain more often or allow more staleness")
    if staleness is not None and s.training.schedule is None:
        yield ctx.diag("MLS404", "model_staleness is set but training has no schedule",
                       ("monitoring", "model_staleness"), "add training.schedule",
                       severity=Severity.WARNING)
    if slo.availability is not None and slo.error_rate is not None:
        allowed = 1 - slo.availability / 100
        if slo.error_rate > allowed + 1e-12:
            yield ctx.diag("MLS407", f"error_rate {slo.error_rate:g} exceeds what availability "
                           f"{slo.availability:g}% allows ({allowed:.4g})", ("slos", "error_rate"),
                           f"lower error_rate to at most {allowed:.4g}, or lower availability",
                           severity=Severity.WARNING)


def check_rollout(ctx: CheckContext) -> Iterator[Diagnostic]:
    s = ctx.system
    r = s.serving.rollout
    steps = list(r.steps)
    for i in range(1, len(steps)):
        if steps[i] <= steps[i - 1]:
            yield ctx.diag("MLS406", f"rollout steps must increase: {steps[i]}% follows "
                           f"{steps[i - 1]}%", ("serving", "rollout", "steps", i),
                           "e.g. steps: [5, 25, 100]")
            break
    if steps and steps[-1] != 100:
        yield ctx.diag("MLS406", f"rollout steps end at {steps[-1]}%; the last step must be 100",
                       ("serving", "rollout", "steps", len(steps) - 1), "append 100")
    if r.strategy in ("all_at_once", "shadow", "ab") and steps != [100]:
        yield ctx.diag("MLS406", f"{r.strategy} rollout takes no intermediate steps",
                       ("serving", "rollout", "steps"), "remove steps or use strategy: canary")
    yield from _shadow_and_ab(ctx)
    gate = r.abort_latency_p99
    if gate is not None and s.slos.p99_ms is not None and gate.op in (">", ">=") and (
            gate.threshold > s.slos.p99_ms * 2):
        yield ctx.diag("MLS408", f"the canary aborts only above p99 {gate.threshold:g} ms, more "
                       f"than twice the p99 SLO ({s.slos.p99_ms:g} ms)",
                       ("serving", "rollout", "abort_if", "latency_p99_ms"),
                       f"abort at or near the SLO, e.g. '> {s.slos.p99_ms:g}'",
                       severity=Severity.WARNING)
    if gate is not None and gate.op not in (">", ">="):
        yield ctx.diag("MLS406", "latency abort rules compare with '>' or '>='",
                       ("serving", "rollout", "abort_if", "latency_p99_ms"),
                       "e.g. latency_p99_ms: '> 50' aborts when p99 exceeds 50 ms")
    eg = r.abort_error_rate
    if eg is not None and eg.op not in (">", ">="):
        yield ctx.diag("MLS406", "error-rate abort rules compare with '>' or '>='",
                       ("serving", "rollout", "abort_if", "error_rate"),
                       "e.g. error_rate: '> 0.01' aborts above 1% failed requests")


def _shadow_and_ab(ctx: CheckContext) -> Iterator[Diagnostic]:
    """rollout.shadow and rollout.ab: each only with its strategy (nothing written is ignored),
    strategy ab with its experiment, on a key the requests carry, with the prediction log."""
    s = ctx.system
    r = s.serving.rollout
    for name in ("shadow", "ab"):
        if r.strategy != name and ctx.written(("serving", "rollout", name)):
            yield ctx.diag("MLS409", f"rollout.{name} is set but the strategy is {r.strategy}: "
                           "it would be ignored", ("serving", "rollout", name),
                           f"use strategy: {name}, or remove rollout.{name}")
    if r.strategy == "shadow" and r.shadow is not None:
        gate = r.shadow.min_agreement
        if gate.op not in (">", ">=") or not 0 <= gate.threshold <= 1:
            yield ctx.diag("MLS409", "min_agreement is a fraction the candidate must reach: "
                           f"'{gate.op} {gate.threshold:g}'",
                           ("serving", "rollout", "shadow", "min_agreement"),
                           "e.g. min_agreement: '>= 0.95'")
    yield from _feedback_guard(ctx)
    if r.strategy != "ab":
        return
    if r.ab is None:
        yield ctx.diag("MLS409", "strategy ab needs its experiment: rollout.ab with at least "
                       "the metric's baseline", ("serving", "rollout", "strategy"),
                       "add ab: {baseline: 0.1} (the serving version's expected conversion)")
        return
    a = r.ab
    fields = sorted({c.name for c in s.model.request_keys} | {c.name for c in
                                                              s.model.request_fields}
                    | ({s.model.group_by} if s.model.group_by else set()))
    if a.key not in fields:
        yield ctx.diag("MLS409", f"the A/B key '{a.key}' is not a field of the requests "
                       f"({', '.join(fields) or 'none'})", ("serving", "rollout", "ab", "key"),
                       f"use one of: {', '.join(fields)}")
    yield from _feedback_test(ctx, a, "ab", "an A/B test")


def _feedback_guard(ctx: CheckContext) -> Iterator[Diagnostic]:
    """rollout.feedback: a canary's, with a step below 100 to hold, and a sound test."""
    r = ctx.system.serving.rollout
    if not ctx.written(("serving", "rollout", "feedback")):
        return
    if r.strategy != "canary":
        yield ctx.diag("MLS409", f"rollout.feedback judges a canary, and the strategy is "
                       f"{r.strategy}: it would be ignored", ("serving", "rollout", "feedback"),
                       "use strategy: canary with steps below 100, or strategy: ab to "
                       "decide between versions on feedback")
        return
    if r.feedback is None:  # the IR has a guard only with a step below 100 to hold
        yield ctx.diag("MLS409", "rollout.feedback holds the canary's last step below 100%, "
                       "and the steps have none", ("serving", "rollout", "steps"),
                       "e.g. steps: [5, 25, 100] (25% is held until the test decides)")
        return
    yield from _feedback_test(ctx, r.feedback, "feedback", "a canary's feedback guard")


def _feedback_test(ctx: CheckContext, t: FeedbackTestNode, name: str,
                   what: str) -> Iterator[Diagnostic]:
    """What an A/B experiment and a feedback guard both need: a baseline the metric can
    have, a decision min_samples allows, and the prediction log their outcomes are read from."""
    if t.metric == "conversion" and t.baseline >= 1:
        yield ctx.diag("MLS409", f"a conversion rate's baseline is below 1, not {t.baseline:g}",
                       ("serving", "rollout", name, "baseline"),
                       "e.g. baseline: 0.1 for a 10% conversion, or metric: mean")
    if t.min_samples > t.max_samples:
        yield ctx.diag("MLS409", f"min_samples ({t.min_samples}) is above max_samples "
                       f"({t.max_samples}): the test could never decide",
                       ("serving", "rollout", name, "min_samples"),
                       "lower min_samples or raise max_samples")
    s = ctx.system
    if not s.monitoring.prediction_log.enabled and s.target.kind == "local":
        yield ctx.diag("MLS409", f"{what} reads its outcomes from the prediction log, and "
                       "the log is off", ("monitoring", "prediction_log", "enabled"),
                       "leave monitoring.prediction_log.enabled unset (on locally)")
