"""target.compute's Ray path against a real multi-node Ray cluster on this machine: a head
that runs nothing (num_cpus=0) and two worker nodes of one CPU each (ray.cluster_utils).

The churn blueprint, compiled with compute, is the project: its training set through Feast's
Ray offline store equals the DuckDB path's row for row; the split is split_frame's; a model
fitted in a Ray task is the local model; Ray Train's data-parallel XGBoost and LightGBM fits
score within AUC_TOLERANCE of the single-process fit; and every step ran on worker nodes.
"""

from __future__ import annotations

import importlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from mlstack.runtime import training
from mlstack.runtime.ray_cluster import ENV_RAY_ADDRESS, RayCompute, runtime_env

REPO = Path(__file__).resolve().parents[2]
# A data-parallel fit sees each histogram as the union of the shards' sketches, not the whole
# column's: its model differs a little from one process's. Measured on churn (2 workers):
# see test_ray_train_fits_within_tolerance; the bound the tests hold it to:
AUC_TOLERANCE = 0.01


# -- without a cluster ---------------------------------------------------------------------

def _compute(address="local", engine="ray_task"):
    return RayCompute(address=address, workers=2, worker_cpu=1, worker_memory_mib=2048,
                      train_engine=engine)


def test_the_address_comes_from_the_environment_then_the_spec():
    assert _compute().resolve_address({ENV_RAY_ADDRESS: "127.0.0.1:6379"}) == "127.0.0.1:6379"
    assert _compute("ray://head:10001").resolve_address({}) == "ray://head:10001"
    assert _compute("ray://head:10001").resolve_address(
        {ENV_RAY_ADDRESS: "10.0.0.1:6379"}) == "10.0.0.1:6379"
    with pytest.raises(RuntimeError, match=ENV_RAY_ADDRESS):
        _compute().resolve_address({})


def test_workers_import_the_generated_tree_with_telemetry_off(tmp_path):
    environ = {"MLSTACK_STATE_DIR": "/s", "HOME": "/root", "PYTHONPATH": "lib",
               "MLSTACK_OWNER": "abc/worker/train"}
    local = runtime_env(tmp_path, "127.0.0.1:6379", environ)["env_vars"]
    # the cluster's workers keep their node's owner marker, not the submitting process's
    assert "MLSTACK_OWNER" not in local
    assert local["PYTHONPATH"].split(os.pathsep) == [str(tmp_path.resolve()),
                                                     str(Path("lib").resolve())]
    assert local["MLSTACK_STATE_DIR"] == "/s" and "HOME" not in local
    assert (local["DO_NOT_TRACK"], local["RAY_USAGE_STATS_ENABLED"],
            local["PREFECT_SERVER_ANALYTICS_ENABLED"], local["BENTOML_DO_NOT_TRACK"]) == (
        "1", "0", "false", "true")
    remote = runtime_env(tmp_path, "ray://head:10001", environ)
    assert remote["working_dir"] == str(tmp_path.resolve())
    assert "PYTHONPATH" not in remote["env_vars"]


def test_materialization_tasks_leave_a_cpu_for_the_ray_data_tasks_they_start():
    from mlstack.runtime.ray_cluster import materializing_at_once

    def compute(workers):
        return RayCompute("local", workers, 1.0, 2048, "ray_task")

    assert materializing_at_once(compute(1), True) == 0  # in the flow's process
    assert materializing_at_once(compute(1), False) == 0
    assert materializing_at_once(compute(2), True) == 1
    assert materializing_at_once(compute(4), True) == 1  # a file registry: one at a time
    assert materializing_at_once(compute(4), False) == 3


# -- the cluster ---------------------------------------------------------------------------

ray = pytest.importorskip("ray")
pytest.importorskip("prefect_ray")


@pytest.fixture(scope="module")
def cluster():
    """Head (no CPUs: it runs no task) + two 1-CPU worker nodes; Ray's files in a short
    folder (its unix sockets must stay under 107 characters)."""
    from ray.cluster_utils import Cluster

    saved = {k: os.environ.get(k) for k in ("RAY_USAGE_STATS_ENABLED", "RAY_AUTH_MODE")}
    # no usage report; no token: ~/.ray/auth_token may be another cluster's
    os.environ.update(RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled")
    temp = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    # Cluster writes the head's address to Ray's default folder (ray_current_cluster) without
    # creating it: on a machine where nothing started Ray before, that folder is missing
    from ray._private.utils import get_ray_address_file

    Path(get_ray_address_file(None)).parent.mkdir(parents=True, exist_ok=True)
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "temp_dir": temp, "include_dashboard": False,
        "object_store_memory": 150 * 2**20})
    workers = [cluster.add_node(num_cpus=1, object_store_memory=150 * 2**20)
               for _ in range(2)]
    cluster.wait_for_nodes()
    try:
        yield {"address": cluster.address, "head": cluster.head_node.node_id,
               "workers": {w.node_id for w in workers}}
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="module")
def project(cluster, tmp_path_factory):
    """churn compiled with target.compute, imported, joined to the cluster; a DuckDB store
    over the same files beside it (the single-process path)."""
    from mlstack.runtime import ray_cluster
    from mlstack.runtime.store import FeatureStoreAccess
    from mlstack.workspace.build import compile_spec

    root = tmp_path_factory.mktemp("raychurn")
    shutil.copytree(REPO / "blueprints" / "churn", root / "churn",
                    ignore=shutil.ignore_patterns("build"))
    spec_file = root / "churn" / "mlstack.yaml"
    spec = yaml.safe_load(spec_file.read_text())
    spec.setdefault("target", {})["compute"] = {"engine": "ray", "workers": 2,
                                                "worker": {"cpu": 1, "memory": "1Gi"}}
    spec_file.write_text(yaml.safe_dump(spec, sort_keys=False))
    build = root / "churn" / "build"
    compile_spec(spec_file, build)
    os.environ.update({ENV_RAY_ADDRESS: cluster["address"],
                       "MLSTACK_STATE_DIR": str(root / "state"),
                       "MLSTACK_PROJECT_DIR": str(root / "churn")})
    sys.path.insert(0, str(build))
    try:
        modules = {name: importlib.import_module(f"churn_system.{name}")
                   for name in ("features", "pipeline", "settings", "store", "transforms")}
        pipeline, features, store = modules["pipeline"], modules["features"], modules["store"]
        ray_cluster.connect(pipeline.COMPUTE, build)
        store.apply()
        duck_repo = root / "duck_repo"
        shutil.copytree(build / "feature_repo", duck_repo)
        text = (duck_repo / "feature_store.yaml").read_text()
        (duck_repo / "feature_store.yaml").write_text(
            text[:text.index("offline_store:")] + "offline_store:\n  type: duckdb\n"
            "entity_key_serialization_version: 3\n")
        duck = FeatureStoreAccess(
            repo_dir=duck_repo, state_dir=root / "duck_state", project_dir=root / "churn",
            feature_service=store.STORE.feature_service_name,
            request_keys=features.REQUEST_KEYS, fetch_columns=features.FETCH_COLUMNS,
            sources=store.STORE.sources, timestamp_column=features.LABEL_TIMESTAMP,
            repo_module="churn_duck_feature_repo", fetch_dtypes=features.FETCH_DTYPES,
            ttl_seconds=features.VIEW_TTL_SECONDS)
        duck.apply()
        frames = {s.name: s.read(root / "churn") for s in pipeline.SOURCES}
        yield {**modules, "build": build, "root": root, "duck": duck,
               "rows": training.label_rows(frames, pipeline.LABEL),
               "fetch": [*features.FETCH_COLUMNS, *features.REQUEST_FIELDS]}
    finally:
        sys.path.remove(str(build))
        for name in [m for m in sys.modules if m.split(".")[0] == "churn_system"]:
            del sys.modules[name]
        for key in (ENV_RAY_ADDRESS, "MLSTACK_STATE_DIR", "MLSTACK_PROJECT_DIR"):
            os.environ.pop(key, None)


@pytest.fixture(scope="module")
def ray_set(project):
    from mlstack.runtime import ray_training

    return ray_training.write_training_set(
        project["rows"], project["store"].STORE, project["pipeline"].LABEL, project["fetch"],
        project["root"] / "state" / "ray" / "run" / "training_set")


@pytest.fixture(scope="module")
def duck_set(project):
    return training.training_set(project["rows"], project["duck"].historical_features,
                                 project["pipeline"].LABEL, project["fetch"])


def _sorted(frame: pd.DataFrame, label) -> pd.DataFrame:
    order = [label.timestamp, *label.keys]
    return frame.sort_values(order, kind="stable").reset_index(drop=True)


def test_the_ray_training_set_is_the_duckdb_one_row_for_row(project, ray_set, duck_set,
                                                             cluster):
    from mlstack.runtime import ray_training

    label = project["pipeline"].LABEL
    got = ray_training.read_part(ray_set.path, range(ray_set.rows))
    assert ray_set.rows == len(duck_set) == 2000 and ray_set.left_out == 0
    assert list(got.columns) == list(duck_set.columns)
    pd.testing.assert_frame_equal(_sorted(got, label), _sorted(duck_set, label),
                                  check_dtype=False, check_exact=True)
    # read back in row-id order it is already training_set's order
    pd.testing.assert_frame_equal(got, duck_set, check_dtype=False, check_exact=True)
    assert set(ray_set.nodes) <= cluster["workers"] and cluster["head"] not in ray_set.nodes


def test_the_split_is_split_frames(project, ray_set, duck_set):
    from mlstack.runtime import ray_training

    pipeline = project["pipeline"]
    train_ids, test_ids = ray_training.split_rows(ray_set, pipeline.LABEL, pipeline.SPLIT)
    train, test = training.split_frame(duck_set, pipeline.LABEL, pipeline.SPLIT)
    assert (len(train_ids), len(test_ids)) == (len(train), len(test)) == (1600, 400)
    for ids, part in ((train_ids, train), (test_ids, test)):
        pd.testing.assert_frame_equal(ray_training.read_part(ray_set.path, ids),
                                      part.reset_index(drop=True), check_dtype=False,
                                      check_exact=True)


def _parts(project, ray_set):
    from mlstack.runtime import ray_training

    pipeline = project["pipeline"]
    train_ids, test_ids = ray_training.split_rows(ray_set, pipeline.LABEL, pipeline.SPLIT)
    return (train_ids, test_ids, ray_training.read_part(ray_set.path, train_ids),
            ray_training.read_part(ray_set.path, test_ids))


def churn_estimator(device: str = "cpu"):
    """The churn blueprint's estimator (what its build_estimator returns)."""
    from sklearn.ensemble import GradientBoostingClassifier

    return GradientBoostingClassifier(n_estimators=150, max_depth=3, learning_rate=0.1,
                                      random_state=7)


def test_a_ray_task_fit_is_the_local_fit(project, ray_set, cluster):
    from mlstack.runtime import ray_training
    from mlstack.runtime.evaluation import evaluate_model

    pipeline, model_frame = project["pipeline"], project["transforms"].model_frame
    train_ids, test_ids, train, test = _parts(project, ray_set)
    fitted = ray_training.fit_on_ray(ray_set, train_ids, churn_estimator, model_frame,
                                     pipeline.LABEL, _compute(engine="ray_task"),
                                     framework="sklearn", storage_dir=project["root"] / "t")
    local = training.fit(churn_estimator(), train, pipeline.LABEL, model_frame)
    np.testing.assert_array_equal(fitted.model.predict_proba(model_frame(test)),
                                  local.predict_proba(model_frame(test)))
    assert len(fitted.nodes) == 1 and set(fitted.nodes) <= cluster["workers"]
    scores, node = ray_training.evaluate_on_ray(ray_set, test_ids, fitted.model, model_frame,
                                                pipeline.LABEL, pipeline.METRICS,
                                                pipeline.GATES)
    single = evaluate_model(local, test, model_frame, pipeline.LABEL, pipeline.METRICS,
                            pipeline.GATES)
    assert scores == single  # exact: the same model on the same rows
    assert node in cluster["workers"]


def xgboost_estimator(device: str = "cpu"):
    from xgboost import XGBClassifier

    return XGBClassifier(n_estimators=100, max_depth=3, learning_rate=0.1, random_state=0,
                         n_jobs=1, tree_method="hist")


def lightgbm_estimator(device: str = "cpu"):
    from lightgbm import LGBMClassifier

    return LGBMClassifier(n_estimators=100, num_leaves=15, learning_rate=0.1, random_state=0,
                          n_jobs=1, verbose=-1)


@pytest.mark.parametrize("framework, build", [("xgboost", xgboost_estimator),
                                              ("lightgbm", lightgbm_estimator)])
def test_ray_train_fits_within_tolerance(project, ray_set, cluster, framework, build):
    pytest.importorskip(framework)
    from mlstack.runtime import ray_training
    from mlstack.runtime.evaluation import compute_metrics

    pipeline, model_frame = project["pipeline"], project["transforms"].model_frame
    train_ids, _, train, test = _parts(project, ray_set)
    fitted = ray_training.fit_on_ray(
        ray_set, train_ids, build, model_frame, pipeline.LABEL,
        _compute(engine="ray_train"), framework=framework,
        storage_dir=project["root"] / "state" / "ray" / "run" / f"train-{framework}")
    local = training.fit(build(), train, pipeline.LABEL, model_frame)
    label = pipeline.LABEL.column
    on_ray = compute_metrics(fitted.model, test, model_frame(test), label=label,
                             metrics=["auc", "accuracy"])
    alone = compute_metrics(local, test, model_frame(test), label=label,
                            metrics=["auc", "accuracy"])
    print(f"{framework}: Ray Train (2 workers) {on_ray} vs one process {alone}")
    assert abs(on_ray["auc"] - alone["auc"]) <= AUC_TOLERANCE
    assert fitted.nodes == tuple(sorted(cluster["workers"]))  # one rank on each worker node
    if framework == "lightgbm":
        params = fitted.model.get_params()
        assert not set(ray_training.LIGHTGBM_NETWORK) & {k for k, v in params.items()
                                                         if v is not None}
