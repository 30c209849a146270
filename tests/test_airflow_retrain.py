"""The scheduled retrain under the local Airflow (mlstack.ops.local.airflow_retrain), without
Airflow: one retrain per DAG run however often its task is tried, the outcome the sensor
reads (running, done, failed, a process gone without one), the retrain's environment
(mlstack's, not Airflow's, so the sidecars it declares are the keeper's), the DAGs folder's
links and the DAGs settle() unpauses. The DAG run itself: tests/engine/test_airflow_local.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from mlstack.codegen.contract import ENV_MODEL_TAG, ENV_SERVING_VERSION
from mlstack.diagnostics.errors import StageError
from mlstack.frontend.analysis import analyze_spec
from mlstack.ops.local import airflow_retrain, airflow_scheduler, procs, scheduler
from mlstack.ops.paths import ProjectPaths
from tests.conftest import BLUEPRINTS

RUN = "scheduled__2026-12-07T15:00:00+00:00"


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A churn copy with orchestrator airflow and a retrain every 2 minutes; HOME (mlstack's
    homes) under tmp_path."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    folder = tmp_path / "churn"
    shutil.copytree(BLUEPRINTS / "churn", folder,
                    ignore=shutil.ignore_patterns("build", "generated"))
    spec = folder / "mlstack.yaml"
    doc = yaml.safe_load(spec.read_text())
    doc["target"]["orchestrator"] = "airflow"
    doc["training"]["schedule"] = "*/2 * * * *"
    spec.write_text(yaml.safe_dump(doc, sort_keys=False))
    analysis = analyze_spec(spec)
    assert analysis.errors == []
    return {"paths": ProjectPaths.for_spec(spec), "system": analysis.system}


def _settings(paths: ProjectPaths, **extra) -> dict:
    return {"dag_id": "churn_scheduled_training", "schedule": "*/2 * * * *",
            "spec": str(paths.spec), "python": "/opt/mlstack/bin/python",
            "restore": {"PATH": "/opt/mlstack/bin:/usr/bin", "VIRTUAL_ENV": None,
                        "PYTHONPATH": "/code/v1"}, **extra}


class Launches:
    """procs.start_background's stand-in: what it was asked to start."""

    def __init__(self, pid: int = 4242, fail: bool = False):
        self.calls: list[dict] = []
        self.pid, self.fail = pid, fail

    def __call__(self, argv, *, cwd, env, log, owner):
        self.calls.append({"argv": argv, "cwd": cwd, "env": env, "log": log, "owner": owner})
        if self.fail:
            raise OSError("no such interpreter")
        return self.pid


def test_a_dag_run_starts_one_retrain_however_often_its_task_is_tried(project):
    paths = project["paths"]
    launch = Launches()
    found = _settings(paths)
    first = airflow_retrain.start(RUN, {"PATH": "/x"}, found, launch=launch)
    again = airflow_retrain.start(RUN, {"PATH": "/x"}, found, launch=launch)
    assert len(launch.calls) == 1  # the retried try started nothing
    assert (first["started"], again["started"]) == (True, False)
    assert first["pid"] == again["pid"] == 4242 and again["run_id"] == RUN
    [call] = launch.calls
    assert call["argv"] == ["/opt/mlstack/bin/python", "-m", "mlstack.ops.local.airflow_retrain",
                            "--spec", str(paths.spec), "--run-id", RUN]
    assert call["owner"] == f"{paths.project_id}/sidecar/airflow-retrain"
    assert call["log"] == paths.logs_dir / "sidecar-airflow-retrain.log"
    assert call["cwd"] == paths.project_dir
    # another run of the DAG is a retrain of its own
    airflow_retrain.start("manual__2026-12-07T15:01:00+00:00", {}, found, launch=launch)
    assert len(launch.calls) == 2


def test_a_start_removes_the_files_of_runs_a_month_old(project):
    paths = project["paths"]
    airflow_retrain.start("old", {}, _settings(paths), launch=Launches())
    airflow_retrain._write(airflow_retrain.outcome_file(paths, "old"), {"ok": True})
    month = time.time() - airflow_retrain.KEPT_SECONDS - 60
    for path in (airflow_retrain.claim_file(paths, "old"),
                 airflow_retrain.outcome_file(paths, "old")):
        os.utime(path, (month, month))
    airflow_retrain.start("recent", {}, _settings(paths), launch=Launches())
    airflow_retrain.start(RUN, {}, _settings(paths), launch=Launches())
    assert sorted(p.name for p in airflow_retrain.folder(paths).iterdir()) == sorted(
        airflow_retrain.claim_file(paths, run).name for run in ("recent", RUN))


def test_run_files_are_named_apart_for_ids_alike_but_for_their_unsafe_characters():
    one, two = airflow_retrain.run_key("manual__a:b"), airflow_retrain.run_key("manual__a/b")
    assert one != two and "/" not in two and ":" not in one


def test_a_retrain_that_could_not_start_fails_the_run_with_the_reason(project):
    paths = project["paths"]
    with pytest.raises(OSError):
        airflow_retrain.start(RUN, {}, _settings(paths), launch=Launches(fail=True))
    found = airflow_retrain.outcome(paths, RUN)
    assert found == {"ok": False, "reason": "the retrain did not start: OSError: no such "
                                            "interpreter"}
    # a retried task starts nothing more: the outcome stands
    launch = Launches()
    assert airflow_retrain.start(RUN, {}, _settings(paths), launch=launch)["started"] is False
    assert launch.calls == []


def test_start_refuses_to_run_outside_a_projects_airflow():
    with pytest.raises(RuntimeError, match=airflow_retrain.ENV_SETTINGS):
        airflow_retrain.start(RUN, {})


def test_the_outcome_is_none_while_the_retrain_runs_and_its_reason_once_it_ended(project):
    paths = project["paths"]
    env = {**os.environ, procs.OWNER_ENV: airflow_retrain.owner(paths)}
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], env=env)
    try:
        airflow_retrain.start(RUN, {}, _settings(paths), launch=Launches(pid=child.pid))
        assert airflow_retrain.outcome(paths, RUN) is None  # running
        airflow_retrain._write(airflow_retrain.outcome_file(paths, RUN),
                               {"ok": True, "version": "v2", "reason": "v2 made"})
        assert airflow_retrain.outcome(paths, RUN)["version"] == "v2"
        airflow_retrain.outcome_file(paths, RUN).unlink()
    finally:
        child.kill()
        child.wait()
    gone = airflow_retrain.outcome(paths, RUN)  # ended without writing one: down, a kill
    assert gone is not None and gone["ok"] is False
    assert f"(PID {child.pid}) ended without an outcome" in gone["reason"]
    assert "sidecar-airflow-retrain.log" in gone["reason"]


def test_a_pid_of_another_process_is_not_the_retrain(project):
    paths = project["paths"]  # this test's own process: alive, without the marker
    airflow_retrain.start(RUN, {}, _settings(paths), launch=Launches(pid=os.getpid()))
    assert airflow_retrain.outcome(paths, RUN)["ok"] is False


def test_a_run_with_no_retrain_or_one_never_started_fails(project):
    paths = project["paths"]
    assert airflow_retrain.outcome(paths, RUN) == {
        "ok": False, "reason": f"no retrain was started for the run {RUN}"}
    claim = airflow_retrain.claim_file(paths, RUN)
    claim.parent.mkdir(parents=True)
    claim.write_text("")  # claimed by a try killed before it wrote the PID
    assert airflow_retrain.outcome(paths, RUN) is None  # being started
    later = time.time() + airflow_retrain.START_GRACE + 1
    assert airflow_retrain.outcome(paths, RUN, now=later)["reason"] == (
        f"the retrain of the run {RUN} did not start")


@pytest.mark.parametrize(("returned", "ok", "expected"), [
    (None, True, {"version": None, "reason": "the source data did not change"}),
    ("result", True, {"version": "v2", "reason": "v2 made by the scheduled retrain"}),
    (StageError("rollout", "the canary aborted at 25%"), False,
     {"reason": "stage 'rollout' failed: the canary aborted at 25%"}),
    (KeyError("model_tag"), False, {"reason": "KeyError: 'model_tag'"}),
])
def test_the_retrain_writes_its_outcome_for_the_sensor(project, monkeypatch, returned, ok,
                                                       expected):
    from mlstack.ops.local import retrain as retrain_module
    from mlstack.ops.report import DeployResult

    paths = project["paths"]

    def retrain(spec, progress):
        assert Path(spec) == paths.spec
        if isinstance(returned, Exception):
            raise returned
        if returned is None:
            progress.note("the source data did not change")
            return None
        return DeployResult("churn", "v2", "http://127.0.0.1:1", "m:1", True)

    monkeypatch.setattr(retrain_module, "retrain", retrain)
    code = airflow_retrain.main(["--spec", str(paths.spec), "--run-id", RUN])
    assert code == (0 if ok else 1)
    found = json.loads(airflow_retrain.outcome_file(paths, RUN).read_text())
    assert found["ok"] is ok and found["run_id"] == RUN
    assert {k: found[k] for k in expected} == expected
    assert airflow_retrain.outcome(paths, RUN) == found


def test_the_retrain_runs_in_mlstacks_environment_not_airflows(project, tmp_path):
    """What environment() gives Airflow, less Airflow's, is the sidecars' own environment
    (scheduler._stable of the project's): the keeper and the retrain declare alike."""
    paths, system = project["paths"], project["system"]
    code_dir, env_dir = tmp_path / "versions" / "v1", tmp_path / "airflow-env"
    airflow = airflow_scheduler.environment(paths, code_dir, "v1", "churn:1", env_dir, 8793,
                                            system)
    found = airflow_retrain.settings_from(airflow)
    assert found is not None
    assert found["dag_id"] == "churn_scheduled_training" and found["schedule"] == "*/2 * * * *"
    assert found["python"] == sys.executable and found["spec"] == str(paths.spec)
    assert airflow["PATH"].startswith(f"{env_dir / 'bin'}:")
    # what a task adds at run time is dropped too
    task = {**airflow, "AIRFLOW_CTX_DAG_ID": found["dag_id"], "_AIRFLOW__STARTUP_MSG": "{}",
            "__AIRFLOW_SUPERVISOR_FD": "5", procs.OWNER_ENV: "x/sidecar/airflow-scheduler"}
    env = airflow_retrain.retrain_env(task, found)
    base = scheduler._stable(paths.environment(code_dir), paths)
    assert env == {**base, ENV_SERVING_VERSION: "v1", ENV_MODEL_TAG: "churn:1"}


def test_retrain_env_restores_what_airflow_replaced_and_drops_what_it_added():
    found = {"restore": {"PATH": "/usr/bin", "VIRTUAL_ENV": None, "PYTHONPATH": "/code"}}
    env = airflow_retrain.retrain_env({
        "PATH": "/airflow/bin:/usr/bin", "VIRTUAL_ENV": "/airflow", "PYTHONPATH": "/code:/lib",
        "HOME": "/home/me", "AIRFLOW_HOME": "/a", "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "SPT_NOENV": "1", "SCARF_ANALYTICS": "false", airflow_retrain.ENV_SETTINGS: "{}",
        procs.OWNER_ENV: "p/sidecar/airflow-scheduler"}, found)
    assert env == {"PATH": "/usr/bin", "PYTHONPATH": "/code", "HOME": "/home/me"}


def test_the_dags_folder_links_the_serving_versions_dags_and_mlstacks(project, tmp_path):
    paths = project["paths"]
    folder = airflow_scheduler.dags_folder(paths, tmp_path / "v1")
    assert folder == paths.state_dir / "airflow" / "dags"
    links = {p.name: Path(os.readlink(p)) for p in folder.iterdir()}
    dag_file = Path(airflow_retrain.__file__).with_name("airflow_retrain_dag.py").resolve()
    assert links == {"airflow_dags.py": tmp_path / "v1" / "pipelines" / "airflow_dags.py",
                     "mlstack_scheduled_training.py": dag_file}
    made = {p.name: p.lstat().st_mtime_ns for p in folder.iterdir()}
    time.sleep(0.01)
    airflow_scheduler.dags_folder(paths, tmp_path / "v1")  # as it is: left alone
    assert {p.name: p.lstat().st_mtime_ns for p in folder.iterdir()} == made
    (folder / "old.py").symlink_to(tmp_path / "gone.py")
    airflow_scheduler.dags_folder(paths, tmp_path / "v2")  # a new version's
    assert sorted(p.name for p in folder.iterdir()) == sorted(links)
    assert Path(os.readlink(folder / "airflow_dags.py")) == (
        tmp_path / "v2" / "pipelines" / "airflow_dags.py")


def test_settle_unpauses_the_scheduled_retrain_and_keeps_the_generated_training_paused(
        project):
    assert airflow_scheduler.paused_dags(project["system"]) == {
        "churn_training": True, "churn_materialize": False, "churn_monitoring": False,
        "churn_scheduled_training": False}
