"""What `mlstack status` says about the living system: each sidecar observed by its owner
marker (not by its record), a dead one named as a problem while a version serves, and the
keeper's, schedules' and alerts' reports rendered as lines a user reads."""

from __future__ import annotations

import sys

import pytest

from mlstack.cli.living_output import (
    render_alerts,
    render_keeper,
    render_last_retrain,
    render_schedules,
)
from mlstack.ops.local import procs, sidecars
from mlstack.ops.local.living import Living, living_problems, sidecar_rows
from tests.test_supervision import throwaway_project, wait_for

SLEEPER = (sys.executable, "-c", "import time; time.sleep(600)")


@pytest.fixture
def project(tmp_path, monkeypatch):
    yield from throwaway_project(tmp_path, monkeypatch)


def test_a_sidecar_is_observed_by_its_marker_and_a_dead_one_is_a_problem(project):
    sidecar = sidecars.Sidecar("prometheus", SLEEPER, cwd=project.project_dir,
                               what="Prometheus")
    pid = sidecars.start(project, sidecar)
    rows = sidecar_rows(project)
    assert [(r["name"], r["running"], r["pid"]) for r in rows] == [("prometheus", True, pid)]
    assert living_problems(Living(sidecars=rows), serving=True) == []

    procs.stop_process(pid, timeout=5.0)  # the record still names the PID: not believed
    wait_for(lambda: not sidecars.running(project, "prometheus"), what="the sidecar gone")
    rows = sidecar_rows(project)
    assert rows[0]["running"] is False and rows[0]["pid"] is None
    problems = living_problems(Living(sidecars=rows), serving=True)
    assert problems == ["Prometheus is not running (the keeper restarts it)"]
    assert living_problems(Living(sidecars=rows), serving=False) == []  # after down: fine


def test_a_wanted_keeper_that_is_not_running_is_a_problem():
    gone = Living(keeper={"wanted": True, "running": False})
    assert living_problems(gone, serving=True) == [
        "the keeper is not running (a version's supervisor starts it again within seconds)"]
    assert living_problems(Living(keeper={"wanted": False, "running": False}), True) == []
    assert render_keeper({"wanted": True, "running": False}) == ["  keeper: NOT running; "
                                                                 "0 repairs"]


def test_the_reports_render_as_lines():
    keeper = render_keeper({"wanted": True, "running": True, "pid": 42,
                            "seconds_since_last_pass": 1.0,
                            "repairs": [{"at": 100.0, "done": ["restarted v1 (pid 7)"]}]},
                           now=130.0)
    assert keeper == ["  keeper: running (pid 42), last pass 1 s ago; 1 repair, the last 30 s ago",
                      "    last repair: restarted v1 (pid 7)"]
    schedules = render_schedules({"server": "ready", "ui": "http://127.0.0.1:4200",
                                  "deployments": [{
                                      "name": "churn-materialize", "schedules": ["every 60 s"],
                                      "last_run": {"state": "Completed", "start": "T1",
                                                   "seconds": 12.4},
                                      "next_run": {"state": "Scheduled", "at": "T2"}}]})
    assert schedules == ["  schedules: Prefect ready (UI http://127.0.0.1:4200)",
                         "    churn-materialize            every 60 s; last Completed at T1 "
                         "(12 s); next T2"]
    alerts = render_alerts({"state": "up", "prometheus": "http://127.0.0.1:9090",
                            "targets": [{"job": "router", "url": "u", "health": "up"}],
                            "alerts": [{"name": "ChurnErrorRate", "severity": "page",
                                        "since": "T3", "summary": "5xx above budget"}],
                            "pending": []})
    assert alerts == ["  alerts: 1 firing (Prometheus http://127.0.0.1:9090, 1/1 targets up)",
                      "    FIRING ChurnErrorRate (page) since T3: 5xx above budget"]
    assert render_alerts({"state": "alerts are not evaluated locally: no prometheus"}) == [
        "  alerts: alerts are not evaluated locally: no prometheus"]




def test_the_last_scheduled_retrain_is_told_from_the_journal():
    history = [{"event": "deploy-succeeded", "version": "v1", "at": 10.0},
               {"event": "retrain-skipped", "trigger": "schedule", "at": 40.0,
                "reason": "the source data did not change since v1 trained"},
               {"event": "deploy-succeeded", "version": "v2", "at": 50.0}]
    assert render_last_retrain(history, now=100.0) == [
        "  last scheduled retrain: retrain-skipped the source data did not change since v1 "
        "trained (60 s ago)"]
    history.append({"event": "deploy-succeeded", "version": "v3", "trigger": "schedule",
                    "at": 90.0})
    assert render_last_retrain(history, now=100.0) == [
        "  last scheduled retrain: deploy-succeeded v3 (10 s ago)"]
    assert render_last_retrain(history[:1]) == []


def test_status_reports_the_prediction_log_of_every_worker_and_the_feedback(project):
    """What two workers of v1 and one of v2 logged (their stats files), summed per version,
    and the outcomes POST /feedback stored; a version that dropped rows says so."""
    from mlstack.cli.living_output import render_prediction_log
    from mlstack.ops.local.living import prediction_log_report
    from mlstack.runtime.feedback import FeedbackStore
    from mlstack.runtime.prediction_log import PredictionLog, new_request_id

    assert prediction_log_report(project) == {}  # nothing logged yet: status says nothing
    folder = project.runtime_state_dir / "prediction_log"
    ids = []
    for version, pid, rows in (("v1", 101, 2), ("v1", 102, 3), ("v2", 103, 1)):
        log = PredictionLog(folder, version, "churn:x", flush_seconds=0.05)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr("os.getpid", lambda pid=pid: pid)
            ids.append(new_request_id())
            assert log.record(ids[-1], "predict", [{"customer_id": i} for i in range(rows)],
                              [0.5] * rows)
            assert log.flush(10)
            log._write_stats()
        log.close()
    store = FeedbackStore(folder)
    assert store.record(ids[0], 1).status == "stored"
    report = prediction_log_report(project)
    assert report["versions"]["v1"]["logged"] == 5 and report["versions"]["v2"]["logged"] == 1
    assert report["feedback"] == 1
    report["versions"]["v2"]["dropped"] = 4
    assert render_prediction_log(report) == [
        f"  prediction log: {folder}",
        "    v1       5 rows logged, 0 dropped",
        "    v2       1 rows logged, 4 dropped (DROPPING: the writer falls behind or fails)",
        "    feedback: 1 outcomes stored"]
