"""The direct read of Feast's SQLite online store answers what Feast's get_online_features
answers, and the store access reads through it only after checking that (issue 20)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from mlstack.runtime.online_read import SqliteOnlineRead
from mlstack.runtime.store import ONLINE_READ_ENV, FeatureStoreAccess

feast = pytest.importorskip("feast")

NOW = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def feast_store(tmp_path_factory):
    """A real Feast project: two views of one entity, one with a null value and an old row,
    applied and materialized into a SQLite online store."""
    from feast import Entity, FeatureService, FeatureStore, FeatureView, Field, FileSource
    from feast.repo_config import RepoConfig
    from feast.types import Float64, Int64, String

    root = tmp_path_factory.mktemp("feast")
    frame = pd.DataFrame({
        "id": [1, 2, 3, 4, 2],
        "n": [10, 20, 30, 40, 21],
        "x": [0.5, None, 2.5, 4.0, 1.5],
        "s": ["a", "b", None, "d", "bb"],
        "ts": [NOW - timedelta(days=d) for d in (1, 3, 1, 60, 1)],
    })
    frame.to_parquet(root / "rows.parquet")
    other = pd.DataFrame({"id": [1, 3], "m": [7, 9], "ts": [NOW - timedelta(days=1)] * 2})
    other.to_parquet(root / "other.parquet")
    entity = Entity(name="thing", join_keys=["id"])
    main = FeatureView(name="main", entities=[entity], ttl=timedelta(days=90),
                       schema=[Field(name="id", dtype=Int64), Field(name="n", dtype=Int64),
                               Field(name="x", dtype=Float64), Field(name="s", dtype=String)],
                       source=FileSource(path=str(root / "rows.parquet"),
                                         timestamp_field="ts"))
    side = FeatureView(name="side", entities=[entity], ttl=timedelta(days=90),
                       schema=[Field(name="id", dtype=Int64), Field(name="m", dtype=Int64)],
                       source=FileSource(path=str(root / "other.parquet"),
                                         timestamp_field="ts"))
    service = FeatureService(name="model", features=[main, side[["m"]]])
    store = FeatureStore(config=RepoConfig(
        project="t", provider="local", entity_key_serialization_version=3,
        registry={"registry_type": "file", "path": str(root / "registry.db")},
        online_store={"type": "sqlite", "path": str(root / "online.db")},
        offline_store={"type": "file"}))
    store.apply([entity, main, side, service])
    store.materialize(NOW - timedelta(days=365), NOW)
    return store, store.get_feature_service("model")


def _feast(store, service, keys):
    return store.get_online_features(features=service, entity_rows={"id": [k[0] for k in keys]},
                                     full_feature_names=True).to_dict(
                                         include_event_timestamps=True)


def test_the_direct_read_answers_what_feast_answers(feast_store):
    store, service = feast_store
    read = SqliteOnlineRead.prepare(store, service, ("id",))
    assert read is not None
    assert sorted(read.sample_keys(10)) == [(1,), (2,), (3,), (4,)]
    keys = [(2,), (9,), (1,), (3,), (4,), (2,)]  # unordered, unknown, a null, a repeat
    got = read(keys)
    assert got == _feast(store, service, keys)
    assert got["main__n"] == [21, None, 10, 30, 40, 21]  # the newest row of id 2
    assert got["main__x"][0] == 1.5 and got["main__s"][3] is None
    assert got["side__m"] == [None, None, 7, 9, None, None] and got["side__m__ts"][0] == 0
    assert read([]) == {c: [] for c in got}


def test_a_request_without_a_views_join_key_is_left_to_feast(feast_store):
    store, service = feast_store
    assert SqliteOnlineRead.prepare(store, service, ("other",)) is None


def _access(tmp_path, store, service, **overrides):
    access = FeatureStoreAccess(
        repo_dir=tmp_path, state_dir=tmp_path, project_dir=tmp_path, feature_service="model",
        request_keys=("id",), sources={},
        fetch_columns=("main__n", "main__x", "side__m"),
        fetch_dtypes={"main__n": "int64", "main__x": "float64", "side__m": "int64"},
        ttl_seconds={"main": 90 * 86400, "side": 90 * 86400}, clock=NOW.timestamp,
        **overrides)
    access.get_store = lambda: store
    access.feature_service = lambda: service
    return access


def test_the_store_reads_directly_once_checked_and_answers_the_same(feast_store, tmp_path,
                                                                     monkeypatch):
    store, service = feast_store
    direct = _access(tmp_path, store, service)
    keys = [(3,), (9,), (1,), (2,), (1,)]
    got = direct.online_rows(keys)
    assert direct.online_read_path()["path"] == "direct", direct.online_read_path()
    monkeypatch.setenv(ONLINE_READ_ENV, "feast")
    through_feast = _access(tmp_path, store, service)
    want = through_feast.online_rows(keys)
    assert through_feast.online_read_path()["path"] == "feast"
    assert got.found.tolist() == want.found.tolist() == [True, False, True, False, True]
    assert {c: v.tolist() for c, v in got.columns.items()} == {
        c: v.tolist() for c, v in want.columns.items()}


def test_a_direct_read_that_differs_from_feast_is_not_used(feast_store, tmp_path,
                                                           monkeypatch):
    store, service = feast_store
    answer = SqliteOnlineRead.__call__

    def off_by_one(self, keys):
        out = answer(self, keys)
        out["main__n"] = [None if v is None else v + 1 for v in out["main__n"]]
        return out

    monkeypatch.setattr(SqliteOnlineRead, "__call__", off_by_one)
    access = _access(tmp_path, store, service)
    assert access.online_read_path()["path"] == "feast"
    assert access.online_rows([(1,)]).columns["main__n"].tolist() == [10]


@pytest.fixture(scope="module")
def ranking_store(tmp_path_factory):
    """A ranking model's features: a document view keyed by the document alone (first in the
    feature service) and a query-document view keyed by both."""
    from feast import Entity, FeatureService, FeatureStore, FeatureView, Field, FileSource
    from feast.repo_config import RepoConfig
    from feast.types import Float64, Int64

    root = tmp_path_factory.mktemp("feast_ranking")
    pd.DataFrame({"doc": [1, 2, 3], "quality": [0.1, 0.2, 0.3],
                  "ts": [NOW - timedelta(days=1)] * 3}).to_parquet(root / "docs.parquet")
    pd.DataFrame({"query": [7, 7, 8], "doc": [1, 2, 3], "match": [0.9, 0.4, 0.6],
                  "ts": [NOW - timedelta(days=1)] * 3}).to_parquet(root / "pairs.parquet")
    doc = Entity(name="document", join_keys=["doc"])
    query = Entity(name="query", join_keys=["query"])
    docs = FeatureView(name="docs", entities=[doc], ttl=timedelta(days=90),
                       schema=[Field(name="doc", dtype=Int64),
                               Field(name="quality", dtype=Float64)],
                       source=FileSource(path=str(root / "docs.parquet"), timestamp_field="ts"))
    pairs = FeatureView(name="pairs", entities=[query, doc], ttl=timedelta(days=90),
                        schema=[Field(name="query", dtype=Int64), Field(name="doc", dtype=Int64),
                                Field(name="match", dtype=Float64)],
                        source=FileSource(path=str(root / "pairs.parquet"),
                                          timestamp_field="ts"))
    service = FeatureService(name="ranker", features=[docs, pairs])
    store = FeatureStore(config=RepoConfig(
        project="r", provider="local", entity_key_serialization_version=3,
        registry={"registry_type": "file", "path": str(root / "registry.db")},
        online_store={"type": "sqlite", "path": str(root / "online.db")},
        offline_store={"type": "file"}))
    store.apply([doc, query, docs, pairs, service])
    store.materialize(NOW - timedelta(days=365), NOW)
    return store, store.get_feature_service("ranker")


def test_keys_to_check_come_from_a_view_keyed_by_every_request_key(ranking_store):
    """The check's keys are whole request keys: taken from the query-document view, not the
    first view (keyed by the document alone), so a ranking service reads directly too."""
    store, service = ranking_store
    read = SqliteOnlineRead.prepare(store, service, ("doc", "query"))
    assert read is not None
    keys = read.sample_keys(10)
    assert sorted(keys) == [(1, 7), (2, 7), (3, 8)]
    rows = {"doc": [k[0] for k in keys], "query": [k[1] for k in keys]}
    assert read(keys) == store.get_online_features(
        features=service, entity_rows=rows, full_feature_names=True).to_dict(
            include_event_timestamps=True)
