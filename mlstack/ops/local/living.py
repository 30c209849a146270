"""What keeps a deployed project alive after deploy, observed for `status` and `mlstack docs`:
the keeper, each sidecar's process, the schedules on Prefect's server and the alerts on
Prometheus. Reads only, never starts anything; each part answers on its own (one that cannot
be asked says why), so status still runs with all of them down."""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

from mlstack.codegen.contract import FEEDBACK_FILE, PREDICTION_LOG_DIR, PREDICTION_LOG_STATS_DIR
from mlstack.ops.local import airflow_scheduler, alerting, keeper, scheduler, sidecars
from mlstack.ops.paths import ProjectPaths

SIDECARS = (scheduler.SERVER, scheduler.RUNNER, *airflow_scheduler.NAMES, alerting.PROMETHEUS,
            alerting.ALERTMANAGER, alerting.EXPORTER)


@dataclass
class Living:
    keeper: dict = field(default_factory=dict)  # keeper.status_report
    sidecars: list[dict] = field(default_factory=list)  # one row per sidecar ever started
    schedules: dict = field(default_factory=dict)  # scheduler.status_report
    alerts: dict = field(default_factory=dict)  # alerting.status_report
    prediction_log: dict = field(default_factory=dict)  # prediction_log_report

    @property
    def firing(self) -> list[dict]:
        return list(self.alerts.get("alerts") or [])


def sidecar_rows(paths: ProjectPaths, now: float | None = None) -> list[dict]:
    """Each sidecar that ever started here: running or not (by its owner marker), its PID,
    port, restarts, the reason of the last restart and how long it has run."""
    now = time.time() if now is None else now
    rows = []
    for name in SIDECARS:
        rec = sidecars.record(paths, name)
        if not rec:
            continue
        found = sidecars.running(paths, name)
        started = rec.get("started_at")
        rows.append({"name": name, "what": rec.get("what", ""), "running": bool(found),
                     "pid": found[0].pid if found else None, "port": rec.get("port"),
                     "restarts": rec.get("restarts", 0), "reason": rec.get("reason", ""),
                     "up_seconds": round(now - started, 1)
                     if found and isinstance(started, int | float) else None})
    return rows


def prediction_log_report(paths: ProjectPaths) -> dict:
    """The prediction log's counters per version and the outcomes POST /feedback stored; {}
    when nothing was ever logged."""
    folder = paths.runtime_state_dir / PREDICTION_LOG_DIR
    versions = prediction_log_counts(folder)
    if not versions:
        return {}
    return {"folder": str(folder), "versions": versions, "feedback": _feedback_count(folder)}


def prediction_log_counts(folder: Path) -> dict[str, dict[str, int]]:
    """Per version, the counters of every writer that logged it (rows logged and dropped,
    files, write errors), summed over processes, the ones that ended too: the stats files the
    runtime's writers keep (mlstack.runtime.prediction_log). The one reader of those files
    (the compiler does not import the runtime)."""
    versions: dict[str, dict[str, int]] = {}
    for path in sorted((Path(folder) / PREDICTION_LOG_STATS_DIR).glob("*.json")):
        try:
            data = json.loads(path.read_text())
            version = str(data["version"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        totals = versions.setdefault(version, dict.fromkeys(
            ("logged", "dropped", "files", "write_errors"), 0))
        for key in totals:
            value = data.get(key)
            if isinstance(value, int) and not isinstance(value, bool):
                totals[key] += value
    return versions


def _feedback_count(folder: Path) -> int:
    path = folder / FEEDBACK_FILE
    if not path.is_file():
        return 0
    try:
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2.0)
        try:
            return int(connection.execute("SELECT COUNT(*) FROM feedback").fetchone()[0])
        finally:
            connection.close()
    except sqlite3.Error:
        return 0


def schedules_report(paths: ProjectPaths) -> dict:
    """The schedules of the orchestrator whose services started last (Prefect's server or
    Airflow's API server): the same shape from either."""
    started = {name: sidecars.record(paths, name).get("started_at") or 0
               for name in (scheduler.SERVER, airflow_scheduler.API_SERVER)}
    if started[airflow_scheduler.API_SERVER] > started[scheduler.SERVER]:
        return airflow_scheduler.status_report(paths)
    return scheduler.status_report(paths)


def observe_living(paths: ProjectPaths) -> Living:
    return Living(keeper=keeper.status_report(paths), sidecars=sidecar_rows(paths),
                  schedules=schedules_report(paths),
                  alerts=alerting.status_report(paths),
                  prediction_log=prediction_log_report(paths))


def living_problems(living: Living, serving: bool) -> list[str]:
    """What status names as a problem while a version serves: a keeper that is wanted and not
    running, a sidecar that is down. Firing alerts are shown, not counted: they are about the
    system's SLOs, and status's health is about what serves."""
    if not serving:
        return []
    problems = []
    if living.keeper.get("wanted") and not living.keeper.get("running"):
        problems.append("the keeper is not running (a version's supervisor starts it again "
                        "within seconds)")
    for row in living.sidecars:
        if not row["running"]:
            problems.append(f"{row['what'] or row['name']} is not running (the keeper "
                            "restarts it)")
    return problems
