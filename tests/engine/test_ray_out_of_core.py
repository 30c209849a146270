"""Out of core, scaled down: a training set larger than one worker's memory limit trains on a
local Ray cluster of two workers, where one process under the same limit runs out of memory.

The cluster is the local target's (mlstack.ops.local.ray_cluster): a head with no CPUs and
two worker nodes whose processes are each held to WORKER_MIB of private memory. The training
set is the Ray path's files (parquet with the row id column), written here: ROWS rows of
FEATURES float64 features and a label, larger on disk and in memory than WORKER_MIB. The
Ray Train fit (xgboost, data-parallel: each worker reads only its half, batch by batch, into
float32 model columns) completes; the single-process path (read the training set into pandas
and fit, what the flow does without target.compute) under the same limit fails with
MemoryError. Every process is stopped by the test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

pytest.importorskip("ray")
pytest.importorskip("xgboost")

from mlstack.ops.local import ray_cluster  # noqa: E402
from mlstack.ops.local.ray_supervisor import LIMITED_ENV  # noqa: E402
from mlstack.runtime.ray_training import ROW  # noqa: E402
from tests.engine.deploy_support import local_compute, scratch_project  # noqa: E402

# a memory goal: the bench runs it (bash bench/run.sh), not the test command
pytestmark = [pytest.mark.engine, pytest.mark.slow, pytest.mark.bench]

WORKER_MIB = 1536
ROWS = 12_000_000
FEATURES = 16
FILES = 8

COMMON = r"""
import json, resource, sys
import numpy as np
from xgboost import XGBClassifier
from mlstack.runtime import training
path, limit = sys.argv[1], int(sys.argv[2])
FEATURES = [f"f{i}" for i in range(int(sys.argv[3]))]
LABEL = training.LabelSpec(source="events", column="label", timestamp="ts", keys=("id",))


def build(device="cpu"):
    return XGBClassifier(n_estimators=8, max_depth=4, tree_method="hist", n_jobs=1,
                         random_state=0)


def model_frame(frame):
    return frame[FEATURES]
"""
ONE_PROCESS = COMMON + r"""
import pandas as pd
resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))  # what a worker is held to
frame = pd.read_parquet(path)
model = training.fit(build(), frame, LABEL, model_frame)
print(json.dumps({"fitted": True}))
"""
ON_RAY = COMMON + r"""
import ray
from mlstack.runtime import ray_training
from mlstack.runtime.ray_cluster import RayCompute
ray.init(address=sys.argv[4], log_to_driver=False)
rows = int(sys.argv[5])
files = ray_training.TrainingSetFiles(path, rows, 0, ())
compute = RayCompute(address="local", workers=2, worker_cpu=1, worker_memory_mib=limit // 2**20,
                     train_engine="ray_train")
fitted = ray_training.fit_on_ray(files, np.arange(rows), build, model_frame, LABEL, compute,
                                 framework="xgboost", storage_dir=sys.argv[6])
probe = np.random.default_rng(1).normal(size=(1000, len(FEATURES)))
import pandas as pd
scores = fitted.model.predict_proba(pd.DataFrame(probe, columns=FEATURES))[:, 1]
print(json.dumps({"nodes": list(fitted.nodes), "trees": fitted.model.n_estimators,
                  "score_spread": float(scores.max() - scores.min())}))
"""


def _write_training_set(folder: Path) -> int:
    """FILES parquet files, uncompressed: their size is their size in memory."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    per_file = ROWS // FILES
    weights = rng.normal(size=FEATURES)
    for i in range(FILES):
        values = rng.normal(size=(per_file, FEATURES))
        label = (values @ weights + rng.normal(size=per_file) > 0).astype(np.int64)
        table = pa.table({ROW: np.arange(i * per_file, (i + 1) * per_file, dtype=np.int64),
                          **{f"f{j}": values[:, j] for j in range(FEATURES)},
                          "label": label})
        pq.write_table(table, folder / f"part-{i}.parquet", compression="none",
                       row_group_size=131072)  # about a Ray Data block's rows
    return sum(p.stat().st_size for p in folder.iterdir())


@pytest.fixture()
def cluster(tmp_path):
    with scratch_project(tmp_path) as (paths, state):
        yield paths, ray_cluster.ensure(paths, state, local_compute(2, WORKER_MIB, "ray_train"))


def test_a_training_set_larger_than_a_worker_trains_on_two_workers_not_in_one(tmp_path,
                                                                             cluster):
    paths, outcome = cluster
    data = tmp_path / "training_set"
    size = _write_training_set(data)
    limit = WORKER_MIB * 2**20
    assert size > limit  # the training set does not fit one worker
    argv = [str(data), str(limit), str(FEATURES)]

    # one process held as a worker node's processes are (the same limit and allocators)
    alone = subprocess.run([sys.executable, "-c", ONE_PROCESS, *argv], capture_output=True,
                           text=True, timeout=600, env={**os.environ, **LIMITED_ENV})
    assert alone.returncode != 0, alone.stdout
    assert "MemoryError" in alone.stderr, alone.stderr[-2000:]

    env = {**paths.environment(), **ray_cluster.client_env(paths)}
    on_ray = subprocess.run([sys.executable, "-c", ON_RAY, *argv, outcome.address, str(ROWS),
                             str(tmp_path / "ray_train")], capture_output=True, text=True,
                            env=env, timeout=900)
    assert on_ray.returncode == 0, on_ray.stderr[-4000:]
    result = json.loads(on_ray.stdout.strip().splitlines()[-1])
    assert len(result["nodes"]) == 2  # both workers, one half each
    assert result["trees"] == 8 and result["score_spread"] > 0.1  # a model that learned
