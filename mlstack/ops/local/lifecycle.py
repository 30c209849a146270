"""The verbs around deploy: status, down, rollback, logs. Library functions returning data."""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from mlstack.codegen.contract import MONITORING_FILE
from mlstack.diagnostics.errors import JournalError, StageError, UsageError
from mlstack.ops.local import keeper, procs, ray_cluster
from mlstack.ops.local.living import Living, living_problems, observe_living
from mlstack.ops.local.reconcile import (
    ensure_project_router,
    observe,
    reconcile,
    stop_orphaned_jobs,
)
from mlstack.ops.local.services import (
    live_routes,
    role_of,
    route,
    start_version,
    stop_version,
    supervised,
    version_url,
)
from mlstack.ops.local.state import DeploymentState, VersionStatus
from mlstack.ops.paths import (
    RETRAIN_HOLDER,
    ProjectPaths,
    lock_owner,
    project_lock,
)

PREDICT_TIMEOUT = 5.0  # seconds status waits for its prediction through the router


def _paths(spec: Path | str) -> ProjectPaths:
    from mlstack.workspace.build import spec_paths

    return ProjectPaths.for_spec(spec_paths(spec).spec)


def _load(paths: ProjectPaths) -> DeploymentState:
    """The journal; JournalError when it is unusable (or missing while the project runs)."""
    state = DeploymentState.load(paths.deployments_file, spec=paths.spec)
    if not paths.deployments_file.exists():
        raise UsageError(f"{paths.project_dir} has not been deployed",
                         f"run: mlstack deploy {paths.spec.name}")
    return state


@dataclass
class VersionHealth:
    version: str
    status: str  # as observed: serving, ready, unready, restarting, dead, orphaned, ...
    model_tag: str | None
    pid: int | None  # its supervisor
    alive: bool  # its supervisor runs
    ready: bool | None  # its readiness probe answered 200 (None: its supervisor is not running)
    traffic: int  # percent, as the running router applies it
    processes: list[int] = field(default_factory=list)  # its whole tree, by marker
    restarts: int = 0  # of its tree, by its supervisor
    worker_restarts: int = 0  # of its workers, by BentoML
    last_restart_reason: str = ""
    probe: str = ""  # GET /readyz's answer: "200", another status, or the error's name


@dataclass
class Prediction:
    ok: bool
    status: int | str | None  # the HTTP status, or the error's name
    version: str | None  # the version that answered (X-Mlstack-Version)
    seconds: float | None
    detail: str = ""


@dataclass
class ClusterHealth:
    """The project's Ray cluster (target.compute), observed: its supervisor and each node's
    `ray start` process by owner marker, not only as reported."""

    address: str
    joined: bool  # a ray:// cluster this project does not run
    status: str  # as observed: ready, starting, restarting, failed, dead, joined
    pid: int | None = None  # its supervisor
    nodes: list[dict] = field(default_factory=list)  # name, pid, state, restarts, alive
    processes: int = 0  # every process carrying the cluster's marker
    reason: str = ""  # the last restart's


def _cluster_health(paths: ProjectPaths, state: DeploymentState,
                    seen_roles: dict) -> ClusterHealth | None:
    cluster = state.cluster
    if not cluster.address:
        return None
    if cluster.pid is None:
        return ClusterHealth(cluster.address, True, "joined")
    report = ray_cluster.report(paths) if ray_cluster.alive(paths, state) else {}
    nodes = []
    for node in report.get("nodes", []):
        owner = f"{ray_cluster.cluster_owner(paths)}/{node['name']}"
        nodes.append({**node, "alive": procs.is_owned(node.get("pid"), owner)})
    observed = report.get("state", "dead") if report else "dead"
    if observed == "ready" and not all(n["alive"] for n in nodes):
        observed = "restarting"  # a node died since the supervisor last looked
    return ClusterHealth(cluster.address, False, observed, cluster.pid, nodes,
                         len(seen_roles.get(ray_cluster.ROLE, [])), report.get("reason", ""))


@dataclass
class Status:
    project: str
    endpoint: str | None
    router_alive: bool
    current: str | None  # the version deployed last (it may be stopped: see serving)
    previous: str | None
    healthy: bool
    serving: str | None = None  # the version the running router serves (None: nothing)
    versions: list[VersionHealth] = field(default_factory=list)
    last_slo_report: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    prediction: Prediction | None = None  # one real request through the router
    routes: dict = field(default_factory=dict)  # the recorded weights
    live_routes: dict | None = None  # the weights the router applies (None: not answering)
    deploy: dict = field(default_factory=dict)  # a deploy at work or interrupted
    problems: list[str] = field(default_factory=list)
    cluster: ClusterHealth | None = None  # target.compute's Ray cluster
    monitoring: dict | None = None  # the monitoring flow's last report (None: none yet)
    reconciled: list[str] = field(default_factory=list)  # what status stopped (orphaned jobs)
    living: Living = field(default_factory=Living)  # keeper, sidecars, schedules, alerts
    experiment: dict = field(default_factory=dict)  # the A/B experiment, running or last


def last_monitoring(paths: ProjectPaths) -> dict | None:
    """The monitoring flow's last report (the runtime state's monitoring file), None when
    there is none; an unreadable one is reported as such, never raised (status still runs)."""
    import json

    path = paths.runtime_state_dir / MONITORING_FILE
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        return {"unreadable": f"{path}: {exc}"}
    return report if isinstance(report, dict) else {"unreadable": f"{path}: not an object"}


def _predict(port: int | None, rows: list) -> Prediction:
    """One real prediction through the router (standard library: the core install)."""
    import json
    import time
    import urllib.error
    import urllib.request

    if not port:
        return Prediction(False, None, None, None, "no router")
    if not rows:
        return Prediction(False, None, None, None, "no example request is known")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/predict", data=json.dumps({"rows": rows}).encode(),
        headers={"Content-Type": "application/json"}, method="POST")
    began = time.perf_counter()
    try:
        with opener.open(request, timeout=PREDICT_TIMEOUT) as response:
            body = json.loads(response.read())
            version = response.headers.get("X-Mlstack-Version")
            status = response.status
    except urllib.error.HTTPError as exc:
        return Prediction(False, exc.code, exc.headers.get("X-Mlstack-Version"),
                          round(time.perf_counter() - began, 3), exc.reason)
    except (OSError, ValueError) as exc:
        return Prediction(False, type(exc).__name__, None, None, str(exc))
    seconds = round(time.perf_counter() - began, 3)
    ok = isinstance(body, list) and len(body) == len(rows) and all(x is not None for x in body)
    return Prediction(ok, status, version, seconds,
                      "" if ok else f"unexpected answer {str(body)[:100]}")


def status(spec: Path | str) -> Status:
    """What runs, observed (never only as recorded): each version's supervisor and process
    tree (by owner marker), the weights the router applies against the recorded ones, a
    deploy at work or interrupted, and one real prediction through the router. Healthy: the
    prediction succeeds, the current version's tree runs under its supervisor, and nothing
    is out of line with the record."""
    paths = _paths(spec)
    state = _load(paths)
    reconciled = stop_orphaned_jobs(paths)
    seen = observe(paths, state)
    live = live_routes(state) if seen.router_alive else None
    problems = list(seen.problems)
    if live is not None and live != state.routes and not seen.deploy_running:
        problems.append(f"the router applies {live}, the record says {state.routes}")
    versions = []
    for v in state.versions:
        view = seen.versions[v.version]
        report = view.report if view.supervisor_alive else {}
        probe = str(_ready_probe(f"{version_url(v)}/readyz")) \
            if view.supervisor_alive and v.port else ""
        observed = view.state
        if observed in (VersionStatus.SERVING, VersionStatus.READY) and probe != "200":
            observed = "unready"  # its supervisor's report is older than this answer
            problems.append(f"{v.version} is not ready: GET /readyz answered {probe or '-'}")
        versions.append(VersionHealth(
            v.version, observed, v.model_tag, v.pid, view.supervisor_alive,
            probe == "200" if view.supervisor_alive else None,
            (live or {}).get(v.version, 0), view.pids, report.get("restarts", 0),
            report.get("worker_restarts", 0), report.get("reason", ""), probe))
    current = state.get(state.current)
    prediction = None
    if current is not None and seen.router_alive:
        prediction = _predict(state.router.port, current.example_rows)
        if not prediction.ok:
            problems.append(f"a prediction through the router failed: "
                            f"{prediction.status} {prediction.detail}".strip())
    elif current is not None:
        prediction = Prediction(False, None, None, None, "the router is not running")
    current_view = seen.versions.get(state.current or "")
    cluster = _cluster_health(paths, state, seen.roles)
    if cluster is not None and cluster.status == "restarting" and not any(
            p.startswith("the Ray cluster") for p in problems):
        problems.append("a node of the Ray cluster is down; its supervisor restarts it")
    living = observe_living(paths)
    problems += living_problems(living, seen.router_alive and current is not None)
    healthy = bool(current is not None and prediction is not None and prediction.ok
                   and current_view is not None and current_view.supervisor_alive
                   and not problems)
    deploy = dict(state.deploy, running=seen.deploy_running) if state.deploy else {}
    return Status(project=str(paths.project_dir),
                  endpoint=f"http://127.0.0.1:{state.router.port}" if seen.router_alive
                  else None,
                  router_alive=seen.router_alive, current=state.current,
                  previous=state.previous, healthy=healthy,
                  serving=state.current if seen.router_alive and current is not None
                  and current.status == VersionStatus.SERVING else None, versions=versions,
                  last_slo_report=current.slo_report if current else {},
                  history=state.history[-10:], prediction=prediction, routes=state.routes,
                  live_routes=live, deploy=deploy, problems=problems, cluster=cluster,
                  monitoring=last_monitoring(paths), reconciled=reconciled, living=living,
                  experiment=state.experiment)


@dataclass
class DownResult:
    stopped: list[str]  # versions, "router", "worker train" ...
    still_alive: list[int]  # PIDs of the project's processes left (none, normally)
    processes: int = 0  # how many processes there were (a version is several)
    reconciled: list[str] = field(default_factory=list)
    journal_problem: str = ""  # the journal was unusable: what is wrong and how to repair it


def stop_retrain(paths: ProjectPaths) -> str | None:
    """Down means down: a scheduled retrain holding the project (for minutes: train, gates,
    canary) is stopped, its process named by the lock file when it carries this project's
    owner marker, not made to finish first. What it started (a worker, a new version) carries
    the project's marker and goes with the rest; the deploy it left open is closed in the
    record like any interrupted one. Returns what was stopped, None when no retrain held
    the project."""
    held = lock_owner(paths)
    if held is None or held[1] != RETRAIN_HOLDER:
        return None
    pid = held[0]
    owner = procs.owner_of(pid) or ""
    if not owner.startswith(f"{paths.project_id}/"):
        return None  # not one of ours: the lock's refusal names it
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while procs.is_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not procs.is_alive(pid):
            break
    return f"scheduled retrain (pid {pid})"


def down(spec: Path | str) -> DownResult:
    """Stop every process of the project (found by owner marker, not only by recorded PID):
    versions, the router, workers; an interrupted deploy is closed in the record first. The
    journal is not needed: an unusable one is left as it is (for `mlstack repair`) and every
    process carrying the project's marker is stopped all the same."""
    paths = _paths(spec)
    keeper.stop(paths)  # first, and kept stopped: nothing restarts what down stops
    retrain = stop_retrain(paths)
    with project_lock(paths):  # a stopped retrain's lock went with its process
        found = procs.owned(paths.project_id)
        roles = sorted({role_of(paths, p.owner) for p in found})
        stopped = [r.split("/", 1)[1] if r.startswith("version/") else r.replace("/", " ")
                   for r in roles] + ([retrain] if retrain else [])
        try:
            state = _load(paths)
        except JournalError as exc:
            left = procs.stop_owned(paths.project_id)
            return DownResult(stopped=stopped, still_alive=left, processes=len(found),
                              journal_problem=f"{exc.message}; {exc.hint}")
        notes = reconcile(paths, state, serve=False)
        for v in state.versions:
            if v.status in (VersionStatus.SERVING, VersionStatus.READY, VersionStatus.STARTING):
                v.status = VersionStatus.STOPPED
        state.record("down", stopped=stopped, processes=len(found))
        state.save()
        left = procs.stop_owned(paths.project_id)  # whatever the record did not account for
        return DownResult(stopped=stopped, still_alive=left, processes=len(found),
                          reconciled=notes)


@dataclass
class RollbackResult:
    from_version: str
    to_version: str
    model_tag: str | None
    endpoint: str
    restarted: bool = False  # the target was the current version, dead, and started again
    reconciled: list[str] = field(default_factory=list)


def rollback(spec: Path | str, to: str | None = None, port: int | None = None) -> RollbackResult:
    """Put the previous (or the named) version back in service; the current one stops. The
    named version may be the current one when it is not running: it is restarted. A rollback
    that cannot be done raises UsageError (nothing to roll back to, no such version, its build
    gone, the project locked) or StageError (the target did not start, the router's port is
    another program's); what served before still serves, and a target it started is stopped."""
    paths = _paths(spec)
    with project_lock(paths):
        state = _load(paths)
        try:
            notes = reconcile(paths, state, serve=True, port=port, restart=False)
        except RuntimeError as exc:  # e.g. the router could not listen
            raise StageError("rollback", str(exc)) from None
        current = state.get(state.current)
        target = state.get(to or state.previous)
        if target is None:
            raise UsageError("there is no earlier version to roll back to" if to is None
                             else f"no version {to} in this project's history")
        code_dir = paths.versions_dir / target.version
        if not code_dir.is_dir():
            raise UsageError(f"the build of {target.version} is gone ({code_dir})")
        restarted = target is current
        if restarted and supervised(paths, current):
            raise UsageError(f"{target.version} is the current version and runs",
                             "mlstack status shows its health; name an earlier version")
        started, was = not supervised(paths, target), target.status
        if started:
            stop_version(paths, target)  # whatever a dead supervisor left behind
            try:
                start_version(paths, target, code_dir, state)
            except RuntimeError as exc:
                stop_version(paths, target)  # a supervisor the wait gave up on may still run
                target.status, target.failure = VersionStatus.FAILED, f"did not start: {exc}"
                state.save()
                raise StageError("rollback", f"{target.version} did not start: {exc}") from None
        try:
            ensure_project_router(paths, state, port or state.router.port or 3000)
        except RuntimeError as exc:  # e.g. another program holds the port
            if started:
                stop_version(paths, target)
                target.status = was
                state.save()
            raise StageError("rollback", str(exc)) from None
        with state.action("rollback", version=target.version, model_tag=target.model_tag,
                          restarted=restarted):
            route(paths, {target.version: 100}, state)
            target.status = VersionStatus.SERVING
            if current is not None and not restarted:
                stop_version(paths, current)
                current.status = VersionStatus.ROLLED_BACK
                state.previous, state.current = state.current, target.version
        keeper.ensure_running(paths)  # the version now serving is kept up between commands
        return RollbackResult(current.version if current else "-", target.version,
                              target.model_tag, f"http://127.0.0.1:{state.router.port}",
                              restarted=restarted, reconciled=notes)


def _ready_probe(url: str) -> int | str:
    """GET /readyz's answer, asked twice before it counts against a version (2 s, then 5 s):
    a worker busy with a burst on two shared cores can miss one short deadline and still be
    ready."""
    first = procs.http_status(url)
    return first if first == 200 else procs.http_status(url, timeout=5.0)


def log_files(spec: Path | str, version: str | None = None) -> list[Path]:
    """The log files of a version (default: the current one), the router, the workers, the
    flows `mlstack run` ran (flow-NAME.log), the keeper and the sidecars (sidecar-NAME.log)."""
    paths = _paths(spec)
    name = version or _load(paths).current  # a named version's logs need no journal
    found = [paths.logs_dir / f"service-{name}.log", paths.logs_dir / "router.log",
             paths.logs_dir / "worker-train.log", paths.logs_dir / "worker-skew.log",
             paths.logs_dir / "worker-freshness.log", *sorted(paths.logs_dir.glob("flow-*.log")),
             paths.logs_dir / "keeper.log", *sorted(paths.logs_dir.glob("sidecar-*.log"))]
    return [p for p in found if p.exists()]
