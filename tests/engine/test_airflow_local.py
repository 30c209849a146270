"""`mlstack deploy` with `orchestrator: airflow` on the local target runs the DAGs under the
project's own supervised Airflow 3 (api-server, scheduler, dag-processor; SQLite; issue 23).

One churn project, initialised with `orchestrator: airflow` and deployed once, with the feature
freshness SLO at 2 minutes (so materialize and monitoring run every 60 s, derived) and the
retrain scheduled hourly at a minute just after the deploy (mlstack's DAG
churn_scheduled_training: one scheduled retrain in the module, not one every few minutes
competing for the machine with the rest of it). Airflow
runs in the environment of the generated pipelines/airflow_requirements.txt, built once into
the infra tests' cache (ensure_env, shared with test_airflow_dags.py). The project's keeper is
stopped: the test drives the supervision itself (sidecars.ensure). Then, in order:

1. lint takes airflow on the local target; deploy trained (in its own worker, from the
   generated steps), started Airflow's three services and none of Prefect's; the DAGs are
   registered (from .mlstack/airflow/dags: links to the version's DAGs and mlstack's),
   materialize, monitoring and the scheduled retrain unpaused on the spec's schedules, the
   generated training DAG paused (a retrain goes through deploy's rollout), and deploy
   started no training run;
2. a scheduled materialize run completes with no command, and status shows each DAG's
   schedule, last run and next run;
3. `mlstack run materialize` triggers a DAG run and follows it (states, tasks), exit 0; with a
   source file gone it exits 1 naming the failed task (the scheduled retrain paused
   meanwhile);
4. the scheduler killed with SIGKILL is restarted by sidecars.ensure, and the next scheduled
   materialize run completes;
   chaos: the API server and the DAG processor killed with SIGKILL while `mlstack run
   materialize` follows a run: the follower waits for the API, ensure restarts both, and
   the run ends in success (exit 0);
5. the retrain's scheduled slot ran the retrain DAG on data the serving model trained on: no
   version (the journal says why); once `mlstack run feed` changed the data, `mlstack run
   training` triggers the same DAG and follows it: it rolls a new version out through deploy's
   stages and canary (the journal naming the trigger "schedule"), survives the restart of the
   Airflow services that the promotion causes (they come back with the new version's DAGs,
   and the follower waits for the API), and succeeds; the retrain's process is gone;
6. `mlstack down` leaves no process of the project (Airflow's retitled ones and any retrain
   included).

CI cost: one deploy (about a minute on two cores), a retrain with its canary (a
few minutes) and a few minutes of scheduled runs.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mlstack.codegen.backends.airflow import REQUIREMENTS
from mlstack.codegen.contract import ENV_SERVING_VERSION
from mlstack.frontend.analysis import analyze_spec
from mlstack.ops.cluster.infra_env import ensure_env
from mlstack.ops.local import airflow_retrain, airflow_scheduler, keeper, procs, scheduler, sidecars
from mlstack.ops.paths import ProjectPaths
from tests.engine.deploy_support import (
    STATE_VARIABLES,
    adjust_slos,
    change_spec,
    deploy_env,
    deploy_state,
    run_mlstack,
    stop_everything,
)
from tests.engine.infra_fixtures import infra_cache  # noqa: F401  (fixture)

pytestmark = [pytest.mark.engine, pytest.mark.slow]

INTERVAL = 60  # seconds: half the 2-minute freshness SLO
RUN_DEADLINE = 300.0  # a scheduled run on a busy 2-core machine
RETRAIN_DEADLINE = 1800.0  # the next slot, then training, verification and the canary
SLOT_AFTER = timedelta(minutes=4)  # the retrain's one slot in the module: after the deploy
DAGS = {"training": "churn_training", "materialize": "churn_materialize",
        "monitoring": "churn_monitoring"}
RETRAIN = "churn_scheduled_training"


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
    spec.write_text(text)
    # hourly, at a minute just past the deploy: one scheduled retrain in the module, not one
    # every few minutes competing for the machine with the rest of it (a slot the deploy
    # outlasts is run when the DAG is unpaused: catchup off runs the latest one missed)
    slot_at = (datetime.now(UTC) + SLOT_AFTER).replace(second=0, microsecond=0)
    retrain_schedule = f"{slot_at.minute} * * * *"
    change_spec(spec, {'schedule: "@daily"': f'schedule: "{retrain_schedule}"'})
    adjust_slos(spec, {"feature_freshness: 1d": "feature_freshness: 2m"},
                "materialize and monitoring every minute (half the SLO), so scheduled runs "
                "happen within the test")
    adjust_slos(spec, {
        "latency: {p50_ms: 25, p95_ms: 60, p99_ms: 100}":
            "latency: {p50_ms: 500, p95_ms: 1000, p99_ms: 2000}",
        "throughput_rps: 50": "throughput_rps: 10"},
        "the scheduled retrain's rollout is judged here for its path through the stages, not "
        "for the latency of a machine shared with other test runs")
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
                   "deploy": deploy, "began": began, "retrain_schedule": retrain_schedule,
                   "slot_at": slot_at}
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


def _retrains_running(paths) -> list:
    return procs.owned(airflow_retrain.owner(paths))


@contextmanager
def _retrain_paused(base: str, paths):
    """The scheduled retrain paused, and none running, for the block: it would train on a
    source file the block moves aside."""
    airflow_scheduler.api(base, f"/dags/{RETRAIN}", {"is_paused": True}, method="PATCH")
    try:
        _wait("no retrain running", lambda: not _retrains_running(paths), RETRAIN_DEADLINE)
        yield
    finally:
        airflow_scheduler.api(base, f"/dags/{RETRAIN}", {"is_paused": False}, method="PATCH")


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
    # healthy; on a busy machine one probe may take longer than the keeper's 2 s
    _wait("the API server's health probe answers 200",
          lambda: airflow_scheduler.answers(base, timeout=10.0) is None, 60.0)
    assert (airflow_scheduler.home(paths) / "airflow.db").is_file()  # in the project's state
    dags = airflow_scheduler.dags(base)
    assert set(DAGS.values()) <= set(dags)
    version = deploy_state(project["folder"])["current"]
    folder = airflow_scheduler.home(paths) / "dags"
    assert dags[DAGS["materialize"]]["fileloc"] == str(folder / "airflow_dags.py")
    assert Path(dags[DAGS["materialize"]]["fileloc"]).resolve() == (
        paths.versions_dir / version / "pipelines" / "airflow_dags.py")
    assert Path(dags[RETRAIN]["fileloc"]).resolve() == Path(
        airflow_retrain.__file__).with_name("airflow_retrain_dag.py").resolve()
    assert {d: dags[d]["is_paused"] for d in (*DAGS.values(), RETRAIN)} == {
        DAGS["training"]: True, DAGS["materialize"]: False, DAGS["monitoring"]: False,
        RETRAIN: False}
    assert dags[RETRAIN]["timetable_summary"] == project["retrain_schedule"]
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
    retrain = rows[RETRAIN]
    assert retrain["paused"] is False and retrain["next_run"]["state"] == "SCHEDULED"
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
    with _retrain_paused(base, project["paths"]):
        source.rename(aside)
        try:
            failed = run_mlstack(folder, "run", "materialize", env=env, check=False)
        finally:
            aside.rename(source)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "error: stage 'materialize' failed: FAILED: " in failed.stderr, failed.stderr
    assert "customers.parquet" in failed.stderr, failed.stderr  # the task's own error
    assert "the run in the Airflow UI" in failed.stderr


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


def test_a_run_outlives_the_api_server_and_dag_processor_killed_under_it(project):
    """Chaos: `mlstack run materialize` is following a DAG run when the API server (the
    REST API the follower polls, and the execution API the running task reports to) and
    the DAG processor are killed with SIGKILL. The follower says it waits, ensure restarts
    both, and the run still ends in success: exit 0, no traceback."""
    folder, env, paths, declared = (project["folder"], project["env"], project["paths"],
                                    project["declared"])
    base = project["base"]
    killed = (airflow_scheduler.API_SERVER, airflow_scheduler.DAG_PROCESSOR)
    with _retrain_paused(base, paths):
        before = {name: sidecars.record(paths, name)["pid"] for name in killed}
        started = {r["dag_run_id"] for r in _runs(base, DAGS["materialize"])}
        result: list = []
        follower = threading.Thread(target=lambda: result.append(run_mlstack(
            folder, "run", "materialize", env=env, check=False, timeout=RUN_DEADLINE + 300)))
        follower.start()
        try:
            def running():
                return [r for r in _runs(base, DAGS["materialize"])
                        if r["dag_run_id"] not in started and r["run_type"] == "manual"
                        and r["state"] == "running"]

            _wait("the manual run is running", running, RUN_DEADLINE, every=0.5)
            for name in killed:
                os.kill(before[name], signal.SIGKILL)
            deadline = time.monotonic() + RUN_DEADLINE + 300
            while follower.is_alive() and time.monotonic() < deadline:
                sidecars.ensure(paths, declared)  # the keeper's pass, which the test plays
                follower.join(2.0)
        finally:
            follower.join(RUN_DEADLINE + 300)
    assert result, "the follower did not end"
    proc = result[0]
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "(server not answering: waiting for it)" in proc.stderr, proc.stderr
    assert "  run success" in proc.stderr and "materialize completed in" in proc.stdout
    for name in killed:
        pid = sidecars.record(paths, name)["pid"]
        assert pid != before[name] and procs.is_owned(pid, sidecars.owner(paths, name)), name
        assert sidecars.record(paths, name)["restarts"] >= 1, name
    _wait("the API server answers", lambda: airflow_scheduler.answers(base) is None, 120.0)


def test_the_retrain_dag_rolls_new_data_out_and_outlives_the_restart_it_causes(project):
    folder, env, paths, base = project["folder"], project["env"], project["paths"], project["base"]
    before = {name: sidecars.record(paths, name) for name in airflow_scheduler.NAMES}

    def scheduled():  # the slot's own run (an earlier one missed may have run at unpause)
        return [r for r in _runs(base, RETRAIN) if r["run_type"] == "scheduled"
                and _parse(r["run_after"]) >= project["slot_at"]
                and r["state"] in ("success", "failed")]

    # the schedule's slot ran the retrain, on data the serving model trained on: no version;
    # no other slot comes within the module, so the run below is the only one at work
    [slot, *_] = _wait("the retrain's scheduled slot ran", scheduled, RETRAIN_DEADLINE, every=5)
    assert slot["state"] == "success", slot
    state = deploy_state(folder)
    skipped = [e for e in state["history"] if e.get("trigger")]
    assert [e["event"] for e in skipped] == ["retrain-skipped"] * len(skipped) and skipped, \
        state["history"][-4:]
    assert "did not change" in skipped[-1]["reason"], skipped[-1]
    fed = run_mlstack(folder, "run", "feed", "--once", "--seed", "7", env=env)
    assert fed.returncode == 0, fed.stdout + fed.stderr
    # now, not at the next slot: `mlstack run training` triggers the DAG and follows it
    # through the restart of the API it polls
    training = run_mlstack(folder, "run", "training", env=env, check=False, timeout=1500)
    assert training.returncode == 0, training.stdout + training.stderr
    assert "  start_retrain done" in training.stderr, training.stderr
    assert "  retrain_outcome done" in training.stderr and "  run success" in training.stderr
    assert f"/dags/{RETRAIN}/runs/manual__" in training.stdout, training.stdout
    [run] = [r for r in _runs(base, RETRAIN) if r["run_type"] == "manual"]
    state = deploy_state(folder)
    assert run["state"] == "success", (run, state["history"][-6:])
    new = state["current"]
    assert new != "v1" and state["previous"] == "v1", state["history"][-6:]
    events = [(e["event"], e.get("version"), e.get("trigger")) for e in state["history"]]
    assert ("deploy-started", new, "schedule") in events
    assert ("deploy-succeeded", new, "schedule") in events
    succeeded = next(e for e in state["history"] if e["event"] == "deploy-succeeded"
                     and e.get("version") == new)
    assert succeeded.get("rollout") == [5, 25, 100], succeeded  # through the canary
    found = airflow_retrain.outcome(paths, run["dag_run_id"])
    assert found is not None and found["ok"] and found["version"] == new, found
    tasks = airflow_scheduler.api(
        base, f"/dags/{RETRAIN}/dagRuns/{run['dag_run_id']}/taskInstances")["task_instances"]
    assert {t["task_id"]: t["state"] for t in tasks} == {
        "start_retrain": "success", "retrain_outcome": "success"}
    # the services were restarted once, for the new version, by the retrain's promotion
    # (the keeper it started declares them alike: no second restart), and the retrain's own
    # process outlived that restart (its outcome above) and has ended
    time.sleep(20.0)  # ten of the keeper's passes
    for name in airflow_scheduler.NAMES:
        after = sidecars.record(paths, name)
        assert after["restarts"] == before[name].get("restarts", 0) + 1, (name, after)
        assert after["reason"].startswith("its declaration changed"), after["reason"]
        assert after["declaration"]["env"][ENV_SERVING_VERSION] == new
        assert sidecars.running(paths, name), name
    assert airflow_scheduler.answers(base) is None
    dags = airflow_scheduler.dags(base)
    assert Path(dags[DAGS["materialize"]]["fileloc"]).resolve() == (
        paths.versions_dir / new / "pipelines" / "airflow_dags.py")
    assert not _retrains_running(paths)
    status = run_mlstack(folder, "status", env=env, check=False).stdout
    # the last one: this rollout, or a later slot's decision on the same data
    assert (f"last scheduled retrain: deploy-succeeded {new}" in status
            or f"last scheduled retrain: retrain-skipped {new}" in status), status
    [row] = [line for line in status.splitlines() if line.strip().startswith(RETRAIN)]
    assert "; last SUCCESS" in row, row


def test_down_leaves_no_process(project):
    folder, env, paths = project["folder"], project["env"], project["paths"]
    run_mlstack(folder, "down", env=env)  # a retrain at work would be stopped too
    assert procs.owned(paths.project_id) == []
    port = project["declared"][0].port
    assert procs.port_is_free(port)
