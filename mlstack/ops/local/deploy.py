"""`mlstack deploy` on the local target: the whole system up for real, verified, rolled out.

Before planning, what runs is made equal to the record (reconcile) and target.compute's
cluster to the spec (stages/compute.py). Then the plan is computed against the serving
version (stages/plan.py) and its stages are walked by the executor (stages/__init__.py):
train (the generated Prefect flow: ingest, validate, feast_apply, materialize, training_set,
train, evaluate, register) -> profile -> start_service -> skew_check -> verify (load test vs
the SLOs) -> sidecars -> rollout (canary through the router) -> promote.
The previous version keeps serving until the rollout moves traffic; any failed stage stops
the new version and names itself. Progress goes to a `progress` object; nothing is printed.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from mlstack.diagnostics.errors import StageError, UsageError
from mlstack.frontend.ir.nodes import SystemIR
from mlstack.ops.local import experiment, procs
from mlstack.ops.local.reconcile import reconcile
from mlstack.ops.local.services import route, router_alive, stop_version, supervised
from mlstack.ops.local.stages import compute, execute
from mlstack.ops.local.stages.context import (
    DEFAULT_RATE,
    FLOW_STAGES,
    LOAD_TIMEOUT,
    DeployContext,
    DeployOptions,
    JournaledProgress,
    NullProgress,
    StageLog,
)
from mlstack.ops.local.stages.limits import router_limits
from mlstack.ops.local.stages.plan import (
    CANDIDATE_EVENT,
    DeployPlan,
    data_key,
    digest,
    plan_deploy,
    record_schemas,
    tree_files,
)
from mlstack.ops.local.stages.requests import example_rows, load_requests
from mlstack.ops.local.state import DeploymentState, Version, VersionStatus
from mlstack.ops.paths import ProjectPaths
from mlstack.ops.report import DeployResult, SloRow, StageRecord, StageStatus

__all__ = ["DEFAULT_RATE", "FLOW_STAGES", "LOAD_TIMEOUT", "DeployContext", "DeployOptions",
           "DeployPlan", "NullProgress", "data_key", "deploy_local", "example_rows",
           "load_requests", "plan_deploy", "router_limits", "run_plan"]


def deploy_local(system: SystemIR, paths: ProjectPaths, options: DeployOptions,
                 progress=None) -> DeployResult:
    """Deploy an already compiled and written system; the caller holds the project lock
    (mlstack.ops.deploy takes it before compiling)."""
    state = DeploymentState.load(paths.deployments_file, spec=paths.spec)
    stages = StageLog(JournaledProgress(progress or NullProgress(), state))
    ours = router_alive(paths, state) and state.router.port == options.port
    if not ours and not procs.port_is_free(options.port):
        raise UsageError(f"port {options.port} on 127.0.0.1 is taken by another program",
                         "choose another with --port")
    _reconcile_first(paths, state, options, stages)
    compute.run(system, paths, state, stages)
    plan = plan_deploy(system, paths, state, retrain=options.retrain, port=options.port)
    return run_plan(system, paths, options, state, plan, stages, source=paths.build_dir)


def run_plan(system: SystemIR, paths: ProjectPaths, options: DeployOptions,
             state: DeploymentState, plan: DeployPlan, stages: StageLog, *,
             source: Path) -> DeployResult:
    """Apply a plan: its version (new, or the registered candidate) brought up from the
    generated tree in `source` by the plan's stages; on a failure the old version serves."""
    current = state.get(state.current)
    if not plan.new_version:
        assert current is not None  # planned only when a version serves
        ctx = DeployContext(system, paths, options, state, current, current, stages, plan)
        try:
            execute(ctx)
        except StageError as exc:
            failed = _result(ctx, changed=False)
            failed.failed, failed.serving = exc.message, current.version
            exc.result = failed
            raise
        return _result(ctx, changed=not plan.actions.nothing)
    version = _version(system, paths, state, plan, source)
    state.deploy = {"version": version.version, "pid": os.getpid(),
                    "started_at": round(time.time(), 3), "stage": "start"}
    state.record("deploy-started", version=version.version, reasons=list(plan.reasons),
                 **({"trigger": plan.trigger} if plan.trigger != "deploy" else {}))
    state.save(paths.deployments_file)
    ctx = DeployContext(system, paths, options, state, current, version, stages, plan)
    try:
        ctx.code_dir = _snapshot(paths, version.version, source)
        # the source files' schemas with the version: plan names a column changed since
        record_schemas(system, paths.project_dir, ctx.code_dir)
        execute(ctx)
        if "promote" not in plan.stages:  # a registered candidate, for the next deploy
            version.status = VersionStatus.STOPPED
            state.record(CANDIDATE_EVENT, version=version.version, model_tag=version.model_tag,
                         trigger=plan.trigger)
        result = _result(ctx, changed=True)
        result.load, result.rollout = ctx.load, ctx.rollout_steps
        result.skew = {k: v for k, v in ctx.skew.items() if k not in ("rows", "freshness")}
        return result
    except BaseException as exc:  # a failed stage, an interrupt, a bug: the old one serves
        fail_deploy(ctx, exc)
        raise
    finally:
        state.deploy = {}
        state.save(paths.deployments_file)


def _version(system: SystemIR, paths: ProjectPaths, state: DeploymentState, plan: DeployPlan,
             source: Path) -> Version:
    """The version the plan brings up: its registered candidate, or a new one."""
    found = state.get(plan.candidate)
    if found is not None:
        found.status, found.failure = VersionStatus.STARTING, None
        found.tree_hash = digest(tree_files(source))
        return found
    version = Version(version=state.next_version(), spec_hash=system.spec_hash,
                      training_key=data_key(system, paths.project_dir),
                      created_at=round(time.time(), 3), tree_hash=digest(tree_files(source)))
    state.versions.append(version)
    return version


def _snapshot(paths: ProjectPaths, version: str, source: Path) -> Path:
    """A copy of the generated tree this version runs from (so rollback can restart it)."""
    target = paths.versions_dir / version
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(
        ".state", "__pycache__", "*.pyc"))
    return target


def _reconcile_first(paths: ProjectPaths, state: DeploymentState, options: DeployOptions,
                     stages: StageLog) -> None:
    """Before planning: what runs is made equal to what is recorded (an interrupted deploy
    closed, orphans stopped, a dead current version restarted, the router's weights reset)."""
    if not state.versions and not state.deploy and not state.journal:
        return
    began = time.perf_counter()
    try:
        notes = reconcile(paths, state, serve=True, port=options.port, keep_experiment=True)
    except RuntimeError as exc:  # e.g. the router could not listen
        raise StageError("reconcile", str(exc)) from None
    if notes:
        stages.add(StageRecord("reconcile", StageStatus.DONE,
                               round(time.perf_counter() - began, 3), "; ".join(notes)))


def fail_deploy(ctx: DeployContext, exc: BaseException) -> None:
    """After a failed or interrupted deploy: traffic back on the version serving before (as
    recorded), the new version's tree stopped, the failure recorded; a StageError gets the
    report so far (its SLO table included) as `exc.result`."""
    state, paths, version, current = ctx.state, ctx.paths, ctx.version, ctx.current
    assert ctx.plan is not None  # run_plan's context
    message = exc.message if isinstance(exc, StageError) else (str(exc) or type(exc).__name__)
    if experiment.running(state) and state.experiment.get("candidate") == version.version:
        experiment.end(state, f"the deploy of {version.version} failed: {message}")
    if version.version != state.current:
        if version.status != VersionStatus.ROLLED_BACK:
            version.status = VersionStatus.FAILED
        version.failure = message
        if version.version in state.routes:
            if current is not None and supervised(paths, current):
                route(paths, {current.version: 100}, state)
            else:
                route(paths, {}, state)
        stop_version(paths, version)
    state.record("deploy-failed", version=version.version,
                 stage=getattr(exc, "stage", state.deploy.get("stage")), error=message,
                 **({"trigger": ctx.plan.trigger} if ctx.plan.trigger != "deploy" else {}))
    state.save(paths.deployments_file)
    if isinstance(exc, StageError):
        result = _result(ctx, changed=False)
        result.failed = message
        # what answers now, as observed: the recorded version only while it and the router
        # run (after `down`, say, nothing does), at the router's own port
        old = state.get(state.current)
        if old is not None and supervised(paths, old) and router_alive(paths, state):
            result.serving = old.version
            result.endpoint = f"http://127.0.0.1:{state.router.port}"
        exc.result = result


def _result(ctx: DeployContext, *, changed: bool) -> DeployResult:
    system, version = ctx.system, ctx.version
    report = version.slo_report or {}
    endpoint, bodies = load_requests(system, version.example_rows, one_request=True)
    request = bodies[0] if bodies else {"rows": []}
    return DeployResult(
        system=system.name, version=version.version,
        endpoint=f"http://127.0.0.1:{ctx.options.port}", model_tag=version.model_tag,
        changed=changed, metrics=version.metrics, load=report.get("load", {}),
        slos=[SloRow(**r) for r in report.get("rows", [])], stages=ctx.stages.records,
        example_request=request, example_endpoint=endpoint)
