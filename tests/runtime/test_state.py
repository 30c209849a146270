"""State files: atomic JSON writes, promotion history, the training outcome."""

from __future__ import annotations

import json
import types
from datetime import UTC, datetime

from mlstack.runtime.state import HISTORY_LIMIT, StateFiles, write_json


def _files(tmp_path) -> StateFiles:
    return StateFiles(dir=tmp_path / "state", models="models.json", training="training.json",
                      monitoring="monitoring.json")


def test_write_json_is_sorted_indented_and_leaves_no_temp_file(tmp_path):
    path = write_json(tmp_path / "deep" / "x.json", {"b": 1, "a": [1, 2]})
    assert path.read_text() == '{\n  "a": [\n    1,\n    2\n  ],\n  "b": 1\n}\n'
    write_json(path, {"c": None})
    assert json.loads(path.read_text()) == {"c": None}
    assert sorted(p.name for p in path.parent.iterdir()) == ["x.json"]


def test_promote_keeps_current_previous_and_a_bounded_history(tmp_path):
    files = _files(tmp_path)
    assert files.models_state() == {"current": None, "history": []}
    now = datetime(2026, 1, 1, tzinfo=UTC)
    state = files.promote("m:1", {"auc": 0.9}, "fp1", "hash", now=now)
    assert state == {"current": "m:1", "previous": None, "history": [
        {"model_tag": "m:1", "metrics": {"auc": 0.9}, "data_fingerprint": "fp1",
         "spec_hash": "hash", "promoted_at": "2026-01-01T00:00:00+00:00"}]}
    assert json.loads((tmp_path / "state" / "models.json").read_text()) == state
    for i in range(2, HISTORY_LIMIT + 5):
        state = files.promote(f"m:{i}", {}, "fp", "hash", now=now)
    assert state["current"] == f"m:{HISTORY_LIMIT + 4}"
    assert state["previous"] == f"m:{HISTORY_LIMIT + 3}"
    assert len(state["history"]) == HISTORY_LIMIT
    assert state["history"][0]["model_tag"] == "m:5"


def test_training_outcome_completed_and_failed(tmp_path):
    files = _files(tmp_path)
    files.record_training({"model_tag": "m:1", "rows": {"train": 3}})
    path = tmp_path / "state" / "training.json"
    assert json.loads(path.read_text()) == {"status": "completed", "model_tag": "m:1",
                                            "rows": {"train": 3}}
    hook = files.failed_training_hook()
    failed = types.SimpleNamespace(result=lambda raise_on_failure: ValueError("boom"))
    hook(None, types.SimpleNamespace(id="run-1"), failed)
    assert json.loads(path.read_text()) == {"status": "failed", "flow_run_id": "run-1",
                                            "error_type": "ValueError", "error": "boom"}
    files.write(files.monitoring, {"alerts": []})
    assert json.loads((tmp_path / "state" / "monitoring.json").read_text()) == {"alerts": []}


def test_registry_lineage_reads_the_manifest(tmp_path):
    from mlstack.runtime.registry import ModelRegistry, read_spec_hash

    manifest = tmp_path / "mlstack.lock.json"
    registry = ModelRegistry(name="churn", model_columns=("a", "b"), manifest=manifest,
                             project_dir=tmp_path, labels={"system": "churn"})
    assert read_spec_hash(manifest) == "" and registry.spec_hash() == ""
    manifest.write_text(json.dumps({"spec_hash": "abc", "files": {}}))
    assert registry.lineage({"auc": 0.9}, "fp") == {
        "spec_hash": "abc", "data_fingerprint": "fp", "metrics": {"auc": 0.9}, "git_sha": "",
        "model_columns": ["a", "b"]}
    manifest.write_text("not json")
    assert registry.spec_hash() == ""
