"""The rollout stage: traffic moved to the new version by the spec's rollout (a canary's
steps, or all at once), each canary step judged by the spec's abort rules; a breach puts the
traffic back on the version serving before."""

from __future__ import annotations

from mlstack.diagnostics.errors import StageError
from mlstack.ops.local import judge
from mlstack.ops.local.services import ensure_router, route, supervised
from mlstack.ops.local.stages.context import LOAD_TIMEOUT, DeployContext
from mlstack.ops.local.stages.limits import router_limits
from mlstack.ops.local.state import VersionStatus


def run(ctx: DeployContext) -> None:
    ctx.rollout_steps = rollout(ctx)


def rollout(ctx: DeployContext) -> list[dict]:
    """Move traffic to the new version by the spec's rollout; abort on a breached rule. Each
    step runs at least step_seconds and then until its rules can be judged (judge.py: p99
    needs 100 answers of the new version; a breach can be proven from fewer), at most
    options.step_limit seconds; a rule still short of samples then says so in the step."""
    paths, options, state = ctx.paths, ctx.options, ctx.state
    current, version = ctx.current, ctx.version
    with ctx.stages.stage("rollout") as record:
        ensure_router(paths, state, options.port, router_limits(ctx.system))
        spec = ctx.system.serving.rollout
        if not supervised(paths, current) or current.version == version.version:
            route(paths, {version.version: 100}, state)
            record.detail = "first version: 100% at once"
            return []
        steps = [100] if spec.strategy == "all_at_once" else list(spec.steps)
        judged = []
        for weight in steps:
            route(paths, {version.version: weight, current.version: 100 - weight}, state)
            if weight == 100:
                judged.append({"weight": 100})
                break
            step = canary_step(ctx, weight)
            judged.append(step)
            if step["breach"]:
                route(paths, {current.version: 100}, state)
                version.status = VersionStatus.ROLLED_BACK
                raise StageError("rollout", f"canary step {weight}%: {step['breach']}; traffic "
                                 f"is back on {current.version}")
        record.detail = " -> ".join(
            f"{s['weight']}%" + (f" ({'; '.join(s['unjudged'])})" if s.get("unjudged") else "")
            for s in judged)
        return judged


def canary_step(ctx: DeployContext, weight: int) -> dict:
    from mlstack.ops.local.loadtest import run_load  # httpx: the runtime extra

    spec = ctx.system.serving.rollout
    new, old = ctx.version.version, ctx.current.version

    def verdicts(by_version: dict) -> list[tuple[str, judge.Verdict]]:
        stats = by_version.get(new)
        out = []
        latencies = stats.latencies_ms if stats else []
        gate = spec.abort_latency_p99
        if gate is not None:
            out.append((f"p99 {gate.op} {gate.threshold:g} ms",
                        judge.latency_breach(latencies, 99, gate.op, gate.threshold)))
        gate = spec.abort_error_rate
        if gate is not None:
            errors, requests = (stats.errors, stats.requests) if stats else (0, 0)
            out.append((f"error rate {gate.op} {gate.threshold:g}",
                        judge.error_breach(errors, requests, gate.op, gate.threshold)))
        return out

    def decided(recorder) -> bool:
        found = verdicts(recorder.versions)
        return any(v.ok is False for _, v in found) or all(v.ok is not None for _, v in found)

    measured = run_load(f"http://127.0.0.1:{ctx.options.port}/{ctx.endpoint}", ctx.bodies,
                        rate=ctx.rate, duration=spec.step_seconds,
                        concurrency=ctx.options.concurrency, timeout=LOAD_TIMEOUT,
                        max_duration=max(spec.step_seconds, ctx.options.step_limit),
                        done=decided)
    final = verdicts(measured.version_stats)
    stats = measured.by_version.get(new, {})
    breach = next((f"{rule}: measured {_figure(rule, v)}" + (f" ({v.note})" if v.note else "")
                   for rule, v in final if v.ok is False), None)
    if breach is None and not stats.get("requests") and measured.unattributed_errors:
        breach = f"the new version answered no request within {LOAD_TIMEOUT:g} s"
    return {"weight": weight, "seconds": round(measured.seconds, 3), "new": stats,
            "old": measured.by_version.get(old, {}), "breach": breach,
            "unjudged": [f"{rule}: {v.note}" for rule, v in final if v.ok is None],
            "contention": measured.contention}


def _figure(rule: str, verdict: judge.Verdict) -> str:
    if verdict.value is None:
        return "-"
    return f"{verdict.value:.1f} ms" if rule.endswith(" ms") else f"{verdict.value:.3g}"
