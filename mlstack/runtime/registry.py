"""Registering a trained model in the BentoML model store, with its lineage.

The lineage (the model's metadata): spec_hash (read from the compile's manifest,
mlstack.lock.json, next to the generated tree; '' without one), data_fingerprint, metrics,
git_sha (of the project folder; '' outside git), model_columns (the service refuses a
model trained on other columns) and serving_runtime (mlstack.runtime.scoring: whether the
model's ONNX export matched the native model on the evaluation set, and why not; the ONNX
bytes are stored with the model).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ModelRegistry", "git_sha", "read_spec_hash"]


def git_sha(folder: str | Path) -> str:
    """The git commit of the repository holding `folder`, or '' when there is none."""
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return result.stdout.strip() if result.returncode == 0 else ""


def read_spec_hash(manifest: str | Path) -> str:
    """The spec hash recorded in a compile's manifest (mlstack.lock.json), or '' when the
    file is missing or unreadable (a tree written without its manifest)."""
    try:
        value = json.loads(Path(manifest).read_text(encoding="utf-8")).get("spec_hash")
    except (OSError, ValueError, AttributeError):
        return ""
    return value if isinstance(value, str) else ""


@dataclass(frozen=True)
class ModelRegistry:
    """Where a project's models go: the BentoML model `name`, its `labels`, the columns the
    model reads, the compile's manifest and the project folder (for the lineage), the model's
    task and the spec's serving runtime ('auto', 'onnx' or 'native'; see
    mlstack.runtime.scoring)."""

    name: str
    model_columns: tuple[str, ...]
    manifest: Path
    project_dir: Path
    labels: Mapping[str, str] = field(default_factory=dict)
    task: str = "binary_classification"
    serving_runtime: str = "native"

    def spec_hash(self) -> str:
        """The hash of the spec the running code was compiled from ('' when unknown)."""
        return read_spec_hash(self.manifest)

    def lineage(self, metrics: Mapping[str, float], data_fingerprint: str) -> dict[str, Any]:
        """The metadata saved with a model."""
        return {
            "spec_hash": self.spec_hash(),
            "data_fingerprint": data_fingerprint,
            "metrics": dict(metrics),
            "git_sha": git_sha(self.project_dir),
            "model_columns": list(self.model_columns),
        }

    def register(self, model: Any, metrics: Mapping[str, float], data_fingerprint: str,
                 evaluation: Any = None) -> str:
        """Save a model with scikit-learn's API (scikit-learn, XGBoost, LightGBM, the tabular
        MLP: pickled) with its lineage; `predict` (and `predict_proba` when
        the model has it) are batchable signatures. Unless the serving runtime is 'native',
        the model is exported to ONNX and checked on `evaluation` (the evaluation set's model
        input) first; a matching export is stored with it. Returns the tag ('name:version').
        With serving runtime 'onnx', a failed export raises ModelExportError."""
        import bentoml

        from mlstack.runtime.scoring import ONNX_OBJECT, compile_model

        compiled = compile_model(model, evaluation, task=self.task, runtime=self.serving_runtime)
        signatures = {"predict": {"batchable": True}}
        if hasattr(model, "predict_proba"):
            signatures["predict_proba"] = {"batchable": True}
        saved = bentoml.sklearn.save_model(
            self.name,
            model,
            signatures=signatures,
            labels=dict(self.labels),
            custom_objects={ONNX_OBJECT: compiled.onnx} if compiled.onnx else None,
            metadata={**self.lineage(metrics, data_fingerprint),
                      "serving_runtime": compiled.record},
        )
        return str(saved.tag)
