"""`mlstack deploy` with `orchestrator: airflow` on the local target runs the DAGs under the
project's own supervised Airflow 3 (api-server, scheduler, dag-processor; SQLite; issue 23).

One churn project, initialised with `orchestrator: airflow` and deployed once, with the feature
freshness SLO at 2 minutes (so materialize and monitoring run every 60 s, derived). Airflow
runs in the environment of the generated pipelines/airflow_requirements.txt, built once into
the infra tests' cache (ensure_env, shared with test_airflow_dags.py). The project's keeper is
stopped: the test drives the supervision itself (sidecars.ensure). Then, in order:

1. lint takes airflow on the local target; deploy trained (in its own worker, from the
   generated steps), started Airflow's three services and none of Prefect's; the DAGs are
   registered, materialize and monitoring unpaused on the spec's interval, the training DAG
   paused (a retrain goes through deploy's rollout), and deploy started no training run;
2. a scheduled materialize run completes with no command, and status shows each DAG's
   schedule, last run and next run;
3. `mlstack run materialize` triggers a DAG run and follows it (states, tasks), exit 0; with a
   source file gone it exits 1 naming the failed task; `mlstack run training` is refused
   with the way to retrain;
4. the scheduler killed with SIGKILL is restarted by sidecars.ensure, and the next scheduled
   materialize run completes;
5. `mlstack down` leaves no process of the project (Airflow's retitled ones included).

CI cost: one deploy (about a minute on two cores) and a few minutes of scheduled runs.
"""

from __future__ import annotations

import os
import signal
import time
from datetime import UTC, datetime

import pytest

from mlstack.codegen.backends.airflow import REQUIREMENTS
from mlstack.frontend.analysis import analyze_spec
from mlstack.ops.cluster.infra_env import ensure_env
from mlstack.ops.local import airflow_scheduler, keeper, procs, scheduler, sidecars
from mlstack.ops.paths import ProjectPaths
from tests.engine.deploy_support import (
    STATE_VARIABLES,
    adjust_slos,
    deploy_env,
    deploy_state,
    run_mlstack,
    stop_everything,
)
from tests.engine.infra_fixtures import infra_cache  # noqa: F401  (fixture)

pytestmark = [pytest.mark.engine, pytest.mark.slow]

INTERVAL = 60  # seconds: half the 2-minute freshness SLO
RUN_DEADLINE = 300.0  # a scheduled run on a busy 2-core machine
DAGS = {"training": "churn_training", "materialize": "churn_materialize",
        "monitoring": "churn_monitoring"}


@pytest.fixture(scope="module")
def project(tmp_path_factory, infra_cache):  # noqa: F811
    reqs = infra_cache / "requirements" / "airflow.txt"
    reqs.parent.mkdir(parents=True, exist_ok=True)
    reqs.write_text("\n".join(REQUIREMENTS) + "\n")
    ensure_env(reqs)  # the environment deploy finds (minutes on first use, then cached)
    root = tmp_path_factory.mktemp("airflow_local")
    folder = root / "churn"
    env = deploy_env(root, MLSTACK_CACHE_DIR=str(infra_cache))
    run_mlstack(root, "init", str(folder), "--blueprint", "churn", "--format", "json",
                env=env)
    spec = folder / "mlstack.yaml"
    text = spec.read_text()
    assert "\n  kind: local\n" in text
    text = text.replace("\n  kind: local\n", "\n  kind: local\n  orchestrator: airflow\n")
    assert '  schedule: "@daily"\n' in text  # lint refuses a scheduled retrain under Airflow
    spec.write_text(text.replace('  schedule: "@daily"\n', ""))
    adjust_slos(spec, {"feature_freshness: 1d": "feature_freshness: 2m"},
                "materialize and monitoring every minute (half the SLO), so scheduled runs "
                "happen within the test")
    with pytest.MonkeyPatch.context() as patch:
        # this process declares the sidecars as deploy did: the same homes and PYTHONPATH
        for name in ("HOME", "PYTHONPATH", "MLSTACK_CACHE_DIR"):
            patch.setenv(name, env[name])
        for name in STATE_VARIABLES:
            patch.delenv(name, raising=False)
        try:
            began = datetime.now(UTC)
            deploy = run_mlstack(folder, "deploy", "--port", str(procs.free_port()),
                                 "--no-verify", env=env, check=False)
            assert deploy_state(folder).get("current"), \
                f"nothing serves:\n{deploy.stdout}{deploy.stderr}"
            paths = ProjectPaths.for_spec(spec)
            keeper.stop(paths)  # the test is the keeper here
            system = analyze_spec(paths.spec).system
            declared = sidecars.declared(paths, system, providers=(scheduler.__name__,))
            sidecars.start_all(paths, declared)  # as deploy left them: healthy, untouched
            yield {"folder": folder, "env": env, "paths": paths, "declared": declared,
                   "spec": spec, "base": airflow_scheduler.server_url(paths),
                   "deploy": deploy, "began": began}
        finally:
            stop_everything(folder, env)


def _wait(what: str, check, deadline: float, every: float = 2.0):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        found = check()
        if found:
            return found
        time.sleep(every)
    raise AssertionError(f"{what}: not within {deadline:g} s")


def _runs(base: str, dag_id: str) -> list[dict]:
    answer = airflow_scheduler.api(base, f"/dags/{dag_id}/dagRuns?order_by=run_after&limit=100")
    return answer["dag_runs"]


def _parse(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def test_deploy_runs_the_dags_under_airflow_and_not_prefect(project):
    paths, base, declared = project["paths"], project["base"], project["declared"]
    assert [d.code for d in analyze_spec(project["spec"]).errors] == []
    out = project["deploy"].stderr  # the stages' lines
    for stage in ("ingest sources", "train", "register model"):  # deploy's own, unchanged
        assert f" ok {stage}" in out, out
    assert [s.name for s in declared] == list(airflow_scheduler.NAMES)
    for name in airflow_scheduler.NAMES:
        assert sidecars.running(paths, name), name
    assert not sidecars.record(paths, scheduler.SERVER)  # Prefect's never started
    assert base == f"http://127.0.0.1:{declared[0].port}"
    assert procs.http_status(base + airflow_scheduler.READY_PATH) == 200
    assert (airflow_scheduler.home(paths) / "airflow.db").is_file()  # in the project's state
    dags = airflow_scheduler.dags(base)
    assert set(DAGS.values()) <= set(dags)
    version = deploy_state(project["folder"])["current"]
    assert dags[DAGS["materialize"]]["fileloc"] == str(
        paths.versions_dir / version / "pipelines" / "airflow_dags.py")
    assert {d: dags[d]["is_paused"] for d in DAGS.values()} == {
        DAGS["training"]: True, DAGS["materialize"]: False, DAGS["monitoring"]: False}
    assert _runs(base, DAGS["training"]) == []  # deploy started no training run


def test_a_scheduled_materialize_run_completes_and_status_shows_it(project):
    base, paths = project["base"], project["paths"]

    def completed():
        return [r for r in _runs(base, DAGS["materialize"])
                if r["run_type"] == "scheduled" and r["state"] == "success"]

    _wait("a scheduled materialize run completed", completed, RUN_DEADLINE)
    report = airflow_scheduler.status_report(paths)
    assert (report["server"], report["ui"], report["orchestrator"]) == ("ready", base, "airflow")
    rows = {row["name"]: row for row in report["deployments"]}
    row = rows[DAGS["materialize"]]
    assert row["paused"] is False and row["schedules"] and row["schedules"][0] != "no schedule"
    assert row["last_run"]["state"] in ("SUCCESS", "RUNNING", "QUEUED")
    assert _parse(row["next_run"]["at"]) > _parse(row["last_run"]["start"])
    assert rows[DAGS["training"]]["paused"] is True
    assert rows[DAGS["training"]]["last_run"] is None
    assert rows[DAGS["training"]]["next_run"] is None
    status = run_mlstack(project["folder"], "status", env=project["env"], check=False)
    assert f"schedules: Airflow ready (UI {base})" in status.stdout, status.stdout
    assert "churn_materialize" in status.stdout and "PAUSED" in status.stdout


def test_mlstack_run_triggers_a_dag_run_and_a_failure_exits_1(project):
    folder, env, base = project["folder"], project["env"], project["base"]
    proc = run_mlstack(folder, "run", "materialize", env=env)
    assert "  run queued" in proc.stderr or "  run running" in proc.stderr, proc.stderr
    assert "  feast_apply  done" in proc.stderr, proc.stderr
    assert "  materialize  done" in proc.stderr and "  run success" in proc.stderr
    assert "materialize completed in" in proc.stdout
    assert f"the run in the Airflow UI: {base}/dags/churn_materialize/runs/manual__" in \
        proc.stdout
    manual = [r for r in _runs(base, DAGS["materialize"]) if r["run_type"] == "manual"]
    assert [r["state"] for r in manual] == ["success"]
    source = folder / "data" / "customers.parquet"
    aside = source.with_suffix(".aside")
    source.rename(aside)
    try:
        failed = run_mlstack(folder, "run", "materialize", env=env, check=False)
    finally:
        aside.rename(source)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "error: stage 'materialize' failed: FAILED: " in failed.stderr, failed.stderr
    assert "customers.parquet" in failed.stderr, failed.stderr  # the task's own error
    assert "the run in the Airflow UI" in failed.stderr
    training = run_mlstack(folder, "run", "training", env=env, check=False)
    assert training.returncode == 2 and "mlstack deploy --retrain" in training.stderr


def test_the_killed_scheduler_comes_back_and_runs_the_next_slot(project):
    base, paths, declared = project["base"], project["paths"], project["declared"]
    name = airflow_scheduler.SCHEDULER
    before = sidecars.record(paths, name)["pid"]
    os.kill(before, signal.SIGKILL)
    killed_at = datetime.now(UTC)

    def restarted():
        sidecars.ensure(paths, declared)
        pid = sidecars.record(paths, name).get("pid")
        return pid != before and procs.is_owned(pid, sidecars.owner(paths, name)) and pid

    _wait("ensure restarted the scheduler", restarted, 60.0)
    assert sidecars.record(paths, name)["reason"] == "it was not running"

    def ran_after_the_kill():
        return [r for r in _runs(base, DAGS["materialize"])
                if r["run_type"] == "scheduled" and r["state"] == "success"
                and _parse(r["run_after"]) > killed_at]

    _wait("a run scheduled after the kill completed", ran_after_the_kill, RUN_DEADLINE)


def test_down_leaves_no_process(project):
    folder, env, paths = project["folder"], project["env"], project["paths"]
    run_mlstack(folder, "down", env=env)
    assert procs.owned(paths.project_id) == []
    port = project["declared"][0].port
    assert procs.port_is_free(port)
