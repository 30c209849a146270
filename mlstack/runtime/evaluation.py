"""Evaluation: the spec's metrics on held-out rows and its quality gates.

Metric names: auc, logloss, accuracy, f1, f1_macro, precision, recall (classification), rmse,
mae, r2 (regression), ndcg@K (ranking: mean NDCG@K over the groups with more than one row).
The values are scikit-learn's.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mlstack.runtime.errors import QualityGateError
from mlstack.runtime.logs import Logger, logger_for

if TYPE_CHECKING:
    from mlstack.runtime.training import LabelSpec

__all__ = ["GATE_OPS", "Gate", "check_gates", "compute_metrics", "evaluate_model", "ndcg"]

GATE_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
    "==": operator.eq,
}


@dataclass(frozen=True)
class Gate:
    """A quality gate: `metric op threshold` must hold on the held-out rows."""

    metric: str
    op: str
    threshold: float


def ndcg(frame: pd.DataFrame, scores: np.ndarray, k: int, group_by: str, label: str) -> float:
    """Mean NDCG@k over the groups (`group_by`) with more than one row; NaN when none has."""
    from sklearn.metrics import ndcg_score

    values = []
    scored = frame.assign(_score=scores)
    for _, group in scored.groupby(group_by, sort=True):
        if len(group) > 1:
            values.append(ndcg_score([group[label].to_numpy()], [group["_score"].to_numpy()], k=k))
    return float(np.mean(values)) if values else float("nan")


def compute_metrics(
    model: Any,
    frame: pd.DataFrame,
    model_input: pd.DataFrame,
    *,
    label: str,
    metrics: Iterable[str],
    gates: Iterable[Gate] = (),
    group_by: str | None = None,
) -> dict[str, float]:
    """Every metric in `metrics` and in the gates, sorted by name, of `model` on the rows of
    `frame` (labels in column `label`, model input `model_input`, the same rows)."""
    from sklearn import metrics as m

    X, y = model_input, frame[label]
    predicted = model.predict(X)
    names = sorted(set(metrics) | {gate.metric for gate in gates})
    results = {}
    for name in names:
        if name == "auc":
            value = m.roc_auc_score(y, model.predict_proba(X)[:, 1])
        elif name == "logloss":
            value = m.log_loss(y, model.predict_proba(X), labels=model.classes_)
        elif name == "accuracy":
            value = m.accuracy_score(y, predicted)
        elif name == "f1":
            value = m.f1_score(y, predicted)
        elif name == "f1_macro":
            value = m.f1_score(y, predicted, average="macro")
        elif name == "precision":
            value = m.precision_score(y, predicted, zero_division=0)
        elif name == "recall":
            value = m.recall_score(y, predicted, zero_division=0)
        elif name == "rmse":
            value = math.sqrt(m.mean_squared_error(y, predicted))
        elif name == "mae":
            value = m.mean_absolute_error(y, predicted)
        elif name == "r2":
            value = m.r2_score(y, predicted)
        elif name.startswith("ndcg@"):
            if group_by is None:
                raise ValueError(f"metric {name!r} needs groups (the model's group_by)")
            value = ndcg(frame, predicted, int(name.split("@")[1]), group_by, label)
        else:
            raise ValueError(f"unknown metric {name!r}")
        results[name] = float(value)
    return results


def check_gates(metrics: Mapping[str, float], gates: Iterable[Gate]) -> list[dict[str, Any]]:
    """Each gate with its metric's value and whether it passed, in the gates' order."""
    return [
        {
            "metric": gate.metric,
            "op": gate.op,
            "threshold": gate.threshold,
            "value": metrics[gate.metric],
            "passed": bool(GATE_OPS[gate.op](metrics[gate.metric], gate.threshold)),
        }
        for gate in gates
    ]


def evaluate_model(
    model: Any,
    frame: pd.DataFrame,
    model_frame: Callable[[pd.DataFrame], pd.DataFrame],
    label: LabelSpec,
    metrics: Sequence[str],
    gates: Sequence[Gate] = (),
    *,
    logger: Logger | None = None,
) -> dict[str, Any]:
    """The metrics of `model` on the held-out rows of `frame` (model input from
    `model_frame`, labels and groups as `label` says) and its gates; a failed gate raises
    QualityGateError ('gate auc >= 0.9 failed: auc = 0.8123', failures joined by '; ').
    Returns {"metrics": {name: value}, "gates": [gate results]}."""
    values = compute_metrics(
        model,
        frame,
        model_frame(frame),
        label=label.column,
        metrics=metrics,
        gates=gates,
        group_by=label.group_by,
    )
    results = check_gates(values, gates)
    failed = [
        f"gate {g['metric']} {g['op']} {g['threshold']:g} failed: {g['metric']} = {g['value']:.4g}"
        for g in results
        if not g["passed"]
    ]
    if failed:
        raise QualityGateError("; ".join(failed))
    logger_for(logger).info("metrics %s; all %d gates passed", values, len(results))
    return {"metrics": values, "gates": results}
