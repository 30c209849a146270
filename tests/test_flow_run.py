"""`mlstack run FLOW` without the runtime libraries: stand-in flows in a build folder show that
the run happens in a child process with the deploy's environment and the serving version,
that each finished task reaches the caller as it finishes, that a failed run names its task
and error without a traceback, and what is refused (training, a project never deployed).
The real flows run in tests/engine/test_schedules.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlstack.cli.main import main
from mlstack.diagnostics.errors import StageError, UsageError
from mlstack.ops.local.flow_run import explained, failed_stage, run_flow
from mlstack.ops.local.state import DeploymentState, Version, VersionStatus
from mlstack.ops.paths import ProjectPaths

# A stand-in for the generated monitoring flow: reports two tasks and returns what it saw.
MONITORING = '''
import json, os, sys, time
from pathlib import Path

def _progress(task, state="COMPLETED", error=None):
    line = {"task": task, "state": state, "seconds": 0.01}
    if error:
        line["error"] = error
    with open(os.environ["MLSTACK_PROGRESS_FILE"], "a") as out:
        out.write(json.dumps(line) + "\\n")

def monitoring_flow():
    _progress("ingest")
    _progress("freshness")
    return {"env": {k: os.environ.get(k) for k in (
                "MLSTACK_MODEL_TAG", "MLSTACK_SERVING_VERSION", "MLSTACK_STATE_DIR",
                "PREFECT_HOME", "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS",
                "DO_NOT_TRACK", "MLSTACK_OWNER")},
            "cwd": os.getcwd(), "parent_modules": "prefect" in sys.modules}
'''
# A stand-in for the materialize flow whose materialize task fails.
FLOWS = MONITORING.replace("def monitoring_flow", "def unused") + '''
def materialize_flow():
    _progress("feast_apply")
    _progress("materialize", "FAILED",
              "No files found that match data/customers.parquet\\nLINE 1: SELECT ...")
    raise OSError("No files found that match data/customers.parquet\\nsecond line")
'''


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """An init'd churn project whose build folder holds the stand-in flows, deployed as v3."""
    monkeypatch.setenv("MLSTACK_HOME", str(tmp_path / "home"))
    path = tmp_path / "proj"
    assert main(["init", str(path), "--format", "json"]) == 0
    pipelines = path / "build" / "pipelines"
    pipelines.mkdir(parents=True)
    (pipelines / "__init__.py").write_text("")
    (pipelines / "monitoring.py").write_text(MONITORING)
    (pipelines / "flows.py").write_text(FLOWS)
    return path


def _deploy(project: Path) -> ProjectPaths:
    paths = ProjectPaths.for_spec(project / "mlstack.yaml")
    paths.state_dir.mkdir(parents=True, exist_ok=True)
    state = DeploymentState(versions=[
        Version("v2", model_tag="churn:old", status=VersionStatus.STOPPED),
        Version("v3", model_tag="churn:serving", status=VersionStatus.SERVING)],
        current="v3", previous="v2")
    state.save(paths.deployments_file)
    return paths


def test_a_run_gets_the_deploys_environment_and_the_serving_version(project):
    paths = _deploy(project)
    seen = []
    run = run_flow(project, "monitoring", on_task=seen.append)
    assert [t["task"] for t in seen] == ["ingest", "freshness"] == [t["task"] for t in run.tasks]
    assert (run.flow, run.version, run.model_tag) == ("monitoring", "v3", "churn:serving")
    env = run.result["env"]
    assert env["MLSTACK_MODEL_TAG"] == "churn:serving" and env["MLSTACK_SERVING_VERSION"] == "v3"
    assert env["MLSTACK_STATE_DIR"] == str(paths.runtime_state_dir)
    assert env["PREFECT_HOME"] == str(paths.home_dir / "prefect")
    assert env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] == "120"
    assert env["DO_NOT_TRACK"] == "1"
    assert env["MLSTACK_OWNER"] == f"{paths.project_id}/flow/monitoring"
    assert Path(run.result["cwd"]) == paths.build_dir
    assert run.result["parent_modules"] is False


def test_a_failed_run_names_its_task_and_error_without_a_traceback(project):
    paths = _deploy(project)
    with pytest.raises(StageError) as error:
        run_flow(project, "materialize")
    assert error.value.stage == "materialize"
    assert error.value.message == ("stage 'materialize' failed: OSError: No files found that "
                                   "match data/customers.parquet")
    log = paths.logs_dir / "flow-materialize.log"
    assert error.value.hint == f"log: {log}"
    assert "Traceback" in log.read_text()  # the traceback is kept, in the log


def test_the_cli_shows_each_task_and_exits_1_on_a_failed_run(project, capsys):
    _deploy(project)
    assert main(["run", "monitoring", "-C", str(project)]) == 0
    out, err = capsys.readouterr()
    assert "ingest" in err and "freshness" in err and "done" in err
    assert "monitoring completed in" in out and "serving v3, model churn:serving" in out
    assert main(["run", "materialize", "-C", str(project)]) == 1
    out, err = capsys.readouterr()
    assert "stage 'materialize' failed: OSError: No files found" in err
    assert "  materialize  failed in 0.0 s: No files found that match data/customers.parquet\n" \
        in err and "LINE 1" not in err  # the error's first line only (the rest: the log)
    assert "Traceback" not in out + err
    assert main(["run", "monitoring", "-C", str(project), "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["version"] == "v3" and [t["task"] for t in doc["tasks"]] == ["ingest",
                                                                           "freshness"]


def test_a_project_never_deployed_is_refused_naming_deploy(project, capsys):
    with pytest.raises(UsageError) as error:
        run_flow(project, "monitoring")
    assert "has not been deployed" in error.value.message
    assert "mlstack deploy" in error.value.hint
    assert main(["run", "monitoring", "-C", str(project)]) == 2
    assert "mlstack deploy" in capsys.readouterr().err


def test_training_is_refused_with_the_way_to_retrain(project, capsys):
    _deploy(project)
    with pytest.raises(UsageError) as error:
        run_flow(project, "training")
    assert "mlstack deploy --retrain" in error.value.hint
    assert main(["run", "training", "-C", str(project)]) == 2
    assert "mlstack deploy --retrain" in capsys.readouterr().err


def test_training_on_airflow_runs_mlstacks_dag_of_the_scheduled_retrain(project, monkeypatch):
    """With orchestrator airflow, training is a run of `<system>_scheduled_training` (deploy's
    rollout, airflow_retrain.py), never of the generated training DAG."""
    from types import SimpleNamespace

    from mlstack.ops.local import airflow_run, airflow_scheduler
    from mlstack.workspace import manifest

    paths = _deploy(project)
    system = SimpleNamespace(python_name="churn")
    monkeypatch.setattr(airflow_scheduler, "runs_airflow", lambda code_dir: True)
    monkeypatch.setattr(manifest, "read_manifest",
                        lambda folder: SimpleNamespace(previous_system=lambda: system))
    asked = []
    monkeypatch.setattr(airflow_run, "dag_of", lambda p, dag_id: asked.append(dag_id) or "http://a")

    def run_dag(base, dag_id, on_state=None, on_task=None):
        asked.append(dag_id)
        tasks = [{"task": "start_retrain", "state": "COMPLETED", "seconds": 0.2},
                 {"task": "retrain_outcome", "state": "COMPLETED", "seconds": 0.2}]
        return airflow_run.AirflowRun("manual__1", f"{base}/dags/{dag_id}/runs/manual__1",
                                      "COMPLETED", 40.0, tasks)

    monkeypatch.setattr(airflow_run, "run_dag", run_dag)
    run = run_flow(project, "training")
    assert asked == ["churn_scheduled_training"] * 2
    assert run.url == "http://a/dags/churn_scheduled_training/runs/manual__1"
    assert [t["task"] for t in run.tasks] == ["start_retrain", "retrain_outcome"]
    assert run.version == "v3" and paths.deployments_file.is_file()


def test_failed_stage_and_explained():
    tasks = [{"task": "ingest", "state": "COMPLETED"}, {"task": "drift", "state": "FAILED"}]
    assert failed_stage("monitoring", tasks) == "drift"
    assert failed_stage("monitoring", tasks[:1]) == "monitoring"
    assert explained("KeyError", "\n  'x'\nmore") == "KeyError: 'x'"
    assert explained("FlowRunCrashed", "") == "FlowRunCrashed"


def test_status_carries_the_last_monitoring_report(project):
    from mlstack.cli.commands.status import render_monitoring_line
    from mlstack.ops.local.lifecycle import last_monitoring

    paths = _deploy(project)
    assert last_monitoring(paths) is None
    report = paths.runtime_state_dir / "monitoring.json"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text("{not json")
    assert "monitoring.json" in last_monitoring(paths)["unreadable"]
    written = {"checked_at": "2026-03-01T00:00:00+00:00", "alerts": ["source x has no row"],
               "serving": {"version": "v3", "model_tag": "churn:serving"}}
    report.write_text(json.dumps(written))
    assert last_monitoring(paths) == written
    line = render_monitoring_line(written)
    assert "1 alert at 2026-03-01T00:00:00+00:00 (model churn:serving" in line
    assert "alert: source x has no row" in line
