"""The scheduled retrain of a local project whose orchestrator is Airflow: deploy's own rollout
(mlstack.ops.local.retrain, as the Prefect runner's training deployment runs it), started by a
DAG run of mlstack's DAG `<system>_scheduled_training` (airflow_retrain_dag.py) and outliving
the Airflow services that the rollout restarts.

A retrain promotes a version, and the Airflow services restart for it (their declaration
names the version's folder): a retrain running inside an Airflow task would die with the
scheduler (the LocalExecutor's task processes carry its owner marker). So the DAG's two tasks
only start and watch it:

- `start_retrain` starts `python -m mlstack.ops.local.airflow_retrain --spec SPEC --run-id RUN`
  detached (a session of its own) in mlstack's environment (the interpreter and environment of
  the deploy or keeper that declared the services, not Airflow's), under the owner marker
  `<project id>/sidecar/airflow-retrain` (reconcile and the keeper keep a sidecar's
  processes, `mlstack down` stops them), its output appended to
  .mlstack/logs/sidecar-airflow-retrain.log. At most one retrain per DAG run: the first try
  claims the run's file (created exclusively), a retried try finds it and starts nothing.
- `retrain_outcome`, a sensor in reschedule mode (no executor slot held between pokes, its
  state in Airflow's database: a restarted scheduler picks it up again; a poke that the
  restart killed is retried), reads the outcome
  the retrain wrote for its run: the DAG run succeeds when the retrain did (a new version, or
  none made with its reason: the data did not change, the spec waits for `mlstack deploy`),
  and fails naming the reason otherwise (the failed stage and its error, or a retrain process
  that ended without an outcome).

Each DAG run's files, in .mlstack/airflow/retrains/: `<run>.json` (the claim: PID, start
time) and `<run>.outcome.json` (what the retrain ended with, written atomically); a start
removes the files of runs older than 30 days.

Standard library only at import: the DAG file imports this module in Airflow's environment.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Mapping
from pathlib import Path

from mlstack.ops.local import procs
from mlstack.ops.paths import ProjectPaths

log = logging.getLogger(__name__)

MODULE = "mlstack.ops.local.airflow_retrain"
ROLE = "sidecar/airflow-retrain"  # a sidecar's role: reconcile and the keeper keep it
LOG_FILE = "sidecar-airflow-retrain.log"
DAG_NAME = "scheduled_training"  # the DAG id: <system python name>_scheduled_training
# the DAG file (Airflow imports it; mlstack does not: Airflow is not in its environment)
DAG_FILE = Path(__file__).resolve().with_name("airflow_retrain_dag.py")
# What the Airflow services' environment carries for the DAG file and the retrain it starts
# (JSON): the DAG's id and schedule, the spec, mlstack's interpreter, and the values of the
# variables Airflow's environment replaced (restored for the retrain)
ENV_SETTINGS = "MLSTACK_AIRFLOW_RETRAIN"
RESTORED = ("PATH", "PYTHONPATH", "VIRTUAL_ENV")
# what airflow_scheduler.environment() sets for Airflow alone, besides AIRFLOW* and RESTORED
AIRFLOW_ONLY = ("SCARF_ANALYTICS", "SPT_NOENV")
POKE_SECONDS = 30.0
# the sensor's retries: a poke running when the promotion restarts the scheduler dies with it
SENSOR_RETRIES = 3
# The sensor's bound: the retrain's wait for the project lock, its training and its rollout
TIMEOUT_SECONDS = 6 * 3600.0
START_GRACE = 60.0  # a claim without a PID this old: the start never finished
KEPT_SECONDS = 30 * 86400.0  # a run's files are removed by the start of a run this much later


def dag_id(system) -> str:
    return f"{system.python_name}_{DAG_NAME}"


def settings(paths: ProjectPaths, system, python: str, host: Mapping[str, str]) -> dict:
    """The ENV_SETTINGS value: what the DAG file and start() read. `host`: the environment
    of mlstack's side (the values of RESTORED are taken from it)."""
    from mlstack.codegen.backends.prefect import cron_schedule

    return {"dag_id": dag_id(system), "schedule": cron_schedule(system.training.schedule),
            "spec": str(paths.spec), "python": python,
            "restore": {name: host.get(name) for name in RESTORED},
            "poke_seconds": POKE_SECONDS, "sensor_retries": SENSOR_RETRIES,
            "timeout_seconds": TIMEOUT_SECONDS}


def settings_from(environ: Mapping[str, str]) -> dict | None:
    """The settings in `environ`, None when it has none (not under a project's Airflow)."""
    try:
        found = json.loads(environ.get(ENV_SETTINGS) or "null")
    except ValueError:
        return None
    return found if isinstance(found, dict) and found.get("dag_id") else None


def retrain_env(environ: Mapping[str, str], found: dict) -> dict[str, str]:
    """The retrain's environment: the task's, less Airflow's (AIRFLOW*, its run context, the
    settings), with PATH, PYTHONPATH and VIRTUAL_ENV as mlstack's side had them, so that the
    sidecars the retrain declares have the digests the keeper's have."""
    env = {name: value for name, value in environ.items()
           if not name.lstrip("_").startswith("AIRFLOW") and name not in AIRFLOW_ONLY
           and name not in (ENV_SETTINGS, procs.OWNER_ENV)}
    for name, value in (found.get("restore") or {}).items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = str(value)
    return env


# -- the DAG run's files ----------------------------------------------------------------------

def folder(paths: ProjectPaths) -> Path:
    return paths.state_dir / "airflow" / "retrains"


def run_key(run_id: str) -> str:
    """A file name for the DAG run id ('scheduled__2026-01-01T03:00:00+00:00'): its safe
    characters and a hash of the whole (two ids never share a name)."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", run_id)[:80]
    return f"{safe}-{hashlib.sha256(run_id.encode()).hexdigest()[:10]}"


def claim_file(paths: ProjectPaths, run_id: str) -> Path:
    return folder(paths) / f"{run_key(run_id)}.json"


def outcome_file(paths: ProjectPaths, run_id: str) -> Path:
    return folder(paths) / f"{run_key(run_id)}.outcome.json"


def owner(paths: ProjectPaths) -> str:
    return f"{paths.project_id}/{ROLE}"


def _read(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(f".{path.name}.{os.getpid()}.part")
    part.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(part, path)


# -- task 1: start ----------------------------------------------------------------------------

def start(run_id: str, environ: Mapping[str, str], found: dict | None = None,
          launch=procs.start_background) -> dict:
    """Start the retrain of this DAG run unless one was started for it already (a retried
    task): {"run_id", "pid", "started_at", "log", "started": whether this call started it}.
    `launch` (procs.start_background's signature) is what starts the process."""
    found = found if found is not None else settings_from(environ)
    if found is None:
        raise RuntimeError(f"{ENV_SETTINGS} is not set: the DAG runs under a project's "
                           "Airflow only (mlstack deploy starts it)")
    paths = ProjectPaths.for_spec(Path(found["spec"]))
    claim = claim_file(paths, run_id)
    claim.parent.mkdir(parents=True, exist_ok=True)
    prune(paths, time.time() - KEPT_SECONDS)
    try:
        handle = os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return {**(_read(claim) or {"run_id": run_id}), "started": False}
    log = paths.logs_dir / LOG_FILE
    record: dict = {"run_id": run_id, "started_at": round(time.time(), 3), "log": str(log)}
    try:
        record["pid"] = launch(
            [str(found["python"]), "-m", MODULE, "--spec", str(paths.spec), "--run-id", run_id],
            cwd=paths.project_dir, env=retrain_env(environ, found), log=log,
            owner=owner(paths))
    except Exception as exc:
        _write(outcome_file(paths, run_id),
               {"ok": False, "reason": f"the retrain did not start: {type(exc).__name__}: "
                                       f"{exc}"})
        raise
    finally:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return {**record, "started": True}


def prune(paths: ProjectPaths, before: float) -> list[str]:
    """Remove the run files last written before `before` (a time); returns their names."""
    gone = []
    for path in sorted(folder(paths).glob("*.json")):
        try:
            if path.stat().st_mtime < before:
                path.unlink()
                gone.append(path.name)
        except OSError:
            continue
    return gone


# -- task 2: the sensor -----------------------------------------------------------------------

def outcome(paths: ProjectPaths, run_id: str, now: float | None = None) -> dict | None:
    """What the DAG run's retrain ended with ({"ok", "reason", ...}), None while it runs; a
    retrain that never started or whose process is gone without an outcome is a failure
    naming why."""
    done = _read(outcome_file(paths, run_id))
    if done is not None:
        return done
    claim = _read(claim_file(paths, run_id))
    now = time.time() if now is None else now
    if claim is None or not isinstance(claim.get("pid"), int):
        started = claim_file(paths, run_id)
        try:
            age = now - started.stat().st_mtime
        except OSError:
            return {"ok": False, "reason": f"no retrain was started for the run {run_id}"}
        if age < START_GRACE:
            return None  # being started
        return {"ok": False, "reason": f"the retrain of the run {run_id} did not start"}
    if procs.is_owned(claim["pid"], owner(paths)):
        return None
    done = _read(outcome_file(paths, run_id))  # it may have ended since the first look
    if done is not None:
        return done
    return {"ok": False, "reason": f"the retrain (PID {claim['pid']}) ended without an outcome "
                                   f"(stopped by mlstack down, or killed): see "
                                   f"{claim.get('log') or paths.logs_dir / LOG_FILE}"}


# -- the retrain process ----------------------------------------------------------------------

class _Notes:
    """The retrain's progress: its stages to the log, its notes kept (the reason of a
    retrain that made no version)."""

    def __init__(self) -> None:
        self.notes: list[str] = []

    def start(self, stage: str) -> None:
        log.info("... %s", stage)

    def finish(self, record) -> None:
        log.info("%s %s (%g s) %s", record.status, record.name, record.seconds,
                 record.detail or "")

    def note(self, message: str) -> None:
        self.notes.append(message)
        log.info("%s", message)


def run(spec: Path, run_id: str) -> dict:
    """Retrain (deploy's rollout, trigger "schedule") and write the outcome for the run."""
    from mlstack.diagnostics.errors import MlstackError
    from mlstack.ops.local.retrain import retrain

    paths = ProjectPaths.for_spec(spec)
    progress = _Notes()
    log.info("scheduled retrain of %s for the Airflow run %s", paths.spec, run_id)
    try:
        result = retrain(paths.spec, progress)
    except MlstackError as exc:
        found = {"ok": False, "reason": exc.message}
    except Exception as exc:  # noqa: BLE001 - a bug: the run fails naming it
        found = {"ok": False, "reason": f"{type(exc).__name__}: {exc}"}
    else:
        if result is None:
            found = {"ok": True, "version": None,
                     "reason": progress.notes[-1] if progress.notes else "no new version"}
        else:
            found = {"ok": True, "version": result.version,
                     "reason": f"{result.version} made by the scheduled retrain"}
    _write(outcome_file(paths, run_id), {"run_id": run_id, **found})
    log.info("outcome: %s", json.dumps(found, sort_keys=True))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}")
    parser.add_argument("--spec", type=Path, required=True)
    parser.add_argument("--run-id", required=True, help="the Airflow DAG run it is for")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    log.setLevel(logging.INFO)  # the libraries' requests (the canary's) stay out of the log
    return 0 if run(args.spec, args.run_id)["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
