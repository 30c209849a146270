"""The kubernetes profile's Feast repo against real servers: Redis as the online store and
PostgreSQL holding the SQL registry, both Debian's packages started on loopback by the
session fixtures (tests/engine/conftest.py) and stopped after.

The churn-k8s blueprint is compiled into a temporary folder and configured the way its
deployment is, through the environment (MLSTACK_REDIS_CONNECTION,
MLSTACK_FEAST_REGISTRY_URL, MLSTACK_STATE_DIR, MLSTACK_PROJECT_DIR). What the store returns
is compared with the source parquet read here with pandas; what the servers hold is read
with their own clients.
"""

from __future__ import annotations

import importlib
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlstack.codegen.backends import CompileOptions
from mlstack.codegen.generate import compile_system
from mlstack.frontend.analysis import require_system
from tests.conftest import BLUEPRINTS, redate_project
from tests.engine.point_in_time import assert_point_in_time

pytestmark = pytest.mark.engine

BLUEPRINT = BLUEPRINTS / "churn-k8s"


def _forget(package: str) -> None:
    for name in [m for m in sys.modules if m.split(".")[0] in (package,
                                                              f"{package}_feature_repo")]:
        del sys.modules[name]


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A copy of churn-k8s, its data moved to the present (online reads null a value older
    than its view's TTL, as the point-in-time join does)."""
    folder = tmp_path_factory.mktemp("churn_k8s_project") / "churn-k8s"
    shutil.copytree(BLUEPRINT, folder, ignore=shutil.ignore_patterns("build", ".mlstack"))
    redate_project(folder)
    return folder


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, redis_server, postgres_server, project):
    """The compiled churn-k8s tree applied to the PostgreSQL registry and materialized into
    Redis; yields (store module, system, timings)."""
    system, _ = require_system(project / "mlstack.yaml")
    assert (system.target.kind, system.target.online_store) == ("kubernetes", "redis")
    out, state = tmp_path_factory.mktemp("churn_k8s_out"), tmp_path_factory.mktemp("state")
    tree = compile_system(system, CompileOptions(
        project_dir=Path(os.path.relpath(project, out)).as_posix()))
    for path, content in tree.items():
        (out / path).parent.mkdir(parents=True, exist_ok=True)
        (out / path).write_bytes(content)
    package = f"{system.python_name}_system"
    timings = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLSTACK_STATE_DIR", str(state))
        patch.setenv("MLSTACK_PROJECT_DIR", str(project))
        patch.setenv("MLSTACK_REDIS_CONNECTION", redis_server)
        patch.setenv("MLSTACK_FEAST_REGISTRY_URL", postgres_server["url"])
        patch.syspath_prepend(str(out))
        _forget(package)
        store = importlib.import_module(f"{package}.store")
        for step in ("apply", "materialize"):
            started = time.perf_counter()
            getattr(store, step)()
            timings[f"store.{step}()"] = time.perf_counter() - started
        yield store, system, timings
        store.get_store.cache_clear()
        _forget(package)
    assert not list(state.glob("*.db"))  # nothing fell back to a local SQLite file


@pytest.fixture(scope="module")
def customers(project) -> pd.DataFrame:
    return pd.read_parquet(project / "data" / "customers.parquet")


def chosen_ids(customers: pd.DataFrame, count: int = 8) -> list[int]:
    ids = np.sort(customers["customer_id"].unique())
    picks = np.random.default_rng(23).choice(ids[1:-1], size=count - 2, replace=False)
    return [int(i) for i in [ids[0], ids[-1], *picks]]


def test_registry_rows_live_in_postgres(cluster, postgres_server):
    import psycopg
    from feast.feature_view import DUMMY_ENTITY_NAME

    store, system, _ = cluster
    project = system.python_name
    params = {k: postgres_server[k] for k in ("host", "port", "user", "password", "dbname")}
    with psycopg.connect(**params) as conn:
        def names(table: str, column: str) -> list[str]:
            rows = conn.execute(f"SELECT {column} FROM {table} WHERE project_id = %s "
                                f"ORDER BY 1", (project,)).fetchall()
            return [r[0] for r in rows]

        assert names("projects", "project_name") == [project]
        # Feast registers its own placeholder entity next to the repo's
        assert [n for n in names("entities", "entity_name") if n != DUMMY_ENTITY_NAME] == (
            sorted(e.name for e in system.entities))
        assert names("feature_views", "feature_view_name") == sorted(
            v.name for v in system.feature_views)
        assert names("on_demand_feature_views", "feature_view_name") == [
            f"{project}_transforms"]
        assert names("feature_services", "feature_service_name") == [f"{project}_model"]
        assert names("data_sources", "data_source_name") == sorted(
            {v.source for v in system.feature_views})
    # and the store reads its objects back from there
    fs = store.get_store()
    assert type(fs.registry).__name__ == "SqlRegistry"
    assert [v.name for v in fs.list_feature_views()] == ["customer_profile"]


def test_online_features_come_from_redis_and_are_the_latest_rows(cluster, customers,
                                                                 redis_server):
    import redis

    store, system, _ = cluster
    features = importlib.import_module(f"{system.python_name}_system.features")
    ids = chosen_ids(customers)
    unknown = int(customers["customer_id"].max()) + 1000
    requested = [ids[3], unknown, *ids, ids[3]]  # unordered, a repeat and an unknown key
    got = store.online_features([{"customer_id": i} for i in requested])

    assert list(got["customer_id"]) == requested
    latest = customers.sort_values("event_timestamp").groupby("customer_id").last()
    assert features.FETCH_COLUMNS
    for position, customer_id in enumerate(requested):
        for column in features.FETCH_COLUMNS:
            value = got[column].iloc[position]
            if customer_id == unknown:
                assert pd.isna(value), (customer_id, column)
            else:
                assert value == latest.loc[customer_id, column.split("__", 1)[1]], (
                    customer_id, column)
    # the online store really is this Redis: one hash per materialized customer
    host, port = redis_server.rsplit(":", 1)
    client = redis.Redis(host=host, port=int(port))
    assert client.dbsize() == customers["customer_id"].nunique()
    assert store.get_store().config.online_store.type == "redis"


def test_historical_features_are_point_in_time(cluster, customers):
    store, system, _ = cluster
    features = importlib.import_module(f"{system.python_name}_system.features")
    ttl = pd.Timedelta(seconds=system.view("customer_profile").ttl_seconds)
    rows = []
    for customer_id in chosen_ids(customers):
        history = customers[customers["customer_id"] == customer_id]["event_timestamp"]
        first, last = history.min(), history.max()
        rows += [(customer_id, first), (customer_id, first + pd.Timedelta(days=10, hours=3)),
                 (customer_id, first - pd.Timedelta(days=1)),  # before any row: nulls
                 (customer_id, last + ttl + pd.Timedelta(days=1)),  # past the TTL: nulls
                 (customer_id, last + ttl - pd.Timedelta(days=1))]
    order = np.random.default_rng(3).permutation(len(rows))
    entity_df = pd.DataFrame([rows[i] for i in order],
                             columns=["customer_id", "event_timestamp"])

    got = store.historical_features(entity_df)

    assert list(got.index) == list(entity_df.index)
    empty = assert_point_in_time(entity_df, got, customers, features.FETCH_COLUMNS, ttl)
    assert 0 < empty < len(entity_df)


def test_timings(cluster):
    """apply + materialize against the servers stays quick (seconds, not minutes)."""
    _, _, timings = cluster
    assert sum(timings.values()) < 90, timings
