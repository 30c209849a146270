"""The rollout stage: traffic moved to the new version by the spec's rollout (a canary's
steps, or all at once), each canary step judged by the spec's abort rules; a breach puts the
traffic back on the version serving before."""

from __future__ import annotations

import time
from typing import Any

from mlstack.diagnostics.errors import StageError
from mlstack.ops.local import experiment, judge, procs
from mlstack.ops.local.services import ensure_router, route, stop_version, supervised
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
        _end_experiment(ctx)
        if current is None or not supervised(paths, current) \
                or current.version == version.version:
            route(paths, {version.version: 100}, state)
            record.detail = "first version: 100% at once"
            return []
        if spec.strategy == "shadow":
            step = shadow_step(ctx)
            record.detail = _shadow_detail(step)
            return [step]
        if spec.strategy == "ab":
            assert spec.ab is not None  # the IR has the experiment of strategy ab (lint)
            started = experiment.start(state, paths, system=ctx.system.name,
                                       control=current.version, candidate=version.version,
                                       ab=spec.ab)
            record.detail = (f"A/B experiment {started['name']}: {version.version} on "
                             f"{spec.ab.split}% of {spec.ab.key}, sticky; the keeper decides")
            return [{"strategy": "ab", "experiment": started["name"], "split": spec.ab.split,
                     "key": spec.ab.key, "control": current.version}]
        steps = [100] if spec.strategy == "all_at_once" else list(spec.steps)
        guard = spec.feedback if spec.strategy == "canary" else None
        judged: list[dict[str, Any]] = []
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
            if guard is not None and weight == guard.weight:
                held = experiment.hold_canary(state, paths, system=ctx.system.name,
                                              control=current.version,
                                              candidate=version.version, guard=guard)
                judged.append({"strategy": "canary", "held": weight,
                               "experiment": held["name"], "control": current.version})
                break
        record.detail = " -> ".join(
            f"{s['weight']}%" + (f" ({'; '.join(s['unjudged'])})" if s.get("unjudged") else "")
            for s in judged if "weight" in s)
        if guard is not None and judged and judged[-1].get("held"):
            record.detail += (f", held at {guard.weight}%: the keeper decides on the "
                              f"{guard.metric} feedback")
        return judged


def _end_experiment(ctx: DeployContext) -> None:
    """A new version's rollout supersedes a running A/B experiment: it ends, its traffic
    goes back to the control (the current version), its candidate stops."""
    trial = experiment.running(ctx.state)
    if trial is None:
        return
    experiment.end(ctx.state, f"superseded by the deploy of {ctx.version.version}")
    route(ctx.paths, {trial["control"]: 100}, ctx.state)
    candidate = ctx.state.get(trial["candidate"])
    if candidate is not None and candidate.version != ctx.version.version:
        with ctx.state.action("stop", version=candidate.version):
            stop_version(ctx.paths, candidate)
            candidate.status = VersionStatus.STOPPED


def canary_step(ctx: DeployContext, weight: int) -> dict:
    from mlstack.ops.local.loadtest import run_load  # httpx: the runtime extra

    spec = ctx.system.serving.rollout
    assert ctx.current is not None  # a canary steps against the version serving
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


def shadow_step(ctx: DeployContext) -> dict:
    """The candidate shadows the version serving: the router mirrors every /predict and
    /rank request to it and compares the answers (traffic_split), while deploy's load runs
    at least step_seconds and until min_requests were mirrored (at most options.step_limit
    seconds). Judged on the mirror's figures: the abort rules on the candidate's own error
    rate and p99, and its agreement with the serving version. Passed: the candidate takes
    all traffic; else the serving version keeps it and the deploy fails, naming the rule."""
    from mlstack.ops.local.loadtest import run_load  # httpx: the runtime extra

    paths, state, spec = ctx.paths, ctx.state, ctx.system.serving.rollout
    rules = spec.shadow
    assert rules is not None and ctx.current is not None  # strategy shadow, a version serving
    new, old = ctx.version.version, ctx.current.version
    route(paths, {old: 100}, state, {"shadow": {"version": new, "tolerance": rules.tolerance}})
    asked = [0.0]

    def mirrored(_recorder) -> bool:  # asked of the router at most twice a second
        if time.monotonic() - asked[0] < 0.5:
            return False
        asked[0] = time.monotonic()
        return (shadow_stats(ctx, new).get("mirrored") or 0) >= rules.min_requests

    run_load(f"http://127.0.0.1:{ctx.options.port}/{ctx.endpoint}", ctx.bodies,
             rate=ctx.rate, duration=spec.step_seconds, concurrency=ctx.options.concurrency,
             timeout=LOAD_TIMEOUT, max_duration=max(spec.step_seconds, ctx.options.step_limit),
             done=mirrored)
    stats = _settled(ctx, new)
    verdicts = shadow_verdicts(spec, stats)
    breach = next((f"{rule}: {figure}" for rule, ok, figure in verdicts if ok is False), None)
    step = {"strategy": "shadow", "version": new, "against": old, "shadow": stats,
            "verdicts": [{"rule": r, "ok": ok, "measured": f} for r, ok, f in verdicts],
            "breach": breach}
    state.record("shadow-compared", version=new, shadow=shadow_summary(step))
    if breach is not None:
        route(paths, {old: 100}, state)
        ctx.version.status = VersionStatus.ROLLED_BACK
        raise StageError("rollout", f"shadow of {new}: {breach}; {old} keeps serving")
    route(paths, {new: 100, old: 0}, state)
    return step


def shadow_summary(step: dict) -> dict:
    """What the history keeps of a shadow comparison (the report's readout)."""
    stats = step.get("shadow") or {}
    latency = stats.get("shadow_latency_ms") or {}
    return {"against": step.get("against"), "mirrored": stats.get("mirrored"),
            "dropped": stats.get("dropped"), "errors": stats.get("errors"),
            "agreement": stats.get("agreement"), "mean_abs_diff": stats.get("mean_abs_diff"),
            "max_abs_diff": stats.get("max_abs_diff"), "p99_ms": latency.get("p99"),
            "verdict": "promoted" if step.get("breach") is None else step["breach"]}


def shadow_stats(ctx: DeployContext, version: str) -> dict:
    """The router's figures of the mirror to `version` ({} when it has none)."""
    code, data = procs.http_get_json(f"http://127.0.0.1:{ctx.options.port}/-/router")
    shadow = data.get("shadow") if code == 200 and isinstance(data, dict) else None
    return shadow if isinstance(shadow, dict) and shadow.get("version") == version else {}


def _settled(ctx: DeployContext, version: str, wait: float = 5.0) -> dict:
    """The mirror's figures once the copies still queued were answered (at most `wait`
    seconds after the load ended)."""
    deadline = time.monotonic() + wait
    stats = shadow_stats(ctx, version)
    while time.monotonic() < deadline:
        time.sleep(0.2)
        again = shadow_stats(ctx, version)
        done = (again.get("mirrored", 0) + again.get("dropped", 0) + again.get("errors", 0))
        if again == stats and done:
            break
        stats = again
    return stats


def shadow_verdicts(spec, stats: dict) -> list[tuple[str, bool | None, str]]:
    """(rule, ok, measured) for each of the shadow's rules: enough mirrored requests, the
    abort rules on the candidate's errors and p99, and its agreement. ok None: not judged."""
    rules = spec.shadow
    mirrored = int(stats.get("mirrored") or 0)
    errors = int(stats.get("errors") or 0)
    out: list[tuple[str, bool | None, str]] = [(
        f"at least {rules.min_requests} mirrored requests", mirrored >= rules.min_requests,
        f"{mirrored} mirrored, {stats.get('dropped', 0)} dropped")]
    gate = spec.abort_error_rate
    if gate is not None:
        verdict = judge.error_breach(errors, mirrored, gate.op, gate.threshold)
        out.append((f"error rate {gate.op} {gate.threshold:g} aborts",
                    None if verdict.ok is None else verdict.ok,
                    f"{errors} errors of {mirrored}"))
    gate = spec.abort_latency_p99
    latency = stats.get("shadow_latency_ms") or {}
    if gate is not None:
        p99, n = latency.get("p99"), int(latency.get("n") or 0)
        ok = None if p99 is None or n < judge.min_samples(99) else not judge.OPS[gate.op](
            p99, gate.threshold)
        out.append((f"p99 {gate.op} {gate.threshold:g} ms aborts", ok,
                    "-" if p99 is None else f"{p99:.1f} ms over {n}"))
    agreement = stats.get("agreement")
    gate = rules.min_agreement
    out.append((f"agreement {gate.op} {gate.threshold:g}",
                None if agreement is None else judge.OPS[gate.op](agreement, gate.threshold),
                "-" if agreement is None else f"{agreement:.4f} over "
                f"{stats.get('rows_compared', 0)} answers"))
    if agreement is None:  # nothing compared: never promoted on no evidence
        out[-1] = (out[-1][0], False, "no answer could be compared")
    return out


def _shadow_detail(step: dict) -> str:
    stats = step["shadow"]
    latency = stats.get("shadow_latency_ms") or {}
    agreement = stats.get("agreement")
    return (f"shadowed {stats.get('mirrored', 0)} requests: agreement "
            + ("-" if agreement is None else f"{agreement:.3f}")
            + f", {stats.get('errors', 0)} errors, p99 "
            + ("-" if latency.get("p99") is None else f"{latency['p99']:.1f} ms")
            + f"; {step['version']} promoted")
