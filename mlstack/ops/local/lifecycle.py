"""The verbs around deploy: status, down, rollback, logs. Library functions returning data."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mlstack.diagnostics.errors import UsageError
from mlstack.ops.local import procs
from mlstack.ops.local.services import ensure_router, route, routed, start_version
from mlstack.ops.local.state import DeploymentState, RouterInfo, VersionStatus
from mlstack.ops.paths import ProjectPaths, project_lock


def _paths(spec: Path | str) -> ProjectPaths:
    from mlstack.workspace.build import spec_paths

    return ProjectPaths.for_spec(spec_paths(spec).spec)


def _load(paths: ProjectPaths) -> DeploymentState:
    if not paths.deployments_file.exists():
        raise UsageError(f"{paths.project_dir} has not been deployed",
                         f"run: mlstack deploy {paths.spec.name}")
    return DeploymentState.load(paths.deployments_file)


@dataclass
class VersionHealth:
    version: str
    status: str
    model_tag: str | None
    pid: int | None
    alive: bool
    ready: bool | None
    traffic: int


@dataclass
class Status:
    project: str
    endpoint: str | None
    router_alive: bool
    current: str | None
    previous: str | None
    healthy: bool
    versions: list[VersionHealth] = field(default_factory=list)
    last_slo_report: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)


def _ready(port: int | None) -> bool:
    return procs.http_status(f"http://127.0.0.1:{port}/readyz") == 200


def status(spec: Path | str) -> Status:
    paths = _paths(spec)
    state = _load(paths)
    weights = routed(paths)
    router_alive = procs.is_alive(state.router.pid)
    versions = []
    for v in state.versions:
        alive = procs.is_alive(v.pid)
        versions.append(VersionHealth(v.version, v.status if alive or v.status != "serving"
                                      else "dead", v.model_tag, v.pid, alive,
                                      _ready(v.port) if alive else None,
                                      weights.get(v.version, 0) if router_alive else 0))
    current = state.get(state.current)
    healthy = bool(router_alive and current and procs.is_alive(current.pid)
                   and _ready(current.port) and _ready(state.router.port))
    return Status(project=str(paths.project_dir),
                  endpoint=f"http://127.0.0.1:{state.router.port}" if router_alive else None,
                  router_alive=router_alive, current=state.current, previous=state.previous,
                  healthy=healthy, versions=versions,
                  last_slo_report=current.slo_report if current else {},
                  history=state.history[-10:])


@dataclass
class DownResult:
    stopped: list[str]
    still_alive: list[int]


def down(spec: Path | str) -> DownResult:
    """Stop every process this project's deploys started (by PID): versions and the router."""
    paths = _paths(spec)
    with project_lock(paths):
        state = _load(paths)
        stopped, alive = [], []
        for v in state.versions:
            if v.pid and procs.is_alive(v.pid):
                (stopped if procs.stop_process(v.pid) else alive).append(v.version)
            if v.status in ("serving", "ready", "starting"):
                v.status = VersionStatus.STOPPED
        if state.router.pid and procs.is_alive(state.router.pid):
            (stopped if procs.stop_process(state.router.pid) else alive).append("router")
        state.router = RouterInfo()
        state.record("down", stopped=stopped)
        state.save(paths.deployments_file)
        pids = [v.pid for v in state.versions if procs.is_alive(v.pid)]
        return DownResult(stopped=stopped, still_alive=pids)


@dataclass
class RollbackResult:
    from_version: str
    to_version: str
    model_tag: str | None
    endpoint: str


def rollback(spec: Path | str, to: str | None = None, port: int | None = None) -> RollbackResult:
    """Put the previous (or the named) version back in service; the current one stops."""
    paths = _paths(spec)
    with project_lock(paths):
        state = _load(paths)
        current = state.get(state.current)
        target = state.get(to or state.previous)
        if target is None or target is current:
            raise UsageError("there is no earlier version to roll back to" if to is None
                             else f"no version {to} in this project's history")
        code_dir = paths.versions_dir / target.version
        if not code_dir.is_dir():
            raise UsageError(f"the build of {target.version} is gone ({code_dir})")
        if not procs.is_alive(target.pid):
            start_version(paths, target, code_dir)
        ensure_router(paths, state, port or state.router.port or 3000)
        route(paths, {target.version: 100}, state)
        target.status = VersionStatus.SERVING
        if current is not None:
            procs.stop_process(current.pid)
            current.status = VersionStatus.ROLLED_BACK
        state.previous, state.current = state.current, target.version
        state.record("rollback", to=target.version, model_tag=target.model_tag)
        state.save(paths.deployments_file)
        return RollbackResult(current.version if current else "-", target.version,
                              target.model_tag, f"http://127.0.0.1:{state.router.port}")


def log_files(spec: Path | str, version: str | None = None) -> list[Path]:
    """The log files of a version (default: the current one), the router and the workers."""
    paths = _paths(spec)
    state = _load(paths)
    name = version or state.current
    found = [paths.logs_dir / f"service-{name}.log", paths.logs_dir / "router.log",
             paths.logs_dir / "worker-train.log", paths.logs_dir / "worker-skew.log"]
    return [p for p in found if p.exists()]
