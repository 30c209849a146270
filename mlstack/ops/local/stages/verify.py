"""The verify stage: the SLO load test against one version's own URL (before any traffic
moves to it), judged per percentile only from enough samples."""

from __future__ import annotations

from mlstack.codegen.contract import package_name
from mlstack.diagnostics.errors import StageError
from mlstack.frontend.ir.nodes import SystemIR
from mlstack.ops.local import judge
from mlstack.ops.local.services import run_worker, version_url
from mlstack.ops.local.stages.context import DEFAULT_RATE, DeployContext, StageLog
from mlstack.ops.local.state import Version
from mlstack.ops.paths import ProjectPaths
from mlstack.ops.report import slo_rows


def run(ctx: DeployContext) -> None:
    version = ctx.version
    rows = slo_rows(ctx.system, {}, version.metrics)
    version.slo_report = {"load": {}, "rows": [r.__dict__ for r in rows]}
    if not ctx.options.verify:
        ctx.stages.skip("verify", "--no-verify")
        return
    ctx.load, rows = verify(ctx.system, ctx.options, version_url(version), ctx.bodies,
                            ctx.stages, version.metrics, freshness=ctx.skew.get("freshness"),
                            version=version, endpoint=ctx.endpoint)
    version.slo_report = {"load": ctx.load, "rows": [r.__dict__ for r in rows]}


def verify(system, options, url, bodies, stages: StageLog, metrics, *, freshness=None,
           version: Version | None = None, endpoint: str = "predict") -> tuple[dict, list]:
    """The SLO load test against one version's URL. Each percentile is judged only from
    enough samples (judge.min_samples: p99 needs 100): the load goes on past --duration
    until it has them, up to options.verify_limit seconds. The SLO table is built, and saved
    on `version`, before a missed serving SLO fails the stage (the CLI prints it either
    way). A missed feature freshness SLO is reported, not raised: the data is as stale for
    the version serving now."""
    from mlstack.ops.local.loadtest import run_load, warm_up  # httpx: the runtime extra

    rate = options.rate or system.slos.throughput_rps or DEFAULT_RATE
    with stages.stage("verify") as record:
        if not bodies:
            raise StageError("verify", "no example request with online features is known")
        warm_up(f"{url}/{endpoint}", bodies)
        needed = samples_needed(system)
        measured = run_load(f"{url}/{endpoint}", bodies, rate=rate, duration=options.duration,
                            concurrency=options.concurrency,
                            max_duration=max(options.duration, options.verify_limit),
                            done=lambda rec: rec.total.samples >= needed)
        load = {**measured.total, "contention": measured.contention}
        rows = slo_rows(system, load, metrics, latencies=measured.stats.latencies_ms,
                        freshness=freshness)
        if version is not None:
            version.slo_report = {"load": load, "rows": [r.__dict__ for r in rows]}
        missed = [r for r in rows if r.ok is False and not r.slo.startswith("freshness")]
        record.detail = (f"{load['requests']} requests, p99 {load['p99_ms']} ms, "
                         f"{load['throughput_rps']} rps; {contention_line(load)}")
        if missed:
            raise StageError("verify", "SLO missed: " + "; ".join(
                f"{r.slo} {r.measured} (want {r.target})" for r in missed))
    return load, rows


def samples_needed(system: SystemIR) -> int:
    """The most samples any latency SLO of the spec needs to be judged."""
    slo = system.slos
    quantiles = [q for q, target in ((50, slo.p50_ms), (95, slo.p95_ms), (99, slo.p99_ms))
                 if target is not None]
    return max((judge.min_samples(q) for q in quantiles), default=0)


def contention_line(load: dict) -> str:
    c = load.get("contention") or {}
    if not c:
        return ""
    return (f"load/cpu {c.get('load_per_cpu_before')} -> {c.get('load_per_cpu_after')}, "
            f"sender lag p99 {c.get('sender_lag_p99_ms')} ms")


def freshness(system: SystemIR, paths: ProjectPaths, version: Version) -> dict | None:
    """The age of each feature view's newest online row (a worker job), when the spec has a
    feature freshness SLO."""
    if system.slos.feature_freshness_seconds is None:
        return None
    outcome = run_worker(paths, paths.versions_dir / version.version, "freshness",
                         package_name(system))
    if not outcome.ok:
        return {"views": {}, "error": f"{outcome.error_type}: {outcome.error}"}
    return outcome.result
