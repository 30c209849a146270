"""`mlstack run` on a project whose orchestrator is Airflow: one run of the pipeline's DAG,
now, triggered through the project's Airflow REST API (airflow_scheduler's api-server) and run
by its scheduler like a scheduled one; followed by polling, each task instance reported as it
reaches a final state, then the run's own end.

Standard library only (urllib): the command imports no airflow.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass

from mlstack.ops.local import airflow_scheduler
from mlstack.ops.local.run_follow import Follow, Seen, follow
from mlstack.ops.paths import ProjectPaths

QUEUED_TIMEOUT = 300.0  # a run the scheduler never starts
RUN_FINAL = {"success": "COMPLETED", "failed": "FAILED"}
# a task instance's final states, as the progress lines name them
TASK_FINAL = {"success": "COMPLETED", "failed": "FAILED", "upstream_failed": "UPSTREAM_FAILED",
              "skipped": "SKIPPED", "removed": "REMOVED"}


@dataclass
class AirflowRun:
    id: str
    url: str  # the run's page in the Airflow UI
    state: str  # COMPLETED or FAILED
    seconds: float
    tasks: list[dict]


def dag_of(paths: ProjectPaths, dag_id: str) -> str | None:
    """The API's address when it answers and knows `dag_id`, else None."""
    base = airflow_scheduler.server_url(paths)
    if base is None or airflow_scheduler.answers(base) is not None:
        return None
    try:
        airflow_scheduler.api(base, f"/dags/{dag_id}")
    except RuntimeError:
        return None
    return base


def run_dag(base: str, dag_id: str, on_state: Callable[[str], None] | None = None,
            on_task: Callable[[dict], None] | None = None,
            queued_timeout: float = QUEUED_TIMEOUT) -> AirflowRun:
    """Trigger a run of the DAG now and follow it to its end."""
    created = airflow_scheduler.api(base, f"/dags/{dag_id}/dagRuns",
                                    {"logical_date": None, "note": "mlstack run"})
    run_id = created["dag_run_id"]
    quoted = urllib.parse.quote(run_id, safe="")
    seen_tasks: set[str] = set()

    def poll() -> Seen:
        run = airflow_scheduler.api(base, f"/dags/{dag_id}/dagRuns/{quoted}")
        finished = _finished_tasks(base, dag_id, quoted, seen_tasks)
        state = str(run.get("state") or "none")
        return Seen(state, state in RUN_FINAL, state == "queued", run, finished)

    how = Follow("the Airflow API", f"{base}/dags/{dag_id}/runs/{quoted}", queued_timeout,
                 "the Airflow scheduler did not start the run", on_state, on_task)
    last, tasks = follow(poll, how)
    return AirflowRun(run_id, how.url, RUN_FINAL[last.state],
                      airflow_scheduler._seconds(last.run.get("start_date"),
                                                 last.run.get("end_date")) or 0.0, tasks)


def _finished_tasks(base: str, dag_id: str, run_id: str, seen: set) -> list[dict]:
    """The run's task instances that reached a final state since the last call, in the order
    they ended, as progress lines {"task", "state", "seconds", "error"}."""
    answer = airflow_scheduler.api(
        base, f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=100") or {}
    done = [t for t in answer.get("task_instances") or []
            if t.get("state") in TASK_FINAL and t["task_id"] not in seen]
    done.sort(key=lambda t: (t.get("end_date") or "", t["task_id"]))
    out = []
    for task in done:
        seen.add(task["task_id"])
        state = TASK_FINAL[task["state"]]
        line = {"task": task["task_id"], "state": state,
                "seconds": round(float(task.get("duration") or 0.0), 3)}
        if state != "COMPLETED":
            line["error"] = task_error(base, dag_id, run_id, task) or \
                f"{task['state']} after try {task.get('try_number', '?')}"
        out.append(line)
    return out


def task_error(base: str, dag_id: str, run_id: str, task: dict) -> str | None:
    """The exception a failed task instance's last try ended with, as its log records it
    ('IOException: IO Error: No files found ...'); None when the log has none."""
    tries = task.get("try_number")
    if task.get("state") != "failed" or not isinstance(tries, int) or tries < 1:
        return None
    try:
        log = airflow_scheduler.api(base, f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/"
                                          f"{task['task_id']}/logs/{tries}?full_content=true")
    except RuntimeError:
        return None
    for event in reversed((log or {}).get("content") or []):
        for detail in event.get("error_detail") or [] if isinstance(event, dict) else []:
            if isinstance(detail, dict) and detail.get("exc_type"):
                return f"{detail['exc_type']}: {detail.get('exc_value') or ''}".strip()
    return None
