"""The scheduler's declarations and its reading of Prefect's REST API, without a real server:
what the two sidecars run as (loopback, the database in the project's state, telemetry and
the unused services off, the runner on the serving version's folder), that a declaration does
not change with the caller's environment, the schedules as the runner registers them, and
status_report and `mlstack run`'s follower against a stand-in API (the real server runs in
tests/engine/test_schedules.py)."""

from __future__ import annotations

import json
import os
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from mlstack.ops.local import procs, run_follow, scheduler, served_run, sidecars
from mlstack.ops.local.schedule_runner import ANCHOR, RUNS_ROLE, schedule_objects
from mlstack.ops.local.state import DeploymentState, Version, VersionStatus
from mlstack.ops.paths import ProjectPaths


@pytest.fixture
def paths(tmp_path, monkeypatch) -> ProjectPaths:
    monkeypatch.setenv("MLSTACK_HOME", str(tmp_path / "home"))
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "mlstack.yaml").write_text("name: churn\n")
    return ProjectPaths.for_spec(tmp_path / "proj" / "mlstack.yaml")


def _serving(paths: ProjectPaths, version: str = "v3") -> Path:
    code = paths.versions_dir / version / "pipelines"
    code.mkdir(parents=True)
    DeploymentState(versions=[Version(version, model_tag="churn:abc",
                                      status=VersionStatus.SERVING)],
                    current=version).save(paths.deployments_file)
    return code.parent


def test_without_a_serving_version_only_the_server_is_declared(paths):
    [server] = scheduler.sidecars(paths, None)
    assert server.name == "prefect-server" and server.ready_path == "/api/health"
    argv = list(server.argv)
    assert argv[argv.index("--host") + 1] == "127.0.0.1"
    assert argv[argv.index("--port") + 1] == str(server.port)
    env = server.env
    assert env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] == (
        f"sqlite+aiosqlite:///{paths.state_dir / 'prefect' / 'prefect.db'}")
    assert env["PREFECT_HOME"] == str(paths.home_dir / "prefect")
    assert env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false" and env["DO_NOT_TRACK"] == "1"
    for service in ("TRIGGERS", "FOREMAN", "REPOSSESSOR", "PAUSE_EXPIRATIONS"):
        assert env[f"PREFECT_SERVER_SERVICES_{service}_ENABLED"] == "false"
    for kept in ("SCHEDULER", "LATE_RUNS", "TASK_RUN_RECORDER"):  # runs are created, marked
        assert f"PREFECT_SERVER_SERVICES_{kept}_ENABLED" not in env  # late, and recorded
    # the port is kept: a restart comes back where status said the UI is
    assert scheduler.sidecars(paths, None)[0].port == server.port


def test_the_runner_runs_the_serving_versions_folder_against_the_server(paths):
    code_dir = _serving(paths)
    server, runner = scheduler.sidecars(paths, None)
    assert runner.name == "prefect-runner" and runner.needs == ("prefect-server",)
    assert runner.cwd == code_dir
    assert list(runner.argv[-4:]) == ["--spec", str(paths.spec), "--code-dir", str(code_dir)]
    assert runner.env["PREFECT_API_URL"] == f"http://127.0.0.1:{server.port}/api"
    assert runner.env["MLSTACK_SERVING_VERSION"] == "v3"
    assert runner.env["MLSTACK_MODEL_TAG"] == "churn:abc"
    assert runner.env["PYTHONPATH"].split(":")[0] == str(code_dir)
    assert runner.env["MLSTACK_STATE_DIR"] == str(paths.runtime_state_dir)


def test_a_declaration_does_not_change_with_the_callers_environment(paths, monkeypatch):
    """The keeper, deploy and status declare the same sidecars: a digest that moved with the
    caller's variables would restart a healthy server on every keeper pass."""
    _serving(paths)
    before = [sidecars.digest(s) for s in scheduler.sidecars(paths, None)]
    monkeypatch.setenv("PYTEST_CURRENT_TEST", "another test (call)")
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.invalid:3128")
    monkeypatch.setenv(procs.OWNER_ENV, "someone-else/keeper")
    monkeypatch.setenv("PREFECT_API_URL", "http://elsewhere.invalid/api")
    # a scheduled retrain's flow run declares too (its promote starts the keeper): Prefect's
    # run context and its version's code folder first on PYTHONPATH
    monkeypatch.setenv("PREFECT__FLOW_RUN_ID", "5ce78285-c195-4d6e-bb00-240c70c70b96")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [
        str(paths.versions_dir / "v1"), os.environ.get("PYTHONPATH", "")])))
    after = scheduler.sidecars(paths, None)
    assert [sidecars.digest(s) for s in after] == before
    assert all("HTTP_PROXY" not in s.env and procs.OWNER_ENV not in s.env for s in after)


def test_a_keeper_a_versions_supervisor_started_declares_what_deploy_declared(paths,
                                                                             monkeypatch):
    """A version's supervisor starts the keeper when it is gone, with the version's own
    environment (its code folder, its model tag, the quieted warnings): the keeper's
    declarations must still be deploy's, or its first pass restarts a healthy server. The
    record keeps the declaration, and a restart's reason names what changed."""
    code_dir = _serving(paths)
    before = scheduler.sidecars(paths, None)
    supervisor_env = paths.environment(code_dir, MLSTACK_MODEL_TAG="churn:older")
    monkeypatch.setattr(os, "environ", dict(supervisor_env))
    keeper_env = paths.environment(code_dir, MLSTACK_MODEL_TAG="churn:older")  # again
    monkeypatch.setattr(os, "environ", dict(keeper_env))
    after = scheduler.sidecars(paths, None)
    assert [sidecars.digest(s) for s in after] == [sidecars.digest(s) for s in before]
    assert after[1].env["MLSTACK_MODEL_TAG"] == "churn:abc"  # the serving one, given
    record = {"declaration": sidecars.declaration(before[0])}
    moved = sidecars.Sidecar(before[0].name, before[0].argv, {**before[0].env, "TZ": "UTC"},
                             before[0].cwd, before[0].port + 1)
    assert sidecars.changes(record, moved) == "its declaration changed (port, env TZ)"
    assert sidecars.changes({}, moved) == "its declaration changed"


def test_schedules_register_as_written_with_intervals_on_fixed_slots():
    interval, cron = schedule_objects({"name": "x", "schedules": [
        {"interval": 60}, {"cron": "0 3 * * *", "timezone": "Europe/Paris"}]})
    assert interval.interval == timedelta(seconds=60)
    assert interval.anchor_date == ANCHOR  # not the registration time: restarts keep slots
    assert (cron.cron, cron.timezone) == ("0 3 * * *", "Europe/Paris")
    with pytest.raises(ValueError, match="neither a cron line nor an interval"):
        schedule_objects({"name": "x", "schedules": [{"rrule": "FREQ=DAILY"}]})
    assert RUNS_ROLE.startswith("sidecar/")  # reconcile keeps a sidecar's processes


# -- a stand-in for Prefect's REST API -------------------------------------------------------

class FakePrefect:
    """Answers the calls status_report and the follower make, from `deployments`, `runs`
    (flow runs by deployment) and `tasks`; a created run goes through `states`."""

    def __init__(self):
        self.deployments, self.runs, self.tasks = [], {}, []
        self.states = ["SCHEDULED", "RUNNING", "COMPLETED"]
        self.final_message = ""
        self.created = []
        self.unanswered = 0  # polls of the run answered 404, as while the server restarts

    def answer(self, method: str, path: str, body: dict):
        if path == "/api/health":
            return True
        if path == "/api/deployments/filter":
            names = ((body.get("deployments") or {}).get("name") or {}).get("any_")
            return [d for d in self.deployments if names is None or d["name"] in names]
        if path == "/api/flow_runs/filter":
            dep = body["deployments"]["id"]["any_"][0]
            types = body["flow_runs"]["state"]["type"]
            runs = [r for r in self.runs.get(dep, [])
                    if ("any_" in types and r["state"]["type"] in types["any_"])
                    or ("not_any_" in types and r["state"]["type"] not in types["not_any_"])]
            key = "expected_start_time" if "EXPECTED" in body["sort"] else "start_time"
            runs.sort(key=lambda r: r.get(key) or "", reverse=body["sort"].endswith("DESC"))
            return runs[:body.get("limit", 200)]
        if path.endswith("/create_flow_run"):
            self.created.append(path)
            return {"id": "run-1"}
        if path == "/api/flow_runs/run-1" and self.unanswered > 0:  # a server restarting
            self.unanswered -= 1
            return None
        if path == "/api/flow_runs/run-1":
            kind = self.states.pop(0) if len(self.states) > 1 else self.states[0]
            return {"id": "run-1", "state": {"type": kind, "name": kind.title(),
                                             "message": self.final_message},
                    "total_run_time": 2.5}
        if path == "/api/task_runs/filter":
            return self.tasks if not self.states[0] == "SCHEDULED" else []
        return None


@pytest.fixture
def fake_api(paths):
    fake = FakePrefect()

    class Handler(BaseHTTPRequestHandler):
        def _reply(self, method):
            size = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(size) or b"{}") if size else {}
            data = fake.answer(method, self.path, body)
            payload = json.dumps(data).encode()
            self.send_response(200 if data is not None else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self):
            self._reply("GET")

        def do_POST(self):
            self._reply("POST")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    sidecars._write_json(sidecars.record_file(paths, "prefect-server"),
                         {"port": server.server_address[1]})
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()


def test_status_before_any_start_and_with_the_server_down(paths):
    assert scheduler.status_report(paths) == {"ui": None, "server": "not started",
                                              "deployments": []}
    port = procs.free_port()
    sidecars._write_json(sidecars.record_file(paths, "prefect-server"), {"port": port})
    report = scheduler.status_report(paths)
    assert report["ui"] == f"http://127.0.0.1:{port}"
    assert report["server"].startswith("unreachable: ") and report["deployments"] == []


def test_status_reports_each_schedule_with_its_last_and_next_run(paths, fake_api):
    fake_api.deployments = [
        {"id": "d1", "name": "churn-materialize", "paused": False,
         "schedules": [{"active": True, "schedule": {"interval": 60.0}}]},
        {"id": "d2", "name": "churn-training", "paused": False,
         "schedules": [{"active": True, "schedule": {"cron": "0 3 * * *",
                                                     "timezone": "UTC"}}]}]
    start = datetime(2026, 1, 2, 3, 0, 1, tzinfo=UTC)
    fake_api.runs = {"d1": [
        {"id": "r3", "state": {"type": "SCHEDULED", "name": "Scheduled"},
         "expected_start_time": "2026-01-02T03:02:00Z"},
        {"id": "r2", "state": {"type": "SCHEDULED", "name": "Late"},
         "expected_start_time": "2026-01-02T03:01:00Z"},
        {"id": "r0", "state": {"type": "COMPLETED", "name": "Completed"},
         "start_time": "2026-01-02T02:59:01+00:00", "end_time": "2026-01-02T02:59:31+00:00"},
        {"id": "r1", "state": {"type": "COMPLETED", "name": "Completed"},
         "start_time": start.isoformat(),
         "end_time": (start + timedelta(seconds=42.5)).isoformat()}]}
    report = scheduler.status_report(paths)
    assert report["server"] == "ready" and report["ui"].startswith("http://127.0.0.1:")
    materialize, training = report["deployments"]
    assert materialize["schedules"] == ["every 60 s"]
    assert materialize["last_run"] == {"state": "Completed", "start": start.isoformat(),
                                       "seconds": 42.5, "id": "r1"}
    assert materialize["next_run"] == {"state": "Late", "at": "2026-01-02T03:01:00Z"}
    assert training["schedules"] == ["cron 0 3 * * * (UTC)"]
    assert training["last_run"] is None and training["next_run"] is None
    json.dumps(report)  # JSON-able as it is


def test_a_served_run_is_followed_to_its_end_with_its_tasks(paths, fake_api):
    code = _serving(paths)
    (code / "pipelines" / "prefect.yaml").write_text(
        "name: churn\ndeployments:\n  - name: churn-materialize\n"
        "    entrypoint: pipelines/flows.py:materialize_flow\n")
    fake_api.deployments = [{"id": "d1", "name": "churn-materialize", "schedules": []}]
    fake_api.tasks = [{"id": "t1", "name": "feast_apply-a1b", "total_run_time": 1.25,
                       "state": {"type": "COMPLETED", "name": "Completed"}},
                      {"id": "t2", "name": "materialize-0c2", "total_run_time": 0.5,
                       "state": {"type": "FAILED", "name": "Failed",
                                 "message": "No files found\nsecond line"}}]
    fake_api.states = ["SCHEDULED", "RUNNING", "FAILED"]
    fake_api.final_message = "Flow run encountered an exception"
    assert served_run.served_deployment(paths, "monitoring", code) is None  # not in the yaml
    served = served_run.served_deployment(paths, "materialize", code)
    assert served is not None and served.id == "d1"
    states, tasks = [], []
    run = served_run.run_served(served, on_state=states.append, on_task=tasks.append)
    assert fake_api.created == ["/api/deployments/d1/create_flow_run"]
    assert states == ["Scheduled", "Running", "Failed"]
    assert [t["task"] for t in tasks] == ["feast_apply", "materialize"]
    assert tasks[1]["state"] == "FAILED" and tasks[1]["error"].startswith("No files found")
    assert run.state == "FAILED" and run.url.endswith("/runs/flow-run/run-1")


def test_a_follower_waits_for_a_server_that_stops_answering_for_a_while(paths, fake_api,
                                                                        monkeypatch):
    code = _serving(paths)
    (code / "pipelines" / "prefect.yaml").write_text(
        "name: churn\ndeployments:\n  - name: churn-materialize\n"
        "    entrypoint: pipelines/flows.py:materialize_flow\n")
    fake_api.deployments = [{"id": "d1", "name": "churn-materialize", "schedules": []}]
    fake_api.states = ["RUNNING", "COMPLETED"]
    fake_api.unanswered = 3  # the keeper restarting the server mid-run
    monkeypatch.setattr(run_follow, "POLL_SECONDS", 0.05)
    states: list = []
    served = served_run.served_deployment(paths, "materialize", code)
    run = served_run.run_served(served, on_state=states.append)
    assert run.state == "COMPLETED"
    assert states == [run_follow.SERVER_AWAY, "Running", "Completed"]
    fake_api.states, fake_api.unanswered = ["RUNNING"], 10**6  # it never comes back
    monkeypatch.setattr(run_follow, "SERVER_GONE_TIMEOUT", 0.5)
    with pytest.raises(RuntimeError, match="has not answered for 0.5 s"):
        served_run.run_served(served)


def test_mlstack_run_goes_through_the_server_and_names_the_failed_task(paths, fake_api,
                                                                       capsys):
    from mlstack.cli.main import main
    from mlstack.diagnostics.errors import StageError
    from mlstack.ops.local.flow_run import run_flow

    code = _serving(paths)
    (paths.build_dir / "pipelines").mkdir(parents=True)
    (code / "pipelines" / "prefect.yaml").write_text(
        "name: churn\ndeployments:\n  - name: churn-training\n"
        "    entrypoint: pipelines/flows.py:training_flow\n")
    fake_api.deployments = [{"id": "d9", "name": "churn-training", "schedules": []}]
    fake_api.tasks = [{"id": "t1", "name": "train-1", "total_run_time": 3.0,
                       "state": {"type": "FAILED", "name": "Failed", "message": "gate missed"}}]
    fake_api.states = ["SCHEDULED", "FAILED"]
    with pytest.raises(StageError) as error:  # training runs: the server has its deployment
        run_flow(paths.spec, "training")
    assert error.value.stage == "train" and "FAILED: gate missed" in error.value.message
    assert "/runs/flow-run/run-1" in error.value.hint
    fake_api.states, fake_api.tasks = ["SCHEDULED", "RUNNING", "COMPLETED"], []
    assert main(["run", "training", "-C", str(paths.project_dir)]) == 0
    out, err = capsys.readouterr()
    assert "  run scheduled\n  run running\n  run completed\n" in err
    assert "training completed" in out and "/runs/flow-run/run-1" in out


def test_an_answer_to_retry_is_asked_again_and_a_lasting_one_names_the_call(monkeypatch):
    """Prefect's server answers 503 when its SQLite database is busy (the request undone, to
    be retried: a run of `mlstack run training` under load failed on one)."""
    answers: list[int] = []
    planned = [503, 503, 200]

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            code = planned.pop(0) if planned else 503
            answers.append(code)
            payload = json.dumps({"id": "run"} if code == 200 else {"detail": "busy"}).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    monkeypatch.setattr(scheduler, "RETRY_DELAYS", (0.01, 0.01, 0.01))
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        assert scheduler.api(base, "/deployments/x/create_flow_run", {}) == {"id": "run"}
        assert answers == [503, 503, 200]
        answers.clear()
        with pytest.raises(RuntimeError, match=r"POST /api/deployments/x/create_flow_run: "
                                                r"HTTP 503"):
            scheduler.api(base, "/deployments/x/create_flow_run", {})
        assert answers == [503] * 4  # the first try and one per delay
    finally:
        server.shutdown()
        server.server_close()
