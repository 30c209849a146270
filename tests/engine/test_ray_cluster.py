"""The local target's Ray cluster, for real: a head and two worker nodes under their supervisor.

What deploy relies on (mlstack.ops.local.ray_cluster): the cluster becomes ready, a client
with the project's token joins it and its tasks land on the worker nodes (the head runs none),
each worker process is held to worker.memory, a second project's cluster runs beside it, a
killed node is started again and `status` says so meanwhile, a killed supervisor is seen as
dead and what it left is found by marker, an unchanged shape keeps the cluster, and stopping
it leaves no process.
Every process carries the test project's owner marker and is stopped by the test.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

pytest.importorskip("ray")

from mlstack.ops.local import procs, ray_cluster  # noqa: E402
from mlstack.ops.local.lifecycle import _cluster_health  # noqa: E402
from mlstack.ops.local.reconcile import observe  # noqa: E402
from mlstack.ops.local.state import DeploymentState  # noqa: E402
from mlstack.ops.paths import ProjectPaths  # noqa: E402
from tests.engine.deploy_support import local_compute, scratch_project  # noqa: E402

WORKER_MIB = 1024

CLIENT = r'''
import json, sys, ray
ray.init(address=sys.argv[1], log_to_driver=False)
head = [n["NodeID"] for n in ray.nodes() if n["Alive"] and not n["Resources"].get("CPU")]
@ray.remote(num_cpus=1)
def where():
    return ray.get_runtime_context().get_node_id()
@ray.remote(num_cpus=1, max_retries=0)
def allocate(mib):
    block = bytearray(mib * 2**20)  # private memory, past the node's limit
    return len(block)
ran = ray.get([where.remote() for _ in range(6)])
try:
    ray.get(allocate.remote(int(sys.argv[2])))
    memory = "allocated"
except Exception as exc:
    memory = type(exc).__name__ + ": " + str(exc)[-300:]
print("RESULT " + json.dumps({"head": head, "ran_on": sorted(set(ran)), "memory": memory,
                             "alive": sum(n["Alive"] for n in ray.nodes())}), flush=True)
'''


def _compute(workers: int = 2):
    return local_compute(workers, WORKER_MIB)


@pytest.fixture()
def project(tmp_path):
    with scratch_project(tmp_path) as made:
        yield made


def _client(paths: ProjectPaths, *argv: str) -> dict:
    env = {**paths.environment(), **ray_cluster.client_env(paths)}
    done = subprocess.run([sys.executable, "-c", CLIENT, *argv], env=env, capture_output=True,
                          text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    # Ray prints its own warnings to stdout too (a busy machine's "raylet has lagging
    # heartbeats"), after the result as often as before it
    [result] = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    return json.loads(result.removeprefix("RESULT "))


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"not {what} after {timeout:g} s")


def _evidence(paths: ProjectPaths, health) -> str:
    """What the supervisor reported and its nodes logged last, for a failure's message."""
    logs = {log.name: log.read_text(errors="replace")[-1500:]
            for log in sorted(paths.logs_dir.glob("ray-*.log"))}
    return json.dumps({"health": health.__dict__, "report": ray_cluster.report(paths),
                       "logs": logs}, indent=1, default=str)


@contextmanager
def _held_port(port: int):
    """`port` held by a plain listener (no SO_REUSEPORT, unlike gRPC's), as any other
    program on the machine may hold it; nothing is held when it is taken already."""
    sock = socket.socket()
    try:
        sock.bind(("0.0.0.0", port))
        sock.listen()
    except OSError:
        pass
    try:
        yield
    finally:
        sock.close()


def test_a_supervised_cluster_runs_tasks_on_its_workers_and_recovers(project, tmp_path):
    paths, state = project
    with _held_port(10001):  # Ray's default client-server port: the head must not need it
        outcome = ray_cluster.ensure(paths, state, _compute())
        assert ray_cluster.report(paths)["nodes"][0]["restarts"] == 0
    assert outcome.started and [n["name"] for n in outcome.nodes] == [
        "head", "worker-1", "worker-2"]
    recorded = DeploymentState.load(paths.deployments_file).cluster
    assert recorded.address == outcome.address and recorded.pid == state.cluster.pid
    assert oct(ray_cluster.token_file(paths).stat().st_mode & 0o777) == "0o600"

    # a second project's cluster beside it
    other_folder = tmp_path / "other"
    other_folder.mkdir()
    with scratch_project(other_folder) as (other, other_state):
        ray_cluster.ensure(other, other_state, _compute(workers=1))

        seen = _client(paths, outcome.address, str(WORKER_MIB + 256))
        assert len(seen["head"]) == 1 and seen["alive"] == 3
        assert seen["ran_on"] and not set(seen["ran_on"]) & set(seen["head"])
        assert "MemoryError" in seen["memory"], seen["memory"]

        beside = _cluster_health(other, other_state, observe(other, other_state).roles)
        assert beside.status == "ready" and all(n["restarts"] == 0 for n in beside.nodes), \
            _evidence(other, beside)
        # its supervisor killed: no chance to stop its nodes; status says dead, and stop
        # finds what is left by marker (the nodes got the parent-death signal)
        os.kill(other_state.cluster.pid, signal.SIGKILL)
        _wait(lambda: not procs.is_alive(other_state.cluster.pid), 10, "gone")
        health = _cluster_health(other, other_state, observe(other, other_state).roles)
        assert health.status == "dead"
        assert any("Ray cluster's supervisor is gone" in p
                   for p in observe(other, other_state).problems)
        assert ray_cluster.stop(other, other_state) == []
        assert procs.owned(ray_cluster.cluster_owner(other)) == []

    # a worker node killed: status says so until its supervisor has it back
    report = ray_cluster.report(paths)
    victim = next(n for n in report["nodes"] if n["name"] == "worker-1")
    os.kill(victim["pid"], signal.SIGKILL)
    health = _cluster_health(paths, state, observe(paths, state).roles)
    assert health.status in ("restarting", "ready")
    if health.status == "ready":  # the supervisor looked before the kill: a node is dead
        assert not next(n for n in health.nodes if n["name"] == "worker-1")["alive"]
    back = _wait(lambda: (r := ray_cluster.report(paths))["state"] == "ready" and next(
        n for n in r["nodes"] if n["name"] == "worker-1")["restarts"] >= 1 and r, 120,
        "restarted")
    assert "worker-1 exited" in back["reason"]
    health = _cluster_health(paths, state, observe(paths, state).roles)
    assert health.status == "ready" and all(n["alive"] for n in health.nodes), _evidence(
        paths, health)
    assert _client(paths, outcome.address, "16")["alive"] >= 3

    # the same shape again: kept; nothing restarted
    again = ray_cluster.ensure(paths, state, _compute())
    assert not again.started and again.address == outcome.address

    # each node's sessions in a folder of its own (nodes started at once raced for names)
    temp = Path(state.cluster.temp_dir)
    assert sorted({p.parent.name for p in temp.glob("*/session_*")}) == ["worker-1", "worker-2"]
    assert list(temp.glob("session_*"))  # the head's

    left = ray_cluster.stop(paths, state)
    assert left == [] and procs.owned(ray_cluster.cluster_owner(paths)) == []
    assert DeploymentState.load(paths.deployments_file).cluster.address == ""
    assert not temp.exists()


def test_a_joined_cluster_is_recorded_not_started(project):
    paths, state = project
    compute = _compute().model_copy(update={"address": "ray://ray-head.example:10001"})
    outcome = ray_cluster.ensure(paths, state, compute)
    assert not outcome.started and outcome.address == "ray://ray-head.example:10001"
    assert ray_cluster.client_env(paths)["MLSTACK_RAY_ADDRESS"] == outcome.address
    assert "RAY_AUTH_TOKEN_PATH" not in ray_cluster.client_env(paths)
    assert procs.owned(ray_cluster.cluster_owner(paths)) == []
    assert Path(paths.deployments_file).is_file()
