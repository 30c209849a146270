"""Live quality: the metrics and intervals on known cases and against scikit-learn, the
intervals' coverage by simulation, point-in-time correct outcomes from a label source, the
min_samples gate on what a readout may claim, and the gate rule (met, missed, uncertain,
not enough)."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn import metrics as m

from mlstack.runtime.evaluation import Gate
from mlstack.runtime.live_quality import (
    auc_interval,
    delong_auc,
    judge_quality,
    label_outcomes,
    live_quality,
    wilson_interval,
)

T0 = pd.Timestamp("2025-01-01", tz="UTC")


def _frame(output, outcome, version="v1", **columns) -> pd.DataFrame:
    """A log with outcomes: one row a second from T0."""
    n = len(output)
    return pd.DataFrame({"ts": T0 + pd.to_timedelta(np.arange(n), unit="s"),
                         "version": version, "output": np.asarray(output, dtype=float),
                         "outcome": outcome, **columns})


def _metric(report, name, version="v1"):
    return report["versions"][version]["metrics"][name]


# ------------------------------------------------------------------------- known cases

def test_auc_of_a_perfect_ranking_is_one_with_its_count():
    y = np.array([0] * 20 + [1] * 20)
    report = live_quality(_frame(np.linspace(0.01, 0.99, 40), y), "binary_classification")
    assert report["versions"]["v1"]["n"] == 40 and report["versions"]["v1"]["enough"]
    assert _metric(report, "auc") == {"value": 1.0, "low": 1.0, "high": 1.0}


def test_auc_with_ties_matches_sklearn():
    scores = [0.1, 0.4, 0.35, 0.8, 0.4, 0.7, 0.2, 0.4, 0.9, 0.05]
    labels = [0, 0, 1, 1, 1, 0, 0, 1, 1, 0]
    auc, _ = delong_auc(scores, labels)
    assert auc == pytest.approx(m.roc_auc_score(labels, scores), abs=1e-12)


def test_delong_variance_of_a_hand_computed_case():
    # positives 0.9, 0.8, 0.4; negatives 0.7, 0.3. Components: V10 = (1, 1, 1/2),
    # V01 = (2/3, 1); S10 = 1/12, S01 = 1/18; var = S10/3 + S01/2 = 1/36 + 1/36 = 1/18.
    auc, variance = delong_auc([0.9, 0.8, 0.4, 0.7, 0.3], [1, 1, 1, 0, 0])
    assert auc == pytest.approx(5 / 6)
    assert variance == pytest.approx(1 / 18)
    _, low, high = auc_interval([0.9, 0.8, 0.4, 0.7, 0.3], [1, 1, 1, 0, 0])
    assert (low, high) == pytest.approx((5 / 6 - 1.959964 * math.sqrt(1 / 18), 1.0), abs=1e-6)


def test_logloss_and_accuracy_match_sklearn():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 200)
    p = np.clip(0.5 + 0.35 * (y - 0.5) + rng.normal(0, 0.2, 200), 0.02, 0.98)
    report = live_quality(_frame(p, y), "binary_classification")
    losses = -(y * np.log(p) + (1 - y) * np.log(1 - p))
    half = 1.959964 * losses.std(ddof=1) / math.sqrt(200)
    assert _metric(report, "logloss") == pytest.approx(
        {"value": m.log_loss(y, p), "low": losses.mean() - half, "high": losses.mean() + half},
        rel=1e-5)
    assert _metric(report, "accuracy")["value"] == pytest.approx(
        m.accuracy_score(y, p >= 0.5), rel=1e-6)


def test_wilson_interval_of_a_hand_computed_case():
    # 8 of 10 at z = 1.96: center (0.8 + 0.19208) / 1.38416, half-width 0.31362 / 1.38416.
    share, low, high = wilson_interval(8, 10)
    assert share == 0.8
    assert (low, high) == pytest.approx((0.490161, 0.943318), abs=1e-5)


def test_ndcg_per_query_matches_sklearn_with_a_t_interval():
    rng = np.random.default_rng(2)
    queries = np.repeat(np.arange(40), 6)
    relevance = rng.integers(0, 4, len(queries))
    scores = relevance + rng.normal(0, 1.5, len(queries))
    report = live_quality(_frame(scores, relevance, query=queries), "ranking", k=3,
                          group="query")
    per_query = [m.ndcg_score([relevance[queries == q]], [scores[queries == q]], k=3)
                 for q in range(40)]
    half = stats.t.ppf(0.975, 39) * np.std(per_query, ddof=1) / math.sqrt(40)
    assert report["versions"]["v1"]["queries"] == 40
    assert _metric(report, "ndcg@3") == pytest.approx(
        {"value": np.mean(per_query), "low": np.mean(per_query) - half,
         "high": np.mean(per_query) + half}, rel=1e-5)


def test_regression_and_multiclass_match_sklearn():
    rng = np.random.default_rng(3)
    y = rng.normal(size=100)
    predicted = y + rng.normal(0, 0.5, 100)
    report = live_quality(_frame(predicted, y), "regression")
    rmse = _metric(report, "rmse")
    assert rmse["value"] == pytest.approx(math.sqrt(m.mean_squared_error(y, predicted)), 1e-5)
    squared = (predicted - y) ** 2
    half = 1.959964 * squared.std(ddof=1) / 10
    assert (rmse["low"], rmse["high"]) == pytest.approx(
        (math.sqrt(squared.mean() - half), math.sqrt(squared.mean() + half)), rel=1e-5)
    assert _metric(report, "mae")["value"] == pytest.approx(
        m.mean_absolute_error(y, predicted), rel=1e-5)
    classes = np.array([0.0, 1.0, 2.0] * 12)
    said = np.where(np.arange(36) % 4 == 0, 1.0, classes)
    outcome = pd.Series(classes.astype(int).astype(str), dtype=object)  # '2' names class 2.0
    accuracy = _metric(live_quality(_frame(said, outcome), "multiclass"), "accuracy")
    assert accuracy["value"] == pytest.approx(m.accuracy_score(classes, said), rel=1e-6)


# ------------------------------------------------------------------------- coverage

def test_auc_interval_covers_the_true_auc_in_about_95_percent_of_samples():
    # Binormal scores: positives N(d, 1), negatives N(0, 1); the true AUC is Phi(d / sqrt 2).
    d = 1.0
    true_auc = stats.norm.cdf(d / math.sqrt(2))
    rng = np.random.default_rng(20250101)
    labels = np.array([1] * 60 + [0] * 80)
    covered = 0
    for _ in range(300):
        scores = np.concatenate([rng.normal(d, 1, 60), rng.normal(0, 1, 80)])
        _, low, high = auc_interval(scores, labels)
        covered += low <= true_auc <= high
    assert covered / 300 >= 0.9


def test_wilson_interval_covers_the_true_share():
    rng = np.random.default_rng(7)
    hits = rng.binomial(50, 0.8, 300)
    covered = sum(low <= 0.8 <= high for _, low, high in (wilson_interval(h, 50) for h in hits))
    assert covered / 300 >= 0.9


# ------------------------------------------------------------------------- outcomes from labels

def test_label_outcomes_is_point_in_time_correct():
    log = pd.DataFrame({
        "ts": T0 + pd.to_timedelta([100, 0, 50, 10, 200], unit="s"),   # unsorted on purpose
        "user": ["u1", "u1", "u2", "u3", "u1"],
        "row": range(5),
    })
    labels = pd.DataFrame({
        "user": ["u1", "u1", "u1", "u2", "u3", "u1"],
        "at": T0 + pd.to_timedelta([5, 95, 120, 40, 500, 100], unit="s"),
        "label": [1.0, 0.0, 1.0, 1.0, 1.0, 7.0],
    })
    out = label_outcomes(log, labels, "user", "label", "at", horizon_seconds=60)
    assert list(out["row"]) == list(range(5))                      # the log's order is kept
    # ts 100 (u1): the label at 100 (same time counts), never the one at 95 before it
    assert out["outcome"].iloc[0] == 7.0
    assert out["outcome_at"].iloc[0] == T0 + pd.Timedelta(seconds=100)
    # ts 0 (u1): the earliest within the horizon is the one at 5 (not 95: beyond 60 s)
    assert out["outcome"].iloc[1] == 1.0
    # ts 50 (u2): its only label is at 40, before the prediction: not known
    assert math.isnan(out["outcome"].iloc[2]) and pd.isna(out["outcome_at"].iloc[2])
    # ts 10 (u3): its label is at 500, beyond the horizon: not known yet
    assert math.isnan(out["outcome"].iloc[3])
    # ts 200 (u1): no label at or after it
    assert math.isnan(out["outcome"].iloc[4])
    # of two labels at the same time, the first listed
    tied = pd.concat([labels, pd.DataFrame({"user": ["u3", "u3"], "label": [2.0, 3.0],
                                            "at": [T0 + pd.Timedelta(seconds=30)] * 2})])
    assert label_outcomes(log, tied, "user", "label", "at", 60)["outcome"].iloc[3] == 2.0
    everything = label_outcomes(log, labels, "user", "label", "at", horizon_seconds=None)
    assert everything["outcome"].iloc[3] == 1.0


def test_label_outcomes_with_several_keys_of_mixed_dtypes():
    # The log wrote the store id as text (a batch mixed types); the labels hold integers and
    # unix seconds.
    log = pd.DataFrame({"ts": T0 + pd.to_timedelta([0, 0, 0, 0], unit="s"),
                        "store": ["7", "7", "8", None], "item": [1.0, 2.0, 1.0, 1.0]})
    labels = pd.DataFrame({"store": [7, 7, 8, 8], "item": [1, 2, 2, 1],
                           "at": T0.timestamp() + np.array([30.0, 40.0, 10.0, 20.0]),
                           "sold": [True, False, True, False]})
    out = label_outcomes(log, labels, ["store", "item"], "sold", "at", horizon_seconds=3600)
    assert out["outcome"].tolist()[:3] == [1.0, 0.0, 0.0]
    assert math.isnan(out["outcome"].iloc[3])                     # a missing key matches nothing
    assert out["outcome_at"].iloc[2] == T0 + pd.Timedelta(seconds=20)


# ------------------------------------------------------------------------- what a readout claims

def test_below_min_samples_the_metrics_are_null():
    y = np.array([0, 1] * 15)
    p = np.where(y == 1, 0.8, 0.3)
    frame = pd.concat([_frame(p, y, "v1"), _frame(p[:29], y[:29], "v2")], ignore_index=True)
    frame.loc[0, "outcome"] = np.nan                  # v1: 29 known outcomes of 30 rows
    frame.loc[len(frame)] = [T0, "v3", 0.5, 1]        # v3: one known outcome
    report = live_quality(frame, "binary_classification", min_samples=29)
    assert report["versions"]["v1"]["n"] == 29 and report["versions"]["v1"]["enough"]
    assert report["versions"]["v3"] == {
        "n": 1, "enough": False,
        "metrics": {name: {"value": None, "low": None, "high": None}
                    for name in ("auc", "logloss", "accuracy")}}
    strict = live_quality(frame, "binary_classification", min_samples=30)
    assert not strict["versions"]["v1"]["enough"] and _metric(strict, "auc")["value"] is None
    json.dumps(report, allow_nan=False)              # JSON-ready: no NaN anywhere


def test_an_undefined_metric_is_null_not_nan():
    report = live_quality(_frame(np.linspace(0.1, 0.9, 40), np.ones(40)),
                          "binary_classification")
    assert report["versions"]["v1"]["enough"]
    assert _metric(report, "auc") == {"value": None, "low": None, "high": None}
    assert _metric(report, "logloss")["value"] is not None
    json.dumps(report, allow_nan=False)
    assert judge_quality(report, {"auc": ">= 0.7"})[0]["status"] == "not_enough"


def test_window_and_determinism():
    y = np.array([0, 1] * 50)
    frame = _frame(np.where(y == 1, 0.7, 0.4), y)
    report = live_quality(frame, "binary_classification", window=40,
                          now=(T0 + pd.Timedelta(seconds=60)).timestamp())
    assert report["versions"]["v1"]["n"] == 40                  # ts in [20, 60)
    assert report["window"] == {"start": "2025-01-01T00:00:20+00:00",
                                "end": "2025-01-01T00:01:00+00:00"}
    again = live_quality(frame.sample(frac=1, random_state=0), "binary_classification",
                         window=40, now=T0 + pd.Timedelta(seconds=60))
    assert json.dumps(again, sort_keys=True) == json.dumps(report, sort_keys=True)


def test_floats_are_rounded_to_six_significant_digits():
    y = np.array([0, 1] * 30)
    p = np.where(y == 1, 2 / 3, 1 / 7)
    raw = m.log_loss(y, p)
    report = live_quality(_frame(p, y), "binary_classification")
    assert _metric(report, "logloss")["value"] == float(f"{raw:.6g}") != raw


# ------------------------------------------------------------------------- the gate rule

def _report(value, low, high, n=100, metric="auc"):
    return {"versions": {"v1": {"n": n, "enough": value is not None,
                                "metrics": {metric: {"value": value, "low": low, "high": high}}}}}


@pytest.mark.parametrize("gate, value, low, high, status", [
    (">= 0.7", 0.75, 0.65, 0.85, "met"),           # the point passes: met, whatever the interval
    (">= 0.7", 0.68, 0.60, 0.76, "uncertain"),     # misses, but the interval reaches 0.7
    (">= 0.7", 0.60, 0.55, 0.65, "missed"),        # the whole interval is below
    (">= 0.7", 0.60, 0.55, 0.70, "uncertain"),     # its upper end passes (>= includes 0.7)
    ("> 0.7", 0.60, 0.55, 0.70, "missed"),         # ... but not for >
    ("0.7", 0.60, 0.55, 0.65, "missed"),           # a bare number is >=
    ("< 0.5", 0.55, 0.45, 0.65, "uncertain"),      # smaller is better: the lower end counts
    ("< 0.5", 0.55, 0.51, 0.65, "missed"),
    ("<= 0.5", 0.45, 0.40, 0.50, "met"),
    ("== 0.5", 0.55, 0.45, 0.65, "uncertain"),
    ("== 0.5", 0.55, 0.52, 0.65, "missed"),
    (">= 0.7", None, None, None, "not_enough"),
])
def test_the_gate_rule(gate, value, low, high, status):
    judged = judge_quality(_report(value, low, high), {"auc": gate})
    assert [row["status"] for row in judged] == [status]
    assert judged[0]["low"] == low and judged[0]["high"] == high


def test_gates_on_a_live_report():
    y = np.array([0, 1] * 100)
    rng = np.random.default_rng(5)
    good = np.clip(0.5 + 0.4 * (y - 0.5) + rng.normal(0, 0.15, 200), 0, 1)
    frame = pd.concat([_frame(good, y, "good"), _frame(rng.uniform(size=200), y, "coin"),
                       _frame(good[:10], y[:10], "new")], ignore_index=True)
    judged = judge_quality(live_quality(frame, "binary_classification"),
                           [Gate("auc", ">=", 0.7), Gate("f1", ">=", 0.5)])
    assert [(r["version"], r["metric"], r["status"]) for r in judged] == [
        ("coin", "auc", "missed"), ("coin", "f1", "unmeasured"),
        ("good", "auc", "met"), ("good", "f1", "unmeasured"),
        ("new", "auc", "not_enough"), ("new", "f1", "unmeasured")]
    assert judged[4]["n"] == 10
    with pytest.raises(ValueError, match="not a gate"):
        judge_quality(live_quality(frame, "binary_classification"), {"auc": "at least 0.7"})


def test_the_monitoring_readout_joins_feedback_then_labels_and_alerts_on_evidence(tmp_path):
    """The monitoring flow's live quality: the log's answers in the window, each outcome from
    POST /feedback where a client sent one, else from the label source (the entity's first
    label at or after the answer); judged per version against slos.quality; a version whose
    whole interval misses is an alert, one with too few outcomes is not."""
    from mlstack.runtime import monitoring
    from mlstack.runtime.feedback import FeedbackStore
    from mlstack.runtime.prediction_log import PredictionLog, new_request_id

    rng = np.random.default_rng(5)
    now = datetime(2026, 12, 7, 12, tzinfo=UTC)
    start = now.timestamp() - 3600
    ticks = iter(range(10**6))
    good = PredictionLog(tmp_path, "v1", "m:1", flush_seconds=0.05,
                         clock=lambda: start + next(ticks) / 4)
    bad = PredictionLog(tmp_path, "v2", "m:2", flush_seconds=0.05,
                        clock=lambda: start + next(ticks) / 4)
    store = FeedbackStore(tmp_path)
    labels = []
    for i in range(200):
        truth = int(rng.random() < 0.5)
        for log, score in ((good, 0.8 * truth + 0.2 * rng.random()), (bad, rng.random())):
            request_id = new_request_id()
            assert log.record(request_id, "predict", [{"customer_id": i}], [score])
            if log is bad and i >= 20:
                continue  # v2: feedback for 20 answers only, the rest from the labels
            if i % 2 == 0:
                log.flush(10)
                assert store.record(request_id, truth).status == "stored"
        labels.append({"customer_id": i, "churned": truth,
                       "event_timestamp": pd.Timestamp(start + i + 30, unit="s", tz="UTC")})
    assert good.flush(10) and bad.flush(10)
    config = monitoring.Monitoring(live_quality=True, task="binary_classification",
                                   quality_gates=(("auc", ">=", 0.8),), live_window_seconds=7200)
    label = type("Label", (), {"source": "labels", "keys": ("customer_id",),
                               "column": "churned", "timestamp": "event_timestamp"})
    report = monitoring.live_quality_report(config, tmp_path, {"labels": pd.DataFrame(labels)},
                                            label, now)
    assert report["enabled"] and report["logged"] == 400
    assert report["from_feedback"] == 100 + 10 and report["from_labels"] == 290
    v1, v2 = report["quality"]["versions"]["v1"], report["quality"]["versions"]["v2"]
    assert v1["n"] == 200 and v2["n"] == 200
    assert v1["metrics"]["auc"]["value"] > 0.95 and v2["metrics"]["auc"]["high"] < 0.8
    verdicts = {j["version"]: j["status"] for j in report["judged"]}
    assert verdicts == {"v1": "met", "v2": "missed"}
    found = monitoring.alerts({"drift": {"drifted": [], "method": "psi", "threshold": 0.2},
                               "freshness": {"stale": []}, "staleness": {"stale": False},
                               "live_quality": report})
    assert len(found) == 1 and found[0].startswith("live auc of v2 is ")
    assert "misses slos.quality >= 0.8" in found[0]
    off = monitoring.live_quality_report(monitoring.Monitoring(), tmp_path, {}, label, now)
    assert off == {"enabled": False}
    for log in (good, bad):
        log.close()
