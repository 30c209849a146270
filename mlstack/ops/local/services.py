"""The processes of a local deployment: one supervised `bentoml serve` per version, the
router, and the worker jobs. Each is started with its owner marker (procs.py) and recorded in
the state's journal before it starts."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from mlstack.codegen.contract import ENV_MODEL_TAG, ENV_PROGRESS_FILE, ENV_SERVING_VERSION
from mlstack.ops.local import procs, ray_cluster
from mlstack.ops.local.router import write_table
from mlstack.ops.local.state import DeploymentState, RouterInfo, Version, VersionStatus
from mlstack.ops.paths import ProjectPaths

READY_TIMEOUT = 180.0
STOP_TIMEOUT = 20.0  # seconds a supervisor gets to stop its tree before SIGKILL by marker


# -- owner markers: who started a process (procs.OWNER_ENV) -----------------------------------
def version_owner(paths: ProjectPaths, version: str) -> str:
    return f"{paths.project_id}/version/{version}"


def router_owner(paths: ProjectPaths) -> str:
    return f"{paths.project_id}/router"


def worker_owner(paths: ProjectPaths, job: str) -> str:
    return f"{paths.project_id}/worker/{job}"


def role_of(paths: ProjectPaths, owner: str) -> str:
    """'version/v3', 'router', 'worker/train', 'ray': an owner marker without the project
    id (the Ray cluster's nodes, 'ray/head' and 'ray/worker-<i>', are one role)."""
    role = owner[len(paths.project_id) + 1:]
    return "ray" if role.startswith("ray/") else role


def supervisor_file(paths: ProjectPaths, version: str) -> Path:
    return paths.state_dir / "supervisors" / f"{version}.json"


def supervisor_report(paths: ProjectPaths, version: str) -> dict:
    """What the version's supervisor last reported ({} when it never did)."""
    try:
        return json.loads(supervisor_file(paths, version).read_text())
    except (OSError, ValueError):
        return {}


def service_target(code_dir: Path) -> str:
    """'service.service:ChurnService', as the generated bentofile names it."""
    bentofile = yaml.safe_load((code_dir / "service" / "bentofile.yaml").read_text())
    return bentofile["service"]


def start_version(paths: ProjectPaths, version: Version, code_dir: Path,
                  state: DeploymentState | None = None) -> None:
    """Start the version's service under its supervisor (supervisor.py) on a loopback port
    (the one it had, when free) and wait until it is ready. With `state`, the start is
    journaled and the supervisor's PID saved before the wait."""
    port = version.port if version.port and procs.port_is_free(version.port) \
        else procs.free_port()
    log = paths.logs_dir / f"service-{version.version}.log"
    status = supervisor_file(paths, version.version)
    status.parent.mkdir(parents=True, exist_ok=True)
    status.unlink(missing_ok=True)
    env = paths.environment(code_dir, **{ENV_MODEL_TAG: version.model_tag or "",
                                          ENV_SERVING_VERSION: version.version})
    serve = [sys.executable, "-m", "bentoml", "serve", service_target(code_dir),
             "--host", "127.0.0.1", "--port", str(port)]
    argv = [sys.executable, "-m", "mlstack.ops.local.supervisor", "--status", str(status),
            "--port", str(port), "--log", str(log), "--ready-timeout", str(READY_TIMEOUT),
            "--", *serve]
    entry = state.begin("start", version=version.version, port=port) if state else None
    version.port, version.status = port, VersionStatus.STARTING
    version.pid = procs.start_background(argv, cwd=code_dir, env=env, log=log,
                                         owner=version_owner(paths, version.version))
    try:
        if state is not None:
            state.save()  # the supervisor's PID is on record before anything waits on it
        procs.wait_reported(status, version.pid, READY_TIMEOUT + 10, log, "the service")
    except BaseException as exc:
        if state is not None and entry is not None:
            state.end(entry, ok=False, error=str(exc) or type(exc).__name__)
        raise
    version.status = VersionStatus.READY
    if state is not None and entry is not None:
        state.end(entry, ok=True, pid=version.pid)


def stop_version(paths: ProjectPaths, version: Version, timeout: float = STOP_TIMEOUT) -> list[int]:
    """Stop a version's whole tree: its supervisor (SIGTERM: it stops the service), then any
    process still carrying the version's marker. Returns the PIDs left alive (none)."""
    owner = version_owner(paths, version.version)
    if procs.is_owned(version.pid, owner) or _unmarked_from(version.pid,
                                                          paths.versions_dir / version.version):
        procs.stop_process(version.pid, timeout=timeout)
    return procs.stop_owned(owner, timeout=5.0)


def _unmarked_from(pid: int | None, folder: Path) -> bool:
    """A process a deploy of an mlstack before owner markers recorded: alive, unmarked, and
    running in the folder it was started in (so a reused PID is not taken for it)."""
    return (procs.is_alive(pid) and procs.owner_of(pid) is None
            and procs.cwd_of(pid) == str(folder.resolve()))


def version_tree(paths: ProjectPaths, version: str) -> list[procs.OwnedProcess]:
    return procs.owned(version_owner(paths, version))


def supervised(paths: ProjectPaths, version: Version | None) -> bool:
    """The version's supervisor runs (its recorded PID carries the version's marker)."""
    return version is not None and procs.is_owned(version.pid,
                                                  version_owner(paths, version.version))


def version_url(version: Version) -> str:
    return f"http://127.0.0.1:{version.port}"


def router_config(paths: ProjectPaths) -> Path:
    return paths.state_dir / "router.json"


def router_alive(paths: ProjectPaths, state: DeploymentState) -> bool:
    return procs.is_owned(state.router.pid, router_owner(paths))


def ensure_router(paths: ProjectPaths, state: DeploymentState, port: int,
                  limits: dict | None = None) -> None:
    """Start the router on `port` unless it already runs there; `limits` (admission control,
    router.LIMITS) are recorded and reach a running router through its table."""
    r = state.router
    if limits is not None and limits != r.limits:
        r.limits = dict(limits)
        if router_alive(paths, state):
            route(paths, state.routes, state)
    if router_alive(paths, state) and r.port == port:
        return
    with state.action("start-router", port=port):
        if _unmarked_from(r.pid, paths.state_dir):  # a router of an mlstack before markers
            procs.stop_process(r.pid)
        procs.stop_owned(router_owner(paths))
        config = router_config(paths)
        write_router_table(paths, state)
        log = paths.logs_dir / "router.log"
        argv = [sys.executable, "-m", "mlstack.ops.local.router", "--port", str(port),
                "--config", str(config)]
        pid = procs.start_background(argv, cwd=paths.state_dir, env=paths.environment(),
                                     log=log, owner=router_owner(paths))
        state.router = RouterInfo(pid=pid, port=port, limits=r.limits)
        state.save()
        try:
            procs.wait_ready(f"http://127.0.0.1:{port}/-/router", pid, 20.0, log)
        except RuntimeError as exc:
            procs.stop_process(pid)
            state.router = RouterInfo(limits=r.limits)
            raise RuntimeError(f"the router could not listen on port {port}: {exc}") from None


def stop_router(paths: ProjectPaths, state: DeploymentState) -> list[int]:
    """Stop the router; its port stays on record (no PID): a later rollback serves there."""
    if router_alive(paths, state) or _unmarked_from(state.router.pid, paths.state_dir):
        procs.stop_process(state.router.pid)
    state.router = RouterInfo(port=state.router.port, limits=state.router.limits)
    return procs.stop_owned(router_owner(paths))


def _backends(state: DeploymentState, weights: dict[str, int]) -> list[dict]:
    backends = []
    for name, weight in sorted(weights.items()):
        version = state.get(name)
        if version is not None and version.port and weight > 0:
            backends.append({"version": name, "url": version_url(version), "weight": weight})
    return backends


def route(paths: ProjectPaths, weights: dict[str, int], state: DeploymentState,
          traffic: dict | None = None) -> None:
    """Send traffic to versions by weight (percent); `traffic` adds a shadow ({"shadow":
    {"version", "tolerance"}}: a mirrored copy of the traffic, its answers not returned) or
    a sticky split ({"sticky": {"experiment", "key"}}: a request goes to the arm its key
    hashes to, experiment_stats.assign_arm); without it, neither. Recorded in the state
    (saved) before the router's table changes; the router applies it on its next request."""
    state.routes = {name: weight for name, weight in sorted(weights.items()) if weight > 0}
    state.traffic = dict(traffic or {})
    state.save()
    write_router_table(paths, state)
    time.sleep(0.05)  # mtime granularity: let the next request see the new table


def write_router_table(paths: ProjectPaths, state: DeploymentState) -> None:
    """The router's table from the state: the weights, the limits, and a shadow (with its
    version's url) or sticky split as recorded."""
    extra = {}
    shadow = state.traffic.get("shadow")
    if isinstance(shadow, dict):
        version = state.get(shadow.get("version"))
        if version is not None and version.port:
            extra["shadow"] = {**shadow, "url": version_url(version)}
    if isinstance(state.traffic.get("sticky"), dict):
        extra["sticky"] = dict(state.traffic["sticky"])
    write_table(router_config(paths), _backends(state, state.routes), state.router.limits,
                **extra)


def routed(paths: ProjectPaths) -> dict[str, int]:
    """The weights in the router's table file."""
    config = router_config(paths)
    try:
        data = json.loads(config.read_text())
    except (OSError, ValueError):
        return {}
    return {b["version"]: b["weight"] for b in data.get("backends", [])}


def live_routes(state: DeploymentState) -> dict[str, int] | None:
    """The weights the running router applies (GET /-/router), None when it does not answer."""
    if not state.router.port:
        return None
    code, data = procs.http_get_json(f"http://127.0.0.1:{state.router.port}/-/router")
    if code != 200 or not isinstance(data, dict):
        return None
    return {b["version"]: b["weight"] for b in data.get("backends", [])}


@dataclass(frozen=True)
class WorkerOutcome:
    """What a worker job returned: its result, or the error it failed with."""

    ok: bool
    result: dict = field(default_factory=dict)
    error_type: str = ""
    error: str = ""

    @classmethod
    def from_json(cls, data: dict) -> WorkerOutcome:
        return cls(ok=bool(data.get("ok")), result=data.get("result") or {},
                   error_type=data.get("error_type", ""), error=data.get("error", ""))


def run_worker(paths: ProjectPaths, code_dir: Path, job: str, package: str, *,
               progress_file: Path | None = None, on_progress=None,
               **options) -> WorkerOutcome:
    """Run `python -m mlstack.ops.local.worker JOB` in the isolated environment and return its
    result; `on_progress(line)` gets each line the flow appends to the progress file."""
    result_file = paths.state_dir / f"worker-{job}.json"
    result_file.unlink(missing_ok=True)
    extra = {ENV_PROGRESS_FILE: str(progress_file)} if progress_file else {}
    if progress_file:
        progress_file.unlink(missing_ok=True)
    argv = [sys.executable, "-m", "mlstack.ops.local.worker", job, "--package", package,
            "--result", str(result_file)]
    for key, value in options.items():
        argv += [f"--{key}", str(value)]
    log = paths.logs_dir / f"worker-{job}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    owner = worker_owner(paths, job)
    extra[procs.OWNER_ENV] = owner
    extra.update(ray_cluster.client_env(paths))  # target.compute: the cluster the flows join
    # the worker dies with the deploy; what it started carries the marker, so what is left is
    # stopped here, or by the next command's reconcile
    returncode = procs.run_followed(argv, code_dir, paths.environment(code_dir, **extra), log,
                                    owner, progress_file, on_progress)
    if not result_file.exists():
        tail = procs.log_tail(log)
        return WorkerOutcome(False, error_type="WorkerCrashed",
                             error=f"the worker exited with code {returncode}{tail}")
    return WorkerOutcome.from_json(json.loads(result_file.read_text()))
