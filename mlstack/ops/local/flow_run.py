"""`mlstack run FLOW`: one run, now, of a generated Prefect flow on the deployed project.

    run_flow(spec, "monitoring", on_task=...)  -> FlowRun (raises StageError when it fails)

The flow runs in a child process, as deploy's worker jobs do: `python -m
mlstack.ops.local.flow_run FLOW --result FILE` with the build folder on PYTHONPATH and the
deploy's isolated environment (its state folder, BentoML and Prefect homes, telemetry off;
Prefect starts a temporary local API of its own), carrying the project's owner marker, so
`down` stops it. The serving version and its model reach the flow through the contract's
environment variables (ENV_SERVING_VERSION, ENV_MODEL_TAG), read from the deploy journal.
The parent never imports prefect, feast or the generated code. Each finished task arrives
as a progress line (mlstack.runtime.hooks) and goes to `on_task`.

While the project's Prefect server answers (the scheduler sidecars, mlstack.ops.local.
scheduler) and knows the flow's deployment, the run is created from that deployment instead
and followed through the server's API (mlstack.ops.local.served_run): the project's runner
runs it like a scheduled run, and the UI shows it. Training runs only there: its deployment
is the scheduled retrain, which goes through deploy's rollout. Without a server, training is
refused (a retrain goes through `mlstack deploy --retrain`). With orchestrator airflow, each
flow is a DAG run on the project's Airflow, training mlstack's DAG of the scheduled retrain.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mlstack.codegen.contract import (
    ENV_MODEL_TAG,
    ENV_PROGRESS_FILE,
    ENV_SERVING_VERSION,
    MATERIALIZE_TASKS,
    MONITORING_FILE,
    MONITORING_TASKS,
)
from mlstack.diagnostics.errors import MissingExtraError, StageError, UsageError, extra_for_module
from mlstack.ops.local import (
    airflow_retrain,
    airflow_run,
    airflow_scheduler,
    procs,
    ray_cluster,
    scheduler,
    served_run,
    sidecars,
)
from mlstack.ops.local.state import DeploymentState
from mlstack.ops.paths import ProjectPaths, project_lock

# flow -> (module in the generated tree, flow function, its tasks in order)
FLOWS = {
    "materialize": ("pipelines.flows", "materialize_flow", MATERIALIZE_TASKS),
    "monitoring": ("pipelines.monitoring", "monitoring_flow", ("ingest", *MONITORING_TASKS)),
}
# What `mlstack run` accepts: the flows above, and training, refused with the way to retrain.
RUNNABLE = ("materialize", "monitoring", "training")
RETRAIN_HINT = "a retrain goes through deploy's rollout: run mlstack deploy --retrain"
REPORT_FILES = {"monitoring": MONITORING_FILE}  # what a served run's result is read from


@dataclass
class FlowRun:
    """One finished run: the flow, the version that served, how long it took, each task's
    progress line (task, state, seconds, error) and what the flow returned."""

    flow: str
    version: str
    model_tag: str | None
    seconds: float
    tasks: list[dict] = field(default_factory=list)
    result: dict = field(default_factory=dict)
    log: str = ""
    url: str = ""  # the run's page in the Prefect UI, when it ran on the project's server


def flow_owner(paths: ProjectPaths, flow: str) -> str:
    """The owner marker of a flow run's processes ('<project id>/flow/monitoring')."""
    return f"{paths.project_id}/flow/{flow}"


def failed_stage(flow: str, tasks: list[dict]) -> str:
    """The stage a failed run names: its first failed task, else the flow itself (it failed
    before or between its tasks)."""
    return next((t["task"] for t in tasks if t.get("state") != "COMPLETED"), flow)


def explained(error_type: str, error: str) -> str:
    """A child's error as one line: its type and the first line of its message (a
    traceback, or a library's multi-line dump, stays in the log)."""
    first = next((line.strip() for line in str(error).splitlines() if line.strip()), "")
    return f"{error_type}: {first}" if first else error_type


def _deployed(paths: ProjectPaths):
    """The journal's serving version; UsageError naming `mlstack deploy` when there is none."""
    state = DeploymentState.load(paths.deployments_file, spec=paths.spec)
    deploy = f"run first: mlstack deploy {paths.spec.name}"
    if not paths.deployments_file.exists():
        raise UsageError(f"{paths.project_dir} has not been deployed", deploy)
    current = state.get(state.current)
    if current is None:
        raise UsageError(f"no version of {paths.project_dir} has been deployed", deploy)
    if not (paths.build_dir / "pipelines").is_dir():
        raise UsageError(f"the deployed build folder {paths.build_dir} is gone", deploy)
    return current


def run_flow(spec: Path | str, flow: str,
             on_task: Callable[[dict], None] | None = None,
             on_state: Callable[[str], None] | None = None) -> FlowRun:
    """Run the deployed project's `flow` once, now, and wait for it: on the project's Prefect
    server when it answers (each state change goes to `on_state`), else directly. Refuses a
    project that has not been deployed, and training without the server (UsageError); a
    failed run raises StageError naming the task that failed and the error, with the log
    (or the run's page in the UI) in the hint."""
    from mlstack.workspace.build import spec_paths

    if flow not in RUNNABLE:
        raise UsageError(f"no flow '{flow}'", f"choose from {', '.join(RUNNABLE)}")
    paths = ProjectPaths.for_spec(spec_paths(spec).spec)
    version = _deployed(paths)
    if airflow_scheduler.runs_airflow(paths.versions_dir / version.version):
        return _run_airflow(paths, flow, version, on_task, on_state)
    served = served_run.served_deployment(paths, flow, paths.versions_dir / version.version)
    if served is not None:  # no lock: the run is the server's, like a scheduled one
        return _run_served(paths, flow, served, version, on_task, on_state)
    if flow == "training":
        raise UsageError("mlstack run training needs the project's scheduler (its Prefect "
                         "server is not running)", RETRAIN_HINT)
    with project_lock(paths):
        version = _deployed(paths)
        return _run(paths, flow, version.version, version.model_tag, on_task)


def _run_served(paths: ProjectPaths, flow: str, served: served_run.ServedDeployment,
                version, on_task, on_state) -> FlowRun:
    try:
        run = served_run.run_served(served, on_state=on_state, on_task=on_task)
    except RuntimeError as exc:
        raise StageError(flow, str(exc), "mlstack status shows the scheduler") from None
    if run.state != "COMPLETED":
        failed = next((t for t in run.tasks if t.get("state") != "COMPLETED"), None)
        why = (failed or {}).get("error") or run.message or run.state
        raise StageError(failed_stage(flow, run.tasks), f"{run.state}: {explained_line(why)}",
                         f"the run in the Prefect UI: {run.url}")
    report = REPORT_FILES.get(flow)
    result = _read_json(paths.runtime_state_dir / report) if report else {}
    return FlowRun(flow, version.version, version.model_tag, run.seconds, run.tasks, result,
                   str(sidecars.log_file(paths, scheduler.RUNNER)), run.url)


def _run_airflow(paths: ProjectPaths, flow: str, version, on_task, on_state) -> FlowRun:
    """The flow's DAG run now on the project's Airflow (orchestrator: airflow): there is no
    direct run (the DAGs need Airflow's own environment). Training runs mlstack's DAG of the
    scheduled retrain (deploy's rollout, as the Prefect path's training deployment), never
    the generated training DAG (it would promote a model past the rollout)."""
    from mlstack.codegen.backends.airflow import dag_ids
    from mlstack.workspace.manifest import read_manifest

    manifest = read_manifest(paths.versions_dir / version.version)
    system = manifest.previous_system() if manifest is not None else None
    if system is None:
        raise UsageError(f"the build of {version.version} has no readable manifest",
                         f"run mlstack deploy {paths.spec.name} again")
    dag_id = airflow_retrain.dag_id(system) if flow == "training" else dag_ids(system)[flow]
    base = airflow_run.dag_of(paths, dag_id)
    if base is None:
        raise UsageError(f"mlstack run {flow} needs the project's Airflow (its API server does "
                         f"not answer, or does not know the DAG {dag_id})",
                         "mlstack status shows the scheduler; the keeper restarts it")
    try:
        run = airflow_run.run_dag(base, dag_id, on_state=on_state, on_task=on_task)
    except RuntimeError as exc:
        raise StageError(flow, str(exc), "mlstack status shows the scheduler") from None
    if run.state != "COMPLETED":
        failed = next((t for t in run.tasks if t.get("state") != "COMPLETED"), None)
        why = (failed or {}).get("error") or f"the DAG run {run.id} failed"
        raise StageError(failed_stage(flow, run.tasks), f"FAILED: {explained_line(why)}",
                         f"the run in the Airflow UI: {run.url}")
    report = REPORT_FILES.get(flow)
    result = _read_json(paths.runtime_state_dir / report) if report else {}
    return FlowRun(flow, version.version, version.model_tag, run.seconds, run.tasks, result,
                   str(airflow_scheduler.home(paths) / "logs"), run.url)


def explained_line(text: str) -> str:
    return next((line.strip() for line in str(text).splitlines() if line.strip()), "")


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _run(paths: ProjectPaths, flow: str, version: str, model_tag: str | None,
         on_task: Callable[[dict], None] | None) -> FlowRun:
    result_file = paths.state_dir / f"flow-{flow}.json"
    progress = paths.state_dir / f"flow-{flow}-progress.jsonl"
    log = paths.logs_dir / f"flow-{flow}.log"
    for stale in (result_file, progress):
        stale.unlink(missing_ok=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    owner = flow_owner(paths, flow)
    extra = {ENV_PROGRESS_FILE: str(progress), procs.OWNER_ENV: owner,
             ENV_SERVING_VERSION: version, ENV_MODEL_TAG: model_tag or "",
             **ray_cluster.client_env(paths)}  # target.compute: the cluster the flows join
    argv = [sys.executable, "-m", "mlstack.ops.local.flow_run", flow, "--result",
            str(result_file)]
    tasks: list[dict] = []
    began = time.perf_counter()

    def on_line(line: dict) -> None:
        tasks.append(line)
        if on_task is not None:
            on_task(line)

    # dies with this command; what it started carries the marker
    returncode = procs.run_followed(argv, paths.build_dir,
                                    paths.environment(paths.build_dir, **extra), log, owner,
                                    progress, on_line)
    seconds = round(time.perf_counter() - began, 3)
    outcome = _outcome(result_file, returncode)
    if outcome.get("traceback"):
        with open(log, "a", encoding="utf-8") as out:
            out.write(outcome["traceback"])
    if not outcome.get("ok"):
        raise StageError(failed_stage(flow, tasks),
                         explained(outcome.get("error_type", "Error"), outcome.get("error", "")),
                         f"log: {log}")
    return FlowRun(flow, version, model_tag, seconds, tasks, outcome.get("result") or {},
                   str(log))


def _outcome(result_file: Path, returncode: int | None) -> dict:
    try:
        return json.loads(result_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"ok": False, "error_type": "FlowRunCrashed",
                "error": f"the flow's process exited with code {returncode} before it "
                         "reported a result"}


# -- the child -----------------------------------------------------------------------------

def _child_error(exc: BaseException) -> str:
    """The error as the parent shows it: a missing optional library names its extra."""
    if isinstance(exc, ModuleNotFoundError) and extra_for_module(exc.name) is not None:
        missing = MissingExtraError(extra_for_module(exc.name) or "", exc.name or "",
                                    "the generated flows")
        return f"{missing.message}; {missing.hint}"
    return str(exc)


def main(argv: list[str] | None = None) -> int:
    """Run one flow of the generated tree (the working folder) and write {"ok", "result"} or
    {"ok": false, "error_type", "error", "traceback"} as JSON to --result."""
    parser = argparse.ArgumentParser(prog="python -m mlstack.ops.local.flow_run")
    parser.add_argument("flow", choices=sorted(FLOWS))
    parser.add_argument("--result", type=Path, required=True)
    args = parser.parse_args(argv)
    module, function, _ = FLOWS[args.flow]
    try:
        result = getattr(importlib.import_module(module), function)()
        outcome = {"ok": True, "result": result if isinstance(result, dict) else {}}
    except BaseException as exc:  # reported to the parent, which names the task
        outcome = {"ok": False, "error_type": type(exc).__name__, "error": _child_error(exc),
                   "traceback": traceback.format_exc()}
    args.result.write_text(json.dumps(outcome, default=str), encoding="utf-8")
    return 0 if outcome["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
