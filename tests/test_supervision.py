"""Supervision, the state journal and reconcile, with stand-in processes (no BentoML).

A stand-in for `bentoml serve` answers /readyz and starts a "worker" that leaves its session
with setsid, as BentoML's workers do. Every process a test starts carries a test-only owner
marker and is stopped by the test (by PID and by marker) whatever happens.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import uuid
from pathlib import Path

import pytest

from mlstack.ops.local import procs, reconcile, services
from mlstack.ops.local.state import DeploymentState, Version, VersionStatus
from mlstack.ops.paths import ProjectPaths

REPO = Path(__file__).resolve().parent.parent

FAKE_SERVE = r'''
import os, subprocess, sys, time
from http.server import BaseHTTPRequestHandler, HTTPServer

if sys.argv[2:] == ["worker"]:
    os.setsid()  # as BentoML's workers (circus) do: out of the parent's session
    while True:
        time.sleep(1)
port = int(sys.argv[1])
subprocess.Popen([sys.executable, __file__, str(port), "worker"])


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Length", "5")
        self.end_headers()
        self.wfile.write(b"[0.5]")


HTTPServer(("127.0.0.1", port), Handler).serve_forever()
'''


def wait_for(predicate, timeout: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def throwaway_project(tmp_path, monkeypatch, fake_serve: str = FAKE_SERVE):
    """(a generator fixture body) A project folder with its own MLSTACK_HOME and its stand-in
    service; its id is unique to the test. Teardown stops every process carrying the
    project's marker and asserts none is left."""
    monkeypatch.setenv("MLSTACK_HOME", str(tmp_path / "home"))
    folder = tmp_path / f"proj-{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    (folder / "fake_serve.py").write_text(fake_serve)
    paths = ProjectPaths.for_spec(folder / "mlstack.yaml")
    paths.state_dir.mkdir(parents=True)
    yield paths
    assert procs.stop_owned(paths.project_id) == []
    assert procs.owned(paths.project_id) == []


@pytest.fixture
def project(tmp_path, monkeypatch):
    yield from throwaway_project(tmp_path, monkeypatch)


def fake_start(paths: ProjectPaths, version: Version, code_dir: Path = None,
               state: DeploymentState | None = None) -> None:
    """services.start_version with the stand-in service under the real supervisor."""
    port = version.port if version.port and procs.port_is_free(version.port) \
        else procs.free_port()
    status = services.supervisor_file(paths, version.version)
    status.parent.mkdir(parents=True, exist_ok=True)
    status.unlink(missing_ok=True)
    log = paths.logs_dir / f"service-{version.version}.log"
    argv = [sys.executable, "-m", "mlstack.ops.local.supervisor", "--status", str(status),
            "--port", str(port), "--log", str(log), "--ready-timeout", "20",
            "--unhealthy-after", "5", "--", sys.executable,
            str(paths.project_dir / "fake_serve.py"), str(port)]
    version.port = port
    version.pid = procs.start_background(argv, cwd=REPO, env=None, log=log,
                                         owner=services.version_owner(paths, version.version))
    wait_for(lambda: services.supervisor_report(paths, version.version).get("state")
             == "ready", what=f"{version.version} ready")
    version.status = VersionStatus.READY
    if state is not None:
        state.save()


def tree(paths: ProjectPaths, version: str) -> list[int]:
    return [p.pid for p in services.version_tree(paths, version)]


# -- the supervisor -----------------------------------------------------------------------

def test_supervisor_restarts_a_killed_serve_process_and_stops_its_orphaned_worker(project):
    v1 = Version("v1")
    fake_start(project, v1)
    report = services.supervisor_report(project, "v1")
    serve, supervisor = report["serve_pid"], v1.pid
    worker = wait_for(lambda: services.supervisor_report(project, "v1").get("worker_pids"),
                      what="the worker seen")[0]
    assert set(tree(project, "v1")) == {supervisor, serve, worker}
    os.kill(serve, signal.SIGKILL)  # the worker (own session) would keep running alone
    wait_for(lambda: services.supervisor_report(project, "v1").get("restarts") == 1
             and services.supervisor_report(project, "v1").get("state") == "ready",
             what="the restart")
    report = services.supervisor_report(project, "v1")
    assert "exited" in report["reason"] and report["serve_pid"] != serve
    assert not procs.is_alive(worker)  # found by its marker, not by its parent
    assert procs.http_status(f"http://127.0.0.1:{v1.port}/readyz") == 200
    assert services.stop_version(project, v1) == []
    assert tree(project, "v1") == []


def test_a_killed_supervisor_takes_its_serve_process_and_down_finds_the_rest(project):
    v1 = Version("v1")
    fake_start(project, v1)
    serve = services.supervisor_report(project, "v1")["serve_pid"]
    os.kill(v1.pid, signal.SIGKILL)
    wait_for(lambda: not procs.is_alive(serve), what="the parent-death signal")
    # the worker left the session: only its marker finds it
    left = wait_for(lambda: tree(project, "v1"), what="the orphaned worker")
    assert serve not in left and v1.pid not in left
    state = DeploymentState(versions=[v1], current="v1")
    state.save(project.deployments_file)
    seen = reconcile.observe(project, state)
    assert seen.versions["v1"].state == "orphaned"
    assert any("v1 (current) is orphaned" in p for p in seen.problems)
    reconcile.reconcile(project, state, serve=False)
    assert tree(project, "v1") == []


# -- the journal --------------------------------------------------------------------------

def test_the_journal_records_intent_before_the_action_and_its_result_after(tmp_path):
    path = tmp_path / "deployments.json"
    state = DeploymentState.load(path)
    with pytest.raises(RuntimeError), state.action("start", version="v1"):
        on_disk = DeploymentState.load(path)
        assert [e["action"] for e in on_disk.journal] == ["start"]  # saved before acting
        raise RuntimeError("boom")
    on_disk = DeploymentState.load(path)
    assert on_disk.journal == []
    assert on_disk.history[-1]["event"] == "start" and on_disk.history[-1]["ok"] is False
    assert on_disk.history[-1]["error"] == "boom"


def test_a_state_file_without_journal_fields_still_loads(tmp_path):
    path = tmp_path / "deployments.json"
    path.write_text(json.dumps({"versions": [{"version": "v1", "status": "serving"}],
                                "current": "v1", "router": {"pid": None, "port": 3000}}))
    state = DeploymentState.load(path)
    assert state.routes == {} and state.journal == [] and state.deploy == {}
    assert state.router.limits == {}


# -- reconcile ----------------------------------------------------------------------------

def interrupted_canary(project: ProjectPaths) -> DeploymentState:
    """What `mlstack deploy` killed with SIGKILL mid-canary leaves: v1 current, v2 running
    and recorded at 5% (routes saved before the table), the deploy entry, a journal entry,
    and an orphaned training worker."""
    state = DeploymentState.load(project.deployments_file)
    v1, v2 = Version("v1", status=VersionStatus.SERVING), Version("v2")
    state.versions = [v1, v2]
    state.current = "v1"
    fake_start(project, v1, state=state)
    fake_start(project, v2, state=state)
    v1.status = VersionStatus.SERVING
    services.ensure_router(project, state, procs.free_port())
    services.route(project, {"v1": 95, "v2": 5}, state)
    dead = procs.start_background([sys.executable, "-c", "pass"], cwd=REPO, env=None,
                                  log=project.logs_dir / "x.log")
    wait_for(lambda: not procs.is_alive(dead), what="a dead pid")
    state.deploy = {"version": "v2", "pid": dead, "stage": "rollout"}
    state.begin("stop", version="v1")
    procs.start_background([sys.executable, "-c", "import time; time.sleep(120)"], cwd=REPO,
                           env=None, log=project.logs_dir / "worker.log",
                           owner=services.worker_owner(project, "train"))
    state.save()
    return state


def test_status_tells_an_interrupted_canary_as_it_is(project):
    state = interrupted_canary(project)
    seen = reconcile.observe(project, state)
    assert not seen.deploy_running
    text = "\n".join(seen.problems)
    assert "the deploy of v2 was interrupted during rollout" in text
    assert "worker/train run with no deploy at work" in text
    assert seen.table == state.routes == {"v1": 95, "v2": 5}
    assert services.live_routes(state) == {"v1": 95, "v2": 5}
    assert seen.versions["v2"].state == "ready" and seen.versions["v1"].state == "serving"


def test_reconcile_closes_an_interrupted_deploy_and_leaves_no_orphan(project):
    state = interrupted_canary(project)
    v1_tree = set(tree(project, "v1"))
    notes = reconcile.reconcile(project, state, serve=True)
    assert any("interrupted during rollout" in n for n in notes)
    on_disk = DeploymentState.load(project.deployments_file)
    assert on_disk.get("v2").status == VersionStatus.FAILED
    assert "interrupted during rollout" in on_disk.get("v2").failure
    assert on_disk.deploy == {} and on_disk.journal == []
    assert on_disk.routes == {"v1": 100} == services.routed(project)
    assert services.live_routes(on_disk) == {"v1": 100}
    roles = {services.role_of(project, p.owner) for p in procs.owned(project.project_id)}
    assert roles == {"version/v1", "router"}  # no worker, no v2
    assert set(tree(project, "v1")) == v1_tree  # the serving version was not touched
    assert reconcile.observe(project, on_disk).problems == []
    assert reconcile.reconcile(project, on_disk, serve=True) == []  # idempotent


def test_reconcile_restarts_a_dead_current_version(project, monkeypatch):
    monkeypatch.setattr(reconcile, "start_version", fake_start)
    state = DeploymentState.load(project.deployments_file)
    v1 = Version("v1", status=VersionStatus.SERVING)
    state.versions, state.current = [v1], "v1"
    fake_start(project, v1, state=state)
    v1.status = VersionStatus.SERVING
    services.ensure_router(project, state, procs.free_port())
    services.route(project, {"v1": 100}, state)
    (project.versions_dir / "v1").mkdir(parents=True)
    os.kill(v1.pid, signal.SIGKILL)
    wait_for(lambda: not services.supervised(project, v1), what="the supervisor gone")
    assert reconcile.observe(project, state).versions["v1"].state in ("dead", "orphaned")
    notes = reconcile.reconcile(project, state, serve=True)
    assert any(n.startswith("restarted v1") for n in notes)
    assert services.supervised(project, v1) and state.get("v1").status == "serving"
    assert procs.http_post_json(f"http://127.0.0.1:{state.router.port}/predict", {})[0] == 200


def test_down_stops_every_process_of_the_project_by_marker(project):
    state = interrupted_canary(project)
    # two versions (supervisor, service, its worker), the router and the training worker:
    # the last ones just started (a busy machine found 7 of the 8 at once)
    wait_for(lambda: len(procs.owned(project.project_id)) >= 8, what="8 processes",
             timeout=20.0)
    reconcile.reconcile(project, state, serve=False)
    assert procs.owned(project.project_id) == []
    on_disk = DeploymentState.load(project.deployments_file)
    assert on_disk.routes == {} and on_disk.router.pid is None
    assert all(v.status not in ("serving", "ready", "starting") for v in on_disk.versions)


def test_rollback_to_the_current_version_restarts_it_when_dead(project, monkeypatch):
    from mlstack.diagnostics.errors import UsageError
    from mlstack.ops.local import lifecycle

    monkeypatch.setattr(lifecycle, "start_version", fake_start)
    state = DeploymentState.load(project.deployments_file)
    v1 = Version("v1", status=VersionStatus.SERVING, example_rows=[{"customer_id": 1}])
    state.versions, state.current = [v1], "v1"
    fake_start(project, v1, state=state)
    v1.status = VersionStatus.SERVING
    services.ensure_router(project, state, procs.free_port())
    services.route(project, {"v1": 100}, state)
    (project.versions_dir / "v1").mkdir(parents=True)
    with pytest.raises(UsageError, match="is the current version and runs"):
        lifecycle.rollback(project.spec, to="v1")
    os.kill(v1.pid, signal.SIGKILL)
    wait_for(lambda: not services.supervised(project, v1), what="the supervisor gone")
    report = lifecycle.status(project.spec)
    assert report.healthy is False
    assert any("v1 (current) is" in p for p in report.problems)
    result = lifecycle.rollback(project.spec, to="v1")
    assert result.restarted and result.to_version == "v1"
    report = lifecycle.status(project.spec)
    assert report.healthy is True, report.problems
    assert report.prediction.ok and report.prediction.version == "v1"
    assert report.live_routes == {"v1": 100}
