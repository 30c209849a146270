"""The pipeline's state files: JSON under the state folder, written atomically.

    models     {"current": tag, "previous": tag, "history": [...last 100 promotions]}
    training   the latest training run: {"status": "completed", ...result} or
               {"status": "failed", "flow_run_id", "error_type", "error"}
    monitoring the latest monitoring report

`mlstack deploy` and `mlstack status` read them; their formats are an interface. Each write
goes to '<name without suffix>.tmp' and is renamed over the file, so a reader sees the old
file or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["HISTORY_LIMIT", "MONITORING_FILE", "MONITORING_HISTORY_FILE", "MODELS_FILE",
           "QUALITY_HISTORY_LIMIT", "StateFiles", "TRAINING_FILE", "quality_point",
           "write_json"]

# Promotions kept in the models file's history.
HISTORY_LIMIT = 100
# The files' default names (the generated code passes mlstack's contract names, the same).
MODELS_FILE = "models.json"
TRAINING_FILE = "training.json"
MONITORING_FILE = "monitoring.json"
# One line per monitoring run: its live quality per version (the report's chart over time).
MONITORING_HISTORY_FILE = "monitoring_history.jsonl"
QUALITY_HISTORY_LIMIT = 1000  # the lines kept (a run an hour: six weeks)


def write_json(path: str | Path, data: Any) -> Path:
    """Write `data` as indented, key-sorted JSON (with a final newline) to `path`, atomically
    (a sibling .tmp file renamed over it); creates the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


@dataclass(frozen=True)
class StateFiles:
    """The state folder and the names of its files (the generated code passes the names
    mlstack's contract gives them)."""

    dir: Path
    models: str = MODELS_FILE
    training: str = TRAINING_FILE
    monitoring: str = MONITORING_FILE
    monitoring_history: str = MONITORING_HISTORY_FILE

    def path(self, name: str) -> Path:
        return Path(self.dir) / name

    def write(self, name: str, data: Any) -> Path:
        """Write one state file atomically (see write_json)."""
        return write_json(self.path(name), data)

    def models_state(self) -> dict[str, Any]:
        """The models file, or the empty state {"current": None, "history": []}."""
        path = self.path(self.models)
        return json.loads(path.read_text()) if path.is_file() else {"current": None, "history": []}

    def promote(
        self,
        model_tag: str,
        metrics: Mapping[str, float],
        data_fingerprint: str,
        spec_hash: str,
        *,
        now: datetime | None = None,
    ) -> dict[str, Any]:
        """Record `model_tag` as the current model (the one before becomes 'previous') and
        append it to the history (the last HISTORY_LIMIT kept); returns the new state."""
        state = self.models_state()
        state["previous"] = state.get("current")
        state["current"] = model_tag
        state["history"] = [
            *state.get("history", []),
            {
                "model_tag": model_tag,
                "metrics": metrics,
                "data_fingerprint": data_fingerprint,
                "spec_hash": spec_hash,
                "promoted_at": (now or datetime.now(UTC)).isoformat(),
            },
        ][-HISTORY_LIMIT:]
        self.write(self.models, state)
        return state

    def record_monitoring(self, report: Mapping[str, Any]) -> None:
        """The monitoring file (the latest report), and one line for this run in the history
        file: when, what served, and each version's live quality (quality_point); the last
        QUALITY_HISTORY_LIMIT lines kept, the file replaced atomically."""
        self.write(self.monitoring, report)
        path = self.path(self.monitoring_history)
        lines = path.read_text().splitlines() if path.is_file() else []
        lines.append(json.dumps(quality_point(report), sort_keys=True))
        tmp = path.with_suffix(".tmp")
        tmp.write_text("\n".join(lines[-QUALITY_HISTORY_LIMIT:]) + "\n")
        os.replace(tmp, path)

    def record_training(self, result: Mapping[str, Any]) -> None:
        """The training file after a completed run: {"status": "completed", **result}."""
        self.write(self.training, {"status": "completed", **result})

    def record_training_failure(self, flow_run_id: object, error: BaseException | Any) -> None:
        """The training file after a failed run: its id, the error's type and message."""
        self.write(
            self.training,
            {
                "status": "failed",
                "flow_run_id": str(flow_run_id),
                "error_type": type(error).__name__,
                "error": str(error),
            },
        )

    def failed_training_hook(self) -> Callable[[Any, Any, Any], None]:
        """A Prefect flow on_failure hook that records the failure in the training file."""

        def record_failed_training(flow: Any, flow_run: Any, state: Any) -> None:
            self.record_training_failure(flow_run.id, state.result(raise_on_failure=False))

        return record_failed_training


def quality_point(report: Mapping[str, Any]) -> dict[str, Any]:
    """A monitoring report as one point of the quality history: its time, the serving
    version, each version's samples and metrics (value, low, high) and the judged gates."""
    live = report.get("live_quality") or {}
    quality = live.get("quality") or {}
    versions = {
        version: {"n": entry.get("n"), "metrics": entry.get("metrics") or {}}
        for version, entry in (quality.get("versions") or {}).items()}
    serving = report.get("serving") or {}
    return {"checked_at": report.get("checked_at"), "serving": serving.get("version"),
            "versions": versions, "judged": live.get("judged") or []}
