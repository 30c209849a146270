"""The local target's Ray cluster (target.compute): started, joined, observed, stopped.

With `address: local`, deploy brings up a head and the spec's worker nodes on loopback under
a supervisor of their own (mlstack.ops.local.ray_supervisor), before the training flow runs,
and keeps them up between deploys while their shape (workers, cpu, memory) is unchanged; a
changed shape restarts the cluster. With `address: ray://host:port` nothing is started: the
flows join that cluster. The cluster is token-authenticated (a token of the project's, under
the state folder), so other users of the machine cannot submit work to it.

Every process of the cluster carries the project's `ray` owner marker: `down`, `status` and
reconcile find them by marker, like the services.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import secrets
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from mlstack.codegen.contract import ENV_RAY_ADDRESS
from mlstack.frontend.ir.nodes import ComputeNode
from mlstack.ops.local import procs
from mlstack.ops.local.state import ClusterInfo, DeploymentState
from mlstack.ops.paths import ProjectPaths

READY_TIMEOUT = 240.0  # a head and two workers take 20-40 s on a busy 2-core machine
STOP_TIMEOUT = 20.0
ROLE = "ray"
# Ray's own usage reporting, off in every process that starts or joins the cluster
RAY_QUIET_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_DISABLE_IMPORT_WARNING": "1"}


def cluster_owner(paths: ProjectPaths) -> str:
    return f"{paths.project_id}/{ROLE}"


def status_file(paths: ProjectPaths) -> Path:
    return paths.state_dir / "supervisors" / "ray.json"


def token_file(paths: ProjectPaths) -> Path:
    return paths.state_dir / "ray" / "auth_token"


def temp_dir(paths: ProjectPaths) -> Path:
    """Ray's session folder: short (Ray's unix sockets live there, and a socket path has at
    most 107 bytes) and the project's own."""
    digest = hashlib.sha256(str(paths.project_dir).encode()).hexdigest()[:10]
    return Path(tempfile.gettempdir()) / f"mlstack-ray-{digest}"


def shape_of(compute: ComputeNode) -> dict:
    return {"workers": compute.workers, "cpu": compute.worker.cpu,
            "memory_mib": compute.worker.memory_mib}


def report(paths: ProjectPaths) -> dict:
    """What the cluster's supervisor last reported ({} when it never did)."""
    try:
        return json.loads(status_file(paths).read_text())
    except (OSError, ValueError):
        return {}


def alive(paths: ProjectPaths, state: DeploymentState) -> bool:
    return procs.is_owned(state.cluster.pid, cluster_owner(paths))


def _token(paths: ProjectPaths) -> Path:
    path = token_file(paths)
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_hex(32))
    return path


def client_env(paths: ProjectPaths) -> dict[str, str]:
    """What a process that joins the project's cluster needs (the flows, the skew check), as
    the deployments file records it: the address and, for the cluster started here, the
    token; {} without a cluster."""
    cluster = DeploymentState.load(paths.deployments_file).cluster
    if not cluster.address:
        return {}
    if cluster.pid is None:  # joined
        return {ENV_RAY_ADDRESS: cluster.address, **RAY_QUIET_ENV}
    return {ENV_RAY_ADDRESS: cluster.address, "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN_PATH": str(_token(paths)), **RAY_QUIET_ENV}


@dataclass
class ClusterOutcome:
    address: str
    started: bool  # False: a running cluster of the same shape was kept, or one was joined
    nodes: list[dict] = field(default_factory=list)
    seconds: float = 0.0


def ensure(paths: ProjectPaths, state: DeploymentState, compute: ComputeNode) -> ClusterOutcome:
    """The cluster the flows run on, up and ready: joined (ray://), kept (running, same
    shape, ready) or started (and the old one stopped). Raises RuntimeError when it does not
    become ready; what was started is stopped then."""
    began = time.perf_counter()
    if compute.address != "local":
        if alive(paths, state) or procs.owned(cluster_owner(paths)):
            stop(paths, state)
        state.cluster = ClusterInfo(address=compute.address)
        state.save()
        return ClusterOutcome(compute.address, started=False)
    if importlib.util.find_spec("ray") is None:
        raise RuntimeError("target.compute needs Ray in this environment: pip install "
                           "'mlstack[runtime,ray]'")
    shape = shape_of(compute)
    seen = report(paths)
    if alive(paths, state) and state.cluster.shape == shape and seen.get("state") == "ready":
        return ClusterOutcome(seen["address"], False, seen.get("nodes", []))
    stop(paths, state)
    with state.action("start-ray-cluster", **shape):
        port = procs.free_port()
        folder = temp_dir(paths)
        status = status_file(paths)
        status.parent.mkdir(parents=True, exist_ok=True)
        status.unlink(missing_ok=True)
        # code_dir given (the default, None) so that **RAY_QUIET_ENV cannot be it
        env = paths.environment(None, **RAY_QUIET_ENV, RAY_AUTH_MODE="token",
                                RAY_AUTH_TOKEN_PATH=str(_token(paths)))
        argv = [sys.executable, "-m", "mlstack.ops.local.ray_supervisor", "--status",
                str(status), "--port", str(port), "--workers", str(compute.workers),
                "--cpu", f"{compute.worker.cpu:g}",
                "--memory-bytes", str(compute.worker.memory_mib * 2**20),
                "--temp-dir", str(folder), "--logs", str(paths.logs_dir)]
        log = paths.logs_dir / "ray-supervisor.log"
        pid = procs.start_background(argv, cwd=paths.state_dir, env=env, log=log,
                                     owner=cluster_owner(paths))
        state.cluster = ClusterInfo(address=f"127.0.0.1:{port}", pid=pid, port=port,
                                    shape=shape, temp_dir=str(folder))
        state.save()
        try:
            ready = procs.wait_reported(status, pid, READY_TIMEOUT, log, "the Ray cluster")
        except RuntimeError:
            stop(paths, state)
            raise
    return ClusterOutcome(ready["address"], True, ready.get("nodes", []),
                          round(time.perf_counter() - began, 3))


def stop(paths: ProjectPaths, state: DeploymentState) -> list[int]:
    """Stop the supervisor (it stops its nodes), then whatever still carries the marker, and
    remove Ray's temp folder; returns the PIDs still alive afterwards (none, normally)."""
    if alive(paths, state):
        procs.stop_process(state.cluster.pid, timeout=STOP_TIMEOUT)
    left = procs.stop_owned(cluster_owner(paths), timeout=5.0)
    folder = Path(state.cluster.temp_dir or temp_dir(paths))
    if not left and folder.name.startswith("mlstack-ray-"):  # Ray's sessions: logs, sockets
        shutil.rmtree(folder, ignore_errors=True)
    if state.cluster != ClusterInfo():
        state.cluster = ClusterInfo()
        state.save()
    return left
