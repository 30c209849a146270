"""`mlstack deploy` on the local target: the whole system up for real, verified, rolled out.

Stages: compile -> train (the generated Prefect flow: ingest, validate, feast_apply,
materialize, training_set, train, evaluate, register) -> start_service -> skew_check ->
verify (load test vs the SLOs) -> rollout (canary through the router) -> promote.
The previous version keeps serving until the rollout moves traffic; any failed stage stops
the new version and names itself. Progress goes to a `progress` object; nothing is printed.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from mlstack.codegen.contract import PROMOTE_TASK, TRAINING_TASKS, package_name
from mlstack.diagnostics.errors import StageError, UsageError
from mlstack.frontend.ir.nodes import SystemIR
from mlstack.ops.local import procs
from mlstack.ops.local.services import (
    ensure_router,
    route,
    routed,
    run_worker,
    start_version,
    version_url,
)
from mlstack.ops.local.state import DeploymentState, Version, VersionStatus
from mlstack.ops.paths import ProjectPaths
from mlstack.ops.report import DeployResult, StageRecord, StageStatus, gate_holds, slo_rows
from mlstack.workspace.manifest import MANIFEST_NAME, read_manifest
from mlstack.workspace.plan import DeployActions, deploy_actions, diff_systems

DEFAULT_RATE = 20.0
LOAD_TIMEOUT = 10.0  # seconds a load-test request may take before it counts as failed
# deploy's worker runs the flow without its promote task: deploy promotes after the rollout
FLOW_STAGES = tuple(t for t in TRAINING_TASKS if t != PROMOTE_TASK)


@dataclass(frozen=True)
class DeployOptions:
    port: int = 3000  # the router: the stable endpoint
    verify: bool = True
    duration: float = 5.0  # seconds of load for the SLO verification
    rate: float | None = None  # requests per second (default: the throughput SLO, else 20)
    concurrency: int = 64  # most requests in flight at once
    skew_sample: int = 50
    force: bool = False  # overwrite hand-edited generated files
    retrain: bool = False  # train even when nothing the model depends on changed


class NullProgress:
    def start(self, stage: str) -> None: ...

    def finish(self, record: StageRecord) -> None: ...


class _Stages:
    def __init__(self, progress):
        self.progress = progress
        self.records: list[StageRecord] = []

    @contextmanager
    def stage(self, name: str):
        self.progress.start(name)
        began = time.perf_counter()
        record = StageRecord(name, StageStatus.DONE, 0.0)
        try:
            yield record
        except StageError as exc:
            record.status, record.detail = StageStatus.FAILED, exc.message
            raise
        except Exception as exc:
            record.status, record.detail = StageStatus.FAILED, str(exc)
            raise StageError(name, str(exc)) from exc
        finally:
            record.seconds = round(time.perf_counter() - began, 3)
            self.records.append(record)
            self.progress.finish(record)

    def add(self, record: StageRecord) -> None:
        self.records.append(record)
        self.progress.finish(record)


def _digest(items) -> str:
    return hashlib.sha256(json.dumps(items, sort_keys=True, default=str).encode()).hexdigest()


def data_key(system: SystemIR, project_dir: Path) -> str:
    """The fingerprint of the source data files: what the spec does not show but the model
    was trained on (a change retrains)."""
    files = {}
    for source in system.sources:
        if source.path:
            path = project_dir / source.path
            files[source.name] = hashlib.sha256(path.read_bytes()).hexdigest() \
                if path.is_file() else None
    return _digest(files)


def _tree_hash(build: Path) -> str:
    manifest = build / MANIFEST_NAME
    files = json.loads(manifest.read_text()).get("files", {}) if manifest.exists() else {}
    return _digest(files)


def _deployed_system(paths: ProjectPaths, version: Version | None) -> SystemIR | None:
    """The IR the version was compiled from (its snapshot's manifest), None if unreadable."""
    if version is None:
        return None
    snapshot = paths.versions_dir / version.version
    manifest = read_manifest(snapshot) if (snapshot / MANIFEST_NAME).is_file() else None
    return manifest.previous_system() if manifest else None


def _snapshot(paths: ProjectPaths, version: str) -> Path:
    """A copy of the generated tree this version runs from (so rollback can restart it)."""
    target = paths.versions_dir / version
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(paths.build_dir, target, ignore=shutil.ignore_patterns(
        ".state", "__pycache__", "*.pyc"))
    return target


def _alive(version: Version | None) -> bool:
    return version is not None and procs.is_alive(version.pid)


@dataclass
class DeployContext:
    """One deploy of one version: what every stage reads and updates."""

    system: SystemIR
    paths: ProjectPaths
    options: DeployOptions
    state: DeploymentState
    current: Version | None  # the version serving before this deploy
    version: Version  # the version this deploy brings up
    stages: _Stages
    code_dir: Path = Path()

    @property
    def package(self) -> str:
        return package_name(self.system)

    @property
    def rate(self) -> float:
        return self.options.rate or self.system.slos.throughput_rps or DEFAULT_RATE


def plan_deploy(system: SystemIR, paths: ProjectPaths, state: DeploymentState,
                options: DeployOptions) -> DeployActions:
    """What this deploy will do, from the same IR diff `mlstack plan` prints: the serving
    version's IR (its snapshot's manifest) against the new one, plus the source data."""
    current = state.get(state.current)
    deployed = _deployed_system(paths, current)
    if deployed is None or not _alive(current) or not current.model_tag:
        return deploy_actions((), first=True)
    changed_data = current.training_key != data_key(system, paths.project_dir)
    actions = deploy_actions(diff_systems(deployed, system), data_changed=changed_data)
    if options.retrain:
        return DeployActions(True, True, True, (*actions.reasons, "--retrain"))
    if not actions.new_version and _service_files_differ(paths, current):
        # the service's code changed though no resource did (an mlstack upgrade, say)
        return DeployActions(actions.train, True, True,
                             (*actions.reasons, "the generated service code changed"))
    return actions


SERVICE_INDEPENDENT = ("pipelines/", "monitoring/", "infra/", MANIFEST_NAME)


def _service_files_differ(paths: ProjectPaths, version: Version) -> bool:
    def files(folder: Path) -> dict:
        manifest = folder / MANIFEST_NAME
        data = json.loads(manifest.read_text()).get("files", {}) if manifest.exists() else {}
        return {k: v for k, v in data.items() if not k.startswith(SERVICE_INDEPENDENT)}

    return files(paths.build_dir) != files(paths.versions_dir / version.version)


def deploy_local(system: SystemIR, paths: ProjectPaths, options: DeployOptions,
                 progress=None) -> DeployResult:
    """Deploy an already compiled and written system; the caller holds the project lock
    (mlstack.ops.deploy takes it before compiling)."""
    stages = _Stages(progress or NullProgress())
    state = DeploymentState.load(paths.deployments_file)
    ours = procs.is_alive(state.router.pid) and state.router.port == options.port
    if not ours and not procs.port_is_free(options.port):
        raise UsageError(f"port {options.port} on 127.0.0.1 is taken by another program",
                         "choose another with --port")
    current = state.get(state.current)
    actions = plan_deploy(system, paths, state, options)
    serving = (ours and _alive(current)
               and routed(paths).get(current.version if current else "") == 100)
    if serving and not actions.new_version:
        return _keep_serving(system, paths, options, state, current, actions, stages)
    version = Version(version=state.next_version(), spec_hash=system.spec_hash,
                      training_key=data_key(system, paths.project_dir),
                      created_at=round(time.time(), 3), tree_hash=_tree_hash(paths.build_dir))
    state.versions.append(version)
    state.record("deploy-started", version=version.version, reasons=list(actions.reasons))
    state.save(paths.deployments_file)
    ctx = DeployContext(system, paths, options, state, current, version, stages)
    try:
        return _deploy_version(ctx, actions)
    except StageError as exc:
        if version.status != VersionStatus.ROLLED_BACK:
            version.status = VersionStatus.FAILED
        version.failure = exc.message
        if version.pid and version.version != state.current:
            procs.stop_process(version.pid)
        state.record("deploy-failed", version=version.version, stage=exc.stage,
                     error=exc.message)
        state.save(paths.deployments_file)
        raise
    finally:
        state.save(paths.deployments_file)


def _keep_serving(system, paths, options, state, current, actions, stages) -> DeployResult:
    """No new version: the serving one stays. Its snapshot takes the new tree (service files
    are byte-identical, checked by plan_deploy) and, when an SLO changed, is re-verified."""
    if actions.nothing:
        stages.add(StageRecord("unchanged", StageStatus.SKIPPED, 0.0,
                               f"{current.version} already serves this spec and data"))
        return _result(system, state, current, stages, changed=False, options=options)
    stages.add(StageRecord("train", StageStatus.SKIPPED, 0.0,
                           "; ".join(actions.reasons) + f": {current.version} keeps serving"))
    if actions.verify and options.verify:  # a missed SLO fails here: the version stays as is
        bodies = [{"rows": current.example_rows}] if current.example_rows else []
        load, rows = _verify(system, options, version_url(current), bodies, stages,
                             current.metrics)
        current.slo_report = {"load": load, "rows": [r.__dict__ for r in rows]}
    shutil.copytree(paths.build_dir, paths.versions_dir / current.version, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns(".state", "__pycache__", "*.pyc"))
    current.spec_hash, current.tree_hash = system.spec_hash, _tree_hash(paths.build_dir)
    state.record("deploy-updated", version=current.version, reasons=list(actions.reasons))
    state.save(paths.deployments_file)
    return _result(system, state, current, stages, changed=True, options=options)


def _verify(system, options, url, bodies, stages, metrics) -> tuple[dict, list]:
    """The SLO load test against one version's URL; a missed SLO fails the stage."""
    from mlstack.ops.local.loadtest import run_load, warm_up  # httpx: the runtime extra

    rate = options.rate or system.slos.throughput_rps or DEFAULT_RATE
    with stages.stage("verify") as record:
        if not bodies:
            raise StageError("verify", "no example request with online features is known")
        warm_up(f"{url}/predict", bodies)
        measured = run_load(f"{url}/predict", bodies, rate=rate, duration=options.duration,
                            concurrency=options.concurrency)
        load = measured.total
        rows = slo_rows(system, load, metrics)
        missed = [r for r in rows if r.ok is False]
        record.detail = (f"{load['requests']} requests, p99 {load['p99_ms']} ms, "
                         f"{load['throughput_rps']} rps")
        if missed:
            raise StageError("verify", "SLO missed: " + "; ".join(
                f"{r.slo} {r.measured} (want {r.target})" for r in missed))
    return load, rows


def _deploy_version(ctx: DeployContext, actions: DeployActions) -> DeployResult:
    system, paths, options, state = ctx.system, ctx.paths, ctx.options, ctx.state
    current, version, stages = ctx.current, ctx.version, ctx.stages
    ctx.code_dir = _snapshot(paths, version.version)
    if not actions.train and current is not None and current.model_tag:
        version.model_tag, version.metrics = current.model_tag, current.metrics
        stages.add(StageRecord("train", StageStatus.SKIPPED, 0.0,
                               f"{'; '.join(actions.reasons)}: reusing {current.model_tag}"))
    else:
        _train(ctx)
    with stages.stage("start_service") as record:
        start_version(paths, version, ctx.code_dir)
        record.detail = f"{version.version} on {version_url(version)} (pid {version.pid})"
    with stages.stage("skew_check") as record:
        skew = _worker(ctx, "skew", url=version_url(version), size=options.skew_sample)
        if skew["mismatches"]:
            raise StageError("skew_check", "; ".join(skew["mismatches"][:5]),
                             "online and offline features (or predictions) differ")
        record.detail = (f"{skew['compared']} of {skew['sampled']} entities: online = offline, "
                         f"max prediction diff {skew['max_abs_prediction_diff']}")
    bodies = [{"rows": [row]} for row in skew["rows"]]
    version.example_rows = skew["rows"][:1]
    load: dict = {}
    rows = slo_rows(system, {}, version.metrics)
    if options.verify:
        load, rows = _verify(system, options, version_url(version), bodies, stages,
                             version.metrics)
    else:
        stages.add(StageRecord("verify", StageStatus.SKIPPED, 0.0, "--no-verify"))
    version.slo_report = {"load": load, "rows": [r.__dict__ for r in rows]}
    steps = _rollout(ctx, bodies)
    with stages.stage("promote") as record:
        route(paths, {version.version: 100}, state)
        version.status = VersionStatus.SERVING
        if current is not None and current.version != version.version:
            procs.stop_process(current.pid)
            current.status = VersionStatus.STOPPED
            state.previous = current.version
        state.current = version.version
        state.record("deploy-succeeded", version=version.version, model_tag=version.model_tag)
        record.detail = f"{version.version} serves 100% at http://127.0.0.1:{options.port}"
    result = _result(system, state, version, stages, changed=True, options=options)
    result.load, result.skew, result.rollout = load, {k: v for k, v in skew.items()
                                                       if k != "rows"}, steps
    return result


def _train(ctx: DeployContext) -> None:
    stages, paths = ctx.stages, ctx.paths
    pending = list(FLOW_STAGES)
    failed: list[str] = []
    stages.progress.start(pending[0])
    began = time.perf_counter()

    def on_progress(line: dict) -> None:
        nonlocal began
        name = line["task"]
        if name not in pending:
            return
        ok = line["state"] == "COMPLETED"
        if not ok:
            failed.append(name)
        stages.add(StageRecord(name, StageStatus.DONE if ok else StageStatus.FAILED,
                               round(line.get("seconds") or time.perf_counter() - began, 3),
                               line.get("error", "")))
        pending.remove(name)
        began = time.perf_counter()
        if ok and pending:
            stages.progress.start(pending[0])

    outcome = run_worker(paths, ctx.code_dir, "train", ctx.package,
                         progress_file=paths.state_dir / "train-progress.jsonl",
                         on_progress=on_progress)
    if not outcome.ok:
        # the task that failed, else the flow failed before or between its tasks
        stage = failed[0] if failed else "train"
        raise StageError(stage, outcome.error, f"log: {paths.logs_dir / 'worker-train.log'}")
    ctx.version.model_tag = outcome.result["model_tag"]
    ctx.version.metrics = outcome.result["metrics"]


def _worker(ctx: DeployContext, job: str, **options) -> dict:
    outcome = run_worker(ctx.paths, ctx.code_dir, job, ctx.package, **options)
    if not outcome.ok:
        raise RuntimeError(f"{outcome.error_type}: {outcome.error}")
    return outcome.result


def _rollout(ctx: DeployContext, bodies: list[dict]) -> list[dict]:
    """Move traffic to the new version by the spec's rollout; abort on a breached rule."""
    from mlstack.ops.local.loadtest import run_load  # httpx: the runtime extra

    paths, options, state = ctx.paths, ctx.options, ctx.state
    current, version = ctx.current, ctx.version
    with ctx.stages.stage("rollout") as record:
        ensure_router(paths, state, options.port)
        rollout = ctx.system.serving.rollout
        if not _alive(current) or current.version == version.version:
            route(paths, {version.version: 100}, state)
            record.detail = "first version: 100% at once"
            return []
        steps = [100] if rollout.strategy == "all_at_once" else list(rollout.steps)
        judged = []
        for weight in steps:
            route(paths, {version.version: weight, current.version: 100 - weight}, state)
            if weight == 100:
                judged.append({"weight": 100})
                break
            measured = run_load(f"http://127.0.0.1:{options.port}/predict", bodies,
                                rate=ctx.rate, duration=rollout.step_seconds,
                                concurrency=options.concurrency, timeout=LOAD_TIMEOUT)
            stats = measured.by_version.get(version.version, {})
            step = {"weight": weight, "new": stats,
                    "old": measured.by_version.get(current.version, {})}
            judged.append(step)
            breach = _breach(rollout, stats, LOAD_TIMEOUT)
            if breach:
                route(paths, {current.version: 100}, state)
                version.status = VersionStatus.ROLLED_BACK
                raise StageError("rollout", f"canary step {weight}%: {breach}; traffic is back "
                                 f"on {current.version}")
        record.detail = " -> ".join(f"{s['weight']}%" for s in judged)
        return judged


def _breach(rollout, stats: dict, timeout: float) -> str | None:
    if not stats or not stats.get("requests"):
        return f"the new version answered no request within {timeout:g} s"
    gate = rollout.abort_latency_p99
    if gate is not None and gate_holds(gate, stats.get("p99_ms")):
        return f"p99 {stats['p99_ms']} ms {gate.op} {gate.threshold:g} ms"
    gate = rollout.abort_error_rate
    if gate is not None and gate_holds(gate, stats.get("error_rate")):
        return f"error rate {stats['error_rate']} {gate.op} {gate.threshold:g}"
    return None


def _result(system, state, version, stages, *, changed, options) -> DeployResult:
    report = version.slo_report or {}
    return DeployResult(
        system=system.name, version=version.version,
        endpoint=f"http://127.0.0.1:{options.port}", model_tag=version.model_tag,
        changed=changed, metrics=version.metrics, load=report.get("load", {}),
        slos=[_row(r) for r in report.get("rows", [])], stages=stages.records,
        example_request={"rows": version.example_rows})


def _row(data: dict):
    from mlstack.ops.report import SloRow

    return SloRow(**data)
