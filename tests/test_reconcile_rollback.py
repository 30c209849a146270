"""The failure paths of reconcile and rollback, with the stand-in service of
test_supervision (no BentoML): a restart that fails, processes the record does not account
for, a foreign program on the router's port, a router table out of line with the record,
and every error rollback raises. Each error is the project's own (UsageError, StageError),
the CLI turns it into a message and an exit code, and what served before still serves."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from mlstack.cli.main import main
from mlstack.diagnostics.errors import StageError, UsageError
from mlstack.ops.local import lifecycle, procs, reconcile, services
from mlstack.ops.local.router import write_table
from mlstack.ops.local.state import DeploymentState, RouterInfo, Version, VersionStatus
from mlstack.ops.paths import ProjectPaths, project_lock
from tests import test_supervision
from tests.test_supervision import REPO, fake_start, tree, wait_for

project = test_supervision.project  # the fixture: a throwaway project, its processes stopped

# Another program on the router's port: an HTTP server that answers 200 to every GET, as
# another project's router would answer its readiness check.
FOREIGN_SERVER = r'''
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        body = b'{"backends": []}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
'''


@pytest.fixture
def foreign(tmp_path):
    """(pid, port) of a program that is not the project's: no owner marker. Stopped by PID."""
    script = tmp_path / "foreign_server.py"
    script.write_text(FOREIGN_SERVER)
    port = procs.free_port()
    env = {k: v for k, v in os.environ.items() if k != procs.OWNER_ENV}
    proc = subprocess.Popen([sys.executable, str(script), str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: procs.http_status(f"http://127.0.0.1:{port}/") == 200,
                 what="the foreign server")
        yield proc.pid, port
    finally:
        proc.kill()
        proc.wait()


def serve(project: ProjectPaths, state: DeploymentState, version: Version) -> None:
    """`version` runs under its supervisor and takes all traffic through the router."""
    fake_start(project, version, state=state)
    version.status = VersionStatus.SERVING
    if not services.router_alive(project, state):
        services.ensure_router(project, state, procs.free_port())
    services.route(project, {version.version: 100}, state)


def one_version(project: ProjectPaths) -> DeploymentState:
    """What a first deploy leaves: v1 serves behind the router; its build is kept."""
    state = DeploymentState.load(project.deployments_file)
    v1 = Version("v1", model_tag="churn:1", status=VersionStatus.SERVING)
    state.versions, state.current = [v1], "v1"
    (project.versions_dir / "v1").mkdir(parents=True)
    serve(project, state, v1)
    return state


def two_versions(project: ProjectPaths) -> DeploymentState:
    """What a second deploy leaves: v2 serves behind the router, v1 (previous) is stopped;
    both builds are kept."""
    state = DeploymentState.load(project.deployments_file)
    v1 = Version("v1", model_tag="churn:1", status=VersionStatus.STOPPED)
    v2 = Version("v2", model_tag="churn:2", status=VersionStatus.SERVING)
    state.versions, state.current, state.previous = [v1, v2], "v2", "v1"
    for v in (v1, v2):
        (project.versions_dir / v.version).mkdir(parents=True)
    serve(project, state, v2)
    return state


def start_that_fails(lingering: list[int]):
    """A start_version that fails as the real one can when it gives up waiting: the
    version's supervisor was started (marked, PID recorded, status starting) and still
    runs; its PID is appended to `lingering`."""
    def start(paths: ProjectPaths, version: Version, code_dir=None, state=None) -> None:
        version.status = VersionStatus.STARTING
        version.pid = procs.start_background(
            [sys.executable, "-c", "import time; time.sleep(120)"], cwd=REPO, env=None,
            log=paths.logs_dir / f"service-{version.version}.log",
            owner=services.version_owner(paths, version.version))
        lingering.append(version.pid)
        if state is not None:
            state.save()
        raise RuntimeError("the service did not start: not ready after 190 s\nlog tail")
    return start


def kill_supervisor(project: ProjectPaths, version: Version) -> None:
    os.kill(version.pid, signal.SIGKILL)
    wait_for(lambda: not services.supervised(project, version), what="the supervisor gone")


def assert_serves(project: ProjectPaths, name: str, processes: set[int]) -> None:
    """`name` is current and serving on record, its tree is the one it had, the router's
    table and the weights it applies send it everything, and a prediction through the
    router is answered by it."""
    on_disk = DeploymentState.load(project.deployments_file)
    assert on_disk.current == name and on_disk.get(name).status == VersionStatus.SERVING
    assert on_disk.journal == []
    assert on_disk.routes == {name: 100} == services.routed(project)
    assert services.supervised(project, on_disk.get(name))
    assert set(tree(project, name)) == processes
    assert services.live_routes(on_disk) == {name: 100}
    answer = lifecycle._predict(on_disk.router.port, [{"customer_id": 1}])
    assert answer.ok and answer.version == name, answer


def roles(project: ProjectPaths) -> set[str]:
    return {services.role_of(project, p.owner) for p in procs.owned(project.project_id)}


# -- reconcile: a dead current version whose restart fails -------------------------------------

def test_reconcile_a_restart_that_fails_is_reported_recorded_and_leaves_nothing_running(
        project, monkeypatch):
    state = one_version(project)
    lingering: list[int] = []
    monkeypatch.setattr(reconcile, "start_version", start_that_fails(lingering))
    kill_supervisor(project, state.get("v1"))
    notes = reconcile.reconcile(project, state, serve=True)
    assert notes[0].startswith("could not restart v1: the service did not start")
    assert notes[1:] == ["stopped the router: no version serves"]
    assert lingering and not any(procs.is_alive(pid) for pid in lingering)
    on_disk = DeploymentState.load(project.deployments_file)
    v1 = on_disk.get("v1")
    assert v1.status == VersionStatus.FAILED and v1.failure.startswith("restart failed:")
    # nothing serves, and nothing pretends to: no weights, no router, no process
    assert on_disk.routes == {} and services.routed(project) == {}
    assert on_disk.router.pid is None and procs.owned(project.project_id) == []
    assert on_disk.journal == [] and on_disk.current == "v1"
    assert reconcile.observe(project, on_disk).problems == []
    assert reconcile.reconcile(project, on_disk, serve=True) == []  # nothing half-done


def test_reconcile_a_dead_current_version_whose_build_is_gone_is_failed(project, monkeypatch):
    state = one_version(project)
    started: list[int] = []
    monkeypatch.setattr(reconcile, "start_version", start_that_fails(started))
    (project.versions_dir / "v1").rmdir()
    kill_supervisor(project, state.get("v1"))
    notes = reconcile.reconcile(project, state, serve=True)
    assert any(n.startswith("cannot restart v1: its build is gone") for n in notes)
    assert started == []  # nothing was started from a missing build
    on_disk = DeploymentState.load(project.deployments_file)
    assert on_disk.get("v1").status == VersionStatus.FAILED
    assert "its build is gone" in on_disk.get("v1").failure
    assert on_disk.routes == {} and procs.owned(project.project_id) == []
    assert reconcile.reconcile(project, on_disk, serve=True) == []


# -- reconcile: processes the record does not account for ---------------------------------------

def test_reconcile_stops_an_unrecorded_version_and_a_stopped_one_that_runs(project):
    state = one_version(project)
    v1_tree = set(tree(project, "v1"))
    v2 = Version("v2")
    fake_start(project, v2)
    v2.status = VersionStatus.STOPPED  # recorded stopped, yet it runs
    state.versions.append(v2)
    state.save()
    stray = procs.start_background(  # v9: a marker the record has never heard of
        [sys.executable, "-c", "import time; time.sleep(120)"], cwd=REPO, env=None,
        log=project.logs_dir / "v9.log", owner=services.version_owner(project, "v9"))
    wait_for(lambda: "version/v9" in roles(project), what="the stray process")
    problems = "\n".join(reconcile.observe(project, state).problems)
    assert "1 processes of an unrecorded version/v9 run" in problems
    assert "v2 is recorded stopped but" in problems
    notes = reconcile.reconcile(project, state, serve=True)
    assert "stopped version/v2" in notes and "stopped version/v9" in notes
    assert not procs.is_alive(stray) and tree(project, "v2") == []
    assert roles(project) == {"version/v1", "router"}
    on_disk = DeploymentState.load(project.deployments_file)
    assert [v.version for v in on_disk.versions] == ["v1", "v2"]  # v9 is not recorded
    assert on_disk.get("v2").status == VersionStatus.STOPPED
    assert_serves(project, "v1", v1_tree)
    assert reconcile.observe(project, on_disk).problems == []


def test_reconcile_stops_what_a_dead_supervisor_left_and_records_gone_versions_stopped(project):
    state = one_version(project)
    v1_tree = set(tree(project, "v1"))
    v2 = Version("v2", status=VersionStatus.READY)  # a canary whose supervisor was killed
    fake_start(project, v2)
    worker = wait_for(lambda: services.supervisor_report(project, "v2").get("worker_pids"),
                      what="v2's worker")[0]
    v3 = Version("v3", status=VersionStatus.READY, pid=v2.pid)  # its process is long gone
    state.versions += [v2, v3]
    state.save()
    kill_supervisor(project, v2)
    wait_for(lambda: tree(project, "v2") == [worker], what="v2's orphaned worker alone")
    seen = reconcile.observe(project, state)
    assert seen.versions["v2"].state == "orphaned" and seen.versions["v3"].state == "dead"
    assert "v2: 1 processes run without a supervisor" in seen.problems
    notes = reconcile.reconcile(project, state, serve=True)
    assert notes == ["stopped version/v2"]
    assert not procs.is_alive(worker)
    on_disk = DeploymentState.load(project.deployments_file)
    assert on_disk.get("v2").status == on_disk.get("v3").status == VersionStatus.STOPPED
    assert_serves(project, "v1", v1_tree)
    assert reconcile.observe(project, on_disk).problems == []


# -- reconcile: a foreign program on the router's port ------------------------------------------

def test_reconcile_neither_adopts_nor_stops_a_foreign_program_on_the_router_port(
        project, foreign):
    foreign_pid, port = foreign
    state = one_version(project)
    v1_tree = set(tree(project, "v1"))
    services.stop_router(project, state)
    # the router died; another program took its port, and even its PID
    state.router = RouterInfo(pid=foreign_pid, port=port)
    state.save()
    seen = reconcile.observe(project, state)
    assert not seen.router_alive
    assert f"the router is not running; its port {port} is taken by another program" \
        in seen.problems
    with pytest.raises(RuntimeError, match=f"port {port} .* another program"):
        reconcile.reconcile(project, state, serve=True)
    with pytest.raises(StageError, match=f"stage 'rollback' failed: port {port} .* another "):
        lifecycle.rollback(project.spec)
    assert procs.is_alive(foreign_pid)
    assert procs.http_status(f"http://127.0.0.1:{port}/-/router") == 200  # still its own
    assert "router" not in roles(project)  # none of ours was left behind
    on_disk = DeploymentState.load(project.deployments_file)
    assert on_disk.router.pid is None and on_disk.router.port == port  # not its PID
    assert on_disk.current == "v1"
    assert set(tree(project, "v1")) == v1_tree  # the version was not touched
    reconcile.reconcile(project, on_disk, serve=False)  # down: stops all of ours, not it
    assert procs.is_alive(foreign_pid) and procs.owned(project.project_id) == []


# -- reconcile: a router table out of line with the recorded weights ----------------------------

@pytest.mark.parametrize("table", ["edited", "half-written", "gone"])
def test_reconcile_rewrites_a_router_table_that_differs_from_the_recorded_weights(
        project, table):
    state = one_version(project)
    v1_tree = set(tree(project, "v1"))
    config = services.router_config(project)
    if table == "edited":
        write_table(config, [{"version": "v1", "url": services.version_url(state.get("v1")),
                              "weight": 50},
                             {"version": "v0", "url": "http://127.0.0.1:9", "weight": 50}])
        wait_for(lambda: services.live_routes(state) == {"v0": 50, "v1": 50},
                 what="the router applying the edited table")
    elif table == "half-written":
        config.write_text('{"backends": [{"version": "v1", "url": ')
    else:
        config.unlink()
    assert state.routes == {"v1": 100}  # the record is right; the table is not
    found = services.routed(project)
    differs = f"the router's table {found} differs from the recorded weights {{'v1': 100}}"
    assert differs in reconcile.observe(project, state).problems
    notes = reconcile.reconcile(project, state, serve=True)
    assert notes == [f"router table {found} rewritten to the recorded weights {{'v1': 100}}"]
    assert json.loads(config.read_text())["backends"] == [
        {"version": "v1", "url": services.version_url(state.get("v1")), "weight": 100}]
    wait_for(lambda: services.live_routes(state) == {"v1": 100}, what="the table applied")
    assert_serves(project, "v1", v1_tree)
    assert reconcile.observe(project, state).problems == []


# -- rollback: every error, and what served still serves ----------------------------------------

def test_rollback_with_no_earlier_version_is_a_usage_error(project):
    state = one_version(project)
    v1_tree = set(tree(project, "v1"))
    with pytest.raises(UsageError, match="there is no earlier version to roll back to"):
        lifecycle.rollback(project.spec)
    assert state.previous is None
    assert_serves(project, "v1", v1_tree)


def test_rollback_to_an_unknown_version_is_a_usage_error(project):
    two_versions(project)
    v2_tree = set(tree(project, "v2"))
    with pytest.raises(UsageError, match="no version v9 in this project's history"):
        lifecycle.rollback(project.spec, to="v9")
    assert_serves(project, "v2", v2_tree)
    assert DeploymentState.load(project.deployments_file).previous == "v1"


def test_rollback_to_a_version_whose_build_is_gone_is_a_usage_error(project, monkeypatch):
    two_versions(project)
    v2_tree = set(tree(project, "v2"))
    started: list[int] = []
    monkeypatch.setattr(lifecycle, "start_version", start_that_fails(started))
    (project.versions_dir / "v1").rmdir()
    with pytest.raises(UsageError, match="the build of v1 is gone"):
        lifecycle.rollback(project.spec)
    assert started == [] and tree(project, "v1") == []
    assert_serves(project, "v2", v2_tree)
    assert DeploymentState.load(project.deployments_file).get("v1").status == "stopped"


def test_rollback_to_a_version_that_does_not_start_keeps_the_current_one(project, monkeypatch):
    two_versions(project)
    v2_tree = set(tree(project, "v2"))
    lingering: list[int] = []
    monkeypatch.setattr(lifecycle, "start_version", start_that_fails(lingering))
    with pytest.raises(StageError, match="stage 'rollback' failed: v1 did not start: the "
                                         "service did not start"):
        lifecycle.rollback(project.spec)
    assert lingering and not any(procs.is_alive(pid) for pid in lingering)
    assert tree(project, "v1") == []  # nothing of the failed start is left
    assert_serves(project, "v2", v2_tree)
    on_disk = DeploymentState.load(project.deployments_file)
    assert on_disk.previous == "v1"
    assert on_disk.get("v1").status == VersionStatus.FAILED
    assert "did not start" in on_disk.get("v1").failure
    assert reconcile.observe(project, on_disk).problems == []


def test_rollback_while_another_command_holds_the_project_lock_changes_nothing(project):
    two_versions(project)
    v2_tree = set(tree(project, "v2"))
    before = project.deployments_file.read_bytes()
    with project_lock(project):  # as a deploy at work holds it
        with pytest.raises(UsageError, match="another mlstack command is working on this"):
            lifecycle.rollback(project.spec)
    assert project.deployments_file.read_bytes() == before
    assert_serves(project, "v2", v2_tree)


def test_rollback_after_down_refuses_a_router_port_another_program_holds(
        project, foreign, monkeypatch):
    foreign_pid, port = foreign
    monkeypatch.setattr(lifecycle, "start_version", fake_start)
    two_versions(project)
    lifecycle.down(project.spec)
    assert procs.owned(project.project_id) == []
    with pytest.raises(StageError, match=f"stage 'rollback' failed: port {port} .* another"):
        lifecycle.rollback(project.spec, port=port)
    assert procs.is_alive(foreign_pid)
    assert procs.owned(project.project_id) == []  # v1 was started, and stopped again
    on_disk = DeploymentState.load(project.deployments_file)
    assert on_disk.current == "v2" and on_disk.previous == "v1"
    assert on_disk.routes == {} and on_disk.router.pid is None and on_disk.journal == []
    assert on_disk.get("v1").status == VersionStatus.STOPPED  # as it was


# -- the CLI: a message and an exit code, never a traceback ---------------------------------------

def rollback_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["rollback", *args])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err and "internal error" not in out + err
    return code, out, err


def test_rollback_cli_maps_each_error_to_a_message_and_an_exit_code(project, capsys,
                                                                    monkeypatch):
    monkeypatch.delenv("MLSTACK_DEBUG", raising=False)
    spec = str(project.spec)
    code, _, err = rollback_cli(capsys, spec)
    assert code == 2 and f"error: {project.project_dir} has not been deployed" in err
    assert f"hint: run: mlstack deploy {project.spec.name}" in err
    two_versions(project)
    v2_tree = set(tree(project, "v2"))
    code, _, err = rollback_cli(capsys, spec, "--to", "v9")
    assert code == 2 and "error: no version v9 in this project's history" in err
    code, _, err = rollback_cli(capsys, spec, "--to", "v2")
    assert code == 2 and "error: v2 is the current version and runs" in err
    code, out, _ = rollback_cli(capsys, spec, "--to", "v9", "--format", "json")
    error = json.loads(out)["error"]
    assert error["code"] == "usage_error" and error["exit_code"] == 2
    assert error["message"] == "no version v9 in this project's history"
    monkeypatch.setattr(lifecycle, "start_version", start_that_fails([]))
    code, _, err = rollback_cli(capsys, spec)
    assert code == 1 and "error: stage 'rollback' failed: v1 did not start" in err
    with project_lock(project):
        code, _, err = rollback_cli(capsys, spec)
    assert code == 2 and "error: another mlstack command is working on this project" in err
    assert_serves(project, "v2", v2_tree)
