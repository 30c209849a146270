"""Feast store access without Feast: configuration, CSV staging and the joins around Feast's
answers (a stand-in store). The real Feast path runs in tests/engine/test_feast_repo.py."""

from __future__ import annotations

import os
import time
import types

import numpy as np
import pandas as pd
import pytest

from mlstack.runtime.errors import DataCheckError
from mlstack.runtime.store import FeatureStoreAccess, SourceFile, expand_variables


def _access(tmp_path, **overrides) -> FeatureStoreAccess:
    options = dict(repo_dir=tmp_path / "feature_repo", state_dir=tmp_path / "state",
                   project_dir=tmp_path / "project", feature_service="m_model",
                   request_keys=("id",), fetch_columns=("v__a", "v__b"),
                   sources={"p": SourceFile("parquet", "data/p.parquet"),
                            "c": SourceFile("csv", "data/c.csv",
                                            {"id": "int64", "ts": "timestamp", "n": "int64",
                                             "flag": "bool"})},
                   timestamp_column="label_ts", repo_module="m_system_feature_repo")
    options.update(overrides)
    return FeatureStoreAccess(**options)


def test_expand_variables(monkeypatch):
    monkeypatch.setenv("REDIS_URL", "redis://x:1")
    monkeypatch.delenv("MISSING_VAR", raising=False)
    raw = {"registry": {"path": "${MLSTACK_STATE_DIR}/reg.db"}, "online": "${REDIS_URL}",
           "n": 3, "list": ["${REDIS_URL}"]}
    got = expand_variables(raw, {"MLSTACK_STATE_DIR": "/s ${X}"})
    assert got["registry"] == {"path": "/s ${X}/reg.db"}  # values are not expanded again
    assert got["online"] == "redis://x:1" and got["n"] == 3
    with pytest.raises(RuntimeError, match="needs the environment variable MISSING_VAR"):
        expand_variables({"a": "${MISSING_VAR}"}, {})


def test_config_fills_the_state_dir_from_the_object(tmp_path, monkeypatch):
    access = _access(tmp_path)
    access.repo_dir.mkdir()
    (access.repo_dir / "feature_store.yaml").write_text(
        "project: m\nregistry:\n  path: ${MLSTACK_STATE_DIR}/feast_registry.db\n")
    monkeypatch.setenv("MLSTACK_STATE_DIR", "/not/this")
    assert access.config_dict() == {
        "project": "m", "registry": {"path": f"{(tmp_path / 'state').as_posix()}/feast_registry.db"}}


def test_source_paths_and_csv_staging(tmp_path):
    access = _access(tmp_path)
    assert access.source_path("p") == tmp_path / "project/data/p.parquet"
    staged = access.source_path("c")
    assert staged == tmp_path / "state/sources/c.parquet"
    (tmp_path / "project/data").mkdir(parents=True)
    csv = tmp_path / "project/data/c.csv"
    # a null in an int64 column: refused as ingest refuses it (one dtype contract), not
    # staged for Feast as a nullable Int64 ingest would never have let through
    csv.write_text("id,ts,n,flag,extra\n1,2026-01-01,5,true,x\n2,2026-01-02,,false,y\n")
    with pytest.raises(DataCheckError, match="source 'c'.*column 'n'"):
        access.stage_sources()
    assert not staged.exists()
    csv.write_text("id,ts,n,flag,extra\n1,2026-01-01,5,true,x\n2,2026-01-02,7,false,y\n")
    access.stage_sources()
    frame = pd.read_parquet(staged)
    assert list(frame.columns) == ["id", "ts", "n", "flag"]  # declared columns only
    assert str(frame["n"].dtype) == "int64" and frame["n"].tolist() == [5, 7]
    assert str(frame["flag"].dtype) == "bool"
    assert frame["ts"].tolist() == [pd.Timestamp("2026-01-01", tz="UTC"),
                                    pd.Timestamp("2026-01-02", tz="UTC")]
    # not staged again while the CSV is older than the staged file
    before = staged.stat().st_mtime_ns
    access.stage_sources()
    assert staged.stat().st_mtime_ns == before
    later = time.time() + 5
    os.utime(csv, (later, later))
    access.stage_sources()
    assert staged.stat().st_mtime_ns != before


class _Store:
    """Answers like Feast's get_online_features / get_historical_features. `values`: id ->
    (a, b) or (a, b, event time in seconds)."""

    def __init__(self, values: dict):
        self.values, self.calls = values, []

    def get_online_features(self, features, entity_rows, full_feature_names):
        assert full_feature_names and features == "service"
        ids = entity_rows["id"]  # columnar, as the store sends them
        self.calls.append([{"id": i} for i in ids])
        known = [self.values.get(i, (None, None, 0)) for i in ids]
        out = {"id": ids[::-1]}  # Feast's order is not relied on
        for i, column in enumerate(("v__a", "v__b")):
            out[column] = [v[i] for v in known][::-1]
            out[column + "__ts"] = [(v[2] if len(v) > 2 else 1_000) if v[0] is not None
                                    else 0 for v in known][::-1]

        def to_dict(include_event_timestamps=False):
            return {k: v for k, v in out.items()
                    if include_event_timestamps or not k.endswith("__ts")}

        return types.SimpleNamespace(to_dict=to_dict)

    def get_historical_features(self, entity_df, features, full_feature_names):
        self.calls.append(entity_df.copy())
        out = entity_df.assign(
            v__a=[self.values.get(i, (None, None))[0] for i in entity_df["id"]],
            v__b=[self.values.get(i, (None, None))[1] for i in entity_df["id"]],
            event_timestamp=entity_df["event_timestamp"].astype("datetime64[us, UTC]"))
        return types.SimpleNamespace(to_df=lambda: out.iloc[::-1])


def _with_store(tmp_path, values, **overrides):
    access = _access(tmp_path, sources={}, **overrides)
    store = _Store(values)
    access.get_store = lambda: store
    access.feature_service = lambda: "service"
    return access, store


def test_online_features_in_request_order_with_nulls(tmp_path):
    access, store = _with_store(tmp_path, {1: (10, 0.5), 2: (20, 1.5)})
    got = access.online_features([{"id": 2}, {"id": 7}, {"id": 1}, {"id": 2}])
    assert store.calls == [[{"id": 2}, {"id": 7}, {"id": 1}]]  # each entity once
    assert got["id"].tolist() == [2, 7, 1, 2]
    assert got.isna().to_dict("list") == {"id": [False] * 4, "v__a": [False, True, False, False],
                                          "v__b": [False, True, False, False]}
    assert got.fillna(-1).to_dict("list") == {"id": [2, 7, 1, 2], "v__a": [20, -1, 10, 20],
                                              "v__b": [1.5, -1, 0.5, 1.5]}
    empty = access.online_features([])
    assert list(empty.columns) == ["id", "v__a", "v__b"] and empty.empty
    assert len(store.calls) == 1


def test_online_rows_are_arrays_in_the_spec_dtypes(tmp_path):
    access, store = _with_store(tmp_path, {1: (10, 0.5), 2: (20, 1.5), 3: (30, None)},
                                fetch_dtypes={"v__a": "int64", "v__b": "float64"})
    got = access.online_rows([(2,), (7,), (1,), (3,), (2,)])
    assert got.found.tolist() == [True, False, True, False, True]  # 3: a value is missing
    assert got.columns["v__a"].dtype == np.int64 and got.columns["v__a"].tolist() == [20, 10, 20]
    assert got.columns["v__b"].tolist() == [1.5, 0.5, 1.5]
    empty = access.online_rows([])
    assert empty.found.shape == (0,) and empty.columns["v__a"].dtype == np.int64


def test_online_values_older_than_the_view_ttl_are_null(tmp_path):
    now = 1_000_000.0
    access, _ = _with_store(
        tmp_path, {1: (10, 0.5, now - 3600), 2: (20, 1.5, now - 7201), 3: (30, 2.5, now - 7200)},
        fetch_dtypes={"v__a": "int64", "v__b": "float64"}, ttl_seconds={"v": 7200},
        clock=lambda: now)
    got = access.online_rows([(1,), (2,), (3,)])
    assert got.found.tolist() == [True, False, True]  # at the TTL: kept, as offline (>=)
    frame = access.online_features([{"id": 2}, {"id": 1}])
    assert frame["v__a"].isna().tolist() == [True, False]
    no_ttl, _ = _with_store(tmp_path, {2: (20, 1.5, 1.0)}, clock=lambda: now)
    assert no_ttl.online_rows([(2,)]).found.tolist() == [True]


def test_historical_features_keep_rows_order_index_and_columns(tmp_path):
    access, store = _with_store(tmp_path, {1: (10, 0.5), 2: (20, 1.5)})
    entity = pd.DataFrame({"id": [2, 1, 2, 3], "label_ts": ["2026-01-02", "2026-01-01",
                                                             "2026-01-02", "2026-01-01"],
                           "y": [1, 0, 1, 0]}, index=[10, 11, 12, 13])
    got = access.historical_features(entity)
    assert len(store.calls[0]) == 3  # duplicate (key, time) rows asked once
    assert list(got.columns) == ["id", "label_ts", "y", "v__a", "v__b"]
    assert list(got.index) == [10, 11, 12, 13]
    assert got["v__a"].tolist()[:3] == [20, 10, 20] and pd.isna(got["v__a"].iloc[3])
    with pytest.raises(KeyError):
        access.historical_features(entity.drop(columns=["label_ts"]))
    got = access.historical_features(entity.rename(columns={"label_ts": "t"}), "t")
    assert got["v__b"].tolist()[:3] == [1.5, 0.5, 1.5]


def test_feast_is_not_imported_to_build_the_object(tmp_path):
    import subprocess
    import sys

    probe = ("import sys; from mlstack.runtime.store import FeatureStoreAccess, SourceFile; "
             "a = FeatureStoreAccess(repo_dir='r', state_dir='s', project_dir='p', "
             "feature_service='f', request_keys=('id',), fetch_columns=(), "
             "sources={'x': SourceFile('parquet', 'x.parquet')}); a.source_path('x'); "
             "print('feast' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            timeout=60, check=True)
    assert result.stdout.strip() == "False"


def test_a_view_is_rematerialized_on_ray_only_when_its_source_has_newer_rows(tmp_path):
    """Feast's Ray compute engine fails on an interval with no rows: FeatureStoreAccess skips
    a view whose parquet source holds nothing newer than its last run (file statistics)."""
    from types import SimpleNamespace

    import pyarrow as pa
    import pyarrow.parquet as pq

    from mlstack.runtime.store import _rows_after

    stamps = pd.to_datetime(["2026-11-01", "2026-11-20"], utc=True)
    path = tmp_path / "customers.parquet"
    pq.write_table(pa.table({"event_timestamp": stamps, "x": [1, 2]}), path)

    def view(since):
        return SimpleNamespace(most_recent_end_time=since, batch_source=SimpleNamespace(
            path=str(path), timestamp_field="event_timestamp"))

    assert _rows_after(view(None))  # never materialized
    assert _rows_after(view(pd.Timestamp("2026-11-10", tz="UTC").to_pydatetime()))
    assert not _rows_after(view(pd.Timestamp("2026-11-25", tz="UTC").to_pydatetime()))
    # a naive end time is UTC (Feast's registry keeps them so)
    assert not _rows_after(view(pd.Timestamp("2026-11-25").to_pydatetime()))
    assert _rows_after(view(pd.Timestamp("2026-11-19").to_pydatetime()))
    missing = SimpleNamespace(most_recent_end_time=pd.Timestamp("2026-11-25", tz="UTC"),
                              batch_source=SimpleNamespace(path=str(path),
                                                           timestamp_field="ts"))
    assert _rows_after(missing)  # cannot tell: materialize
