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
import math
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from mlstack.codegen.contract import PROMOTE_TASK, TRAINING_TASKS, package_name
from mlstack.diagnostics.errors import StageError, UsageError
from mlstack.frontend.ir.nodes import SystemIR
from mlstack.ops.local import judge, procs, ray_cluster
from mlstack.ops.local.profile import profile_version
from mlstack.ops.local.reconcile import reconcile
from mlstack.ops.local.services import (
    ensure_router,
    route,
    routed,
    router_alive,
    run_worker,
    start_version,
    stop_version,
    supervised,
    version_url,
)
from mlstack.ops.local.state import DeploymentState, Version, VersionStatus
from mlstack.ops.paths import ProjectPaths
from mlstack.ops.report import DeployResult, StageRecord, StageStatus, slo_rows
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
    verify_limit: float = 30.0  # most seconds the SLO load test runs to gather its samples
    step_limit: float = 60.0  # most seconds a canary step runs to gather its samples


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


def _alive(paths: ProjectPaths, version: Version | None) -> bool:
    """The version's supervisor runs (found by its PID and owner marker)."""
    return supervised(paths, version)


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
    profiled: dict | None = None  # the train worker's profile of the model it registered

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
    if deployed is None or not _alive(paths, current) or not current.model_tag:
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
    state = DeploymentState.load(paths.deployments_file, spec=paths.spec)
    stages = _Stages(_JournaledProgress(progress or NullProgress(), state))
    ours = router_alive(paths, state) and state.router.port == options.port
    if not ours and not procs.port_is_free(options.port):
        raise UsageError(f"port {options.port} on 127.0.0.1 is taken by another program",
                         "choose another with --port")
    _reconcile_first(paths, state, options, stages)
    _compute(system, paths, state, stages)
    current = state.get(state.current)
    actions = plan_deploy(system, paths, state, options)
    serving = (router_alive(paths, state) and state.router.port == options.port
               and _alive(paths, current)
               and routed(paths).get(current.version if current else "") == 100)
    if serving and not actions.new_version:
        return _keep_serving(system, paths, options, state, current, actions, stages)
    version = Version(version=state.next_version(), spec_hash=system.spec_hash,
                      training_key=data_key(system, paths.project_dir),
                      created_at=round(time.time(), 3), tree_hash=_tree_hash(paths.build_dir))
    state.versions.append(version)
    state.deploy = {"version": version.version, "pid": os.getpid(),
                    "started_at": round(time.time(), 3), "stage": "start"}
    state.record("deploy-started", version=version.version, reasons=list(actions.reasons))
    state.save(paths.deployments_file)
    ctx = DeployContext(system, paths, options, state, current, version, stages)
    try:
        return _deploy_version(ctx, actions)
    except BaseException as exc:  # a failed stage, an interrupt, a bug: the old one serves
        _fail_deploy(ctx, exc)
        raise
    finally:
        state.deploy = {}
        state.save(paths.deployments_file)


class _JournaledProgress:
    """Passes progress on, and records the stage in the state's deploy entry, so a deploy
    killed mid-way leaves a record of where it was."""

    def __init__(self, progress, state: DeploymentState):
        self.progress, self.state = progress, state

    def start(self, stage: str) -> None:
        if self.state.deploy:
            self.state.deploy["stage"] = stage
            self.state.save()
        self.progress.start(stage)

    def finish(self, record: StageRecord) -> None:
        self.progress.finish(record)

    def __getattr__(self, name):  # note(), close() ... of the progress object
        return getattr(self.progress, name)


def _reconcile_first(paths: ProjectPaths, state: DeploymentState, options: DeployOptions,
                     stages: _Stages) -> None:
    """Before planning: what runs is made equal to what is recorded (an interrupted deploy
    closed, orphans stopped, a dead current version restarted, the router's weights reset)."""
    if not state.versions and not state.deploy and not state.journal:
        return
    began = time.perf_counter()
    try:
        notes = reconcile(paths, state, serve=True, port=options.port)
    except RuntimeError as exc:  # e.g. the router could not listen
        raise StageError("reconcile", str(exc)) from None
    if notes:
        stages.add(StageRecord("reconcile", StageStatus.DONE,
                               round(time.perf_counter() - began, 3), "; ".join(notes)))


def _fail_deploy(ctx: DeployContext, exc: BaseException) -> None:
    """After a failed or interrupted deploy: traffic back on the version serving before (as
    recorded), the new version's tree stopped, the failure recorded; a StageError gets the
    report so far (its SLO table included) as `exc.result`."""
    state, paths, version, current = ctx.state, ctx.paths, ctx.version, ctx.current
    message = exc.message if isinstance(exc, StageError) else (str(exc) or type(exc).__name__)
    if version.version != state.current:
        if version.status != VersionStatus.ROLLED_BACK:
            version.status = VersionStatus.FAILED
        version.failure = message
        if version.version in state.routes:
            if current is not None and _alive(paths, current):
                route(paths, {current.version: 100}, state)
            else:
                route(paths, {}, state)
        stop_version(paths, version)
    state.record("deploy-failed", version=version.version,
                 stage=getattr(exc, "stage", state.deploy.get("stage")), error=message)
    state.save(paths.deployments_file)
    if isinstance(exc, StageError):
        result = _result(ctx.system, state, version, ctx.stages, changed=False,
                         options=ctx.options)
        result.failed = message
        # what answers now, as observed: the recorded version only while it and the router
        # run (after `down`, say, nothing does), at the router's own port
        old = state.get(state.current)
        if old is not None and _alive(paths, old) and router_alive(paths, state):
            result.serving = old.version
            result.endpoint = f"http://127.0.0.1:{state.router.port}"
        exc.result = result


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
        endpoint, bodies = load_requests(system, current.example_rows, one_request=True)
        freshness = _freshness(system, paths, current)
        try:
            _verify(system, options, version_url(current), bodies, stages, current.metrics,
                    freshness=freshness, version=current, endpoint=endpoint)
        except StageError as exc:  # the report of the failed re-verification is shown
            state.record("deploy-failed", version=current.version, stage=exc.stage,
                         error=exc.message)
            state.save()
            exc.result = _result(system, state, current, stages, changed=False,
                                 options=options)
            exc.result.failed, exc.result.serving = exc.message, current.version
            raise
    shutil.copytree(paths.build_dir, paths.versions_dir / current.version, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns(".state", "__pycache__", "*.pyc"))
    current.spec_hash, current.tree_hash = system.spec_hash, _tree_hash(paths.build_dir)
    state.record("deploy-updated", version=current.version, reasons=list(actions.reasons))
    state.save(paths.deployments_file)
    return _result(system, state, current, stages, changed=True, options=options)


def load_requests(system: SystemIR, rows: list[dict], *,
                  one_request: bool = False) -> tuple[str, list[dict]]:
    """The endpoint and bodies of the verify and canary load, from request rows known to have
    features: a ranking model whose group key is a request key is loaded as its clients call
    it, one /rank request per group of the rows (its candidates); any other model one
    /predict row per request (or, `one_request`, all the rows in one, as the serving
    version's example request was recorded)."""
    from mlstack.ops.local.worker import rank_requests

    group = system.model.group_by
    if system.model.task == "ranking" and any(k.name == group for k in system.model.request_keys):
        return "rank", [body for _, body in rank_requests(rows, group)]
    if one_request:
        return "predict", [{"rows": rows}] if rows else []
    return "predict", [{"rows": [row]} for row in rows]


def example_rows(system: SystemIR, rows: list[dict]) -> list[dict]:
    """The rows a version records as its example request: the first row, or for a ranking
    model served by /rank the first group's rows (re-verification loads /rank with them)."""
    endpoint, bodies = load_requests(system, rows)
    if endpoint == "rank" and bodies:
        group = system.model.group_by
        return [{group: bodies[0][group], **c} for c in bodies[0]["candidates"]]
    return rows[:1]


def _verify(system, options, url, bodies, stages, metrics, *, freshness=None,
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
        needed = _samples_needed(system)
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
                         f"{load['throughput_rps']} rps; {_contention_line(load)}")
        if missed:
            raise StageError("verify", "SLO missed: " + "; ".join(
                f"{r.slo} {r.measured} (want {r.target})" for r in missed))
    return load, rows


def _samples_needed(system: SystemIR) -> int:
    """The most samples any latency SLO of the spec needs to be judged."""
    slo = system.slos
    quantiles = [q for q, target in ((50, slo.p50_ms), (95, slo.p95_ms), (99, slo.p99_ms))
                 if target is not None]
    return max((judge.min_samples(q) for q in quantiles), default=0)


def _contention_line(load: dict) -> str:
    c = load.get("contention") or {}
    if not c:
        return ""
    return (f"load/cpu {c.get('load_per_cpu_before')} -> {c.get('load_per_cpu_after')}, "
            f"sender lag p99 {c.get('sender_lag_p99_ms')} ms")


def _freshness(system: SystemIR, paths: ProjectPaths, version: Version) -> dict | None:
    """The age of each feature view's newest online row (a worker job), when the spec has a
    feature freshness SLO."""
    if system.slos.feature_freshness_seconds is None:
        return None
    outcome = run_worker(paths, paths.versions_dir / version.version, "freshness",
                         package_name(system))
    if not outcome.ok:
        return {"views": {}, "error": f"{outcome.error_type}: {outcome.error}"}
    return outcome.result


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
    profile_version(ctx)  # batching measured for this version; its service reads it at start
    with stages.stage("start_service") as record:
        start_version(paths, version, ctx.code_dir, state)
        record.detail = f"{version.version} on {version_url(version)} (pid {version.pid})"
    with stages.stage("skew_check") as record:
        skew = _worker(ctx, "skew", url=version_url(version), size=options.skew_sample,
                       freshness=int(_measures_freshness(ctx)))
        if skew["mismatches"]:
            raise StageError("skew_check", "; ".join(skew["mismatches"][:5]),
                             "online and offline features (or predictions) differ")
        record.detail = (f"{skew['compared']} of {skew['sampled']} entities: online = offline, "
                         f"max prediction diff {skew['max_abs_prediction_diff']}"
                         + (f"; /rank order = offline order in {skew['groups']} groups"
                            if skew.get("groups") else ""))
    # the load test and the example a user is shown (and status re-checks) use rows that
    # serve features: a row past its views' TTLs is answered null without scoring
    served = skew.get("served_rows") or skew["rows"]
    endpoint, bodies = load_requests(system, served)
    version.example_rows = example_rows(system, served)
    load: dict = {}
    rows = slo_rows(system, {}, version.metrics)
    version.slo_report = {"load": load, "rows": [r.__dict__ for r in rows]}
    if options.verify:
        load, rows = _verify(system, options, version_url(version), bodies, stages,
                             version.metrics, freshness=skew.get("freshness"),
                             version=version, endpoint=endpoint)
    else:
        stages.add(StageRecord("verify", StageStatus.SKIPPED, 0.0, "--no-verify"))
    version.slo_report = {"load": load, "rows": [r.__dict__ for r in rows]}
    steps = _rollout(ctx, bodies, endpoint)
    with stages.stage("promote") as record:
        _promote(ctx)
        record.detail = f"{version.version} serves 100% at http://127.0.0.1:{options.port}"
    result = _result(system, state, version, stages, changed=True, options=options)
    result.load, result.skew, result.rollout = load, {k: v for k, v in skew.items()
                                                       if k not in ("rows", "freshness")}, steps
    return result


def _compute(system: SystemIR, paths: ProjectPaths, state: DeploymentState,
             stages: _Stages) -> None:
    """target.compute: the Ray cluster the flows and the skew check run on, made to match
    the spec before anything runs (started, kept from the last deploy, resized, or joined);
    without compute, a cluster this project started before is stopped."""
    compute = system.target.compute
    if compute is None:
        if state.cluster.address:
            with stages.stage("compute") as record:
                left = ray_cluster.stop(paths, state)
                record.detail = "target.compute is gone: the project's Ray cluster stopped" + (
                    f" ({len(left)} processes would not stop)" if left else "")
        return
    with stages.stage("compute") as record:
        outcome = ray_cluster.ensure(paths, state, compute)
        workers = [n for n in outcome.nodes if n["name"] != "head"]
        if compute.address != "local":
            record.detail = f"joining the Ray cluster at {outcome.address}"
        else:
            record.detail = (f"Ray head + {len(workers)} workers ({compute.worker.cpu:g} CPU, "
                             f"{compute.worker.memory_mib} MiB each) on {outcome.address}, "
                             + (f"started in {outcome.seconds:g} s" if outcome.started
                                else "kept from the last deploy"))


def _measures_freshness(ctx: DeployContext) -> bool:
    return ctx.options.verify and ctx.system.slos.feature_freshness_seconds is not None


def _promote(ctx: DeployContext) -> None:
    """The commit point: the new version becomes current in the record (saved), then the
    old one stops. Killed before the save, the next command rolls the deploy back; after
    it, forward."""
    paths, state, version, current = ctx.paths, ctx.state, ctx.version, ctx.current
    route(paths, {version.version: 100}, state)
    version.status = VersionStatus.SERVING
    if current is not None and current.version != version.version:
        state.previous = current.version
    state.current = version.version
    state.deploy = {}
    state.record("deploy-succeeded", version=version.version, model_tag=version.model_tag)
    state.save()
    if current is not None and current.version != version.version:
        with state.action("stop", version=current.version):
            stop_version(paths, current)
            current.status = VersionStatus.STOPPED


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
                         on_progress=on_progress, profile=1)
    if not outcome.ok:
        # the task that failed, else the flow failed before or between its tasks
        stage = failed[0] if failed else "train"
        raise StageError(stage, outcome.error, f"log: {paths.logs_dir / 'worker-train.log'}")
    ctx.version.model_tag = outcome.result["model_tag"]
    ctx.version.metrics = outcome.result["metrics"]
    ctx.profiled = outcome.result.get("profile")  # measured after training, in its process
    device = outcome.result.get("device")
    train = next((r for r in stages.records if r.name == "train"), None)
    if device and train is not None and not train.detail:  # the flow's choice, and why
        train.detail = f"on {device['device']}: {device['reason']}"


def _worker(ctx: DeployContext, job: str, **options) -> dict:
    outcome = run_worker(ctx.paths, ctx.code_dir, job, ctx.package, **options)
    if not outcome.ok:
        raise RuntimeError(f"{outcome.error_type}: {outcome.error}")
    return outcome.result


def _rollout(ctx: DeployContext, bodies: list[dict], endpoint: str = "predict") -> list[dict]:
    """Move traffic to the new version by the spec's rollout; abort on a breached rule. Each
    step runs at least step_seconds and then until its rules can be judged (judge.py: p99
    needs 100 answers of the new version; a breach can be proven from fewer), at most
    options.step_limit seconds; a rule still short of samples then says so in the step."""
    paths, options, state = ctx.paths, ctx.options, ctx.state
    current, version = ctx.current, ctx.version
    with ctx.stages.stage("rollout") as record:
        ensure_router(paths, state, options.port, router_limits(ctx.system, ctx.rate))
        rollout = ctx.system.serving.rollout
        if not _alive(paths, current) or current.version == version.version:
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
            step = _canary_step(ctx, bodies, weight, endpoint)
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


def _canary_step(ctx: DeployContext, bodies: list[dict], weight: int,
                 endpoint: str = "predict") -> dict:
    from mlstack.ops.local.loadtest import run_load  # httpx: the runtime extra

    rollout = ctx.system.serving.rollout
    new, old = ctx.version.version, ctx.current.version

    def verdicts(by_version: dict) -> list[tuple[str, judge.Verdict]]:
        stats = by_version.get(new)
        out = []
        latencies = stats.latencies_ms if stats else []
        gate = rollout.abort_latency_p99
        if gate is not None:
            out.append((f"p99 {gate.op} {gate.threshold:g} ms",
                        judge.latency_breach(latencies, 99, gate.op, gate.threshold)))
        gate = rollout.abort_error_rate
        if gate is not None:
            errors, requests = (stats.errors, stats.requests) if stats else (0, 0)
            out.append((f"error rate {gate.op} {gate.threshold:g}",
                        judge.error_breach(errors, requests, gate.op, gate.threshold)))
        return out

    def decided(recorder) -> bool:
        found = verdicts(recorder.versions)
        return any(v.ok is False for _, v in found) or all(v.ok is not None for _, v in found)

    measured = run_load(f"http://127.0.0.1:{ctx.options.port}/{endpoint}", bodies,
                        rate=ctx.rate, duration=rollout.step_seconds,
                        concurrency=ctx.options.concurrency, timeout=LOAD_TIMEOUT,
                        max_duration=max(rollout.step_seconds, ctx.options.step_limit),
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


def router_limits(system: SystemIR, rate: float) -> dict:
    """The router's admission control for this spec (router.LIMITS): in flight, by Little's
    law, four times the requests the throughput SLO keeps in flight at the p99 target (at
    least 16, at most 256); as many may wait, each at most the p99 target (a request that
    waited longer has missed it anyway); the backend gets three times the service's own
    timeout (at least 5 s)."""
    p99 = (system.slos.p99_ms or system.serving.timeout_ms) / 1000
    in_flight = min(256, max(16, math.ceil(4 * rate * p99)))
    return {"max_in_flight": in_flight, "max_queue": in_flight,
            "queue_timeout_s": round(min(1.0, max(0.05, p99)), 3),
            "backend_timeout_s": max(5.0, 3 * system.serving.timeout_ms / 1000)}


def _result(system, state, version, stages, *, changed, options) -> DeployResult:
    report = version.slo_report or {}
    endpoint, bodies = load_requests(system, version.example_rows, one_request=True)
    request = bodies[0] if bodies else {"rows": []}
    return DeployResult(
        system=system.name, version=version.version,
        endpoint=f"http://127.0.0.1:{options.port}", model_tag=version.model_tag,
        changed=changed, metrics=version.metrics, load=report.get("load", {}),
        slos=[_row(r) for r in report.get("rows", [])], stages=stages.records,
        example_request=request, example_endpoint=endpoint)


def _row(data: dict):
    from mlstack.ops.report import SloRow

    return SloRow(**data)
