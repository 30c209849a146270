"""The churn blueprint's generated Feast repo, run with the real Feast (no mocks).

`feast apply` (the CLI, as a user runs it) and `churn_system.store.apply()` register the
repo; materialize fills the SQLite online store; online and point-in-time retrieval must
return what the source parquet file says, read here independently with pandas.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlstack.codegen.backends import CompileOptions
from mlstack.codegen.generate import compile_system
from mlstack.frontend.analysis import require_system
from tests.conftest import BLUEPRINTS, REPO, redate_project
from tests.engine.point_in_time import assert_point_in_time

pytestmark = pytest.mark.engine

CHURN = BLUEPRINTS / "churn"
PACKAGE = "churn_system"


def _compile(out: Path, project: Path):
    system, _ = require_system(project / "mlstack.yaml")
    options = CompileOptions(project_dir=Path(os.path.relpath(project, out)).as_posix())
    return system, compile_system(system, options)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A copy of churn, its data moved to the present (online reads null a value older than
    its view's TTL, as the point-in-time join does)."""
    folder = tmp_path_factory.mktemp("churn_project") / "churn"
    shutil.copytree(CHURN, folder, ignore=shutil.ignore_patterns("build", ".mlstack"))
    redate_project(folder)
    return folder


def _forget_package() -> None:
    """Other tests may have imported another tree's churn_system: start from none."""
    for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")
                 or m == f"{PACKAGE}_feature_repo"]:
        del sys.modules[name]


@pytest.fixture(scope="module")
def churn(tmp_path_factory, project):
    """The compiled churn tree, applied (CLI and Python), materialized; yields the store
    module, the system IR and timings."""
    out = tmp_path_factory.mktemp("churn_out")
    state = tmp_path_factory.mktemp("churn_state")
    system, tree = _compile(out, project)
    for path, content in tree.items():
        (out / path).parent.mkdir(parents=True, exist_ok=True)
        (out / path).write_bytes(content)
    timings = {}
    # No PYTHONPATH: repo.py itself makes the generated root importable, as for a user who
    # runs `feast apply` in the folder.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(MLSTACK_STATE_DIR=str(state), FEAST_USAGE="False")
    started = time.perf_counter()
    cli = subprocess.run([str(Path(sys.executable).parent / "feast"), "apply"],
                         cwd=out / "feature_repo", env=env, capture_output=True, text=True,
                         timeout=300)
    timings["feast apply (CLI)"] = time.perf_counter() - started
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert "Created feature view customer_profile" in cli.stdout
    assert (state / "feast_registry.db").is_file()
    assert not any(p.name.endswith(".db") for p in out.rglob("*"))  # state stays outside

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLSTACK_STATE_DIR", str(state))
        patch.syspath_prepend(str(out))
        _forget_package()
        store = importlib.import_module(f"{PACKAGE}.store")
        started = time.perf_counter()
        store.apply()
        timings["store.apply()"] = time.perf_counter() - started
        started = time.perf_counter()
        store.materialize()
        timings["store.materialize()"] = time.perf_counter() - started
        yield store, system, timings
        store.get_store.cache_clear()
        _forget_package()


@pytest.fixture(scope="module")
def customers(project) -> pd.DataFrame:
    return pd.read_parquet(project / "data" / "customers.parquet")


def _chosen_ids(customers: pd.DataFrame, count: int = 6) -> list[int]:
    ids = np.sort(customers["customer_id"].unique())
    picks = np.random.default_rng(11).choice(ids, size=count - 2, replace=False)
    return [int(i) for i in [ids[0], ids[-1], *picks]]


def test_registry_holds_the_repo_objects(churn):
    store, system, _ = churn
    fs = store.get_store()
    assert fs.config.project == system.python_name
    assert sorted(v.name for v in fs.list_feature_views()) == ["customer_profile"]
    assert [e.name for e in fs.list_entities()] == ["customer"]
    service = fs.get_feature_service(f"{system.python_name}_model")
    refs = sorted(f"{p.name}:{f.name}" for p in service.feature_view_projections
                  for f in p.features)
    assert refs == sorted(f"{f.view}:{f.field}" for f in system.model.fetch)
    assert [v.name for v in fs.list_on_demand_feature_views()] == ["churn_transforms"]
    assert fs.get_feature_view("customer_profile").ttl == timedelta(
        seconds=system.view("customer_profile").ttl_seconds)


def test_online_features_are_the_latest_source_rows(churn, customers):
    store, system, _ = churn
    from churn_system.features import FETCH_COLUMNS

    ids = _chosen_ids(customers)
    unknown = int(customers["customer_id"].max()) + 1000
    requested = [ids[2], unknown, *ids, ids[2]]  # unordered, a repeat and an unknown key
    got = store.online_features([{"customer_id": i} for i in requested])

    assert list(got["customer_id"]) == requested
    latest = (customers.sort_values("event_timestamp").groupby("customer_id").last())
    for position, customer_id in enumerate(requested):
        for column in FETCH_COLUMNS:
            field = column.split("__", 1)[1]
            value = got[column].iloc[position]
            if customer_id == unknown:
                assert pd.isna(value), (customer_id, column)
            else:
                assert value == latest.loc[customer_id, field], (customer_id, column)


def test_on_demand_view_runs_the_shared_transforms(churn, customers):
    store, _, _ = churn
    from churn_system.transforms import transform_frame

    ids = _chosen_ids(customers)
    fs = store.get_store()
    odfv = fs.get_online_features(
        features=["churn_transforms:charges_per_tenure"],
        entity_rows=[{"customer_id": i} for i in ids], full_feature_names=True).to_df()
    expected = transform_frame(store.online_features([{"customer_id": i} for i in ids]))
    got = odfv.set_index("customer_id").loc[ids, "churn_transforms__charges_per_tenure"]
    np.testing.assert_allclose(got.to_numpy(), expected["charges_per_tenure"].to_numpy())


def test_historical_features_are_point_in_time(churn, customers):
    store, system, _ = churn
    from churn_system.features import FETCH_COLUMNS

    ttl = pd.Timedelta(seconds=system.view("customer_profile").ttl_seconds)
    ids = _chosen_ids(customers)
    rows = []
    for customer_id in ids:
        history = customers[customers["customer_id"] == customer_id]["event_timestamp"]
        first, last = history.min(), history.max()
        rows += [
            (customer_id, first),  # exactly at a source row: that row
            (customer_id, first + pd.Timedelta(days=10, hours=3)),  # between rows
            (customer_id, first - pd.Timedelta(days=1)),  # before any row: nulls
            (customer_id, last + ttl + pd.Timedelta(days=1)),  # past the TTL: nulls
            (customer_id, last + ttl - pd.Timedelta(days=1)),  # inside the TTL: last row
        ]
    rng = np.random.default_rng(5)
    rows = [rows[i] for i in rng.permutation(len(rows))]
    entity_df = pd.DataFrame(rows, columns=["customer_id", "event_timestamp"])
    entity_df["label"] = np.arange(len(entity_df))  # extra columns ride along
    entity_df.index = entity_df.index + 100  # the index comes back as given

    got = store.historical_features(entity_df)

    assert list(got.index) == list(entity_df.index)
    pd.testing.assert_frame_equal(got[list(entity_df.columns)], entity_df)
    nulls = assert_point_in_time(entity_df, got, customers, FETCH_COLUMNS, ttl)
    assert 0 < nulls < len(entity_df)


def test_apply_is_idempotent_and_drops_stale_objects(churn):
    store, _, _ = churn
    from feast import Entity, ValueType

    fs = store.get_store()
    fs.apply([Entity(name="stale_entity", join_keys=["stale_id"], value_type=ValueType.INT64)])
    store.apply()
    store.apply()
    assert [e.name for e in fs.list_entities()] == ["customer"]
    assert [v.name for v in fs.list_feature_views()] == ["customer_profile"]


@pytest.mark.parametrize("blueprint", sorted(p.parent.name
                                              for p in BLUEPRINTS.glob("*/mlstack.yaml")))
def test_generated_files_are_deterministic_and_ruff_clean(tmp_path, blueprint):
    spec = BLUEPRINTS / blueprint / "mlstack.yaml"
    system, _ = require_system(spec)
    options = CompileOptions(project_dir=Path(os.path.relpath(spec.parent, tmp_path)).as_posix())
    first, second = compile_system(system, options), compile_system(system, options)
    files = [p for p in first.paths()
             if p.startswith("feature_repo/") or p == f"{system.python_name}_system/store.py"]
    assert len(files) == 4, files
    for path in files:
        assert first[path] == second[path], path
        assert str(tmp_path).encode() not in first[path]
        assert str(REPO).encode() not in first[path]
    for path, content in first.items():  # the whole tree, so ruff sees the packages
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_bytes(content)
    ruff = str(Path(sys.executable).parent / "ruff")
    python_files = [p for p in files if p.endswith(".py")]
    # from the tree's root, as a user runs it: mlstack (the runtime) is a third-party library
    # there; this repo's own config would take it for first-party, so it is told otherwise
    project_config = ["--config", str(REPO / "pyproject.toml"),
                      "--config", "lint.isort.known-third-party = ['mlstack']"]
    for config in (["--isolated"], project_config):
        proc = subprocess.run([ruff, "check", "--no-cache", *config, *python_files],
                              capture_output=True, text=True, cwd=tmp_path)
        assert proc.returncode == 0, proc.stdout + proc.stderr


def test_timings(churn):
    """Keep this repo's engine test fast: report what each step cost."""
    _, _, timings = churn
    assert sum(timings.values()) < 120, timings


def test_csv_source_is_staged_as_parquet(tmp_path, customers):
    """Feast reads only parquet: a CSV source is staged under the state dir and served."""
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    spec = (CHURN / "mlstack.yaml").read_text(encoding="utf-8")
    parquet_decl = "kind: parquet\n    path: data/customers.parquet"
    assert parquet_decl in spec
    (project / "mlstack.yaml").write_text(
        spec.replace(parquet_decl, "kind: csv\n    path: data/customers.csv"), encoding="utf-8")
    for name in ("churn_labels.parquet",):
        (project / "data" / name).write_bytes((CHURN / "data" / name).read_bytes())
    customers.to_csv(project / "data" / "customers.csv", index=False)
    out, state = tmp_path / "out", tmp_path / "state"
    system, _ = require_system(project / "mlstack.yaml")
    tree = compile_system(system, CompileOptions(project_dir="../project"))
    for path, content in tree.items():
        (out / path).parent.mkdir(parents=True, exist_ok=True)
        (out / path).write_bytes(content)

    saved = {m: sys.modules[m] for m in list(sys.modules) if m.split(".")[0] == PACKAGE}
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("MLSTACK_STATE_DIR", str(state))
            patch.syspath_prepend(str(out))
            _forget_package()
            store = importlib.import_module(f"{PACKAGE}.store")
            store.apply()
            store.materialize()
            assert (state / "sources" / "customers.parquet").is_file()
            ids = _chosen_ids(customers)
            got = store.online_features([{"customer_id": i} for i in ids]).set_index("customer_id")
            latest = customers.sort_values("event_timestamp").groupby("customer_id").last()
            for column in ("customer_profile__monthly_charges", "customer_profile__tenure_months"):
                field = column.split("__", 1)[1]
                assert list(got.loc[ids, column]) == list(latest.loc[ids, field]), column
            store.get_store.cache_clear()
    finally:
        _forget_package()
        sys.modules.update(saved)


def test_cluster_profile_repo_imports_and_reads_its_connections(tmp_path, monkeypatch):
    """An aws target gets a SQL registry and DynamoDB online store from environment
    variables; its repo module still imports and defines the views (no network)."""
    import yaml

    spec = BLUEPRINTS / "fraud-gpu" / "mlstack.yaml"
    system, _ = require_system(spec)
    tree = compile_system(system, CompileOptions(
        project_dir=Path(os.path.relpath(spec.parent, tmp_path)).as_posix()))
    for path, content in tree.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_bytes(content)
    config = yaml.safe_load(tree["feature_repo/feature_store.yaml"])
    assert config["online_store"] == {"type": "dynamodb", "region": system.target.region}
    assert config["registry"]["registry_type"] == "sql"

    package = f"{system.python_name}_system"
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("MLSTACK_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("MLSTACK_FEAST_REGISTRY_URL", raising=False)
    try:
        store = importlib.import_module(f"{package}.store")
        with pytest.raises(RuntimeError, match="MLSTACK_FEAST_REGISTRY_URL"):
            store.repo_config()
        objects = {(type(o).__name__, o.name) for o in store.repo_objects()}
        assert {("FeatureView", v.name) for v in system.feature_views} <= objects
        assert ("FeatureService", f"{system.python_name}_model") in objects
    finally:
        for name in [m for m in sys.modules if m.split(".")[0].startswith(package)]:
            del sys.modules[name]
