"""`mlstack run` on Airflow: airflow_run.run_dag against a stand-in of Airflow's REST API
(airflow_scheduler.api replaced): the trigger, the tasks reported in the order they ended,
a server away for a while, a run the scheduler never starts, and a failed task's error read
from its log. The real API is exercised by tests/engine/test_airflow_local.py."""

from __future__ import annotations

import pytest

from mlstack.ops.local import airflow_run, airflow_scheduler, run_follow

BASE = "http://127.0.0.1:1"


class FakeAirflow:
    """Each look at the run takes the next of `states`; task instances end as listed."""

    def __init__(self, states: list[str], tasks_by_look: list[list[dict]],
                 away: int = 0) -> None:
        self.states, self.tasks_by_look, self.away = states, tasks_by_look, away
        self.looks = 0
        self.calls: list[tuple[str, dict | None]] = []
        self.known: list[dict] = []

    def __call__(self, base, path, body=None, method=None, timeout=10.0):
        self.calls.append((path, body))
        if path.endswith("/dagRuns") and body is not None:
            return {"dag_run_id": "manual__2026-12-07T00:00:00+00:00"}
        if self.away > 0:
            self.away -= 1
            raise RuntimeError(f"GET /api/v2{path}: connection refused")
        if "/taskInstances/" in path and "/logs/" in path:
            return {"content": [{"event": "boom", "error_detail": [
                {"exc_type": "ValueError", "exc_value": "no rows"}]}]}
        if path.endswith("taskInstances?limit=100"):
            return {"task_instances": list(self.known)}
        state = self.states[min(self.looks, len(self.states) - 1)]
        if self.looks < len(self.tasks_by_look):
            self.known.extend(self.tasks_by_look[self.looks])
        self.looks += 1
        return {"state": state, "start_date": "2026-12-07T00:00:00Z",
                "end_date": "2026-12-07T00:00:03Z" if state in ("success", "failed") else None}


def _task(task_id: str, state: str, end: str, tries: int = 1) -> dict:
    return {"task_id": task_id, "state": state, "end_date": end, "duration": 1.25,
            "try_number": tries}


@pytest.fixture(autouse=True)
def fast(monkeypatch):
    monkeypatch.setattr(run_follow, "POLL_SECONDS", 0.01)


def test_a_run_is_triggered_and_its_tasks_reported_in_the_order_they_ended(monkeypatch):
    fake = FakeAirflow(["queued", "running", "success"], [
        [], [_task("validate", "success", "2026-12-07T00:00:02Z"),
             _task("ingest", "success", "2026-12-07T00:00:01Z")], []])
    monkeypatch.setattr(airflow_scheduler, "api", fake)
    states, tasks = [], []
    run = airflow_run.run_dag(BASE, "churn-materialize", states.append, tasks.append)
    assert fake.calls[0] == ("/dags/churn-materialize/dagRuns",
                             {"logical_date": None, "note": "mlstack run"})
    assert states == ["queued", "running", "success"]
    assert [t["task"] for t in tasks] == ["ingest", "validate"]
    assert run.state == "COMPLETED" and run.seconds == 3.0 and run.tasks == tasks
    assert run.url.endswith("/dags/churn-materialize/runs/"
                            "manual__2026-12-07T00%3A00%3A00%2B00%3A00")


def test_a_failed_task_is_named_with_the_exception_of_its_last_try(monkeypatch):
    fake = FakeAirflow(["running", "failed"], [
        [_task("ingest", "success", "2026-12-07T00:00:01Z")],
        [_task("validate", "failed", "2026-12-07T00:00:02Z", tries=3)]])
    monkeypatch.setattr(airflow_scheduler, "api", fake)
    run = airflow_run.run_dag(BASE, "churn-materialize")
    assert run.state == "FAILED"
    assert run.tasks[-1] == {"task": "validate", "state": "FAILED", "seconds": 1.25,
                             "error": "ValueError: no rows"}
    assert any(path.endswith("/taskInstances/validate/logs/3?full_content=true")
               for path, _ in fake.calls)


def test_a_server_away_for_a_while_is_waited_for_then_given_up_on(monkeypatch):
    fake = FakeAirflow(["running", "success"], [], away=3)
    monkeypatch.setattr(airflow_scheduler, "api", fake)
    states: list[str] = []
    assert airflow_run.run_dag(BASE, "d", on_state=states.append).state == "COMPLETED"
    assert states == [run_follow.SERVER_AWAY, "running", "success"]
    monkeypatch.setattr(run_follow, "SERVER_GONE_TIMEOUT", 0.2)
    monkeypatch.setattr(airflow_scheduler, "api", FakeAirflow(["running"], [], away=10**6))
    with pytest.raises(RuntimeError, match="the Airflow API has not answered for 0.2 s"):
        airflow_run.run_dag(BASE, "d")


def test_a_run_the_scheduler_never_starts_is_given_up_on(monkeypatch):
    monkeypatch.setattr(airflow_scheduler, "api", FakeAirflow(["queued"], []))
    with pytest.raises(RuntimeError, match=r"did not start the run in 0.1 s \(it is still "
                                           r"queued\): see mlstack status"):
        airflow_run.run_dag(BASE, "d", queued_timeout=0.1)
