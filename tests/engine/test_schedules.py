"""The schedules run locally on Prefect's own machinery (issue 19), with the real server.

One churn project, initialised and deployed, with a test spec of short schedules: the
feature freshness SLO at 2 minutes (so materialize and monitoring run every 60 s, derived)
and the daily retrain moved to 12 hours from now (so it never runs here). The project's
keeper is stopped: the test drives the supervision itself (sidecars.ensure). Then, in order:

1. the Prefect server is ready, its UI answers, and the deployments carry the spec's
   schedules (60 s intervals, the training cron in UTC);
2. a scheduled materialize run completes with no command, and status_report shows each
   deployment's last run (state, start, duration) and next run;
3. the server and the runner killed with SIGKILL are restarted by sidecars.ensure; every
   scheduled slot (60 s apart) from the first on has exactly one run, none left waiting:
   no run lost, none run twice;
4. `mlstack run materialize` creates a run on the server and follows it (states, tasks),
   exit 0; with a source file gone it fails with exit 1, the failed stage named;
5. rows `mlstack run feed` appends are served, with no command, within two intervals (the
   scheduled materialize);
6. `mlstack run training` on the changed data runs the training deployment on the server
   (the scheduled retrain: deploy's stages, unattended) and v2 rolls out through the canary,
   the journal naming the trigger "schedule"; once more on the same data it makes no version.

Everything is stopped by the module's teardown (`mlstack down`, then by marker).
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from mlstack.ops.local import keeper, procs, scheduler, sidecars
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

pytestmark = [pytest.mark.engine, pytest.mark.slow]

INTERVAL = 60  # seconds: half the 2-minute freshness SLO
RUN_DEADLINE = 300.0  # a scheduled run on a busy 2-core machine (materialize: ~40-60 s)
RESTART_DEADLINE = 240.0
PICKUP_GRACE = 90.0  # a slot older than this must have been taken by the runner


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("schedules")
    folder = root / "churn"
    env = deploy_env(root)
    run_mlstack(root, "init", str(folder), "--blueprint", "churn", "--format", "json",
                env=env)
    spec = folder / "mlstack.yaml"
    adjust_slos(spec, {"feature_freshness: 1d": "feature_freshness: 2m"},
                "materialize and monitoring every minute (half the SLO), so scheduled runs "
                "happen within the test")
    adjust_slos(spec, {
        "latency: {p50_ms: 25, p95_ms: 60, p99_ms: 100}":
            "latency: {p50_ms: 500, p95_ms: 1000, p99_ms: 2000}",
        "throughput_rps: 50": "throughput_rps: 10"},
        "the retrain's rollout is judged here for its path through the stages, not for the "
        "latency of a machine shared with other test runs")
    hour = (datetime.now(UTC).hour + 12) % 24
    change_spec(spec, {'schedule: "@daily"': f'schedule: "0 {hour} * * *"'})
    with pytest.MonkeyPatch.context() as patch:
        # this process declares the sidecars as deploy did: the same homes and PYTHONPATH
        patch.setenv("HOME", env["HOME"])
        patch.setenv("PYTHONPATH", env["PYTHONPATH"])
        for name in STATE_VARIABLES:
            patch.delenv(name, raising=False)
        try:
            # the SLOs are not this test's: a busy machine misses the latency ones
            deploy = run_mlstack(folder, "deploy", "--port", str(procs.free_port()),
                                 "--no-verify", env=env, check=False)
            journal = deploy_state(folder)
            assert journal.get("current"), f"nothing serves:\n{deploy.stdout}{deploy.stderr}"
            paths = ProjectPaths.for_spec(spec)
            keeper.stop(paths)  # the test is the keeper here
            from mlstack.frontend.analysis import analyze_spec

            system = analyze_spec(paths.spec).system
            declared = sidecars.declared(paths, system, providers=(scheduler.__name__,))
            sidecars.start_all(paths, declared)
            yield {"folder": folder, "env": env, "paths": paths, "declared": declared,
                   "hour": hour, "base": scheduler.server_url(paths)}
        finally:
            stop_everything(folder, env)


def _deployments(base: str) -> dict[str, dict]:
    return {d["name"]: d for d in scheduler.deployments(base)}


def _auto_runs(base: str, deployment_id: str, before: datetime) -> list[dict]:
    runs = scheduler.api(base, "/flow_runs/filter", {
        "deployments": {"id": {"any_": [deployment_id]}},
        "flow_runs": {"expected_start_time": {"before_": before.isoformat()}},
        "sort": "EXPECTED_START_TIME_ASC", "limit": 200})
    return [r for r in runs if r.get("auto_scheduled")]


def _parse(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def _wait(what: str, check, deadline: float, every: float = 2.0):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        found = check()
        if found:
            return found
        time.sleep(every)
    raise AssertionError(f"{what}: not within {deadline:g} s")


def test_the_server_answers_and_the_deployments_carry_the_specs_schedules(project):
    base, paths = project["base"], project["paths"]
    assert base == f"http://127.0.0.1:{sidecars.port_for(paths, 'prefect-server')}"
    assert procs.http_status(base + "/api/health") == 200
    assert procs.http_status(base + "/") == 200  # the UI
    assert scheduler.database_file(paths).is_file()  # in the project's state
    names = {"churn-materialize", "churn-monitoring", "churn-training"}
    # the runner registers them once its child has read the flows (seconds, more when busy)
    found = _wait("the runner registered the deployments",
                  lambda: (lambda d: d if set(d) == names else None)(_deployments(base)),
                  RUN_DEADLINE)
    for name in ("churn-materialize", "churn-monitoring"):
        [schedule] = [s["schedule"] for s in found[name]["schedules"]]
        assert schedule["interval"] == INTERVAL, (name, schedule)
    [training] = [s["schedule"] for s in found["churn-training"]["schedules"]]
    assert (training["cron"], training["timezone"]) == (f"0 {project['hour']} * * *", "UTC")


def test_a_scheduled_materialize_run_completes_and_status_shows_it(project):
    base, paths = project["base"], project["paths"]
    materialize = _deployments(base)["churn-materialize"]

    def completed():
        return [r for r in _auto_runs(base, materialize["id"], datetime.now(UTC))
                if r["state"]["type"] == "COMPLETED"]

    _wait("a scheduled materialize run completed", completed, RUN_DEADLINE)

    def reported():
        report = scheduler.status_report(paths)
        row = next(d for d in report["deployments"] if d["name"] == "churn-materialize")
        return (report, row) if (row["last_run"] or {}).get("state") == "Completed" else None

    report, row = _wait("status shows the completed run last", reported, RUN_DEADLINE)
    assert report["server"] == "ready" and report["ui"] == base
    assert row["schedules"] == [f"every {INTERVAL} s"]
    assert row["last_run"]["seconds"] > 0 and _parse(row["last_run"]["start"])
    assert row["next_run"]["state"] in ("Scheduled", "Late")
    assert _parse(row["next_run"]["at"]) > _parse(row["last_run"]["start"])
    training = next(d for d in report["deployments"] if d["name"] == "churn-training")
    assert training["schedules"] == [f"cron 0 {project['hour']} * * * (UTC)"]
    assert training["last_run"] is None and training["next_run"] is not None


def test_killed_server_and_runner_come_back_and_no_slot_is_lost_or_run_twice(project):
    base, paths, declared = project["base"], project["paths"], project["declared"]
    before = {name: sidecars.record(paths, name)["pid"]
              for name in ("prefect-server", "prefect-runner")}
    killed_at = datetime.now(UTC)
    for pid in before.values():
        os.kill(pid, signal.SIGKILL)

    def restarted():
        sidecars.ensure(paths, declared)
        now = {name: sidecars.record(paths, name).get("pid") for name in before}
        return all(now[n] != before[n] and sidecars.running(paths, n) for n in before) \
            and sidecars.healthy(declared[0]) and now

    after = _wait("ensure restarted the server and the runner", restarted, RESTART_DEADLINE)
    assert sidecars.record(paths, "prefect-server")["port"] == declared[0].port
    assert "it was not running" in sidecars.record(paths, "prefect-runner")["reason"]
    ids = {name: d["id"] for name, d in _deployments(base).items()}

    def ran_after_the_kill():
        runs = _auto_runs(base, ids["churn-materialize"], datetime.now(UTC))
        return [r for r in runs if _parse(r["expected_start_time"]) > killed_at
                and r["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED")]

    _wait("a run scheduled after the kill finished", ran_after_the_kill, RUN_DEADLINE)
    # judge the slots up to one at least an interval after the kill, each older than the
    # grace a runner has to take it
    judged = killed_at + timedelta(seconds=INTERVAL + PICKUP_GRACE + 5)
    time.sleep(max(0.0, (judged - datetime.now(UTC)).total_seconds()))
    cutoff = datetime.now(UTC) - timedelta(seconds=PICKUP_GRACE)
    for name in ("churn-materialize", "churn-monitoring"):
        runs = _auto_runs(base, ids[name], cutoff)
        slots = Counter(r["expected_start_time"] for r in runs)
        assert slots and max(slots.values()) == 1, (name, slots)  # none run twice
        times = sorted(_parse(t) for t in slots)
        gaps = [(a, b) for a, b in zip(times, times[1:], strict=False)
                if (b - a).total_seconds() != INTERVAL]
        assert gaps == [], (name, gaps)  # no slot missing between the first and the last
        assert times[0] < killed_at < times[-1]
        waiting = [r["expected_start_time"] for r in runs if r["state"]["type"] == "SCHEDULED"]
        assert waiting == [], (name, waiting)  # none left behind (lost)
    assert after  # the PIDs the supervision started


def test_mlstack_run_goes_through_the_server_and_a_failure_exits_1(project):
    folder, env, base = project["folder"], project["env"], project["base"]
    proc = run_mlstack(folder, "run", "materialize", env=env)
    assert "  run scheduled" in proc.stderr and "  run running" in proc.stderr, proc.stderr
    assert "  materialize  done" in proc.stderr and "  run completed" in proc.stderr
    assert "materialize completed in" in proc.stdout
    assert f"the run in the Prefect UI: {base}/runs/flow-run/" in proc.stdout
    source = folder / "data" / "customers.parquet"
    aside = source.with_suffix(".aside")
    source.rename(aside)
    try:
        failed = run_mlstack(folder, "run", "materialize", env=env, check=False)
    finally:
        aside.rename(source)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "error: stage 'materialize' failed: FAILED" in failed.stderr, failed.stderr
    assert "customers.parquet" in failed.stderr, failed.stderr
    assert "the run in the Prefect UI" in failed.stderr


def _served_charges(port: int, customer: int) -> float | None:
    status, body = procs.http_post_json(f"http://127.0.0.1:{port}/features",
                                        {"rows": [{"customer_id": customer}]})
    if status != 200 or not isinstance(body, list) or not body:
        return None
    return next((v for k, v in body[0].items() if k.endswith("monthly_charges")), None)


def test_fed_rows_are_served_with_no_command(project):
    import pandas as pd

    folder, env = project["folder"], project["env"]
    feed = run_mlstack(folder, "run", "feed", "--once", "--seed", "7", env=env)
    rows = pd.read_parquet(folder / "data" / "customers.parquet")
    fed = rows[rows["event_timestamp"] == rows["event_timestamp"].max()]
    assert len(fed) > 0, feed.stdout
    customer, charges = int(fed.iloc[0]["customer_id"]), float(fed.iloc[0]["monthly_charges"])
    port = deploy_state(folder)["router"]["port"]
    before = _served_charges(port, customer)
    assert before is not None and abs(before - charges) > 1e-9, (before, charges)
    served = _wait("the fed row served", lambda: (
        (v := _served_charges(port, customer)) is not None and abs(v - charges) < 1e-6),
        2 * INTERVAL + RUN_DEADLINE, every=5.0)
    assert served


def test_mlstack_run_training_rolls_the_new_data_out_and_unchanged_data_makes_no_version(
        project):
    folder, env = project["folder"], project["env"]
    assert deploy_state(folder)["current"] == "v1"  # the feed above changed the data
    proc = run_mlstack(folder, "run", "training", env=env, timeout=1500)
    assert "  run completed" in proc.stderr, proc.stdout + proc.stderr
    state = deploy_state(folder)
    assert state["current"] == "v2" and state["previous"] == "v1", state["history"][-5:]
    events = [(e["event"], e.get("version"), e.get("trigger")) for e in state["history"]]
    assert ("deploy-started", "v2", "schedule") in events
    assert ("deploy-succeeded", "v2", "schedule") in events
    succeeded = next(e for e in state["history"] if e["event"] == "deploy-succeeded"
                     and e.get("version") == "v2")
    assert succeeded.get("rollout") == [5, 25, 100], succeeded  # the canary's steps
    status = run_mlstack(folder, "status", env=env, check=False)
    assert "last scheduled retrain: deploy-succeeded v2" in status.stdout, status.stdout

    again = run_mlstack(folder, "run", "training", env=env, timeout=900)
    assert "  run completed" in again.stderr, again.stdout + again.stderr
    state = deploy_state(folder)
    assert [v["version"] for v in state["versions"]] == ["v1", "v2"]
    assert state["history"][-1]["event"] == "retrain-skipped", state["history"][-3:]
