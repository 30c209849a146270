"""Drift statistics (known values), drift report, freshness, staleness and alerts."""

from __future__ import annotations

import math
import sys
import types
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from mlstack.runtime.monitoring import (
    Monitoring,
    alerts,
    drift_report,
    freshness,
    ks,
    psi,
    staleness,
)
from mlstack.runtime.sources import SourceSpec

NOW = datetime(2026, 3, 1, tzinfo=UTC)


def test_psi_known_values():
    reference = np.arange(100, dtype=float)  # deciles of 10 rows each
    assert psi(reference, reference) == 0.0
    # everything in the lowest decile: one bin at 1.0, nine empty (clipped to 1e-6)
    expected = (1 - 0.1) * math.log(1 / 0.1) + 9 * (1e-6 - 0.1) * math.log(1e-6 / 0.1)
    assert psi(reference, np.zeros(50)) == pytest.approx(expected, rel=1e-12)
    # half the rows in the lowest decile, half in the highest
    current = np.array([0.0] * 5 + [99.0] * 5)
    half = (0.5 - 0.1) * math.log(0.5 / 0.1)
    empty = (1e-6 - 0.1) * math.log(1e-6 / 0.1)
    assert psi(reference, current) == pytest.approx(2 * half + 8 * empty, rel=1e-12)


def test_psi_of_a_constant_reference():
    assert psi(np.ones(10), np.ones(3)) == 0.0
    assert psi(np.ones(10), np.array([1.0, 2.0])) == math.inf


def test_ks_matches_scipy_and_known_values():
    from scipy.stats import ks_2samp

    rng = np.random.default_rng(5)
    reference = rng.normal(0, 1, 500)
    for current in (rng.normal(0, 1, 300), rng.normal(1, 1, 300)):
        assert ks(reference, current) == pytest.approx(ks_2samp(reference, current).statistic,
                                                       abs=1e-12)
    assert ks(np.array([1.0, 2.0]), np.array([3.0, 4.0])) == 1.0
    assert ks(np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 2.0])) == 0.5


def test_drift_report():
    reference = pd.DataFrame({"a": np.arange(100.0), "b": np.arange(100.0), "c": [None] * 100})
    current = pd.DataFrame({"a": np.arange(100.0), "b": np.zeros(100), "c": [1.0] * 100})
    monitoring = Monitoring(drift_method="psi", drift_threshold=0.2, drift_features=("a", "b", "c"))
    report = drift_report(reference, current, monitoring)
    assert report["method"] == "psi" and report["threshold"] == 0.2
    assert report["features"]["a"] == {"statistic": 0.0, "drifted": False, "rows": 100}
    assert report["features"]["b"]["drifted"] is True
    assert report["features"]["c"] == {"statistic": None, "drifted": None, "rows": 100}
    assert report["drifted"] == ["b"]
    by_ks = drift_report(reference, current, Monitoring(drift_method="ks", drift_features=("b",)))
    assert by_ks["features"]["b"]["statistic"] == ks(np.arange(100.0), np.zeros(100))
    assert drift_report(reference, current, Monitoring(drift_method=None)) == {
        "method": None, "features": {}, "drifted": []}


def test_freshness():
    sources = [SourceSpec(name=n, path=f"{n}.parquet", format="parquet", timestamp_field="t")
               for n in ("a", "b", "c")]
    frames = {"a": pd.DataFrame({"t": pd.to_datetime(["2026-02-28T12:00", "2026-02-28T23:00"],
                                                     utc=True)}),
              "b": pd.DataFrame({"t": pd.to_datetime(["2026-02-01"], utc=True)}),
              "c": pd.DataFrame({"t": pd.to_datetime([], utc=True)})}
    monitoring = Monitoring(feature_sources=("a", "b", "c"), feature_freshness_seconds=86400)
    report = freshness(frames, sources, monitoring, NOW)
    assert report["slo_seconds"] == 86400 and report["stale"] == ["b"]
    assert report["sources"]["a"] == {"newest": "2026-02-28T23:00:00+00:00",
                                      "age_seconds": 3600.0, "fresh": True}
    assert report["sources"]["b"]["fresh"] is False
    assert report["sources"]["c"] == {"newest": None, "age_seconds": None, "fresh": None}
    no_slo = freshness(frames, sources, Monitoring(feature_sources=("a",)), NOW)
    assert no_slo["sources"]["a"]["fresh"] is None and no_slo["stale"] == []


@pytest.fixture
def fake_bentoml(monkeypatch):
    """A stand-in for the BentoML model store: {tag: creation time}."""
    models = {}

    class NotFound(Exception):
        pass

    def get(tag):
        if tag not in models:
            raise NotFound(tag)
        return types.SimpleNamespace(tag=tag, info=types.SimpleNamespace(creation_time=models[tag]))

    module = types.SimpleNamespace(models=types.SimpleNamespace(get=get),
                                   exceptions=types.SimpleNamespace(NotFound=NotFound))
    monkeypatch.setitem(sys.modules, "bentoml", module)
    return models


def test_staleness(fake_bentoml):
    monitoring = Monitoring(model_staleness_seconds=3600)
    assert staleness(None, "churn", monitoring, NOW) == {
        "model_tag": None, "age_seconds": None, "limit_seconds": 3600, "stale": True}
    fake_bentoml["churn:latest"] = NOW - timedelta(hours=2)
    fake_bentoml["churn:v1"] = NOW - timedelta(minutes=30)
    assert staleness(None, "churn", monitoring, NOW)["stale"] is True
    assert staleness("churn:v1", "churn", monitoring, NOW) == {
        "model_tag": "churn:v1", "age_seconds": 1800.0, "limit_seconds": 3600, "stale": False}
    assert staleness("churn:v1", "churn", Monitoring(), NOW)["stale"] is None


def test_alerts():
    report = {"drift": {"method": "psi", "threshold": 0.2, "drifted": ["a", "b"]},
              "freshness": {"stale": ["customers"]}, "staleness": {"stale": True}}
    assert alerts(report) == ["feature a drifted (psi above 0.2)",
                              "feature b drifted (psi above 0.2)",
                              "source customers is older than the freshness SLO",
                              "the model is stale (or missing)"]
    assert alerts({"drift": {"method": None, "features": {}, "drifted": []},
                   "freshness": {"stale": []}, "staleness": {"stale": False}}) == []
