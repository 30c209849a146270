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


def _report(at: str, auc: float, n: int) -> dict:
    return {"checked_at": at, "serving": {"version": "v2", "model_tag": "churn:x"},
            "drift": {}, "live_quality": {
                "enabled": True, "logged": 500, "judged": [
                    {"version": "v2", "metric": "auc", "op": ">=", "threshold": 0.8,
                     "value": auc, "low": auc - 0.05, "high": auc + 0.05, "n": n,
                     "status": "met"}],
                "quality": {"versions": {"v2": {"n": n, "enough": True, "metrics": {
                    "auc": {"value": auc, "low": auc - 0.05, "high": auc + 0.05}}}}}}}


def test_each_monitoring_run_adds_a_point_of_live_quality_and_the_history_is_bounded(
        tmp_path, monkeypatch):
    import json

    import mlstack.runtime.state as state

    files = _files(tmp_path)
    files.record_monitoring(_report("2026-12-07T08:00:00+00:00", 0.84, 120))
    files.record_monitoring(_report("2026-12-07T09:00:00+00:00", 0.81, 300))
    assert json.loads(files.path(files.monitoring).read_text())["checked_at"].startswith(
        "2026-12-07T09")  # the latest report
    lines = files.path(files.monitoring_history).read_text().splitlines()
    points = [json.loads(line) for line in lines]
    assert [p["checked_at"][11:13] for p in points] == ["08", "09"]
    assert points[1] == {
        "checked_at": "2026-12-07T09:00:00+00:00", "serving": "v2",
        "versions": {"v2": {"n": 300, "metrics": {"auc": {"value": 0.81, "low": 0.81 - 0.05,
                                                          "high": 0.81 + 0.05}}}},
        "judged": _report("", 0.81, 300)["live_quality"]["judged"]}
    monkeypatch.setattr(state, "QUALITY_HISTORY_LIMIT", 3)
    for hour in range(10, 15):
        files.record_monitoring(_report(f"2026-12-07T{hour}:00:00+00:00", 0.8, 10))
    kept = [json.loads(line)["checked_at"][11:13]
            for line in files.path(files.monitoring_history).read_text().splitlines()]
    assert kept == ["12", "13", "14"]
    assert not list(files.path("").glob("*.tmp"))


def test_a_report_without_live_quality_is_a_point_without_versions(tmp_path):
    from mlstack.runtime.state import quality_point

    assert quality_point({"checked_at": "t", "serving": {"version": None},
                          "live_quality": {"enabled": False}}) == {
        "checked_at": "t", "serving": None, "versions": {}, "judged": []}
