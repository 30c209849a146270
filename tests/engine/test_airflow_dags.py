"""The Airflow backend, checked with Airflow's own tools: the churn blueprint (a fresh `mlstack
init` copy, its data dated to now) with `orchestrator: airflow` compiles to
pipelines/airflow_dags.py; Airflow's DagBag imports the generated DAGs folder with no import
error, and the DAGs' tasks, their order, retries, timeouts and schedules read back from it are
the spec's and the contract's. `airflow dags test` then runs the training DAG end to end: the
model is trained, judged by its gate, registered in BentoML's store and promoted, and the run's
folder removed; a gate that cannot be met fails the run at evaluate, without a retry.

Airflow cannot share an environment with Prefect: it runs in one of its own, built from the
pinned pipelines/airflow_requirements.txt into the infra tests' cache (ensure_env, flock-
protected) and reused by later sessions: about 95 s to build cold here, 0 s warm. mlstack
itself is on PYTHONPATH. (`mlstack deploy` running them under a supervised Airflow:
tests/engine/test_airflow_local.py.)
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from mlstack.codegen.backends import CompileOptions
from mlstack.codegen.backends.airflow import (
    CLEANUP_TASK,
    REQUIREMENTS,
    REQUIREMENTS_FILE,
    RUNS_DIR,
    dag_ids,
)
from mlstack.codegen.backends.prefect import CRON_ALIASES
from mlstack.codegen.contract import MATERIALIZE_TASKS, MONITORING_TASKS, TRAINING_TASKS
from mlstack.codegen.generate import compile_system
from mlstack.frontend.analysis import analyze_spec
from mlstack.ops.cluster.infra_env import InfraEnv, ensure_env
from mlstack.workspace.blueprints import init_project
from mlstack.workspace.writer import write_tree
from tests.conftest import REPO
from tests.engine.infra_fixtures import infra_cache  # noqa: F401  (fixture)
from tests.test_orchestrator import airflow_refusals

# The DAGs folder as Airflow's DagBag reads it: import errors, and per DAG its schedule and
# settings and per task its upstream tasks, retries, delay and timeout. Also every schedule
# the spec can write, as Airflow's own cron timetable takes it.
READ_BACK = r"""
import json, sys
from pathlib import Path
from airflow.dag_processing.dagbag import DagBag
from airflow.timetables.trigger import CronTriggerTimetable

bag = DagBag(dag_folder=str(Path("pipelines").resolve()))
out = {"import_errors": {str(k): v for k, v in bag.import_errors.items()}, "dags": {}}
for dag_id, dag in bag.dags.items():
    timetable, every = dag.timetable, getattr(dag.timetable, "delta", None)
    out["dags"][dag_id] = {
        "fileloc": dag.fileloc, "timetable": type(timetable).__name__,
        "cron": getattr(timetable, "expression", None),
        "every": None if every is None else every.total_seconds(),
        "catchup": dag.catchup, "max_active_runs": dag.max_active_runs,
        "start_date": dag.start_date.isoformat(), "params": dict(dag.params.dump()),
        "tasks": {t.task_id: {"upstream": sorted(t.upstream_task_ids), "retries": t.retries,
                              "retry_delay": t.retry_delay.total_seconds(),
                              "timeout": t.execution_timeout.total_seconds()}
                  for t in dag.tasks},
    }
out["schedules"] = {}
for schedule in sys.argv[1:]:
    try:
        CronTriggerTimetable(schedule, timezone="UTC")
        out["schedules"][schedule] = "ok"
    except Exception as error:
        out["schedules"][schedule] = repr(error)
print(json.dumps(out))
"""
# cron lines with every form the spec's fields allow (lists, ranges, steps, Sunday as 0 or 7)
CRON_FORMS = ("*/15 0-6,18 1,15 */2 1-5", "0 3 * * 7", "5 4 1-31/2 1-12 0")


@pytest.fixture(scope="session")
def airflow_env(infra_cache) -> InfraEnv:  # noqa: F811
    reqs = infra_cache / "requirements" / "airflow.txt"
    reqs.parent.mkdir(parents=True, exist_ok=True)
    reqs.write_text("\n".join(REQUIREMENTS) + "\n")
    return ensure_env(reqs)


def _project(root: Path, edit=None) -> Path:
    """A fresh `mlstack init` churn project with orchestrator: airflow (and `edit`)."""
    project = root / "churn"
    init_project(project, "churn")
    spec = project / "mlstack.yaml"
    doc = yaml.safe_load(spec.read_text())
    doc["target"]["orchestrator"] = "airflow"
    if edit is not None:
        edit(doc)
    spec.write_text(yaml.safe_dump(doc, sort_keys=False))
    return spec


def _compile(spec: Path):
    """The IR (lint clean but for the scheduled retrain lint refuses under Airflow locally:
    its DAG's cron is checked here) and the generated folder (project/build, with its
    manifest)."""
    analysis = analyze_spec(spec)
    assert [(d.code, d.pointer) for d in analysis.errors] == airflow_refusals(analysis.system)
    out = spec.parent / "build"
    write_tree(compile_system(analysis.system, CompileOptions(project_dir="..")), out,
               system=analysis.system)
    return analysis.system, out


def _airflow(env: InfraEnv, out: Path, home: Path, state: Path) -> dict[str, str]:
    """What the scheduler and workers run with: their own AIRFLOW_HOME (SQLite), the
    generated pipelines/ as DAGs folder, the generated folder and mlstack on PYTHONPATH."""
    variables = env.environment()
    variables.update({
        "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__DAGS_FOLDER": str(out / "pipelines"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__USAGE_DATA_COLLECTION__ENABLED": "False",
        "PYTHONPATH": os.pathsep.join([str(out), str(REPO)]),
        "MLSTACK_STATE_DIR": str(state), "BENTOML_HOME": str(home / "bentoml"),
    })
    return variables


def _dags_test(env: InfraEnv, out: Path, root: Path, dag_id: str):
    """`airflow dags test DAG_ID` with root/airflow_home (migrated on first use) and
    root/state: what it printed, and its task instances."""
    home, state = root / "airflow_home", root / "state"
    variables = _airflow(env, out, home, state)
    if not (home / "airflow.db").is_file():
        migrated = subprocess.run([str(env.path / "bin" / "airflow"), "db", "migrate"],
                                  cwd=out, env=variables, capture_output=True, text=True,
                                  timeout=300)
        assert migrated.returncode == 0, migrated.stderr[-3000:]
    done = subprocess.run([str(env.path / "bin" / "airflow"), "dags", "test", dag_id], cwd=out,
                          env=variables, capture_output=True, text=True, timeout=600)
    return SimpleNamespace(done=done, state=state, home=home, log=done.stdout + done.stderr,
                           tasks=_task_instances(home, dag_id))


def _task_instances(home: Path, dag_id: str) -> dict[str, tuple[str, int]]:
    """{task id: (state, tries)} of the DAG's run, read from Airflow's metadata database."""
    with sqlite3.connect(home / "airflow.db") as db:
        rows = db.execute("SELECT task_id, state, try_number FROM task_instance "
                          "WHERE dag_id = ?", (dag_id,)).fetchall()
    return {task: (state, tries) for task, state, tries in rows}


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    root = tmp_path_factory.mktemp("airflow_churn")
    system, out = _compile(_project(root))
    return SimpleNamespace(root=root, system=system, out=out)


@pytest.fixture(scope="module")
def read_back(compiled, airflow_env):
    schedules = [*CRON_ALIASES.values(), *CRON_FORMS]
    done = subprocess.run(
        [str(airflow_env.python), "-c", READ_BACK, *schedules], cwd=compiled.out,
        capture_output=True, text=True, timeout=300,
        env=_airflow(airflow_env, compiled.out, compiled.root / "dagbag_home",
                     compiled.root / "dagbag_state"))
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.engine
def test_the_requirements_file_is_the_environment_the_tests_build(compiled):
    text = (compiled.out / REQUIREMENTS_FILE).read_text()
    assert [line for line in text.splitlines() if not line.startswith("#")] == list(REQUIREMENTS)
    assert all("==" in line for line in REQUIREMENTS)  # pinned: no constraints file fetched


@pytest.mark.engine
def test_the_dagbag_imports_every_dag_with_no_error(compiled, read_back):
    assert read_back["import_errors"] == {}
    ids = dag_ids(compiled.system)
    assert sorted(read_back["dags"]) == sorted(ids.values())
    for dag in read_back["dags"].values():
        assert Path(dag["fileloc"]) == compiled.out / "pipelines" / "airflow_dags.py"


def _order(tasks: dict) -> list[str]:
    """The tasks in the one order their dependencies allow, ties broken by the reading order
    of `tasks` (asserting no cycle)."""
    done: list[str] = []
    while len(done) < len(tasks):
        ready = [t for t in tasks if t not in done and set(tasks[t]["upstream"]) <= set(done)]
        assert ready, f"a cycle among {sorted(set(tasks) - set(done))}"
        done.append(ready[0])
    return done


@pytest.mark.engine
def test_the_dags_run_the_contracts_tasks_in_order(compiled, read_back):
    ids = dag_ids(compiled.system)
    for name, tasks in (("training", (*TRAINING_TASKS, CLEANUP_TASK)),
                        ("materialize", MATERIALIZE_TASKS),
                        ("monitoring", ("ingest", *MONITORING_TASKS, CLEANUP_TASK))):
        read = read_back["dags"][ids[name]]["tasks"]
        assert sorted(read) == sorted(tasks), name
        # each task waits for the one before it in the contract, so the contract's order is
        # the only one the dependencies allow (read in reverse, the ties would show)
        for before, task in zip(tasks, tasks[1:], strict=False):
            assert before in read[task]["upstream"], (name, task)
        assert _order({t: read[t] for t in reversed(tasks)}) == list(tasks), name


@pytest.mark.engine
def test_schedules_retries_and_timeouts_are_the_specs(compiled, read_back):
    system, ids = compiled.system, dag_ids(compiled.system)
    dags = read_back["dags"]
    assert dags[ids["training"]]["cron"] == CRON_ALIASES[system.training.schedule] == "0 0 * * *"
    assert dags[ids["training"]]["timetable"] == "CronTriggerTimetable"
    assert dags[ids["training"]]["every"] is None
    assert dags[ids["materialize"]]["timetable"] == "DeltaTriggerTimetable"
    assert dags[ids["materialize"]]["every"] == system.training.materialize_interval_seconds
    assert dags[ids["monitoring"]]["every"] == min(
        3600, system.training.materialize_interval_seconds)
    assert dags[ids["training"]]["params"] == {"promote_model": True}
    assert dags[ids["monitoring"]]["params"] == {"fail_on_alert": False}
    for dag in dags.values():
        assert (dag["catchup"], dag["max_active_runs"]) == (False, 1)
        assert dag["start_date"] == "2026-01-01T00:00:00+00:00"  # fixed: the same bytes
        for name, task in dag["tasks"].items():
            assert task["retries"] == system.training.retries, name
            assert task["retry_delay"] == system.training.retry_delay_seconds, name
            assert task["timeout"] == system.training.timeout_seconds, name


@pytest.mark.engine
def test_airflow_takes_every_schedule_the_spec_can_write(read_back):
    """So lint has no schedule syntax to refuse for airflow: Airflow's cron timetable takes
    the aliases' cron lines and lists, ranges, steps and Sunday as 7."""
    assert read_back["schedules"] == {s: "ok" for s in [*CRON_ALIASES.values(), *CRON_FORMS]}


@pytest.fixture(scope="module")
def trained(compiled, airflow_env):
    return _dags_test(airflow_env, compiled.out, compiled.root / "run",
                      dag_ids(compiled.system)["training"])


@pytest.mark.engine
def test_airflow_dags_test_trains_judges_registers_and_promotes(compiled, trained):
    ran = trained
    assert ran.done.returncode == 0, ran.log[-4000:]
    assert ran.tasks == {t: ("success", 1) for t in (*TRAINING_TASKS, CLEANUP_TASK)}, \
        ran.log[-4000:]
    training = json.loads((ran.state / "training.json").read_text())
    assert training["status"] == "completed"
    assert training["flow_run_id"].startswith("manual__")  # the DAG run's id
    assert training["promoted"] is True
    assert set(training["metrics"]) == set(compiled.system.evaluation.metrics)
    assert training["gates"] == [{"metric": "auc", "op": ">=", "threshold": 0.8,
                                  "value": training["metrics"]["auc"], "passed": True}]
    assert training["rows"]["train"] + training["rows"]["test"] == \
        training["rows"]["training_set"] > 0
    models = json.loads((ran.state / "models.json").read_text())
    assert models["current"] == training["model_tag"]
    name, version = training["model_tag"].split(":")
    assert (ran.home / "bentoml" / "models" / name / version / "model.yaml").is_file()
    # the run succeeded: its folder of files between tasks is gone, the runs folder stays
    runs = ran.state / RUNS_DIR / dag_ids(compiled.system)["training"]
    assert runs.is_dir() and list(runs.iterdir()) == []


@pytest.mark.engine
def test_a_gate_that_cannot_be_met_fails_the_run_at_evaluate_without_a_retry(
        tmp_path, airflow_env):
    def unreachable(doc: dict) -> None:
        doc["evaluation"]["gates"] = {"auc": ">= 0.999"}

    system, out = _compile(_project(tmp_path, unreachable))
    ran = _dags_test(airflow_env, out, tmp_path / "run", dag_ids(system)["training"])
    assert "QualityGateError" in ran.log, ran.log[-4000:]
    # evaluate failed on its first try, not retried (training.retries is 2); nothing after it
    # ran, and what ran before it succeeded
    evaluated = TRAINING_TASKS.index("evaluate")
    assert ran.tasks == {
        **{t: ("success", 1) for t in TRAINING_TASKS[:evaluated]}, "evaluate": ("failed", 1),
        **{t: ("upstream_failed", 0) for t in (*TRAINING_TASKS[evaluated + 1:], CLEANUP_TASK)},
    }, ran.log[-4000:]
    assert not (ran.state / "models.json").exists()
    # a failed run keeps its files, for a task cleared to run again
    runs = ran.state / RUNS_DIR / dag_ids(system)["training"]
    [run] = runs.iterdir()
    assert (run / "train" / "model").is_file()


@pytest.mark.engine
def test_the_monitoring_dag_reports_on_the_trained_system(compiled, trained, airflow_env):
    """After the training run, in the same Airflow and state: drift, freshness, staleness and
    live quality, recorded as the Prefect monitoring flow records them."""
    dag_id = dag_ids(compiled.system)["monitoring"]
    ran = _dags_test(airflow_env, compiled.out, compiled.root / "run", dag_id)
    assert ran.done.returncode == 0, ran.log[-4000:]
    assert ran.tasks == {t: ("success", 1) for t in ("ingest", *MONITORING_TASKS, CLEANUP_TASK)}
    report = json.loads((ran.state / "monitoring.json").read_text())
    assert {"drift", "freshness", "staleness", "live_quality", "alerts"} <= set(report)
    training = json.loads((ran.state / "training.json").read_text())
    assert report["serving"]["model_tag"] == training["model_tag"]
    assert report["data_fingerprint"] == training["data_fingerprint"]
    assert list((ran.state / RUNS_DIR / dag_id).iterdir()) == []
