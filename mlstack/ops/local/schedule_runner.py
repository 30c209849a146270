"""The runner of a deployed project's scheduled deployments (the `prefect-runner` sidecar):

    python -m mlstack.ops.local.schedule_runner --spec SPEC --code-dir VERSION_DIR

run in the serving version's code folder with PREFECT_API_URL at the project's server. It
registers the deployments of the folder's pipelines/prefect.yaml (names, descriptions,
parameters, schedules: cron with its timezone, interval) and serves them with Prefect's own
Runner (as `prefect.serve` does): the runner polls the server for the runs the server's scheduler
created, and runs each in a subprocess (`python -m prefect.engine`) with this process's
environment, the version's (paths.environment(code_dir)).

- The flows are not imported here (the generated code imports pandas, sklearn, feast: a
  quarter of a gigabyte held for nothing): a short child describes each entrypoint (its flow's
  name and parameter schema) and the runner registers the deployments from that.
- The training deployment runs mlstack.ops.local.retrain_flow.scheduled_training: a retrain
  goes through deploy's rollout, not straight to the model registry.
- Intervals are anchored at a fixed date, not at the registration: a runner restarted keeps
  the same slots, so a restart neither skips a run nor adds one.
- Flow runs carry the owner marker `<project id>/sidecar/prefect-runs`, not the runner's: a runner
  killed and restarted by the sidecars' supervision does not take its running flows with it
  (they finish and report to the server; their output goes to a log of their own, not
  through the runner), and `mlstack down` still stops them.
- A deployment registered as it is already (its version: a fingerprint of what it is made of)
  is not registered again (see serve()).
- pause_on_shutdown is off: a runner stopped (by down, or a restart) leaves the schedules on,
  the server keeps creating runs, and the next runner runs the late ones.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from mlstack.ops.local import procs
from mlstack.ops.paths import ProjectPaths

PREFECT_FILE = Path("pipelines") / "prefect.yaml"
ANCHOR = datetime(2020, 1, 1, tzinfo=UTC)  # interval slots: ANCHOR + k * interval
TRAINING_FLOW = "mlstack.ops.local.retrain_flow.scheduled_training"
SERVER_WAIT = 300.0
# the flow runs' marker: a sidecar's role (reconcile and the keeper keep those, down stops
# them), apart from the runner's own (a runner restarted does not stop its runs)
RUNS_ROLE = "sidecar/prefect-runs"
RUNS_LOG = "sidecar-prefect-runs.log"  # the flow runs' output


def read_deployments(code_dir: Path) -> tuple[str, list[dict]]:
    """(system name, deployments) of the code folder's pipelines/prefect.yaml."""
    data = yaml.safe_load((Path(code_dir) / PREFECT_FILE).read_text(encoding="utf-8")) or {}
    return str(data.get("name", "")), list(data.get("deployments") or [])


def is_training(deployment: dict) -> bool:
    return str(deployment.get("entrypoint", "")).endswith(":training_flow")


def schedule_objects(deployment: dict) -> list:
    """The deployment's schedules as Prefect's schedule objects."""
    from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule

    out: list[IntervalSchedule | CronSchedule] = []
    for item in deployment.get("schedules") or []:
        if item.get("interval") is not None:
            out.append(IntervalSchedule(interval=timedelta(seconds=float(item["interval"])),
                                        anchor_date=ANCHOR))
        elif item.get("cron"):
            out.append(CronSchedule(cron=str(item["cron"]),
                                    timezone=str(item.get("timezone") or "UTC")))
        else:
            raise ValueError(f"{deployment.get('name')}: a schedule that is neither a cron "
                             f"line nor an interval: {item}")
    return out


def describe(entrypoints: list[str]) -> dict[str, dict]:
    """{entrypoint: {"flow_name", "parameters"}} (the parameters' schema), each flow loaded
    from its file in this folder; run in a child so its imports die with it."""
    from prefect.flows import Flow, load_flow_from_entrypoint

    out = {}
    for entrypoint in entrypoints:
        # any flow (prefect's return type names an unbound ParamSpec)
        flow: Flow[..., Any] = load_flow_from_entrypoint(entrypoint)
        out[entrypoint] = {"flow_name": flow.name,
                           "parameters": flow.parameters.model_dump(mode="json")}
    return out


def _described(code_dir: Path, entrypoints: list[str]) -> dict[str, dict]:
    with tempfile.TemporaryDirectory() as folder:
        answer = Path(folder) / "flows.json"
        proc = subprocess.run([sys.executable, "-m", "mlstack.ops.local.schedule_runner",
                               "--describe-to", str(answer), *entrypoints], cwd=code_dir,
                              capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            raise RuntimeError(f"the flows of {code_dir} did not load:\n"
                               f"{proc.stdout[-1500:]}{proc.stderr[-3000:]}")
        return json.loads(answer.read_text(encoding="utf-8"))


def runner_deployments(spec: Path, code_dir: Path) -> list:
    """Prefect RunnerDeployments of the folder's prefect.yaml (the training one on the
    scheduled-training flow)."""
    from prefect.deployments.runner import EntrypointType, RunnerDeployment
    from prefect.utilities.callables import ParameterSchema

    from mlstack.ops.local.retrain_flow import scheduled_training

    _system, found = read_deployments(code_dir)
    generated = [d for d in found if not is_training(d)]
    flows = _described(code_dir, sorted({str(d["entrypoint"]) for d in generated}))
    out = []
    for d in found:
        schedules = schedule_objects(d)
        if is_training(d):
            parameters = {"spec": str(spec)}
            out.append(scheduled_training.to_deployment(
                name=str(d["name"]), schedules=schedules, parameters=parameters,
                description=d.get("description"), entrypoint_type=EntrypointType.MODULE_PATH,
                version=fingerprint(d, scheduled_training.name, TRAINING_FLOW, parameters)))
            continue
        flow = flows[str(d["entrypoint"])]
        parameters = dict(d.get("parameters") or {})
        deployment = RunnerDeployment(
            name=str(d["name"]), flow_name=flow["flow_name"], entrypoint=str(d["entrypoint"]),
            parameters=parameters, description=d.get("description"),
            schedules=[_schedule_create(s) for s in schedules],
            version=fingerprint(d, flow["flow_name"], str(d["entrypoint"]), parameters))
        deployment._path = "."  # the working folder: this version's code folder
        deployment._parameter_openapi_schema = ParameterSchema(**flow["parameters"])
        out.append(deployment)
    return out


def _schedule_create(schedule):
    from prefect.client.schemas.actions import DeploymentScheduleCreate

    return DeploymentScheduleCreate(schedule=schedule, active=True)


def wait_for_server(timeout: float = SERVER_WAIT) -> None:
    """Until the server at PREFECT_API_URL answers its health probe (the server and this
    runner may be restarted together: the server takes seconds to come back)."""
    url = os.environ["PREFECT_API_URL"].rstrip("/") + "/health"
    deadline = time.monotonic() + timeout
    while procs.http_status(url) != 200:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the Prefect server at {url} did not answer in {timeout:g} s")
        time.sleep(1.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlstack.ops.local.schedule_runner")
    parser.add_argument("--spec", type=Path)
    parser.add_argument("--code-dir", type=Path)
    parser.add_argument("--describe-to", type=Path, metavar="FILE",
                        help="write what the entrypoints' flows are (JSON) and exit")
    parser.add_argument("entrypoints", nargs="*")
    args = parser.parse_args(argv)
    if args.describe_to:
        args.describe_to.write_text(json.dumps(describe(args.entrypoints)), encoding="utf-8")
        return 0
    if args.spec is None or args.code_dir is None:
        parser.error("--spec and --code-dir are required")
    paths = ProjectPaths.for_spec(args.spec)
    wait_for_server()
    deployments = runner_deployments(paths.spec, args.code_dir.resolve())
    # the flow runs' processes inherit this environment (prefect's EngineCommandStarter)
    os.environ[procs.OWNER_ENV] = f"{paths.project_id}/{RUNS_ROLE}"
    runs_write_to(paths.logs_dir / RUNS_LOG)
    serve(deployments)
    return 0


def runs_write_to(log: Path) -> None:
    """Each flow run's output goes to `log` (appended), not through a pipe to this runner:
    Prefect's runner relays its runs' output, so a run outlived its runner only until its
    next print (BrokenPipeError, the run crashed). Prefect's EngineCommandStarter calls its
    module's `run_process`, documented as the place to override."""
    from prefect.runner import _starter_engine

    start = _starter_engine.run_process
    target = shlex.quote(str(log))

    async def run_process(command, stream_output=True, **kwargs):
        command = ["/bin/sh", "-c", f'exec "$@" >>{target} 2>&1', "sh", *command]
        return await start(command, stream_output=False, **kwargs)

    log.parent.mkdir(parents=True, exist_ok=True)
    _starter_engine.run_process = run_process


def serve(deployments: list) -> None:
    """prefect.serve, except that a deployment the server already has as registered (the
    same `version`, our fingerprint) is not registered again: an upsert deletes the
    deployment's upcoming scheduled runs and the server's scheduler recreates them only
    from its next pass on, so a slot due in between would be lost at every restart."""
    import asyncio

    from prefect import get_client
    from prefect.exceptions import ObjectNotFound, TerminationSignal
    from prefect.runner import Runner

    runner = Runner(pause_on_shutdown=False)
    with get_client(sync_client=True) as client:
        for deployment in deployments:
            try:
                known = client.read_deployment_by_name(
                    f"{deployment.flow_name}/{deployment.name}")
            except ObjectNotFound:
                known = None
            if known is not None and known.version == deployment.version:
                runner._deployment_registry.register_deployment(known.id, deployment.name)
            else:
                runner.add_deployment(deployment)
    try:
        asyncio.run(runner.start())
    except (KeyboardInterrupt, TerminationSignal):
        pass


def fingerprint(deployment: dict, flow_name: str, entrypoint: str, parameters: dict) -> str:
    """What a registration is made of, as the deployment's version ('mlstack-<hash>')."""
    text = json.dumps({"flow": flow_name, "entrypoint": entrypoint, "parameters": parameters,
                       "description": deployment.get("description"),
                       "schedules": deployment.get("schedules") or [],
                       "anchor": ANCHOR.isoformat()}, sort_keys=True, default=str)
    return "mlstack-" + hashlib.sha256(text.encode()).hexdigest()[:16]


if __name__ == "__main__":
    raise SystemExit(main())
