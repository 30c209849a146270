"""The project keeper (mlstack.ops.local.keeper), as a real process against test_supervision's
stand-in service (no BentoML): it restarts a killed version supervisor and a killed router
without a command, rolls back a canary whose deploy died, does nothing while a command holds
the project lock, stays stopped after `down`, and is itself restarted by a version's
supervisor when killed.

The keeper restarts a version with the real services.start_version (it runs in its own
process, out of a monkeypatch's reach): the version's build holds a `bentoml` package that
runs the stand-in service, found first on the PYTHONPATH the build folder leads. Every
process is stopped by the throwaway project's teardown, by marker."""

from __future__ import annotations

import os
import signal
import threading
import time
import urllib.error
import urllib.request

import pytest

from mlstack.diagnostics.errors import UsageError
from mlstack.ops.local import keeper, lifecycle, procs, services
from mlstack.ops.local.state import DeploymentState, Version, VersionStatus
from mlstack.ops.paths import ProjectPaths, project_lock
from tests import test_supervision
from tests.test_supervision import interrupted_canary, tree, wait_for

project = test_supervision.project  # the fixture: a throwaway project, its processes stopped
REPAIR_LIMIT = 60.0  # seconds a repair may take on a busy machine (a pass is every 2 s)

# `python -m bentoml serve TARGET --host H --port P` in a stand-in build: the stand-in service
STAND_IN_BENTOML = r'''
import runpy, sys
from pathlib import Path

port = sys.argv[sys.argv.index("--port") + 1]
script = str(Path(__file__).resolve().parents[4] / "fake_serve.py")
sys.argv = [script, port]
runpy.run_path(script, run_name="__main__")
'''


def stand_in_build(paths: ProjectPaths, version: str) -> None:
    """The version's kept build: a bentofile naming a service, and the stand-in `bentoml`."""
    code = paths.versions_dir / version
    (code / "service").mkdir(parents=True)
    (code / "service" / "bentofile.yaml").write_text("service: service:StandIn\n")
    (code / "bentoml").mkdir()
    (code / "bentoml" / "__init__.py").write_text("")
    (code / "bentoml" / "__main__.py").write_text(STAND_IN_BENTOML)


def serving(paths: ProjectPaths) -> DeploymentState:
    """What a first deploy leaves: v1 serves behind the router, and the keeper runs."""
    state = DeploymentState.load(paths.deployments_file)
    v1 = Version("v1", model_tag="churn:1")
    state.versions, state.current = [v1], "v1"
    stand_in_build(paths, "v1")
    services.start_version(paths, v1, paths.versions_dir / "v1", state)
    v1.status = VersionStatus.SERVING
    services.ensure_router(paths, state, procs.free_port())
    services.route(paths, {"v1": 100}, state)
    assert keeper.ensure_running(paths)
    wait_for(lambda: keeper.status_report(paths)["passes"] >= 1, what="a keeper pass")
    return state


def answers(paths: ProjectPaths, version: str) -> bool:
    state = DeploymentState.load(paths.deployments_file)
    answer = lifecycle._predict(state.router.port, [{"customer_id": 1}])
    return answer.ok and answer.version == version


def repairs(paths: ProjectPaths) -> list[dict]:
    history = DeploymentState.load(paths.deployments_file).history
    return [h for h in history if h["event"] == "keeper-repair"]


def test_the_keeper_restarts_a_killed_version_supervisor_and_a_killed_router(project):
    state = serving(project)
    old = state.get("v1").pid
    os.kill(old, signal.SIGKILL)
    wait_for(lambda: (lambda v: v.pid != old and services.supervised(project, v))(
        DeploymentState.load(project.deployments_file).get("v1")), REPAIR_LIMIT,
        "v1 restarted by the keeper")
    wait_for(lambda: answers(project, "v1"), REPAIR_LIMIT, "v1 answering through the router")
    wait_for(lambda: any("v1's supervisor is gone" in r for h in repairs(project)
                         for r in h["reasons"]), 10, "the repair in the journal")
    router, port = state.router.pid, state.router.port
    os.kill(router, signal.SIGKILL)
    wait_for(lambda: (lambda s: s.router.pid != router and services.router_alive(project, s))(
        DeploymentState.load(project.deployments_file)), REPAIR_LIMIT, "the router restarted")
    on_disk = DeploymentState.load(project.deployments_file)
    assert on_disk.router.port == port  # on its recorded port
    wait_for(lambda: answers(project, "v1"), REPAIR_LIMIT, "v1 answering again")
    wait_for(lambda: any("the router is not running" in r for h in repairs(project)
                         for r in h["reasons"]), 10, "the repair in the journal")
    # the keeper writes its status file at the end of the pass that wrote the journal
    report = wait_for(lambda: (lambda r: r if len(r["repairs"]) >= 2 else None)(
        keeper.status_report(project)), 10, "both repairs in the keeper's status")
    assert report["running"] and report["wanted"]
    assert report["problem"] == ""


def test_a_failed_restart_keeps_the_router_answering_503_and_is_tried_again(project):
    state = serving(project)
    main = project.versions_dir / "v1" / "bentoml" / "__main__.py"
    main.write_text("raise SystemExit('the stand-in cannot start')\n")
    old = state.get("v1").pid
    os.kill(old, signal.SIGKILL)
    wait_for(lambda: any(d.startswith("could not restart v1") for h in repairs(project)
                         for d in h["done"]), REPAIR_LIMIT, "a restart that failed")
    on_disk = DeploymentState.load(project.deployments_file)
    assert on_disk.get("v1").status == VersionStatus.SERVING  # still the one to serve
    assert services.router_alive(project, on_disk)  # clients get the router's 503, not refusals
    status, headers = None, None
    try:
        urllib.request.urlopen(urllib.request.Request(
            f"http://127.0.0.1:{on_disk.router.port}/predict", data=b'{"rows": []}',
            headers={"Content-Type": "application/json"}), timeout=10)
    except urllib.error.HTTPError as exc:
        status, headers = exc.code, exc.headers
    assert status == 503 and headers.get("Retry-After"), status
    main.write_text(STAND_IN_BENTOML)  # the cause goes away: the next try brings v1 back
    wait_for(lambda: answers(project, "v1"), REPAIR_LIMIT, "v1 answering after a retry")


def test_the_keeper_rolls_back_a_canary_whose_deploy_died(project):
    state = interrupted_canary(project)  # v1 95%, v2 5%, the deploy's PID dead
    v1_tree = set(tree(project, "v1"))
    keeper.ensure_running(project)

    def rolled_back() -> DeploymentState | None:
        on_disk = DeploymentState.load(project.deployments_file)
        done = any(h["event"] == "keeper-repair" for h in on_disk.history)
        return on_disk if done and on_disk.routes == {"v1": 100} else None

    on_disk = wait_for(rolled_back, REPAIR_LIMIT, "the canary rolled back")
    assert services.routed(project) == {"v1": 100}
    assert services.live_routes(on_disk) == {"v1": 100}
    assert on_disk.get("v2").status == VersionStatus.FAILED
    assert "interrupted during rollout" in on_disk.get("v2").failure
    events = [h["event"] for h in on_disk.history]
    assert "canary-rolled-back" in events and "keeper-repair" in events
    undone = next(h for h in on_disk.history if h["event"] == "canary-rolled-back")
    assert undone["version"] == "v2" and undone["weight"] == 5 and undone["to"] == "v1"
    wait_for(lambda: tree(project, "v2") == [], 30, "v2 stopped")
    roles = {services.role_of(project, p.owner) for p in procs.owned(project.project_id)}
    assert roles == {"version/v1", "router", "keeper"}  # the orphaned worker stopped too
    assert set(tree(project, "v1")) == v1_tree and state.get("v1").pid in v1_tree


def test_the_keeper_repairs_nothing_while_a_command_holds_the_lock(project):
    state = serving(project)
    with project_lock(project):  # as a deploy at work holds it
        os.kill(state.get("v1").pid, signal.SIGKILL)
        wait_for(lambda: not services.supervised(project, state.get("v1")), 10,
                 "the supervisor gone")
        passes = keeper.status_report(project)["passes"]
        wait_for(lambda: keeper.status_report(project)["passes"] >= passes + 3, 30,
                 "three keeper passes")
        on_disk = DeploymentState.load(project.deployments_file)
        assert on_disk.get("v1").pid == state.get("v1").pid  # nothing restarted
        assert repairs(project) == []
    wait_for(lambda: services.supervised(
        project, DeploymentState.load(project.deployments_file).get("v1")), REPAIR_LIMIT,
        "v1 restarted once the lock is free")


def test_a_command_waits_for_the_keepers_repair_but_not_for_another_command(project):
    held = threading.Event()

    def hold(holder: str) -> threading.Thread:
        def run() -> None:
            with project_lock(project, holder=holder):
                held.set()
                time.sleep(1.5)
        held.clear()
        thread = threading.Thread(target=run)
        thread.start()
        assert held.wait(10)
        return thread

    thread = hold("keeper")
    with project_lock(project):  # waits for the keeper's repair, then works
        assert not thread.is_alive()
    thread.join()
    thread = hold("command")
    with pytest.raises(UsageError, match="another mlstack command"):
        with project_lock(project):
            pass
    thread.join()


def test_a_killed_keeper_is_restarted_by_the_version_supervisor(project):
    serving(project)
    first = keeper.status_report(project)["pid"]
    os.kill(first, signal.SIGKILL)
    again = wait_for(lambda: (lambda r: r["pid"] if r["running"] and r["pid"] != first
                              else None)(keeper.status_report(project)),
                     REPAIR_LIMIT, "a new keeper")
    assert procs.is_owned(again, keeper.owner(project))
    assert services.supervisor_report(project, "v1").get("keeper_starts", 0) >= 1


def test_a_stopped_keeper_stays_stopped_and_down_stops_it_first(project):
    serving(project)
    assert keeper.stop(project) == []
    time.sleep(2 * 5.0 + 2)  # two of the supervisor's keeper checks
    assert keeper.running(project) == [] and not keeper.status_report(project)["wanted"]
    assert keeper.ensure_running(project)  # a deploy or rollback wants it again
    wait_for(lambda: keeper.status_report(project)["running"], 10, "the keeper")
    result = lifecycle.down(project.spec)
    assert result.still_alive == [] and procs.owned(project.project_id) == []
    assert keeper.wanted(project.state_dir) is None  # no supervisor would start it again
    time.sleep(3)
    assert procs.owned(project.project_id) == []
