"""The Ray cluster supervisor's status file, without Ray: what it says is what its nodes are.

The status file is what `mlstack status` and deploy read (ops/local/ray_cluster.report). A
report written while a node waits out its backoff must not say ready: CI once read `ready`
with worker-1 in backoff (no PID), because the restart was reported under the old state.
The nodes here are stand-ins whose state is set by hand; no process is started.
"""

from __future__ import annotations

import json
from argparse import Namespace

from mlstack.ops.local.ray_supervisor import ClusterSupervisor


def _supervisor(tmp_path, workers: int = 2) -> ClusterSupervisor:
    args = Namespace(status=str(tmp_path / "status.json"), port=6379, workers=workers, cpu=1.0,
                     memory_bytes=2**30, temp_dir=str(tmp_path / "ray"),
                     logs=str(tmp_path / "logs"))
    return ClusterSupervisor(args)


def _status(tmp_path) -> dict:
    return json.loads((tmp_path / "status.json").read_text())


def test_never_ready_is_starting_then_ready_when_every_node_runs(tmp_path):
    sup = _supervisor(tmp_path)
    sup.head.state = "running"
    sup.report()
    assert _status(tmp_path)["state"] == "starting"
    for node in sup.workers:
        node.state = "running"
    sup.report()
    status = _status(tmp_path)
    assert status["state"] == "ready"
    assert [n["state"] for n in status["nodes"]] == ["running"] * 3


def test_a_restart_is_reported_as_restarting_not_under_the_old_ready(tmp_path):
    sup = _supervisor(tmp_path)
    for node in sup.nodes():
        node.state = "running"
    sup.report()
    assert _status(tmp_path)["state"] == "ready"
    victim = sup.workers[0]
    sup.schedule(victim, "worker-1 exited (code -9)")
    status = _status(tmp_path)
    assert status["state"] == "restarting" and status["reason"] == "worker-1 exited (code -9)"
    worker = next(n for n in status["nodes"] if n["name"] == "worker-1")
    assert worker == {"name": "worker-1", "pid": None, "state": "backoff", "restarts": 1}
    victim.state = "running"
    sup.report()
    assert _status(tmp_path)["state"] == "ready"


def test_the_head_gets_its_own_client_server_port_at_each_start(tmp_path):
    sup = _supervisor(tmp_path)
    first, second = sup.head.ports(), sup.head.ports()
    assert all(o.startswith("--ray-client-server-port=") for o in (*first, *second))
    assert all(node.ports is None for node in sup.workers)


def test_an_explicit_state_is_kept(tmp_path):
    sup = _supervisor(tmp_path, workers=1)
    for node in sup.nodes():
        node.state = "running"
    sup.report("stopping")
    assert _status(tmp_path)["state"] == "stopping"
