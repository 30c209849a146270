"""Feast 0.67 marks a feature view MATERIALIZING in the registry while materialize runs, and
refuses every online read that loads the registry meanwhile. With a scheduled materialize every
few minutes, that refused the deploy's skew check (and would refuse a service reading through
Feast). The generated feature_store.yaml sets serve_features_while_materializing, which Feast's
file and SQL registries honour: reads keep the last-materialized values."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
import yaml

from tests.conftest import REPO

feast = pytest.importorskip("feast")

NOW = datetime(2026, 3, 1, tzinfo=UTC)


def _generated_registry(blueprint: str) -> dict:
    text = (REPO / "generated" / blueprint / "feature_repo" / "feature_store.yaml").read_text()
    return yaml.safe_load(text)["registry"]


def _read_while_materializing(root, registry: dict):
    from feast import Entity, FeatureStore, FeatureView, Field, FileSource
    from feast.feature_view import FeatureViewState
    from feast.repo_config import RepoConfig
    from feast.types import Int64

    pd.DataFrame({"id": [1], "n": [10], "ts": [NOW - timedelta(days=1)]}).to_parquet(
        root / "rows.parquet")
    entity = Entity(name="thing", join_keys=["id"])
    view = FeatureView(name="main", entities=[entity], ttl=timedelta(days=90),
                       schema=[Field(name="id", dtype=Int64), Field(name="n", dtype=Int64)],
                       source=FileSource(path=str(root / "rows.parquet"), timestamp_field="ts"))
    store = FeatureStore(config=RepoConfig(
        project="t", provider="local", entity_key_serialization_version=3,
        registry={**registry, "path": str(root / "registry.db")},
        online_store={"type": "sqlite", "path": str(root / "online.db")},
        offline_store={"type": "file"}))
    store.apply([entity, view])
    store.materialize(NOW - timedelta(days=365), NOW)
    applied = store.get_feature_view("main")
    applied.state = FeatureViewState.MATERIALIZING  # what a materialize in flight commits
    store.registry.apply_feature_view(applied, "t", commit=True)
    return store.get_online_features(features=["main:n"], entity_rows=[{"id": 1}]).to_dict()


@pytest.mark.parametrize("blueprint", ["churn", "churn-k8s"])
def test_the_generated_registry_keeps_serving_while_a_view_materializes(blueprint):
    assert _generated_registry(blueprint)["serve_features_while_materializing"] is True


def test_feast_serves_a_materializing_view_only_with_the_setting(tmp_path):
    (tmp_path / "with").mkdir()
    (tmp_path / "without").mkdir()
    registry = _generated_registry("churn")
    assert _read_while_materializing(tmp_path / "with", registry) == {"id": [1], "n": [10]}
    without = {k: v for k, v in registry.items() if k != "serve_features_while_materializing"}
    with pytest.raises(ValueError, match="MATERIALIZING"):
        _read_while_materializing(tmp_path / "without", without)
