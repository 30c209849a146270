"""Evaluation: the spec's metrics on held-out rows and its quality gates.

Metric names: auc, logloss, accuracy, f1, f1_macro, precision, recall (classification), rmse,
mae, r2 (regression), ndcg@K (ranking: mean NDCG@K over the groups with more than one row).
The values are scikit-learn's.

`evaluation_details` adds what the report draws, JSON-ready and deterministic (floats to 6
significant digits); an entry that cannot be computed holds {"reason": ...} instead:

    roc_curve           binary: {"fpr", "tpr", "auc"}, from (0, 0) to (1, 1)
    pr_curve            binary: {"recall", "precision", "average_precision"}, recall rising
                        from 0 (precision 1 there, scikit-learn's convention)
    confusion_matrix    classification: {"labels", "counts", "threshold"}; counts[i][j] rows
                        of actual class labels[i] predicted labels[j]; binary predicts the
                        positive class (classes_[1]) at probability >= 0.5 (threshold 0.5),
                        as the live accuracy counts the served output; multiclass: predict
    feature_importance  {"method", "features", "values"}, descending: feature_importances_
                        (trees, XGBoost, LightGBM) or |coef_| (linear; the mean over classes
                        for multiclass; not scaled by each feature's spread)

A curve has at most CURVE_POINTS points: the thresholds are the score quantiles (actual
scores) when the held-out rows have more distinct scores than that. auc and average precision
are scikit-learn's on every row, not on the points.
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
from mlstack.runtime.rounding import rounded

if TYPE_CHECKING:
    from mlstack.runtime.training import LabelSpec

__all__ = ["CURVE_POINTS", "DECISION_THRESHOLD", "GATE_OPS", "Gate", "check_gates",
           "compute_metrics", "confusion", "curves", "evaluate_model", "evaluation_details",
           "feature_importance", "ndcg"]

CURVE_POINTS = 100  # at most, per curve: the record stays small
DECISION_THRESHOLD = 0.5  # a binary classifier predicts the positive class at p >= this

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
    Returns {"metrics": {name: value}, "gates": [gate results], "evaluation": the curves,
    confusion matrix and feature importance (evaluation_details)}."""
    model_input = model_frame(frame)
    values = compute_metrics(
        model,
        frame,
        model_input,
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
    details = evaluation_details(model, model_input, frame[label.column])
    return {"metrics": values, "gates": results, "evaluation": details}


def _thresholds(scores: np.ndarray, points: int) -> np.ndarray:
    """Descending thresholds: every distinct score, or (when there are more than `points`)
    the scores at `points` evenly spaced quantiles, the lowest and highest included."""
    distinct = np.unique(scores)
    if len(distinct) > points:
        quantiles = np.linspace(0.0, 1.0, points)
        distinct = np.unique(np.quantile(scores, quantiles, method="inverted_cdf"))
    descending: np.ndarray = distinct[::-1]
    return descending


def curves(
    y_true: Any, scores: Any, *, points: int = CURVE_POINTS
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(ROC curve, PR curve) of positive-class `scores` against 0/1 `y_true`, at most
    `points` points each (see the module's docstring); {"reason": ...} each when the rows
    hold one class only."""
    from sklearn import metrics as m

    y = np.asarray(y_true).astype(bool)
    p = np.asarray(scores, dtype=np.float64)
    positives, negatives = int(y.sum()), int((~y).sum())
    if positives == 0 or negatives == 0:
        reason = {"reason": "the held-out rows hold one class only"}
        return dict(reason), dict(reason)
    # the cut below the first threshold (+inf, nothing predicted positive) is (0, 0)
    cuts = _thresholds(p, points - 1)
    pos_sorted, neg_sorted = np.sort(p[y]), np.sort(p[~y])
    tp = np.r_[0, positives - np.searchsorted(pos_sorted, cuts, side="left")]
    fp = np.r_[0, negatives - np.searchsorted(neg_sorted, cuts, side="left")]
    predicted = tp + fp
    precision = np.divide(tp, predicted, out=np.ones(len(tp)), where=predicted > 0)
    roc = {"fpr": fp / negatives, "tpr": tp / positives, "auc": m.roc_auc_score(y, p)}
    pr = {"recall": tp / positives, "precision": precision,
          "average_precision": m.average_precision_score(y, p)}
    return rounded(roc), rounded(pr)


def confusion(y_true: Any, predicted: Any, labels: Sequence[Any]) -> list[list[int]]:
    """counts[i][j]: the rows of actual class labels[i] predicted labels[j] (rows of another
    actual class are not counted)."""
    from sklearn.metrics import confusion_matrix

    counts = confusion_matrix(np.asarray(y_true), np.asarray(predicted), labels=list(labels))
    return [[int(c) for c in row] for row in counts]


def _feature_names(model: Any, model_input: pd.DataFrame, count: int) -> list[str]:
    for names in (getattr(model, "feature_names_in_", None), list(model_input.columns)):
        if names is not None and len(names) == count:
            return [str(n) for n in names]
    return [f"feature {i}" for i in range(count)]


def feature_importance(model: Any, model_input: pd.DataFrame) -> dict[str, Any]:
    """The model's own feature importance by feature name, descending (ties in model order):
    feature_importances_ where it has them, else |coef_| (the mean over classes when there
    are several rows of coefficients); {"reason": "not available: ..."} otherwise."""
    kind = type(model).__name__
    try:
        raw = getattr(model, "feature_importances_", None)
        method = "feature_importances_"
        importance_type = getattr(model, "importance_type", None)
        if raw is not None and isinstance(importance_type, str):
            method += f" ({importance_type})"
        if raw is None and getattr(model, "coef_", None) is not None:
            coef = np.abs(np.asarray(model.coef_, dtype=np.float64))
            raw, method = (coef.mean(axis=0) if coef.ndim == 2 else coef), "|coef_|"
    except (AttributeError, ValueError, TypeError) as exc:  # a library that cannot say
        return {"reason": f"not available: {kind} raised {type(exc).__name__} ({exc})"}
    if raw is None:
        return {"reason": f"not available: {kind} has no feature_importances_ or coef_"}
    values = np.asarray(raw, dtype=np.float64).reshape(-1)
    names = _feature_names(model, model_input, len(values))
    order = np.argsort(-values, kind="stable")
    return {"method": method, "features": [names[i] for i in order],
            "values": rounded(values[order])}


def evaluation_details(model: Any, model_input: pd.DataFrame, y_true: Any) -> dict[str, Any]:
    """The curves, confusion matrix and feature importance of `model` on held-out rows (see
    the module's docstring); a classifier is a model with classes_ and predict_proba."""
    details: dict[str, Any] = {"feature_importance": feature_importance(model, model_input)}
    classes = getattr(model, "classes_", None)
    if classes is None or not hasattr(model, "predict_proba") or len(classes) < 2:
        return details
    labels = rounded(list(classes))
    y = np.asarray(y_true)
    if len(classes) == 2:
        positive = np.asarray(model.predict_proba(model_input))[:, 1]
        details["roc_curve"], details["pr_curve"] = curves(y == classes[1], positive)
        predicted = np.where(positive >= DECISION_THRESHOLD, classes[1], classes[0])
        threshold: float | None = DECISION_THRESHOLD
    else:
        predicted, threshold = np.asarray(model.predict(model_input)), None
    details["confusion_matrix"] = {"labels": labels, "threshold": threshold,
                                   "counts": confusion(y, predicted, list(classes))}
    return details
