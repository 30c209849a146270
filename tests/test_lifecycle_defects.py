"""Issue 21's smaller lifecycle defects, with the stand-in service of test_supervision (no
BentoML): compile honours the project lock, a rollback after `down` serves on the port
deployed (or --port), status after `down` says nothing serves, a version whose readiness probe
fails is not shown ready, and a flow server a killed deploy left behind is stopped."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from mlstack.cli.main import main
from mlstack.ops.local import lifecycle, procs, services
from mlstack.ops.local.state import DeploymentState, Version, VersionStatus
from mlstack.ops.paths import ProjectPaths, project_lock
from tests import test_supervision
from tests.conftest import BLUEPRINTS
from tests.test_reconcile_rollback import two_versions
from tests.test_supervision import REPO, fake_start, wait_for

project = test_supervision.project  # the fixture: a throwaway project, its processes stopped

# A service whose readiness probe fails: every GET is a 503, as BentoML answers /readyz while
# its runner cannot load the model.
UNREADY_SERVER = r'''
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        body = b'{"error": "not ready"}'
        self.send_response(503)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
'''

# What a deploy killed during training leaves: the worker's child (Prefect's temporary API
# server, uvicorn) outlives it, reparented to PID 1, with the worker's environment.
ORPHAN_LAUNCHER = ("import subprocess, sys; subprocess.Popen([sys.executable, '-c', "
                   "'import time; time.sleep(300)'], start_new_session=True, "
                   "stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, "
                   "stderr=subprocess.DEVNULL)")


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err and "internal error" not in out + err
    return code, out, err


# -- compile and the project lock -------------------------------------------------------------

def test_compile_while_another_command_holds_the_project_lock_refuses_and_writes_nothing(
        project, capsys, monkeypatch):
    monkeypatch.delenv("MLSTACK_DEBUG", raising=False)
    shutil.copy(BLUEPRINTS / "churn" / "mlstack.yaml", project.spec)
    with project_lock(project):  # as a deploy at work holds it
        code, out, err = cli(capsys, "compile", str(project.spec))
        assert code == 2 and "error: another mlstack command is working on this project" in err
        code, out, _ = cli(capsys, "compile", str(project.spec), "--format", "json")
        assert code == 2 and json.loads(out)["error"]["code"] == "usage_error"
    assert not project.build_dir.exists()
    assert cli(capsys, "compile", str(project.spec))[0] == 0  # the lock released: it writes
    assert (project.build_dir / "mlstack.lock.json").is_file()


def test_the_refusal_names_who_holds_the_project_lock(project, capsys, monkeypatch):
    """A scheduled retrain holds the project for minutes: `mlstack down` (or a deploy) told
    only "another command" could not tell what to wait for."""
    import os

    from mlstack.ops.local.retrain import LOCK_HOLDER

    monkeypatch.delenv("MLSTACK_DEBUG", raising=False)
    shutil.copy(BLUEPRINTS / "churn" / "mlstack.yaml", project.spec)
    with project_lock(project, holder=LOCK_HOLDER):
        code, _, err = cli(capsys, "compile", str(project.spec))
    assert code == 2, err
    assert (f"error: another mlstack command is working on this project (a scheduled "
            f"retrain, pid {os.getpid()})") in err, err
    assert "mlstack status shows" in err


def test_compile_of_a_project_never_deployed_writes_only_its_output_folder(tmp_path, capsys):
    spec = tmp_path / "churn" / "mlstack.yaml"
    spec.parent.mkdir()
    shutil.copy(BLUEPRINTS / "churn" / "mlstack.yaml", spec)
    assert cli(capsys, "compile", str(spec))[0] == 0
    assert sorted(p.name for p in spec.parent.iterdir()) == ["build", "mlstack.yaml"]


# A scheduled retrain at work: it holds the project lock as "retrain" and waits (its canary)
RETRAIN_HOLDING_THE_LOCK = (
    "import sys, time; from pathlib import Path; from mlstack.ops.paths import ProjectPaths, "
    "project_lock, RETRAIN_HOLDER\n"
    "with project_lock(ProjectPaths.for_spec(sys.argv[1]), holder=RETRAIN_HOLDER):\n"
    "    Path(sys.argv[2]).write_text('held')\n"
    "    time.sleep(300)\n")


def test_down_stops_a_scheduled_retrain_that_holds_the_project(project, monkeypatch, capsys):
    """Down means down: a retrain holds the project for minutes (train, gates, canary); down
    stops it, by the PID the lock file names, and then everything else."""
    monkeypatch.setattr(lifecycle, "start_version", fake_start)
    two_versions(project)
    held = project.state_dir / "held-by-test"
    env = {**os.environ, procs.OWNER_ENV: f"{project.project_id}/sidecar/airflow-retrain",
           "PYTHONPATH": str(REPO)}
    retrain = subprocess.Popen([sys.executable, "-c", RETRAIN_HOLDING_THE_LOCK,
                                str(project.spec), str(held)], env=env)
    try:
        wait_for(held.is_file, 20.0)
        code, out, err = cli(capsys, "down", str(project.spec))
        assert code == 0, out + err
        assert retrain.wait(timeout=15) is not None  # stopped, not left to finish
        assert f"scheduled retrain (pid {retrain.pid})" in out, out
        assert procs.owned(project.project_id) == []
        # a process that is not the project's is not stopped: the lock's refusal names it
        stranger = subprocess.Popen([sys.executable, "-c", RETRAIN_HOLDING_THE_LOCK,
                                     str(project.spec), str(held) + "2"],
                                    env={**env, procs.OWNER_ENV: "someone-else/x"})
        try:
            wait_for(lambda: Path(str(held) + "2").is_file(), 20.0)
            code, out, err = cli(capsys, "down", str(project.spec))
            assert code == 2 and f"(a scheduled retrain, pid {stranger.pid})" in err, err
            assert stranger.poll() is None
        finally:
            stranger.kill()
            stranger.wait()
    finally:
        if retrain.poll() is None:
            retrain.kill()
            retrain.wait()


# -- rollback and status after down ------------------------------------------------------------

def test_rollback_after_down_serves_on_the_port_deployed(project, monkeypatch):
    monkeypatch.setattr(lifecycle, "start_version", fake_start)
    state = two_versions(project)
    port = state.router.port
    lifecycle.down(project.spec)
    assert procs.owned(project.project_id) == []
    on_disk = DeploymentState.load(project.deployments_file)
    assert on_disk.router.pid is None and on_disk.router.port == port  # kept, not serving
    result = lifecycle.rollback(project.spec)
    assert result.to_version == "v1" and result.endpoint == f"http://127.0.0.1:{port}"
    assert procs.http_post_json(f"http://127.0.0.1:{port}/predict", {})[0] == 200


def test_rollback_port_option_moves_the_router(project, monkeypatch, capsys):
    monkeypatch.setattr(lifecycle, "start_version", fake_start)
    two_versions(project)
    lifecycle.down(project.spec)
    port = procs.free_port()
    code, out, _ = cli(capsys, "rollback", str(project.spec), "--port", str(port))
    assert code == 0 and f"at http://127.0.0.1:{port}" in out
    assert DeploymentState.load(project.deployments_file).router.port == port
    assert procs.http_post_json(f"http://127.0.0.1:{port}/predict", {})[0] == 200


def test_status_after_down_says_nothing_serves(project, capsys):
    two_versions(project)
    lifecycle.down(project.spec)
    result = lifecycle.status(project.spec)
    assert result.serving is None and result.current == "v2" and not result.healthy
    code, out, _ = cli(capsys, "status", str(project.spec))
    headline = out.splitlines()[0]
    assert code == 1 and "serving v2" not in headline
    assert "nothing serves (v2 deployed last, stopped)" in headline
    code, out, _ = cli(capsys, "status", str(project.spec), "--format", "json")
    doc = json.loads(out)
    assert code == 1 and doc["serving"] is None and doc["current"] == "v2"
    assert doc["endpoint"] is None


def test_status_while_serving_names_the_version_and_its_endpoint(project, capsys):
    state = two_versions(project)
    result = lifecycle.status(project.spec)
    assert result.serving == "v2"
    code, out, _ = cli(capsys, "status", str(project.spec))
    assert f"serving v2 at http://127.0.0.1:{state.router.port}" in out.splitlines()[0]


# -- a version's readiness is observed ---------------------------------------------------------

def test_a_version_whose_readiness_probe_fails_is_not_shown_ready(project, tmp_path):
    """Its supervisor runs and last reported ready, but the service answers /readyz 503:
    the row says unready, with the answer, and the project is not healthy."""
    script = tmp_path / "unready_server.py"
    script.write_text(UNREADY_SERVER)
    state = DeploymentState.load(project.deployments_file)
    port = procs.free_port()
    v1 = Version("v1", model_tag="churn:1", status=VersionStatus.SERVING, port=port)
    state.versions, state.current = [v1], "v1"
    v1.pid = procs.start_background([sys.executable, str(script), str(port)], cwd=REPO,
                                    env=None, log=project.logs_dir / "service-v1.log",
                                    owner=services.version_owner(project, "v1"))
    report = services.supervisor_file(project, "v1")
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(json.dumps({"state": "ready", "restarts": 0}))
    state.save()
    wait_for(lambda: procs.http_status(f"http://127.0.0.1:{port}/readyz") == 503,
             what="the unready service")
    result = lifecycle.status(project.spec)
    (row,) = result.versions
    assert row.alive and row.ready is False and row.status == "unready"
    assert "503" in row.probe
    assert any("v1" in p and "503" in p for p in result.problems) and not result.healthy


def test_a_ready_version_is_shown_ready_from_its_probe(project):
    state = two_versions(project)
    rows = {v.version: v for v in lifecycle.status(project.spec).versions}
    assert rows["v2"].ready is True and rows["v2"].status == "serving"
    assert rows["v2"].probe == "200" and rows["v1"].ready is None
    assert state.current == "v2"


# -- a flow server a killed deploy left behind -------------------------------------------------

def orphaned_worker_child(paths: ProjectPaths) -> int:
    """A long-running process carrying the project's marker with the train worker's role,
    reparented to PID 1 (its parent exited), as Prefect's temporary API server is when the
    deploy (and with it the worker) is killed during training."""
    env = {**os.environ, procs.OWNER_ENV: services.worker_owner(paths, "train")}
    subprocess.run([sys.executable, "-c", ORPHAN_LAUNCHER], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
    (found,) = wait_for(lambda: procs.owned(services.worker_owner(paths, "train")),
                        what="the orphaned worker child")
    return found.pid


def test_status_stops_a_worker_child_left_by_a_killed_deploy(project):
    two_versions(project)
    orphan = orphaned_worker_child(project)
    with project_lock(project):  # a deploy at work: its workers are its own
        lifecycle.status(project.spec)
        assert procs.is_alive(orphan)
    result = lifecycle.status(project.spec)
    assert not procs.is_alive(orphan)
    assert procs.owned(services.worker_owner(project, "train")) == []
    assert any(n.startswith("stopped worker/train") for n in result.reconciled)
    assert not any("worker/train" in p for p in result.problems)
    assert services.supervised(project, DeploymentState.load(
        project.deployments_file).get("v2"))  # what serves is left alone
