"""What target.compute changes in the generated code (and what it leaves alone).

A spec with compute gets Feast's Ray offline store and Ray compute engine, flows on the
RayTaskRunner wired to mlstack.runtime's Ray modules, and its pipeline settings; the output
passes the same default linters as the goldens. Without compute nothing of this appears (the
goldens, tests/test_golden.py, hold every blueprint's bytes).
"""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from mlstack.codegen.contract import RUNTIME_API_VERSION, RUNTIME_API_WITHOUT_COMPUTE
from mlstack.codegen.formatter import _ruff
from mlstack.workspace.build import compile_spec
from tests.conftest import GENERATED, REPO


def _compile(tmp_path, blueprint: str, compute: dict | None):
    project = tmp_path / blueprint
    shutil.copytree(REPO / "blueprints" / blueprint, project,
                    ignore=shutil.ignore_patterns("build"))
    spec = project / "mlstack.yaml"
    doc = yaml.safe_load(spec.read_text())
    if compute is not None:
        doc.setdefault("target", {})["compute"] = compute
        doc["target"].get("training", {}).pop("gpu", None)  # the Ray workers have none
    spec.write_text(yaml.safe_dump(doc, sort_keys=False))
    out = project / "build"
    compile_spec(spec, out)
    return out


@pytest.fixture(scope="module")
def churn_ray(tmp_path_factory):
    return _compile(tmp_path_factory.mktemp("c"), "churn",
                    {"engine": "ray", "workers": 3, "worker": {"cpu": 2, "memory": "4Gi"}})


def test_feast_uses_the_ray_offline_store_and_compute_engine(churn_ray):
    config = yaml.safe_load((churn_ray / "feature_repo" / "feature_store.yaml").read_text())
    assert config["offline_store"] == {
        "type": "ray", "storage_path": "${MLSTACK_STATE_DIR}/ray_offline_store",
        "ray_address": "${MLSTACK_RAY_ADDRESS}"}
    assert config["batch_engine"] == {"type": "ray.engine",
                                      "ray_address": "${MLSTACK_RAY_ADDRESS}",
                                      "write_concurrency": 1}  # one SQLite writer
    # the keys are Feast's own
    from feast.infra.compute_engines.ray.config import RayComputeEngineConfig
    from feast.infra.offline_stores.contrib.ray_offline_store.ray import RayOfflineStoreConfig

    RayOfflineStoreConfig(**config["offline_store"])
    RayComputeEngineConfig(**config["batch_engine"])


def test_the_flows_run_on_the_ray_task_runner(churn_ray):
    flows = (churn_ray / "pipelines" / "flows.py").read_text()
    pipeline = (churn_ray / "churn_system" / "pipeline.py").read_text()
    assert "RAY_TASKS = ray_cluster.task_runner(COMPUTE, settings.GENERATED_DIR)" in flows
    assert flows.count("task_runner=RAY_TASKS") == 2  # training and materialize flows
    for submitted in ("ingest_source.submit(", "validate_source.submit(",
                      "materialize_view.submit("):
        assert submitted in flows
    assert '"compute": COMPUTE.record(' in flows
    assert ("address=\"local\",\n    workers=3,\n    worker_cpu=2.0,\n"
            "    worker_memory_mib=4096,\n    train_engine=\"ray_task\"") in pipeline
    init = (churn_ray / "churn_system" / "__init__.py").read_text()
    assert f'require("{RUNTIME_API_VERSION}")' in init


def test_without_compute_nothing_of_ray_is_generated():
    init = (GENERATED / "churn" / "churn_system" / "__init__.py").read_text()
    assert f'require("{RUNTIME_API_WITHOUT_COMPUTE}")' in init
    for path in (GENERATED / "churn").rglob("*"):
        if path.is_file():
            assert "ray_" not in path.read_text().replace("array_", ""), path


def test_a_ray_address_is_the_store_s_fallback(tmp_path):
    out = _compile(tmp_path, "churn", {"engine": "ray", "address": "ray://head:10001"})
    store = (out / "churn_system" / "store.py").read_text()
    assert 'variable_defaults={"MLSTACK_RAY_ADDRESS": "ray://head:10001"}' in store


@pytest.mark.parametrize("blueprint", ["churn", "fraud-gpu", "search-ranking"])
def test_compute_output_passes_the_default_linters(tmp_path, blueprint):
    if not (REPO / "blueprints" / blueprint).is_dir():
        pytest.skip(f"no {blueprint} blueprint")
    out = _compile(tmp_path, blueprint, {"engine": "ray", "workers": 2})
    for command in (["check", "--isolated", "--no-cache", "."],
                    ["format", "--isolated", "--no-cache", "--check", "."]):
        proc = subprocess.run([_ruff(), *command], cwd=out, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr
