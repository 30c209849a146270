"""Metrics match scikit-learn; gates pass and fail with today's messages; the curves,
confusion matrix and feature importance the report draws hold on cases known by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as m
from sklearn.linear_model import LinearRegression, LogisticRegression

from mlstack.runtime.errors import QualityGateError
from mlstack.runtime.evaluation import (
    Gate,
    check_gates,
    compute_metrics,
    confusion,
    curves,
    evaluate_model,
    evaluation_details,
    feature_importance,
    ndcg,
)
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
    assert set(ok) == {"metrics", "gates", "evaluation"} and ok["gates"][0]["passed"]
    assert ok["evaluation"] == evaluation_details(model, frame[["a", "b"]], frame["y"])
    with pytest.raises(QualityGateError) as error:
        evaluate_model(model, frame, lambda df: df[["a", "b"]], label, metrics,
                       [Gate("auc", ">=", 0.999), Gate("accuracy", ">", 0.9999)])
    auc, accuracy = ok["metrics"]["auc"], ok["metrics"]["accuracy"]
    assert str(error.value) == (f"gate auc >= 0.999 failed: auc = {auc:.4g}; "
                                f"gate accuracy > 0.9999 failed: accuracy = {accuracy:.4g}")


def test_a_perfect_classifier_has_auc_1_and_its_roc_passes_through_0_1():
    roc, pr = curves([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9])
    assert roc["auc"] == 1.0 and pr["average_precision"] == 1.0
    points = list(zip(roc["fpr"], roc["tpr"], strict=True))
    assert points[0] == (0.0, 0.0) and points[-1] == (1.0, 1.0)
    assert (0.0, 1.0) in points
    assert pr["recall"][0] == 0.0 and pr["precision"][0] == 1.0
    assert (1.0, 1.0) in zip(pr["recall"], pr["precision"], strict=True)


def test_a_constant_predictor_is_the_diagonal():
    roc, pr = curves([0, 1, 0, 1, 1], [0.3] * 5)
    assert roc == {"fpr": [0.0, 1.0], "tpr": [0.0, 1.0], "auc": 0.5}
    assert pr == {"recall": [0.0, 1.0], "precision": [1.0, 0.6], "average_precision": 0.6}


def test_one_class_only_has_no_curves_and_says_why():
    roc, pr = curves([1, 1, 1], [0.2, 0.5, 0.9])
    assert roc == pr == {"reason": "the held-out rows hold one class only"}


def test_curves_match_sklearn_and_stay_small():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, size=5000)
    scores = np.clip(y * 0.3 + rng.normal(0.35, 0.25, size=5000), 0, 1)
    roc, pr = curves(y, scores)
    assert len(roc["fpr"]) == len(roc["tpr"]) <= 100 and len(pr["recall"]) <= 100
    assert roc["auc"] == float(f"{m.roc_auc_score(y, scores):.6g}")
    assert pr["average_precision"] == float(f"{m.average_precision_score(y, scores):.6g}")
    assert roc["fpr"] == sorted(roc["fpr"]) and roc["tpr"] == sorted(roc["tpr"])
    assert (roc["fpr"][0], roc["tpr"][0], roc["fpr"][-1], roc["tpr"][-1]) == (0, 0, 1, 1)
    # each point is the rate at an actual score used as the threshold (score >= t)
    full_fpr, full_tpr, _ = m.roc_curve(y, scores, drop_intermediate=False)
    full = {(float(f"{a:.6g}"), float(f"{b:.6g}")) for a, b in zip(full_fpr, full_tpr, strict=True)}
    assert set(zip(roc["fpr"], roc["tpr"], strict=True)) <= full
    assert curves(y, scores) == (roc, pr)  # deterministic


def test_confusion_counts_a_2x2_by_hand():
    actual = ["no", "no", "no", "yes", "yes"]
    predicted = ["no", "yes", "no", "yes", "no"]
    assert confusion(actual, predicted, ["no", "yes"]) == [[2, 1], [1, 1]]


def test_binary_confusion_uses_probability_at_least_one_half():
    class Fixed:  # a classifier whose positive-class probabilities are given
        classes_ = np.array([0, 1])

        def predict_proba(self, X):
            p = X["p"].to_numpy()
            return np.c_[1 - p, p]

    X = pd.DataFrame({"p": [0.5, 0.49, 0.9, 0.1, 0.5]})
    got = evaluation_details(Fixed(), X, pd.Series([1, 1, 0, 0, 0]))
    # rows (actual 0, 1) x columns (predicted 0, 1); 0.5 predicts 1, as live accuracy counts
    assert got["confusion_matrix"] == {"labels": [0, 1], "threshold": 0.5,
                                       "counts": [[1, 2], [1, 1]]}
    assert got["feature_importance"] == {
        "reason": "not available: Fixed has no feature_importances_ or coef_"}
    assert set(got) == {"roc_curve", "pr_curve", "confusion_matrix", "feature_importance"}


def test_tree_importance_names_the_feature_that_alone_decides():
    from sklearn.tree import DecisionTreeClassifier

    rng = np.random.default_rng(4)
    X = pd.DataFrame({"noise": rng.normal(size=200), "decides": rng.normal(size=200),
                      "zero": np.zeros(200)})
    y = (X["decides"] > 0).astype(int)
    model = DecisionTreeClassifier(random_state=0).fit(X, y)
    got = feature_importance(model, X)
    assert got == {"method": "feature_importances_", "features": ["decides", "noise", "zero"],
                   "values": [1.0, 0.0, 0.0]}


def test_linear_importance_is_abs_coef_and_the_class_mean_for_multiclass():
    rng = np.random.default_rng(5)
    X = pd.DataFrame({"a": rng.normal(size=300), "b": rng.normal(size=300)})
    y3 = np.digitize(X["b"] - 0.2 * X["a"], [-0.5, 0.5])
    multi = LogisticRegression(max_iter=500).fit(X, y3)
    got = feature_importance(multi, X)
    expected = np.abs(multi.coef_).mean(axis=0)
    assert got["method"] == "|coef_|" and got["features"] == ["b", "a"]
    assert got["values"] == [float(f"{v:.6g}") for v in sorted(expected, reverse=True)]
    details = evaluation_details(multi, X, pd.Series(y3))
    assert set(details) == {"confusion_matrix", "feature_importance"}  # no curves: 3 classes
    counts = details["confusion_matrix"]["counts"]
    assert details["confusion_matrix"]["labels"] == [0, 1, 2]
    assert counts == m.confusion_matrix(y3, multi.predict(X)).tolist()
    regression = LinearRegression().fit(X, 3 * X["a"] - X["b"])
    assert feature_importance(regression, X)["values"] == [3.0, 1.0]
    assert evaluation_details(regression, X, X["a"]).keys() == {"feature_importance"}
