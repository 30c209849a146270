"""Materialize loads a rewritten history again (issue 19: after a failed deploy, redated data
deployed again still served the old rows, because incremental materialization loads only rows
newer than its last run). Appended newer rows stay incremental; a source whose rows up to the
last run's end changed (redated, rows added or removed in the past) is loaded in full. A real
Feast project, its online store read back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from mlstack.runtime.store import HISTORY_FILE, FeatureStoreAccess

feast = pytest.importorskip("feast")

NOW = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.fixture
def project(tmp_path):
    from feast import Entity, FeatureStore, FeatureView, Field, FileSource
    from feast.repo_config import RepoConfig
    from feast.types import Int64

    rows = tmp_path / "rows.parquet"
    pd.DataFrame({"id": [1, 2], "n": [10, 20],
                  "ts": [NOW - timedelta(days=5), NOW - timedelta(days=4)]}).to_parquet(rows)
    entity = Entity(name="thing", join_keys=["id"])
    view = FeatureView(name="main", entities=[entity], ttl=timedelta(days=3650),
                       schema=[Field(name="id", dtype=Int64), Field(name="n", dtype=Int64)],
                       source=FileSource(path=str(rows), timestamp_field="ts"))
    store = FeatureStore(config=RepoConfig(
        project="t", provider="local", entity_key_serialization_version=3,
        registry={"registry_type": "file", "path": str(tmp_path / "registry.db")},
        online_store={"type": "sqlite", "path": str(tmp_path / "online.db")},
        offline_store={"type": "file"}))
    store.apply([entity, view])
    access = FeatureStoreAccess(repo_dir=tmp_path, state_dir=tmp_path / "state",
                                project_dir=tmp_path, feature_service="s", request_keys=("id",),
                                fetch_columns=("main__n",), sources={})
    access.get_store = lambda: store
    return access, store, rows


def _online(store) -> dict:
    got = store.get_online_features(features=["main:n"], entity_rows=[{"id": 1}, {"id": 2}])
    return dict(zip(got.to_dict()["id"], got.to_dict()["n"], strict=True))


def test_appended_rows_load_incrementally_and_a_rewritten_history_in_full(project):
    access, store, rows = project
    access.materialize(end=NOW)
    assert _online(store) == {1: 10, 2: 20}
    assert (access.state_dir / HISTORY_FILE).is_file()

    # a newer row appended: the incremental run loads it
    frame = pd.read_parquet(rows)
    later = pd.DataFrame({"id": [1], "n": [11], "ts": [NOW + timedelta(hours=1)]})
    pd.concat([frame, later], ignore_index=True).to_parquet(rows)
    access.materialize(end=NOW + timedelta(hours=2))
    assert _online(store) == {1: 11, 2: 20}

    # history rewritten in the past (id 2's row corrected and redated a day, still before
    # the last end): an incremental run would never load it; the run loads the view in full
    frame = pd.read_parquet(rows)
    frame.loc[frame["id"] == 2, ["n", "ts"]] = [22, NOW - timedelta(days=3)]
    frame.to_parquet(rows)
    access.materialize(end=NOW + timedelta(hours=3))
    assert _online(store) == {1: 11, 2: 22}
