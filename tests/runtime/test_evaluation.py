"""Metrics match scikit-learn; gates pass and fail with today's messages."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as m
from sklearn.linear_model import LinearRegression, LogisticRegression

from mlstack.runtime.errors import QualityGateError
from mlstack.runtime.evaluation import Gate, check_gates, compute_metrics, evaluate_model, ndcg
from mlstack.runtime.training import LabelSpec


@pytest.fixture(scope="module")
def classified():
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"a": rng.normal(size=200), "b": rng.normal(size=200)})
    y = (X["a"] + rng.normal(scale=0.8, size=200) > 0).astype(int)
    model = LogisticRegression().fit(X, y)
    return model, X.assign(y=y), X


def test_classification_metrics_match_sklearn(classified):
    model, frame, X = classified
    names = ("auc", "logloss", "accuracy", "f1", "f1_macro", "precision", "recall")
    got = compute_metrics(model, frame, X, label="y", metrics=names)
    y, predicted, proba = frame["y"], model.predict(X), model.predict_proba(X)
    assert list(got) == sorted(names)
    assert got["auc"] == m.roc_auc_score(y, proba[:, 1])
    assert got["logloss"] == m.log_loss(y, proba)
    assert got["accuracy"] == m.accuracy_score(y, predicted)
    assert got["f1"] == m.f1_score(y, predicted)
    assert got["f1_macro"] == m.f1_score(y, predicted, average="macro")
    assert got["precision"] == m.precision_score(y, predicted)
    assert got["recall"] == m.recall_score(y, predicted)
    assert all(type(v) is float for v in got.values())


def test_regression_metrics_match_sklearn():
    rng = np.random.default_rng(1)
    X = pd.DataFrame({"a": rng.normal(size=50)})
    y = 3 * X["a"] + rng.normal(size=50)
    model = LinearRegression().fit(X, y)
    got = compute_metrics(model, X.assign(y=y), X, label="y", metrics=("rmse", "mae"),
                          gates=[Gate("r2", ">", 0.5)])
    predicted = model.predict(X)
    assert got == {"mae": m.mean_absolute_error(y, predicted), "r2": m.r2_score(y, predicted),
                   "rmse": math.sqrt(m.mean_squared_error(y, predicted))}


def test_ndcg_is_the_mean_over_groups_with_more_than_one_row():
    frame = pd.DataFrame({"q": [1, 1, 1, 2, 2, 3], "rel": [3, 1, 0, 0, 2, 1]})
    scores = np.array([0.1, 0.9, 0.5, 0.3, 0.2, 0.7])
    expected = np.mean([m.ndcg_score([[3, 1, 0]], [[0.1, 0.9, 0.5]], k=2),
                        m.ndcg_score([[0, 2]], [[0.3, 0.2]], k=2)])
    assert ndcg(frame, scores, 2, "q", "rel") == expected
    assert math.isnan(ndcg(frame.iloc[[0, 3, 5]], scores[[0, 3, 5]], 2, "q", "rel"))


def test_ranking_metric_through_compute_metrics():
    frame = pd.DataFrame({"q": [1, 1, 2, 2], "f": [0.0, 1.0, 2.0, 3.0], "rel": [0, 1, 1, 0]})
    model = LinearRegression().fit(frame[["f"]], frame["rel"])
    got = compute_metrics(model, frame, frame[["f"]], label="rel", metrics=("ndcg@10",),
                          group_by="q")
    assert got["ndcg@10"] == ndcg(frame, model.predict(frame[["f"]]), 10, "q", "rel")
    with pytest.raises(ValueError, match="unknown metric 'nope'"):
        compute_metrics(model, frame, frame[["f"]], label="rel", metrics=("nope",))


def test_gates():
    gates = [Gate("auc", ">=", 0.8), Gate("f1", ">", 0.5), Gate("rmse", "<", 1.0),
             Gate("mae", "<=", 1.0), Gate("acc", "==", 1.0)]
    results = check_gates({"auc": 0.8, "f1": 0.5, "rmse": 0.5, "mae": 1.0, "acc": 1.0}, gates)
    assert [r["passed"] for r in results] == [True, False, True, True, True]
    assert results[0] == {"metric": "auc", "op": ">=", "threshold": 0.8, "value": 0.8,
                          "passed": True}


def test_evaluate_raises_with_every_failed_gate(classified):
    model, frame, _ = classified
    label = LabelSpec(source="s", column="y", timestamp="ts", keys=("id",))
    metrics = ("auc", "accuracy")
    ok = evaluate_model(model, frame, lambda df: df[["a", "b"]], label, metrics,
                        [Gate("auc", ">=", 0.5)])
    assert set(ok) == {"metrics", "gates"} and ok["gates"][0]["passed"]
    with pytest.raises(QualityGateError) as error:
        evaluate_model(model, frame, lambda df: df[["a", "b"]], label, metrics,
                       [Gate("auc", ">=", 0.999), Gate("accuracy", ">", 0.9999)])
    auc, accuracy = ok["metrics"]["auc"], ok["metrics"]["accuracy"]
    assert str(error.value) == (f"gate auc >= 0.999 failed: auc = {auc:.4g}; "
                                f"gate accuracy > 0.9999 failed: accuracy = {accuracy:.4g}")
