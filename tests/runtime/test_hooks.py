"""Prefect hooks: the retry condition and the progress file's line format."""

from __future__ import annotations

import json
import types
from datetime import timedelta

from mlstack.runtime.errors import DataCheckError, QualityGateError
from mlstack.runtime.hooks import progress_hook, retry_unless_final, task_options

ENV = "MLSTACK_PROGRESS_FILE"


def _state(kind: str, message: str | None = None, result=None):
    return types.SimpleNamespace(type=types.SimpleNamespace(value=kind), message=message,
                                 is_failed=lambda: kind == "FAILED",
                                 result=lambda raise_on_failure: result)


def test_retry_condition_skips_only_data_checks_and_gates():
    assert not retry_unless_final(None, None, _state("FAILED", result=DataCheckError("x")))
    assert not retry_unless_final(None, None, _state("FAILED", result=QualityGateError("x")))
    assert retry_unless_final(None, None, _state("FAILED", result=OSError("disk")))


def test_progress_lines_keep_their_format(tmp_path, monkeypatch):
    path = tmp_path / "progress.jsonl"
    hook = progress_hook(ENV)
    task = types.SimpleNamespace(name="train")
    run = types.SimpleNamespace(total_run_time=timedelta(seconds=1.25))
    hook(task, run, _state("COMPLETED"))  # not set: nothing written
    assert not path.exists()
    monkeypatch.setenv(ENV, str(path))
    hook(task, run, _state("COMPLETED"))
    hook(types.SimpleNamespace(name="validate"), types.SimpleNamespace(total_run_time=None),
         _state("FAILED", message="data check failed: source 'a', min_rows 5: 1 rows"))
    hook(task, run, _state("FAILED"))
    assert path.read_text().splitlines() == [
        '{"task": "train", "state": "COMPLETED", "seconds": 1.25}',
        '{"task": "validate", "state": "FAILED", "seconds": null, '
        '"error": "data check failed: source \'a\', min_rows 5: 1 rows"}',
        '{"task": "train", "state": "FAILED", "seconds": 1.25, "error": ""}',
    ]
    assert all(json.loads(line) for line in path.read_text().splitlines())


def test_task_options():
    from prefect.cache_policies import NO_CACHE

    options = task_options(retries=2, retry_delay_seconds=10, timeout_seconds=3600,
                           progress_env=ENV)
    assert options["retries"] == 2 and options["retry_delay_seconds"] == 10
    assert options["timeout_seconds"] == 3600 and options["persist_result"] is False
    assert options["retry_condition_fn"] is retry_unless_final
    assert options["cache_policy"] is NO_CACHE
    assert options["on_completion"] == options["on_failure"]
    assert options["on_completion"][0].__name__ == "report_progress"
