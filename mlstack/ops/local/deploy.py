"""`mlstack deploy` on the local target: the whole system up for real, verified, rolled out.

Stages: compile -> train (the generated Prefect flow: ingest, validate, feast_apply,
materialize, training_set, train, evaluate, register) -> start_service -> skew_check ->
verify (load test vs the SLOs) -> rollout (canary through the router) -> promote.
The previous version keeps serving until the rollout moves traffic; any failed stage stops
the new version and names itself. Progress goes to a `progress` object; nothing is printed.
"""

from __future__ import annotations

import fcntl
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
from mlstack.ops.local.loadtest import run_load, warm_up
from mlstack.ops.local.services import (
    ensure_router,
    route,
    routed,
    run_worker,
    start_version,
    version_url,
)
from mlstack.ops.local.state import DeploymentState, Version
from mlstack.ops.paths import ProjectPaths
from mlstack.ops.report import DeployResult, StageRecord, gate_holds, slo_rows

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


@contextmanager
def project_lock(paths: ProjectPaths):
    paths.state_dir.mkdir(parents=True, exist_ok=True)
    with open(paths.state_dir / ".lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UsageError("another mlstack command is working on this project",
                             "wait for it to finish") from None
        yield


class _Stages:
    def __init__(self, progress):
        self.progress = progress
        self.records: list[StageRecord] = []

    @contextmanager
    def stage(self, name: str):
        self.progress.start(name)
        began = time.perf_counter()
        record = StageRecord(name, "done", 0.0)
        try:
            yield record
        except StageError as exc:
            record.status, record.detail = "failed", exc.message
            raise
        except Exception as exc:
            record.status, record.detail = "failed", str(exc)
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


def training_key(system: SystemIR, project_dir: Path) -> str:
    """What the trained model depends on: data, features, label, model, training, gates."""
    files = {}
    for source in system.sources:
        if source.path:
            path = project_dir / source.path
            files[source.name] = hashlib.sha256(path.read_bytes()).hexdigest() \
                if path.is_file() else None
    parts = [system.model_dump(mode="json", include={
        "sources", "entities", "feature_views", "transforms", "label", "model", "training",
        "evaluation"}), files]
    return _digest(parts)


def _tree_hash(build: Path) -> str:
    manifest = build / "mlstack.lock.json"
    files = json.loads(manifest.read_text()).get("files", {}) if manifest.exists() else {}
    return _digest(files)


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


def deploy_local(system: SystemIR, paths: ProjectPaths, options: DeployOptions,
                 progress=None) -> DeployResult:
    """Deploy an already compiled and written system (see mlstack.ops.local.deploy)."""
    stages = _Stages(progress or NullProgress())
    with project_lock(paths):
        state = DeploymentState.load(paths.deployments_file)
        ours = procs.is_alive(state.router.pid) and state.router.port == options.port
        if not ours and not procs.port_is_free(options.port):
            raise UsageError(f"port {options.port} on 127.0.0.1 is taken by another program",
                             "choose another with --port")
        current = state.get(state.current)
        key = training_key(system, paths.project_dir)
        tree = _tree_hash(paths.build_dir)
        if (_alive(current) and current.training_key == key and current.tree_hash == tree
                and not options.retrain and routed(paths).get(current.version) == 100
                and procs.is_alive(state.router.pid) and state.router.port == options.port):
            stages.add(StageRecord("unchanged", "skipped", 0.0,
                                   f"{current.version} already serves this spec and data"))
            return _result(system, state, current, stages, changed=False, options=options)
        version = Version(version=state.next_version(), spec_hash=system.spec_hash,
                          training_key=key, created_at=round(time.time(), 3), tree_hash=tree)
        state.versions.append(version)
        state.record("deploy-started", version=version.version)
        state.save(paths.deployments_file)
        try:
            return _deploy_version(system, paths, options, state, current, version, stages)
        except StageError as exc:
            if version.status != "rolled_back":
                version.status = "failed"
            version.failure = exc.message
            if version.pid and version.version != state.current:
                procs.stop_process(version.pid)
            state.record("deploy-failed", version=version.version, stage=exc.stage,
                         error=exc.message)
            state.save(paths.deployments_file)
            raise
        finally:
            state.save(paths.deployments_file)


def _deploy_version(system, paths, options, state, current, version, stages) -> DeployResult:
    package = package_name(system)
    code_dir = _snapshot(paths, version.version)
    reuse = current if (current and current.training_key == version.training_key
                        and current.model_tag and not options.retrain) else None
    if reuse is not None:
        version.model_tag, version.metrics = reuse.model_tag, reuse.metrics
        stages.add(StageRecord("train", "skipped", 0.0,
                               f"nothing the model depends on changed: reusing {reuse.model_tag}"))
    else:
        _train(paths, code_dir, package, version, stages)
    with stages.stage("start_service") as record:
        start_version(paths, version, code_dir)
        record.detail = f"{version.version} on {version_url(version)} (pid {version.pid})"
    with stages.stage("skew_check") as record:
        skew = _worker(paths, code_dir, "skew", package, url=version_url(version),
                       size=options.skew_sample)
        if skew["mismatches"]:
            raise StageError("skew_check", "; ".join(skew["mismatches"][:5]),
                             "online and offline features (or predictions) differ")
        record.detail = (f"{skew['compared']} of {skew['sampled']} entities: online = offline, "
                         f"max prediction diff {skew['max_abs_prediction_diff']}")
    bodies = [{"rows": [row]} for row in skew["rows"]]
    version.example_rows = skew["rows"][:1]
    load: dict = {}
    rows = slo_rows(system, {}, version.metrics)
    rate = options.rate or system.slos.throughput_rps or DEFAULT_RATE
    if options.verify:
        with stages.stage("verify") as record:
            warm_up(f"{version_url(version)}/predict", bodies)
            measured = run_load(f"{version_url(version)}/predict", bodies, rate=rate,
                                duration=options.duration, concurrency=options.concurrency)
            load = measured.total
            rows = slo_rows(system, load, version.metrics)
            missed = [r for r in rows if r.ok is False]
            record.detail = (f"{load['requests']} requests, p99 {load['p99_ms']} ms, "
                             f"{load['throughput_rps']} rps")
            if missed:
                raise StageError("verify", "SLO missed: " + "; ".join(
                    f"{r.slo} {r.measured} (want {r.target})" for r in missed))
    else:
        stages.add(StageRecord("verify", "skipped", 0.0, "--no-verify"))
    version.slo_report = {"load": load, "rows": [r.__dict__ for r in rows]}
    steps = _rollout(system, paths, options, state, current, version, bodies, rate, stages)
    with stages.stage("promote") as record:
        route(paths, {version.version: 100}, state)
        version.status = "serving"
        if current is not None and current.version != version.version:
            procs.stop_process(current.pid)
            current.status = "stopped"
            state.previous = current.version
        state.current = version.version
        state.record("deploy-succeeded", version=version.version, model_tag=version.model_tag)
        record.detail = f"{version.version} serves 100% at http://127.0.0.1:{options.port}"
    result = _result(system, state, version, stages, changed=True, options=options)
    result.load, result.skew, result.rollout = load, {k: v for k, v in skew.items()
                                                       if k != "rows"}, steps
    return result


def _train(paths, code_dir, package, version, stages) -> None:
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
        stages.add(StageRecord(name, "done" if ok else "failed",
                               round(line.get("seconds") or time.perf_counter() - began, 3),
                               line.get("error", "")))
        pending.remove(name)
        began = time.perf_counter()
        if ok and pending:
            stages.progress.start(pending[0])

    outcome = run_worker(paths, code_dir, "train", package,
                         progress_file=paths.state_dir / "train-progress.jsonl",
                         on_progress=on_progress)
    if not outcome["ok"]:
        # the task that failed, else the flow failed before or between its tasks
        stage = failed[0] if failed else "train"
        raise StageError(stage, outcome["error"], f"log: {paths.logs_dir / 'worker-train.log'}")
    result = outcome["result"]
    version.model_tag, version.metrics = result["model_tag"], result["metrics"]


def _worker(paths, code_dir, job, package, **options) -> dict:
    outcome = run_worker(paths, code_dir, job, package, **options)
    if not outcome["ok"]:
        raise RuntimeError(f"{outcome['error_type']}: {outcome['error']}")
    return outcome["result"]


def _rollout(system, paths, options, state, current, version, bodies, rate,
             stages) -> list[dict]:
    """Move traffic to the new version by the spec's rollout; abort on a breached rule."""
    with stages.stage("rollout") as record:
        ensure_router(paths, state, options.port)
        rollout = system.serving.rollout
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
            measured = run_load(f"http://127.0.0.1:{options.port}/predict", bodies, rate=rate,
                                duration=rollout.step_seconds,
                                concurrency=options.concurrency, timeout=LOAD_TIMEOUT)
            stats = measured.by_version.get(version.version, {})
            step = {"weight": weight, "new": stats,
                    "old": measured.by_version.get(current.version, {})}
            judged.append(step)
            breach = _breach(rollout, stats, LOAD_TIMEOUT)
            if breach:
                route(paths, {current.version: 100}, state)
                version.status = "rolled_back"
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
