"""The scheduler of a local deployment whose orchestrator is Airflow (target.orchestrator:
airflow): Airflow 3's own services as three sidecars (mlstack.ops.local.sidecars starts,
probes, restarts and stops them), in place of Prefect's server and runner (scheduler.py).

- `airflow-api-server`: `airflow db migrate` (idempotent, a few seconds on SQLite), then
  `airflow api-server` on 127.0.0.1 with one worker: the UI, the REST API (v2) and the
  execution API the tasks report to. The simple auth manager makes every user an admin: the
  API answers without a token, on the loopback address only.
- `airflow-scheduler`: `airflow scheduler` with the LocalExecutor, `parallelism` small (each
  executor slot is a process: the default 32 hold gigabytes).
- `airflow-dag-processor`: `airflow dag-processor`, which parses the DAGs folder,
  .mlstack/airflow/dags: a link to the serving version's pipelines/airflow_dags.py and one to
  mlstack's own DAG of the scheduled retrain (airflow_retrain_dag.py), both written by
  dags_folder() as each declaration is made, so a promoted version's DAGs replace the old ones
  (its folder is in the declaration: a new version restarts them).

They share AIRFLOW_HOME under the project's state (.mlstack/airflow: airflow.cfg, the SQLite
database, the task logs) and run in the environment of the serving version's
pipelines/airflow_requirements.txt (ensure_env: built once, kept in mlstack's cache; Airflow
cannot share an environment with Prefect), with the version's code folder and mlstack on
PYTHONPATH and the project's state variables, so the tasks' steps write where deploy's do.

DAGs are created paused (Airflow's default); `settle` (run by deploy once the sidecars are
up) unpauses the materialize and monitoring DAGs and mlstack's `<system>_scheduled_training`,
which runs on training.schedule (none: when triggered, as by `mlstack run training`) and
starts deploy's rollout as a process of its own that outlives the services' restart it
causes (airflow_retrain.py). The generated training DAG stays paused locally: a retrain goes
through deploy's rollout, never straight to the model registry.

`status_report(paths)` reads the REST API (standard library only), in the shape of
scheduler.status_report: each DAG's schedule, paused, last run and next run.
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from mlstack.codegen.contract import ENV_MODEL_TAG, ENV_SERVING_VERSION
from mlstack.ops.local import airflow_retrain, procs, ray_cluster, scheduler
from mlstack.ops.local.sidecars import Sidecar, port_for, record
from mlstack.ops.paths import ProjectPaths

API_SERVER = "airflow-api-server"
SCHEDULER = "airflow-scheduler"
DAG_PROCESSOR = "airflow-dag-processor"
NAMES = (API_SERVER, SCHEDULER, DAG_PROCESSOR)
READY_PATH = "/api/v2/monitor/health"
REQUIREMENTS = Path("pipelines") / "airflow_requirements.txt"
DAGS_FILE = Path("pipelines") / "airflow_dags.py"
RETRAIN_DAG_FILE = "mlstack_scheduled_training.py"  # in the DAGs folder: airflow_retrain_dag.py
PARALLELISM = 2  # executor slots: one process each
HEARTBEAT_TIMEOUT = 60  # seconds a task instance may go without a heartbeat
ENV_RECORD = "env.json"  # the environment deploy built, read back by the keeper's declarations
# the DAGs the local deployment runs on their schedules (by pipeline name)
SCHEDULED = ("materialize", "monitoring")
SETTLE_TIMEOUT = 180.0  # the dag-processor's first parse, on a busy machine


def home(paths: ProjectPaths) -> Path:
    return paths.state_dir / "airflow"


def runs_airflow(code_dir: Path) -> bool:
    """True when the code folder's pipelines are Airflow DAGs."""
    return (Path(code_dir) / DAGS_FILE).is_file()


def airflow_env(paths: ProjectPaths, code_dir: Path) -> Path:
    """The folder of the environment the code folder's DAGs run in: the one recorded when it
    was made for the same requirements, else made now (ensure_env; minutes on first use) and
    recorded, so that the keeper's declarations name the very folder deploy's did."""
    text = (code_dir / REQUIREMENTS).read_text(encoding="utf-8")
    kept = home(paths) / ENV_RECORD
    try:
        known = json.loads(kept.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        known = {}
    if isinstance(known, dict) and known.get("requirements") == text and \
            Path(str(known.get("path"))).is_dir():
        return Path(known["path"])
    from mlstack.ops.cluster.infra_env import ensure_env

    made = ensure_env(code_dir / REQUIREMENTS).path
    kept.parent.mkdir(parents=True, exist_ok=True)
    kept.write_text(json.dumps({"requirements": text, "path": str(made)}, indent=2) + "\n",
                    encoding="utf-8")
    return made


def mlstack_root(paths: ProjectPaths) -> Path:
    """A folder holding mlstack alone, for the tasks' PYTHONPATH: .mlstack/airflow/lib, with
    a link to the package mlstack is imported from. Its parent folder would not do where
    mlstack is installed in site-packages: the whole environment, Prefect's pins included,
    would come onto Airflow's path."""
    import mlstack

    package = Path(mlstack.__file__).resolve().parent
    lib = home(paths) / "lib"
    link = lib / "mlstack"
    if not (link.is_symlink() and link.resolve() == package):
        lib.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(package, target_is_directory=True)
    return lib


def _link(link: Path, target: Path) -> None:
    """`link` points at `target` (made or replaced atomically; left alone when it does)."""
    if link.is_symlink() and os.readlink(link) == str(target):
        return
    link.parent.mkdir(parents=True, exist_ok=True)
    part = link.with_name(f".{link.name}.{os.getpid()}.part")
    part.unlink(missing_ok=True)
    part.symlink_to(target)
    os.replace(part, link)


def dags_folder(paths: ProjectPaths, code_dir: Path) -> Path:
    """The DAGs folder, .mlstack/airflow/dags: the serving version's pipelines/airflow_dags.py
    and mlstack's DAG of the scheduled retrain, as links (the same two links every time)."""
    folder = home(paths) / "dags"
    _link(folder / DAGS_FILE.name, Path(code_dir) / DAGS_FILE)
    _link(folder / RETRAIN_DAG_FILE, airflow_retrain.DAG_FILE)
    for stale in folder.iterdir():  # a link this module no longer makes
        if stale.name not in (DAGS_FILE.name, RETRAIN_DAG_FILE) and stale.is_symlink():
            stale.unlink(missing_ok=True)
    return folder


def environment(paths: ProjectPaths, code_dir: Path, version: str, model_tag: str,
                env_dir: Path, api_port: int, system=None) -> dict[str, str]:
    """What every Airflow process of the project runs with (`system`: the serving version's
    IR, for the scheduled retrain's DAG: without it, no such DAG)."""
    env = scheduler._stable(paths.environment(code_dir, **ray_cluster.client_env(paths)), paths)
    folder = home(paths)
    if system is not None:  # before Airflow's PATH and VIRTUAL_ENV replace mlstack's
        env[airflow_retrain.ENV_SETTINGS] = json.dumps(
            airflow_retrain.settings(paths, system, sys.executable, env), sort_keys=True)
    env.update({
        ENV_SERVING_VERSION: version, ENV_MODEL_TAG: model_tag,
        "PATH": f"{env_dir / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}",
        "VIRTUAL_ENV": str(env_dir),
        "PYTHONPATH": f"{env['PYTHONPATH']}:{mlstack_root(paths)}",
        "AIRFLOW_HOME": str(folder),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{folder / 'airflow.db'}",
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder(paths, code_dir)),
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": str(PARALLELISM),
        # a task whose process died with a killed scheduler is failed (and retried) after
        # this long without a heartbeat, not the default 300 s: with one run of a DAG at a
        # time, its DAG ran nothing meanwhile
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(api_port),
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{api_port}",
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__USAGE_DATA_COLLECTION__ENABLED": "False",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        "SCARF_ANALYTICS": "false",
        # Airflow retitles its processes (setproctitle), which by default writes over
        # /proc/<pid>/environ: the owner marker would be lost, and `down` miss them
        "SPT_NOENV": "1",
        "DO_NOT_TRACK": "1",
    })
    return env


def sidecars(paths: ProjectPaths, system) -> list[Sidecar]:
    """The api-server, scheduler and dag-processor, while a version serves (the DAGs folder
    holds its code folder's DAGs); none before the first deploy."""
    serving = scheduler.serving_code_dir(paths)
    if serving is None or not runs_airflow(serving[0]):
        return []
    code_dir, version, model_tag = serving
    port = port_for(paths, API_SERVER)
    home(paths).mkdir(parents=True, exist_ok=True)
    env_dir = airflow_env(paths, code_dir)
    env = environment(paths, code_dir, version, model_tag, env_dir, port, system)
    airflow = str(env_dir / "bin" / "airflow")
    server = (
        "/bin/sh", "-c", '"$1" db migrate && exec "$1" api-server --host 127.0.0.1 '
        '--port "$2" --workers 1', "sh", airflow, str(port))
    return [
        Sidecar(API_SERVER, server, env, home(paths), port, READY_PATH,
                what=f"Airflow API server (UI and API, {version})"),
        Sidecar(SCHEDULER, (airflow, "scheduler"), env, home(paths), needs=(API_SERVER,),
                what=f"Airflow scheduler ({version})"),
        Sidecar(DAG_PROCESSOR, (airflow, "dag-processor"), env, home(paths),
                needs=(API_SERVER,), what=f"Airflow DAG processor ({version})"),
    ]


# -- the REST API ---------------------------------------------------------------------------

def server_url(paths: ProjectPaths) -> str | None:
    port = record(paths, API_SERVER).get("port")
    return f"http://127.0.0.1:{port}" if isinstance(port, int) else None


def api(base: str, path: str, body: dict | None = None, method: str | None = None,
        timeout: float = 10.0):
    """The API's JSON answer (v2); RuntimeError naming the call."""
    url = f"{base}/api/v2{path}"
    verb = method or ("GET" if body is None else "POST")
    status, data = (procs.http_get_json(url, timeout) if verb == "GET"
                    else procs.http_post_json(url, body or {}, timeout, method=verb))
    if not isinstance(status, int) or not 200 <= status < 300:
        raise RuntimeError(f"{verb} /api/v2{path}: "
                           f"{'HTTP ' if isinstance(status, int) else ''}{status}")
    return data


def dags(base: str) -> dict[str, dict]:
    answer = api(base, "/dags?limit=100&order_by=dag_id") or {}
    return {d["dag_id"]: d for d in answer.get("dags") or []}


def settle(paths: ProjectPaths, system, declared: list[Sidecar],
           timeout: float = SETTLE_TIMEOUT) -> list[str]:
    """When `declared` (the sidecars just started) holds Airflow's: once the DAG processor
    has registered the serving version's DAGs and mlstack's scheduled retrain, the scheduled
    ones and the retrain unpaused, the generated training DAG paused (a retrain goes through
    deploy's rollout). Returns one line per DAG whose pause changed; RuntimeError when the
    DAGs do not appear in time."""
    base = server_url(paths)
    if API_SERVER not in {s.name for s in declared} or base is None:
        return []
    wanted = paused_dags(system)
    deadline = time.monotonic() + timeout
    while True:
        try:
            known = dags(base)
        except RuntimeError:
            known = {}
        if set(wanted) <= set(known):
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"Airflow did not register the DAGs {sorted(set(wanted) - set(known))}"
                               f" in {timeout:g} s (see the dag-processor's log)")
        time.sleep(2.0)
    notes = []
    for dag_id, paused in sorted(wanted.items()):
        if bool(known[dag_id].get("is_paused")) != paused:
            api(base, f"/dags/{dag_id}", {"is_paused": paused}, method="PATCH")
            notes.append(f"{'paused' if paused else 'unpaused'} {dag_id}")
    return notes


def paused_dags(system) -> dict[str, bool]:
    """Each DAG the local deployment registers, and whether it stays paused: the generated
    training DAG does; materialize, monitoring and mlstack's scheduled retrain run."""
    from mlstack.codegen.backends.airflow import dag_ids

    wanted = {dag_id: name not in SCHEDULED for name, dag_id in dag_ids(system).items()}
    wanted[airflow_retrain.dag_id(system)] = False
    return wanted


def describe_schedule(dag: dict) -> str:
    summary = dag.get("timetable_summary")
    return str(dag.get("timetable_description") or summary or "no schedule")


def _seconds(start: str | None, end: str | None) -> float | None:
    if not start:
        return None
    finish = datetime.fromisoformat(end.replace("Z", "+00:00")) if end else datetime.now(UTC)
    return round((finish - datetime.fromisoformat(start.replace("Z", "+00:00")))
                 .total_seconds(), 1)


def last_run(base: str, dag_id: str) -> dict | None:
    answer = api(base, f"/dags/{dag_id}/dagRuns?order_by=-run_after&limit=1") or {}
    runs = answer.get("dag_runs") or []
    if not runs:
        return None
    run = runs[0]
    return {"state": str(run.get("state") or "?").upper(),
            "start": run.get("start_date") or run.get("run_after"),
            "seconds": _seconds(run.get("start_date"), run.get("end_date")),
            "id": run.get("dag_run_id")}


def status_report(paths: ProjectPaths) -> dict:
    """The scheduler as data, as scheduler.status_report: {"ui", "server", "orchestrator",
    "deployments": [{"name", "schedules", "paused", "last_run", "next_run"}]}."""
    base = server_url(paths)
    out: dict[str, object] = {"ui": base, "orchestrator": "airflow", "deployments": []}
    if base is None:
        return {**out, "server": "not started"}
    why = answers(base)
    if why is not None:
        return {**out, "server": f"unreachable: {why}"}
    rows = []
    try:
        for dag_id, dag in sorted(dags(base).items()):
            upcoming = dag.get("next_dagrun_run_after")
            rows.append({"name": dag_id, "schedules": [describe_schedule(dag)],
                         "paused": bool(dag.get("is_paused")),
                         "last_run": last_run(base, dag_id),
                         "next_run": {"state": "SCHEDULED", "at": upcoming}
                         if upcoming and not dag.get("is_paused") else None})
    except RuntimeError as exc:
        return {**out, "server": f"unreachable: {exc}", "deployments": rows}
    return {**out, "server": "ready", "deployments": rows}


def answers(base: str, timeout: float = 2.0) -> str | None:
    """None when the API server's health probe answers 200, else why not."""
    answer = procs.http_status(base + READY_PATH, timeout=timeout)
    return None if answer == 200 else (f"HTTP {answer}" if isinstance(answer, int) else answer)
