"""The scheduler of a local deployment (issue 19): Prefect's own server and a runner of the
generated deployments, as two sidecars (mlstack.ops.local.sidecars starts, probes, restarts
and stops them).

- `prefect-server`: `prefect server start` on 127.0.0.1, its SQLite database in the project's
  state (.mlstack/prefect/prefect.db), PREFECT_HOME under the project's home, telemetry off,
  and the server services a served deployment does not use switched off (automations, work
  pools, concurrency leases, pauses, cancellation cleanup). What stays: the scheduler (it
  creates the scheduled runs), late runs, the task run recorder and the event persister (the
  UI's task runs and events) with its vacuum.
- `prefect-runner`: mlstack.ops.local.schedule_runner, which registers the serving version's
  pipelines/prefect.yaml deployments and runs them on their schedules with Prefect's Runner,
  each flow run in a subprocess with the version's environment. Declared only while a version
  serves: its code folder is .mlstack/versions/<current version>.

`status_report(paths)` reads the server's REST API (standard library only): the UI address,
each deployment's schedule, last run and next run.
"""

from __future__ import annotations

import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from mlstack.codegen.contract import ENV_MODEL_TAG, ENV_SERVING_VERSION, TELEMETRY_ENV
from mlstack.ops.local import procs, ray_cluster
from mlstack.ops.local.sidecars import Sidecar, port_for, record
from mlstack.ops.local.state import DeploymentState
from mlstack.ops.paths import ProjectPaths

SERVER = "prefect-server"
RUNNER = "prefect-runner"
READY_PATH = "/api/health"
# Prefect's server services a served deployment has no use for; see `prefect server
# services ls` and prefect/settings/models/server/services.py (3.9.1)
SERVICES_OFF = ("TRIGGERS", "FOREMAN", "REPOSSESSOR", "PAUSE_EXPIRATIONS",
                "CANCELLATION_CLEANUP", "CLEANUP_RECONCILER")
# What a sidecar's environment keeps of the caller's: its declaration (and so its digest)
# must not change with the process that declares it (deploy, keeper, status, a test)
KEPT_NAMES = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "TZ", "TMPDIR", "VIRTUAL_ENV",
              "SSL_CERT_FILE", "SSL_CERT_DIR")
KEPT_PREFIXES = ("LC_", "XDG_", "PYTHON", "MLSTACK_", "PREFECT_", "BENTOML_", "RAY_")
# The caller's own settings of these are not the project's (a keeper a version's supervisor
# started has the version's model tag: the runner is given the serving one explicitly)
DROPPED = (procs.OWNER_ENV, "PREFECT_API_URL", "PREFECT_API_KEY", "PREFECT_PROFILE",
           "PREFECT_SERVER_DATABASE_CONNECTION_URL", "MLSTACK_PROGRESS_FILE",
           ENV_SERVING_VERSION, ENV_MODEL_TAG)


# answers of the server to ask again (prefect.client: PREFECT_CLIENT_RETRY_EXTRA_CODES aside,
# 429, 502 and 503), and the seconds between the tries
RETRY_STATUSES = (429, 502, 503)
RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0)


def database_file(paths: ProjectPaths) -> Path:
    return paths.state_dir / "prefect" / "prefect.db"


def _stable(env: dict[str, str], paths: ProjectPaths) -> dict[str, str]:
    """What the sidecar keeps of paths.environment(...): no run context of the caller (a
    Prefect flow run's PREFECT__* when a scheduled retrain declares), and a PYTHONPATH of the
    code folder environment() put first plus the caller's own entries, less any of this
    project's code folders (a flow run's, a version's) the caller ran with."""
    out = {k: v for k, v in sorted(env.items())
           if (k in KEPT_NAMES or k.startswith(KEPT_PREFIXES) or k in TELEMETRY_ENV)
           and k not in DROPPED and not k.startswith("PREFECT__")}
    if out.get("PYTHONPATH"):
        first, *rest = out["PYTHONPATH"].split(os.pathsep)
        project = (str(paths.state_dir), str(paths.build_dir))
        rest = [p for p in rest if p and not p.startswith(project)]
        out["PYTHONPATH"] = os.pathsep.join(dict.fromkeys([first, *rest]))
    return out


def serving_code_dir(paths: ProjectPaths) -> tuple[Path, str, str] | None:
    """(code folder, version, model tag) of the version that serves, None when none does."""
    try:
        state = DeploymentState.load(paths.deployments_file, spec=paths.spec)
    except Exception:  # a damaged journal: status and repair say so, nothing to run
        return None
    current = state.get(state.current)
    if current is None or not (paths.versions_dir / current.version).is_dir():
        return None
    return paths.versions_dir / current.version, current.version, current.model_tag or ""


def server_sidecar(paths: ProjectPaths) -> Sidecar:
    port = port_for(paths, SERVER)
    database_file(paths).parent.mkdir(parents=True, exist_ok=True)
    env = _stable(paths.environment(paths.build_dir), paths)
    env.update({
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{database_file(paths)}",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
        **{f"PREFECT_SERVER_SERVICES_{name}_ENABLED": "false" for name in SERVICES_OFF},
    })
    argv = (sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
            "--port", str(port), "--analytics-off", "--no-background")
    return Sidecar(SERVER, argv, env, paths.state_dir, port, READY_PATH,
                   what="Prefect server (UI and API)")


def runner_sidecar(paths: ProjectPaths, server_port: int) -> Sidecar | None:
    serving = serving_code_dir(paths)
    if serving is None:
        return None
    code_dir, version, model_tag = serving
    env = _stable(paths.environment(code_dir, **ray_cluster.client_env(paths)), paths)
    env.update({ENV_SERVING_VERSION: version, ENV_MODEL_TAG: model_tag,
                "PREFECT_API_URL": f"http://127.0.0.1:{server_port}/api"})
    argv = (sys.executable, "-m", "mlstack.ops.local.schedule_runner", "--spec",
            str(paths.spec), "--code-dir", str(code_dir))
    return Sidecar(RUNNER, argv, env, code_dir, needs=(SERVER,),
                   what=f"Prefect runner of the scheduled deployments ({version})")


def sidecars(paths: ProjectPaths, system) -> list[Sidecar]:
    """The Prefect server, and the runner while a version serves; Airflow's services instead
    when the system's orchestrator is Airflow (airflow_scheduler)."""
    if getattr(getattr(system, "target", None), "orchestrator", "prefect") == "airflow":
        from mlstack.ops.local import airflow_scheduler

        return airflow_scheduler.sidecars(paths, system)
    server = server_sidecar(paths)
    runner = runner_sidecar(paths, server.port or 0)
    return [server] + ([runner] if runner is not None else [])


# -- what the server knows -----------------------------------------------------------------

def server_url(paths: ProjectPaths) -> str | None:
    """http://127.0.0.1:<port> of the project's Prefect server, None when it never started."""
    port = record(paths, SERVER).get("port")
    return f"http://127.0.0.1:{port}" if isinstance(port, int) else None


def api_answers(base: str, timeout: float = 2.0) -> str | None:
    """None when the server's health probe answers 200, else why not."""
    answer = procs.http_status(base + READY_PATH, timeout=timeout)
    return None if answer == 200 else (f"HTTP {answer}" if isinstance(answer, int) else answer)


def api(base: str, path: str, body: dict | None = None, timeout: float = 5.0):
    """The API's JSON answer to a POST (body) or GET; RuntimeError naming the call. An answer
    the server means to be retried (RETRY_STATUSES: its SQLite database busy is a 503, the
    request undone) is asked again, RETRY_DELAYS apart, as Prefect's own client does."""
    url = f"{base}/api{path}"
    for delay in (*RETRY_DELAYS, None):
        status, data = (procs.http_get_json(url, timeout) if body is None
                        else procs.http_post_json(url, body, timeout))
        if status not in RETRY_STATUSES or delay is None:
            break
        time.sleep(delay)
    if not isinstance(status, int) or not 200 <= status < 300:
        raise RuntimeError(f"{'GET' if body is None else 'POST'} /api{path}: "
                           f"{'HTTP ' if isinstance(status, int) else ''}{status}")
    return data


def describe_schedule(schedule: dict) -> str:
    if schedule.get("interval") is not None:
        return f"every {schedule['interval']:g} s"
    if schedule.get("cron"):
        return f"cron {schedule['cron']} ({schedule.get('timezone') or 'UTC'})"
    if schedule.get("rrule"):
        return f"rrule {schedule['rrule']}"
    return "?"


def _seconds_between(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    return round((_parse(end) - _parse(start)).total_seconds(), 1)


def _parse(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def deployments(base: str) -> list[dict]:
    return api(base, "/deployments/filter", {"sort": "NAME_ASC"}) or []


def runs_of(base: str, deployment_id: str, state_types: dict, sort: str, limit: int) -> list:
    return api(base, "/flow_runs/filter", {
        "deployments": {"id": {"any_": [deployment_id]}},
        "flow_runs": {"state": {"type": state_types}}, "sort": sort, "limit": limit}) or []


def status_report(paths: ProjectPaths) -> dict:
    """The scheduler as data: {"ui", "server": "ready" | "not started" | "unreachable: why",
    "deployments": [{"name", "schedules", "paused", "last_run", "next_run"}]}; a last run is
    {"state", "start", "seconds"}, a next run {"state", "at"}."""
    base = server_url(paths)
    if base is None:
        return {"ui": None, "server": "not started", "deployments": []}
    why = api_answers(base)
    if why is not None:
        return {"ui": base, "server": f"unreachable: {why}", "deployments": []}
    rows = []
    try:
        for d in deployments(base):
            last = runs_of(base, d["id"], {"not_any_": ["SCHEDULED"]}, "START_TIME_DESC", 1)
            upcoming = runs_of(base, d["id"], {"any_": ["SCHEDULED"]},
                               "EXPECTED_START_TIME_ASC", 1)
            rows.append({
                "name": d["name"],
                "schedules": [describe_schedule(s.get("schedule") or {})
                              for s in d.get("schedules") or [] if s.get("active", True)],
                "paused": bool(d.get("paused")),
                "last_run": _last(last[0]) if last else None,
                "next_run": {"state": (upcoming[0].get("state") or {}).get("name"),
                             "at": upcoming[0].get("expected_start_time")}
                if upcoming else None})
    except RuntimeError as exc:
        return {"ui": base, "server": f"unreachable: {exc}", "deployments": rows}
    return {"ui": base, "server": "ready", "deployments": rows}


def _last(run: dict) -> dict:
    state = run.get("state") or {}
    start = run.get("start_time") or run.get("expected_start_time")
    end = run.get("end_time") or (datetime.now(UTC).isoformat()
                                  if state.get("type") == "RUNNING" else None)
    return {"state": state.get("name") or state.get("type"), "start": start,
            "seconds": _seconds_between(start, end) if run.get("start_time") else None,
            "id": run.get("id")}
