"""One run, now, of a scheduled deployment on the project's Prefect server (`mlstack run`
while the scheduler runs): created from the deployment through the REST API, run by the
project's runner like a scheduled one (the same code folder and environment), followed by
polling: its state changes and its task runs as they finish.

Standard library only (the server's API over urllib): the command imports no prefect.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mlstack.ops.local import scheduler
from mlstack.ops.local.run_follow import Follow, Seen, follow
from mlstack.ops.local.schedule_runner import read_deployments
from mlstack.ops.paths import ProjectPaths

# flow -> the entrypoint's function in pipelines/prefect.yaml
ENTRYPOINT_FUNCTIONS = {"materialize": "materialize_flow", "monitoring": "monitoring_flow",
                        "training": "training_flow"}
PICKUP_TIMEOUT = 300.0  # the runner polls every 10 s; a restarting runner needs longer
FINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")


@dataclass(frozen=True)
class ServedDeployment:
    base: str  # http://127.0.0.1:<port>
    id: str
    name: str


@dataclass
class ServedRun:
    id: str
    url: str  # the run's page in the UI
    state: str  # its final state type
    message: str
    seconds: float
    tasks: list[dict]


def served_deployment(paths: ProjectPaths, flow: str, code_dir) -> ServedDeployment | None:
    """The deployment of `flow` on the project's server, None when no server answers or it
    does not know the deployment (then the caller runs the flow directly)."""
    base = scheduler.server_url(paths)
    if base is None or scheduler.api_answers(base) is not None:
        return None
    try:
        _system, found = read_deployments(code_dir)
    except OSError:
        return None
    function = ENTRYPOINT_FUNCTIONS.get(flow, "")
    names = [d["name"] for d in found if str(d.get("entrypoint", "")).endswith(f":{function}")]
    if not names:
        return None
    try:
        known = scheduler.api(base, "/deployments/filter",
                              {"deployments": {"name": {"any_": names}}})
    except RuntimeError:
        return None
    return ServedDeployment(base, known[0]["id"], known[0]["name"]) if known else None


def run_served(deployment: ServedDeployment, on_state: Callable[[str], None] | None = None,
               on_task: Callable[[dict], None] | None = None,
               pickup_timeout: float = PICKUP_TIMEOUT) -> ServedRun:
    """Create a run of the deployment now and follow it to its end."""
    base = deployment.base
    run = scheduler.api(base, f"/deployments/{deployment.id}/create_flow_run",
                        {"tags": ["mlstack-run"]})
    run_id = run["id"]
    seen_tasks: set[str] = set()

    def poll() -> Seen:
        run = scheduler.api(base, f"/flow_runs/{run_id}")
        finished = _finished_tasks(base, run_id, seen_tasks)
        state = run.get("state") or {}
        kind = state.get("type")  # "None": a run the server reports with no state
        return Seen(str(state.get("name") or kind), kind in FINAL, kind == "SCHEDULED", run,
                    finished)

    how = Follow("the Prefect server", f"{base}/runs/flow-run/{run_id}", pickup_timeout,
                 "no runner took the run", on_state, on_task)
    last, tasks = follow(poll, how)
    state = last.run.get("state") or {}
    return ServedRun(run_id, how.url, str(state.get("type")), state.get("message") or "",
                     round(float(last.run.get("total_run_time") or 0.0), 3), tasks)


def _finished_tasks(base: str, run_id: str, seen: set) -> list[dict]:
    """The run's task runs that reached a final state since the last call, oldest first, as
    progress lines {"task", "state", "seconds", "error"}."""
    runs = scheduler.api(base, "/task_runs/filter", {
        "flow_runs": {"id": {"any_": [run_id]}},
        "task_runs": {"state": {"type": {"any_": list(FINAL)}}},
        "sort": "EXPECTED_START_TIME_ASC"}) or []
    out = []
    for task in runs:
        if task["id"] in seen:
            continue
        seen.add(task["id"])
        state = task.get("state") or {}
        line = {"task": task_name(task), "state": state.get("type"),
                "seconds": round(float(task.get("total_run_time") or 0.0), 3)}
        if state.get("type") != "COMPLETED":
            line["error"] = state.get("message") or state.get("name")
        out.append(line)
    return out


def task_name(task: dict) -> str:
    """The task's name without the suffix Prefect adds to each run's ('ingest-a1b')."""
    name = str(task.get("name") or "?")
    head, _, tail = name.rpartition("-")
    return head if head and tail.isalnum() and len(tail) <= 4 else name
