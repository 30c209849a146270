"""The Ray cluster a project with target.compute runs its offline steps on.

    compute = RayCompute(address="local", workers=2, worker_cpu=1, worker_memory_mib=2048,
                         train_engine="ray_train")
    compute.resolve_address()          MLSTACK_RAY_ADDRESS, else the spec's ray://host:port
    runner = task_runner(compute, root)   prefect_ray's RayTaskRunner, workers import `root`
    connect(compute, root)             ray.init once per process (the flow's own steps)
    node_id()                          the Ray node this code runs on
    NodeLog                            which nodes ran each step (the training file records it)

Ray, prefect_ray and Prefect are imported on first use: a flow without compute never loads
them. Every Ray worker process gets the generated tree on its import path (PYTHONPATH for a
cluster on this machine, a working_dir upload for ray://), the project's MLSTACK_* variables
and telemetry switched off.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prefect.task_runners import TaskRunner

__all__ = ["ENV_RAY_ADDRESS", "NodeLog", "RayCompute", "connect", "node_id", "runtime_env",
           "task_runner"]

# The Ray cluster to join: a GCS address (host:port) of a cluster on this machine, as
# `mlstack deploy` starts it, or ray://host:port (Ray Client).
ENV_RAY_ADDRESS = "MLSTACK_RAY_ADDRESS"
# Telemetry off in every Ray worker process (no network at run time).
WORKER_TELEMETRY = {
    "BENTOML_DO_NOT_TRACK": "true",
    "DO_NOT_TRACK": "1",
    "FEAST_USAGE": "False",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "RAY_USAGE_STATS_ENABLED": "0",
}
# The flow process's variables a worker needs too (the state folder, the project folder...).
FORWARDED_PREFIX = "MLSTACK_"
# mlstack deploy's owner marker (mlstack.ops.local.procs): the Ray workers belong to the
# cluster's nodes, whose marker they inherit, not to the process that submitted the job (a
# deploy's worker stops what carries its marker when it ends)
NOT_FORWARDED = ("MLSTACK_OWNER",)
# Ray namespace of the project's jobs (prefect_ray's default).
NAMESPACE = "prefect"


@dataclass(frozen=True)
class RayCompute:
    """target.compute as the generated pipeline settings give it: the spec's address ('local':
    the cluster mlstack deploy starts, found through MLSTACK_RAY_ADDRESS; or ray://host:port),
    the worker count and size, and how the model trains ('ray_train': data-parallel on
    `workers` workers; 'ray_task': one Ray task)."""

    address: str
    workers: int
    worker_cpu: float
    worker_memory_mib: int
    train_engine: str

    def resolve_address(self, environ: Mapping[str, str] | None = None) -> str:
        """The address to join: MLSTACK_RAY_ADDRESS when set, else the spec's ray:// address;
        'local' with no variable raises RuntimeError (nothing says where the cluster is)."""
        environ = os.environ if environ is None else environ
        address = environ.get(ENV_RAY_ADDRESS, "").strip()
        if address:
            return address
        if self.address.startswith("ray://"):
            return self.address
        raise RuntimeError(
            f"target.compute.address is 'local' but {ENV_RAY_ADDRESS} is not set: start the "
            f"project's Ray cluster (mlstack deploy does) and set {ENV_RAY_ADDRESS} to its "
            "address (host:port of its GCS, or ray://host:port)"
        )

    def record(self, address: str, nodes: Mapping[str, list[str]]) -> dict[str, Any]:
        """What the training file records about the run's compute."""
        return {"engine": "ray", "address": address, "nodes": dict(sorted(nodes.items())),
                "train_engine": self.train_engine, "workers": self.workers}


def runtime_env(root: str | Path, address: str,
                environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The Ray runtime_env of the project's jobs: the generated tree `root` importable in
    every worker (PYTHONPATH on a cluster of this machine, which shares its files; uploaded as
    working_dir through ray://), the MLSTACK_* variables of this process and telemetry off."""
    environ = os.environ if environ is None else environ
    env = {k: v for k, v in environ.items()
           if k.startswith(FORWARDED_PREFIX) and k not in NOT_FORWARDED}
    env.update(WORKER_TELEMETRY)
    root = Path(root).resolve()
    if address.startswith("ray://"):
        return {"working_dir": str(root), "env_vars": dict(sorted(env.items()))}
    # this process's path too (absolute: a worker starts in a folder of its own)
    paths = [str(root), *[str(Path(p).resolve())
                          for p in environ.get("PYTHONPATH", "").split(os.pathsep) if p]]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return {"env_vars": dict(sorted(env.items()))}


def _prefect_api_url() -> str | None:
    """The Prefect API this process talks to: PREFECT_API_URL, or the temporary server Prefect
    started for a serverless run (None when none is running)."""
    from prefect.settings import PREFECT_API_URL

    configured: str | None = PREFECT_API_URL.value()  # a setting's value() is typed Any
    if configured:
        return configured
    from prefect.server.api.server import SubprocessASGIServer

    for server in list(SubprocessASGIServer._instances.values()):
        if server.running:
            return server.api_url
    return None


def connect(compute: RayCompute, root: str | Path) -> str:
    """Join the cluster once per process (ray.init with the project's runtime_env); returns
    the address. A process already connected is left as it is."""
    import ray

    address = compute.resolve_address()
    if not ray.is_initialized():
        ray.init(address, namespace=NAMESPACE, runtime_env=runtime_env(root, address),
                 log_to_driver=False)
    return address


def task_runner(compute: RayCompute, root: str | Path) -> TaskRunner[Any]:
    """prefect_ray's RayTaskRunner for the cluster: submitted tasks run in Ray workers.

    A flow run without a Prefect server has a temporary API on 127.0.0.1; workers of a
    cluster on this machine report their task runs to it (PREFECT_API_URL in their
    environment), so the flow's one API sees every task. Through ray:// that address means
    nothing on the remote nodes: each worker then starts a temporary API of its own (the task
    results still come back through Ray) unless PREFECT_API_URL names a real server."""
    from prefect_ray import RayTaskRunner

    class ClusterTaskRunner(RayTaskRunner):  # type: ignore[misc]  # prefect_ray ships no types
        def __init__(self, address: str | None = None,
                     init_kwargs: dict[str, Any] | None = None) -> None:
            super().__init__(address=address, init_kwargs=init_kwargs)

        def __enter__(self) -> Any:
            # the address and the flow's API are known only once the flow runs
            self.address = compute.resolve_address()
            env = runtime_env(root, self.address)
            api = _prefect_api_url()
            if api and (not self.address.startswith("ray://") or "PREFECT_API_URL" in
                        os.environ):
                env["env_vars"]["PREFECT_API_URL"] = api
            self.init_kwargs: dict[str, Any] = {**self.init_kwargs, "runtime_env": env,
                                                "log_to_driver": False}
            return super().__enter__()

        def duplicate(self) -> ClusterTaskRunner:
            return type(self)(address=self.address, init_kwargs=self.init_kwargs)

    return ClusterTaskRunner(init_kwargs={"namespace": NAMESPACE})


def materializing_at_once(compute: RayCompute, one_at_a_time: bool) -> int:
    """How many materialization tasks may run at once on the workers: each holds a worker's
    CPU while Feast's Ray compute engine runs its Ray Data tasks on the others, so at most
    workers - 1 (one where the registry is a file, which every materialization rewrites);
    0: none, materialize in the flow's process (a single worker: the task would hold the
    only CPU its own Ray Data tasks wait for)."""
    if compute.workers < 2:
        return 0
    return 1 if one_at_a_time else compute.workers - 1


def node_id() -> str:
    """The id of the Ray node running this code (the driver's node in the flow process)."""
    import ray

    return ray.get_runtime_context().get_node_id()


@dataclass
class NodeLog:
    """The Ray nodes that ran each step of one flow run, step -> sorted node ids."""

    nodes: dict[str, set[str]] = field(default_factory=dict)

    def add(self, step: str, *ids: Any) -> None:
        self.nodes.setdefault(step, set()).update(str(i) for i in ids)

    def as_record(self) -> dict[str, list[str]]:
        return {step: sorted(ids) for step, ids in sorted(self.nodes.items())}
