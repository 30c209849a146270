"""mlstack's own Airflow DAG on the local target: `<system>_scheduled_training`, the scheduled
retrain (deploy's rollout, unattended), on training.schedule.

The project's Airflow parses this file from its DAGs folder (.mlstack/airflow/dags, a link
here: airflow_scheduler.dags_folder); the services' environment carries the DAG's id, schedule
and spec (airflow_retrain.ENV_SETTINGS): without it the file defines no DAG.

    start_retrain >> retrain_outcome

`start_retrain` starts the retrain as a process of its own, once per DAG run (a retried try
starts nothing more); `retrain_outcome` is a sensor in reschedule mode that succeeds when the
retrain did and fails naming its reason otherwise (airflow_retrain.py says why the retrain
does not run inside the task: it restarts the services the task runs under). A poke killed by
that restart is retried; a failed retrain is not.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

from airflow.sdk import PokeReturnValue, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException

from mlstack.ops.local import airflow_retrain
from mlstack.ops.paths import ProjectPaths

SETTINGS = airflow_retrain.settings_from(os.environ)
# A fixed date before any deploy; no catch-up, so the first run is the next one due.
START_DATE = datetime(2026, 1, 1, tzinfo=UTC)


def start_retrain() -> dict:
    """Start the retrain of this DAG run (at most one per run): its PID and log."""
    run_id = str(get_current_context()["run_id"])
    return airflow_retrain.start(run_id, os.environ, SETTINGS)


def retrain_outcome() -> PokeReturnValue:
    """Done when the run's retrain ended: the run succeeds when it did, else fails with its
    reason (no retry: the data, the spec or the model has to change)."""
    assert SETTINGS is not None  # the DAG exists only with its settings
    run_id = str(get_current_context()["run_id"])
    found = airflow_retrain.outcome(ProjectPaths.for_spec(SETTINGS["spec"]), run_id)
    if found is None:
        return PokeReturnValue(is_done=False)
    if not found.get("ok"):
        raise AirflowFailException(f"the scheduled retrain failed: {found.get('reason')}")
    return PokeReturnValue(is_done=True, xcom_value=found)


if SETTINGS is not None:
    @dag(
        dag_id=SETTINGS["dag_id"],
        schedule=SETTINGS["schedule"],  # training.schedule; none: when triggered
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        tags=["mlstack"],
        doc_md=__doc__,
    )
    def scheduled_training():
        started = task(start_retrain, retries=2, retry_delay=timedelta(seconds=10))()
        # retried: a poke in flight when the promotion restarts the scheduler is killed with
        # it (a failed retrain raises AirflowFailException, never retried)
        outcome = task.sensor(
            retrain_outcome, mode="reschedule", retries=SETTINGS["sensor_retries"],
            retry_delay=timedelta(seconds=SETTINGS["poke_seconds"]),
            poke_interval=SETTINGS["poke_seconds"], timeout=SETTINGS["timeout_seconds"])()
        started >> outcome

    scheduled_training()
