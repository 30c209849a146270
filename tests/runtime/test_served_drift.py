"""Drift on the prediction log (mlstack.runtime.served_drift): known distributions judged as
the monitoring flow judges them (identical, shifted by 2 sd, nulls, too few rows), the
histograms and statistics beside them, a real log read over a window, and the flow's choice
between the log and the online store."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from mlstack.runtime.monitoring import Monitoring, alerts, ks, psi
from mlstack.runtime.prediction_log import PredictionLog, new_request_id
from mlstack.runtime.served_drift import (
    MIN_SERVED_ROWS,
    drift_section,
    feature_statistics,
    histogram,
    served_drift_report,
    served_features,
)

PSI = Monitoring(drift_method="psi", drift_threshold=0.2, drift_features=("x",),
                 live_quality=True, live_window_seconds=3600.0)
NOW = datetime(2026, 5, 28, 21, 0, tzinfo=UTC)


def _normal(n: int, mean: float = 0.0, seed: int = 0) -> pd.DataFrame:
    return pd.DataFrame({"x": np.random.default_rng(seed).normal(mean, 1.0, n)})


def _report_alerts(drift: dict) -> list[str]:
    return alerts({"drift": drift, "freshness": {"stale": []}, "staleness": {"stale": False}})


def test_the_same_distribution_served_is_not_drifted():
    reference, served = _normal(5000, seed=1), _normal(1000, seed=2)
    report = served_drift_report(reference, served, PSI)
    found = report["features"]["x"]
    # the spec's statistic, rounded to 6 significant digits as every float of the section
    assert found["statistic"] == float(
        f"{psi(reference['x'].to_numpy(), served['x'].to_numpy()):.6g}")
    assert report["statistics"]["x"]["training"]["mean"] == float(
        f"{reference['x'].mean():.6g}") != reference["x"].mean()
    assert found["statistic"] < 0.05 and found["drifted"] is False
    assert found["rows"] == 1000 and report["drifted"] == [] and _report_alerts(report) == []
    assert report["source"] == "prediction_log"
    assert report["served"] == {"rows": 1000, "min_rows": MIN_SERVED_ROWS, "enough": True}
    bins = report["histograms"]["x"]
    assert len(bins["edges"]) == 11 and bins["edges"] == sorted(bins["edges"])
    assert bins["training"]["counts"] == [500] * 10  # deciles of the training values
    assert sum(bins["current"]["counts"]) == 1000
    assert all(abs(p - 0.1) < 0.04 for p in bins["current"]["proportions"])
    stats = report["statistics"]["x"]
    assert abs(stats["training"]["p50"] - stats["current"]["p50"]) < 0.15


def test_a_feature_served_2_sd_higher_drifts_and_alerts():
    reference, served = _normal(5000, seed=1), _normal(1000, mean=2.0, seed=2)
    report = served_drift_report(reference, served, PSI)
    assert report["features"]["x"]["statistic"] > 1.0 and report["features"]["x"]["drifted"]
    assert report["drifted"] == ["x"]
    assert _report_alerts(report) == ["feature x drifted (psi above 0.2)"]
    # most served values lie above the training's 90th percentile: the open-ended last bin
    assert report["histograms"]["x"]["current"]["proportions"][-1] > 0.5
    stats = report["statistics"]["x"]
    assert stats["current"]["mean"] - stats["training"]["mean"] == pytest.approx(2.0, abs=0.15)

    by_ks = served_drift_report(reference, served, Monitoring(
        drift_method="ks", drift_threshold=0.3, drift_features=("x",)))
    assert by_ks["method"] == "ks" and by_ks["drifted"] == ["x"]
    assert by_ks["features"]["x"]["statistic"] == pytest.approx(
        ks(reference["x"].to_numpy(), served["x"].to_numpy()), rel=1e-5)


def test_nulls_are_counted_apart_and_the_statistic_reads_the_values():
    reference = pd.DataFrame({"x": np.r_[np.arange(100, dtype=float), [np.nan] * 25]})
    values = np.arange(200, dtype=float) / 2  # 0, 0.5, ..., 99.5: the same spread
    served = pd.DataFrame({"x": np.r_[values, [np.nan] * 50]})
    report = served_drift_report(reference, served, PSI)
    assert report["features"]["x"]["rows"] == 200  # the non-null values judged
    assert report["features"]["x"]["drifted"] is False
    bins = report["histograms"]["x"]
    assert bins["training"]["nulls"] == 25 and bins["current"]["nulls"] == 50
    assert bins["training"]["counts"] == [10] * 10 and sum(bins["current"]["counts"]) == 200
    assert bins["training"]["proportions"] == [0.1] * 10
    stats = report["statistics"]["x"]
    assert stats["training"] == {"rows": 125, "nulls": 25, "null_rate": 0.2, "mean": 49.5,
                                 "p5": 4.95, "p25": 24.75, "p50": 49.5, "p75": 74.25,
                                 "p95": 94.05}
    assert stats["current"]["rows"] == 250 and stats["current"]["null_rate"] == 0.2


def test_too_few_served_rows_judge_nothing():
    reference, served = _normal(5000), _normal(MIN_SERVED_ROWS - 1, mean=5.0)
    report = served_drift_report(reference, served, PSI)
    assert report["served"] == {"rows": MIN_SERVED_ROWS - 1, "min_rows": MIN_SERVED_ROWS,
                                "enough": False}
    assert report["features"] == {} and report["drifted"] == [] and report["histograms"] == {}
    assert _report_alerts(report) == []
    assert served_drift_report(reference, _normal(MIN_SERVED_ROWS, mean=5.0), PSI)[
        "drifted"] == ["x"]


def test_histogram_and_statistics_edge_cases_stay_json_ready():
    constant = histogram(pd.Series([3.0] * 20), pd.Series([3.0, 4.0, 5.0, np.nan]))
    assert constant["edges"][0] == 3.0 and constant["edges"][-1] == 5.0  # both sides' values
    assert sum(constant["training"]["counts"]) == 20 and constant["current"]["nulls"] == 1
    empty = histogram(pd.Series([1.0, 2.0]), pd.Series([np.nan, np.nan]))
    assert empty["current"] == {"counts": [0] * len(empty["edges"][1:]),
                                "proportions": [None] * len(empty["edges"][1:]), "nulls": 2}
    assert feature_statistics(pd.Series([np.nan])) == {
        "rows": 1, "nulls": 1, "null_rate": 1.0, "mean": None, "p5": None, "p25": None,
        "p50": None, "p75": None, "p95": None}
    report = served_drift_report(_normal(500), pd.DataFrame({"x": [np.nan] * 150}), PSI)
    assert report["features"]["x"] == {"statistic": None, "drifted": None, "rows": 0}
    json.dumps(report, allow_nan=False)  # no NaN, no infinity
    assert json.dumps(report, sort_keys=True) == json.dumps(
        served_drift_report(_normal(500), pd.DataFrame({"x": [np.nan] * 150}), PSI),
        sort_keys=True)


def _log_rows(folder, at: datetime, values, version="v1") -> None:
    log = PredictionLog(folder, version, "m:1", flush_seconds=0.05, retention_hours=None,
                        feature_names=("x", "other"), clock=lambda: at.timestamp())
    for start in range(0, len(values), 50):
        chunk = values[start:start + 50]
        log.record(new_request_id(), "predict", [{"id": i} for i in range(len(chunk))],
                   [0.5] * len(chunk), features=[[v, 1.0] for v in chunk])
    assert log.flush(10)
    log.close()


def test_served_features_reads_the_window_of_the_log(tmp_path):
    _log_rows(tmp_path, NOW - timedelta(hours=2), [100.0] * 10)  # before the window
    _log_rows(tmp_path, NOW - timedelta(minutes=5), [1.0, None, 3.0])
    _log_rows(tmp_path, NOW - timedelta(minutes=1), [4.0], version="v2")
    _log_rows(tmp_path, NOW + timedelta(minutes=1), [200.0])  # after now
    served = served_features(tmp_path, ["x", "missing"], since=NOW - timedelta(hours=1),
                             until=NOW)
    assert list(served.columns) == ["x", "missing"]
    assert served["x"].tolist()[:1] == [1.0] and served["x"].isna().tolist() == [
        False, True, False, False]
    assert sorted(served["x"].dropna().tolist()) == [1.0, 3.0, 4.0]
    assert served["missing"].isna().all()
    assert served_features(tmp_path / "none", ["x"], since=NOW, until=NOW).empty


def test_drift_section_judges_the_log_when_it_has_enough_rows_else_the_online_store(tmp_path):
    reference = _normal(2000)
    calls = []

    def online() -> pd.DataFrame:
        calls.append(1)
        return _normal(300, mean=2.0, seed=3)

    shifted = np.random.default_rng(4).normal(2.0, 1.0, MIN_SERVED_ROWS).tolist()
    _log_rows(tmp_path, NOW - timedelta(minutes=10), shifted[:-1])
    few = drift_section(reference, online, PSI, tmp_path, NOW)
    assert few["source"] == "online_store" and calls == [1]
    assert few["served"] == {"rows": MIN_SERVED_ROWS - 1, "min_rows": MIN_SERVED_ROWS,
                             "enough": False, "window_seconds": 3600.0}
    assert few["drifted"] == ["x"] and few["features"]["x"]["rows"] == 300  # the online values
    assert sum(few["histograms"]["x"]["current"]["counts"]) == 300

    _log_rows(tmp_path, NOW - timedelta(minutes=9), shifted[-1:])
    served = drift_section(reference, online, PSI, tmp_path, NOW)
    assert served["source"] == "prediction_log" and calls == [1]  # the store is not read
    assert served["served"]["enough"] and served["served"]["rows"] == MIN_SERVED_ROWS
    assert served["drifted"] == ["x"] and served["features"]["x"]["rows"] == MIN_SERVED_ROWS
    # a window that ends before the rows were logged holds none of them
    earlier = drift_section(reference, online, PSI, tmp_path, NOW - timedelta(minutes=30))
    assert earlier["source"] == "online_store" and earlier["served"]["rows"] == 0

    log_off = Monitoring(drift_method="psi", drift_threshold=0.2, drift_features=("x",))
    without = drift_section(reference, online, log_off, tmp_path, NOW)
    assert without["source"] == "online_store" and "served" not in without
    off = Monitoring(drift_method=None, drift_features=("x",), live_quality=True)
    assert drift_section(reference, online, off, tmp_path, NOW) == {
        "method": None, "features": {}, "drifted": []}
