"""Prefect wiring shared by every generated flow: task options, retry condition, progress.

    TASK_OPTIONS = task_options(retries=2, retry_delay_seconds=10, timeout_seconds=3600,
                                progress_env="MLSTACK_PROGRESS_FILE")

    @task(name="ingest", **TASK_OPTIONS)
    def ingest(): ...

Progress: when the environment variable named by `progress_env` holds a path, every finished
task appends one JSON line to that file (mlstack deploy turns them into stages):

    {"task": "train", "state": "COMPLETED", "seconds": 1.25}
    {"task": "validate", "state": "FAILED", "seconds": 0.02, "error": "..."}
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

from mlstack.runtime.errors import DataCheckError, ModelExportError, QualityGateError

__all__ = [
    "FINAL_ERRORS",
    "PROGRESS_FILE_ENV",
    "progress_hook",
    "progress_line",
    "retry_unless_final",
    "task_options",
]

# The environment variable naming the progress file (mlstack deploy sets it).
PROGRESS_FILE_ENV = "MLSTACK_PROGRESS_FILE"
# Errors a retry cannot fix: the data or the model has to change.
FINAL_ERRORS = (DataCheckError, QualityGateError, ModelExportError)


def retry_unless_final(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect retry condition: retry everything except failed data checks and gates."""
    error = state.result(raise_on_failure=False)
    return not isinstance(error, FINAL_ERRORS)


def progress_line(task: Any, task_run: Any, state: Any) -> dict[str, Any]:
    """One progress record: the task's name, its final state type, its run time in seconds
    (None when Prefect has none) and, for a failure, the state's message as 'error'."""
    seconds = task_run.total_run_time.total_seconds() if task_run.total_run_time else None
    line: dict[str, Any] = {"task": task.name, "state": state.type.value, "seconds": seconds}
    if state.is_failed():
        line["error"] = str(state.message or "")
    return line


def progress_hook(progress_env: str = PROGRESS_FILE_ENV) -> Callable[[Any, Any, Any], None]:
    """A Prefect task hook (on_completion and on_failure) that appends progress_line(...) as
    one JSON line to the file named by the environment variable `progress_env`, if set."""

    def report_progress(task: Any, task_run: Any, state: Any) -> None:
        path = os.environ.get(progress_env)
        if not path:
            return
        line = progress_line(task, task_run, state)
        with open(path, "a", encoding="utf-8") as out:
            out.write(json.dumps(line) + "\n")

    return report_progress


def task_options(
    *,
    retries: int,
    retry_delay_seconds: float,
    timeout_seconds: float,
    progress_env: str = PROGRESS_FILE_ENV,
) -> dict[str, Any]:
    """Keyword arguments for every `@task` of a generated flow: retries (not for data checks
    and gates), timeout, no result caching or persistence, and the progress hook."""
    from prefect.cache_policies import NO_CACHE

    report_progress = progress_hook(progress_env)
    return {
        "retries": retries,
        "retry_delay_seconds": retry_delay_seconds,
        "timeout_seconds": timeout_seconds,
        "retry_condition_fn": retry_unless_final,
        "cache_policy": NO_CACHE,
        "persist_result": False,
        "on_completion": [report_progress],
        "on_failure": [report_progress],
    }
