"""Drift statistics (known values), drift report, freshness (source files and online store),
the serving model, staleness and alerts."""

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
    newest_event_times,
    online_freshness,
    online_newest,
    psi,
    require_registry,
    serving_model,
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
        "model_tag": None, "age_seconds": None, "limit_seconds": 3600, "stale": True,
        "missing": True}
    # a serving model the store does not hold keeps its name in the report
    assert staleness("churn:gone", "churn", monitoring, NOW)["model_tag"] == "churn:gone"
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
                              "the model is older than its staleness limit"]
    named = {"drift": {"drifted": []},
             "freshness": {"stale": ["customers"], "sources": {
                 "customers": {"newest": None, "age_seconds": None, "fresh": False}}},
             "staleness": {"model_tag": "churn:v1", "stale": True, "missing": True}}
    assert alerts(named) == ["source customers has no row in the online store",
                             "the model churn:v1 is not in the model store"]
    assert alerts({"drift": {"method": None, "features": {}, "drifted": []},
                   "freshness": {"stale": []}, "staleness": {"stale": False}}) == []


ONLINE_SOURCES = [SourceSpec(name=n, path=f"{n}.parquet", format="parquet", timestamp_field="t")
                  for n in ("customers", "orders")]


def test_newest_event_times_reads_the_views_timestamp_columns():
    fetched = {"customer_id": [1, 2, 3],
               "profile__age": [30, None, 41], "profile__age__ts": [100, 0, 250],
               "profile__tenure__ts": [90, None, 300],
               "other__x__ts": [999, 999, 999]}
    assert newest_event_times(fetched, ["profile", "missing"]) == {
        "profile": datetime.fromtimestamp(300, UTC), "missing": None}


class FakeFeast:
    """Records the online reads; answers each key with its `stamps` entry (None: not online)."""

    def __init__(self, stamps):
        self.stamps, self.calls = stamps, []

    def get_online_features(self, features, entity_rows, full_feature_names):
        self.calls.append((features, entity_rows))
        assert full_feature_names
        keys = entity_rows["customer_id"]
        ts = [self.stamps.get(k) or 0 for k in keys]
        answer = {"customer_id": keys, **{f"{r.replace(':', '__')}__ts": ts for r in features}}
        return types.SimpleNamespace(to_dict=lambda include_event_timestamps: answer)


def test_online_newest_reads_the_entities_of_the_newest_source_rows():
    times = pd.to_datetime(["2026-02-28T10:00", "2026-02-28T23:00", "2026-02-28T23:30",
                            "2026-02-20T00:00"], utc=True)
    frames = {"customers": pd.DataFrame({"customer_id": [1, 2, 2, 3], "t": times})}
    # customer 2's newest row (23:30) is not online yet: its online row is the 23:00 one
    feast = FakeFeast({1: NOW.timestamp() - 14 * 3600, 2: NOW.timestamp() - 3600})
    newest = online_newest(feast, frames, ONLINE_SOURCES, {"profile": "customers",
                                                           "orders_view": "orders"},
                           {"profile": ("customer_id",), "orders_view": ("order_id",)},
                           ("profile:age", "profile:tenure", "orders_view:n"), limit=2)
    assert newest == {"profile": NOW - timedelta(hours=1)}  # orders is not in the frames
    ((refs, rows),) = feast.calls
    assert refs == ["profile:age", "profile:tenure"]
    assert rows == {"customer_id": [2, 1]}  # the newest rows' entities, each once
    assert all(type(k) is int for k in rows["customer_id"])


def test_online_freshness_judges_what_serving_reads():
    monitoring = Monitoring(feature_sources=("customers", "orders", "events"),
                            feature_freshness_seconds=3600)
    newest = {"profile": NOW - timedelta(minutes=10), "profile_daily": NOW - timedelta(days=2),
              "orders_view": NOW - timedelta(hours=3), "events_view": None}
    views = {"profile": "customers", "profile_daily": "customers", "orders_view": "orders",
             "events_view": "events"}
    report = online_freshness(newest, views, monitoring, NOW)
    assert report["read_from"] == "online store" and report["slo_seconds"] == 3600
    customers = report["sources"]["customers"]
    assert customers["age_seconds"] == 600.0 and customers["fresh"] is True
    assert customers["newest"] == (NOW - timedelta(minutes=10)).isoformat()
    assert set(customers["views"]) == {"profile", "profile_daily"}
    assert report["sources"]["orders"]["fresh"] is False
    # nothing online: stale under an SLO (serving has nothing of it)
    assert report["sources"]["events"] == {"newest": None, "age_seconds": None,
                                           "fresh": False, "views": {"events_view": None}}
    assert report["stale"] == ["events", "orders"]
    no_slo = online_freshness(newest, views, Monitoring(feature_sources=("orders",)), NOW)
    assert no_slo["sources"]["orders"]["fresh"] is None and no_slo["stale"] == []


def test_serving_model_prefers_what_the_deploy_passes():
    state = {"current": "churn:promoted"}
    assert serving_model(state, {"MLSTACK_MODEL_TAG": "churn:v3tag",
                                 "MLSTACK_SERVING_VERSION": "v3"}) == {
        "version": "v3", "model_tag": "churn:v3tag", "from": "deploy"}
    assert serving_model(state, {"MLSTACK_MODEL_TAG": ""}) == {
        "version": None, "model_tag": "churn:promoted", "from": "models file"}
    assert serving_model({"current": None}, {}) == {"version": None, "model_tag": None,
                                                    "from": None}


def test_the_serving_variables_are_the_contract_names():
    from mlstack.codegen import contract
    from mlstack.runtime import monitoring

    assert monitoring.MODEL_TAG_ENV == contract.ENV_MODEL_TAG
    assert monitoring.SERVING_VERSION_ENV == contract.ENV_SERVING_VERSION


def test_require_registry_names_the_command(tmp_path):
    config = {"registry": {"registry_type": "file", "path": str(tmp_path / "reg.db")}}
    with pytest.raises(FileNotFoundError) as error:
        require_registry(config, tmp_path)
    assert "mlstack run monitoring" in str(error.value) and "MLSTACK_STATE_DIR" in str(
        error.value)
    (tmp_path / "reg.db").write_bytes(b"")
    require_registry(config, tmp_path)
    require_registry({"registry": {"registry_type": "sql", "path": "postgresql://x/y"}},
                     tmp_path)
    with pytest.raises(FileNotFoundError):
        require_registry({"registry": str(tmp_path / "plain.db")}, tmp_path)
