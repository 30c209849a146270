"""target.compute, deployed for real: the churn blueprint with `compute: {engine: ray,
workers: 2}` on a local Ray cluster (a head and two worker nodes this deploy starts), and a
request-time field: a retention offer's discount sent with each request
(features.request_sources, a Feast RequestSource), read by a transform and as a model
feature, logged in the label source for training.

It checks that every offline step ran on the worker nodes (the node ids the flow records in
training.json, against the cluster's own list of nodes), that `status` shows the cluster and
notices a killed worker node until its supervisor has it back, and that the same project
deployed without compute (the cluster stopped) trains a model with the same metrics (a
GradientBoosting fit in one Ray task: the same rows in the same order, the same seed) from a
training set that equals the one the Ray path wrote, row for row (the logged discount
included). The request field: training reads the logged values, the skew check sends each
sampled row's logged value (so online = offline), and the service takes it in its typed
request over real HTTP (required, a finite number, nothing else).
`down` leaves no process of the project.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import httpx
import numpy as np
import pandas as pd
import pytest

from mlstack.ops.local import procs
from tests.engine.deploy_support import (
    change_spec,
    deploy_env,
    deploy_state,
    project_processes,
    run_mlstack,
    stop_everything,
)

pytest.importorskip("ray")
pytestmark = [pytest.mark.engine, pytest.mark.slow]

COMPUTE = ("target:\n  kind: local\n", "target:\n  kind: local\n  compute:\n    engine: ray\n"
           "    workers: 2\n    worker: {cpu: 1, memory: 2Gi}\n")
REQUEST_FIELD = {
    "    columns: {customer_id: int64, event_timestamp: timestamp, churned: int64}":
        "    columns: {customer_id: int64, event_timestamp: timestamp, churned: int64,\n"
        "              discount: float64}",
    "  transforms:\n": "  request_sources:\n"
                       "    - name: offer\n"
                       "      description: The retention offer shown with the request.\n"
                       "      fields: {discount: float64}\n"
                       "  transforms:\n"
                       "    - name: discounted_charges\n"
                       "      expr: monthly_charges * (1 - offer.discount)\n",
    "    - charges_per_tenure\n": "    - charges_per_tenure\n"
                                 "    - offer.discount\n"
                                 "    - discounted_charges\n",
}
NODES = r"""
import json, sys, ray
ray.init(address=sys.argv[1], log_to_driver=False)
print(json.dumps([{"id": n["NodeID"], "alive": n["Alive"], "cpu": n["Resources"].get("CPU", 0)}
                  for n in ray.nodes()]))
"""
# The DuckDB path's training set for the same label rows: the generated store, single-process.
DUCKDB_SET = r"""
import sys
import pandas as pd
from mlstack.runtime import training
from churn_system import features, store
from churn_system.pipeline import LABEL, SOURCES
from mlstack.runtime import sources
frames, _ = sources.read_sources(SOURCES, sys.argv[2])
rows = training.label_rows(frames, LABEL)
frame = training.training_set(rows, store.historical_features, LABEL,
                              [*features.FETCH_COLUMNS, *features.REQUEST_FIELDS])
frame.to_parquet(sys.argv[1])
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("deploy_ray")
    folder = root / "churn"
    env = deploy_env(root)
    run_mlstack(root, "init", str(folder), "--blueprint", "churn", env=env)
    labels_path = folder / "data" / "churn_labels.parquet"
    labels = pd.read_parquet(labels_path)
    labels["discount"] = np.random.default_rng(5).choice([0.0, 0.1, 0.2, 0.3], len(labels))
    labels.to_parquet(labels_path, index=False)
    change_spec(folder / "mlstack.yaml", {**REQUEST_FIELD, COMPUTE[0]: COMPUTE[1]})
    info = {"folder": folder, "env": env, "port": procs.free_port(), "root": root}
    yield info
    stop_everything(folder, env)


def _check_request_field(port: int, example: dict) -> None:
    """The logged discount travels in the example request; the service reads it, by the
    typed request, over real HTTP."""
    assert set(example) == {"customer_id", "discount"}
    base = f"http://127.0.0.1:{port}"
    customer = example["customer_id"]
    rows = [{"customer_id": customer, "discount": d} for d in (0.0, 0.3)]
    features = httpx.post(f"{base}/features", json={"rows": rows}, timeout=30)
    assert features.status_code == 200, features.text
    got = features.json()
    assert [r["discount"] for r in got] == [0.0, 0.3]
    charges = got[0]["customer_profile__monthly_charges"]
    assert got[1]["discounted_charges"] == pytest.approx(charges * 0.7, rel=1e-12)
    answer = httpx.post(f"{base}/predict", json={"rows": rows}, timeout=30)
    assert answer.status_code == 200, answer.text
    assert all(isinstance(v, float) for v in answer.json())
    # the request field is part of the typed request: required, a finite number
    for bad in ([{"customer_id": customer}],
                [{"customer_id": customer, "discount": "0.1"}],
                [{"customer_id": customer, "discount": 0.1, "coupon": 1}]):
        assert httpx.post(f"{base}/predict", json={"rows": bad},
                          timeout=30).status_code == 400, bad
    schema = httpx.get(f"{base}/docs.json", timeout=30).json()["components"]["schemas"]
    assert schema["Row"]["required"] == ["customer_id", "discount"]
    assert schema["Row"]["properties"]["discount"]["type"] == "number"


def _deploy(project, *args: str) -> dict:
    proc = run_mlstack(project["folder"], "deploy", "--json", "--port", str(project["port"]),
                       "--duration", "2", *args, env=project["env"], timeout=900)
    return json.loads(proc.stdout)


def _status(project) -> dict:
    proc = run_mlstack(project["folder"], "status", "--json", env=project["env"], check=False)
    return json.loads(proc.stdout)


def _state_dir(project):
    return project["folder"] / ".mlstack" / "runtime"  # MLSTACK_STATE_DIR of the flows


def _cluster_nodes(project) -> list[dict]:
    state = deploy_state(project["folder"])["cluster"]
    token = project["folder"] / ".mlstack" / "ray" / "auth_token"
    env = dict(project["env"], RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token),
               RAY_USAGE_STATS_ENABLED="0")
    out = subprocess.run([sys.executable, "-c", NODES, state["address"]], env=env,
                         capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_offline_steps_run_on_the_workers_of_a_supervised_cluster(project):
    folder = project["folder"]
    lint = run_mlstack(folder, "lint", env=project["env"]).stdout
    # clean (the loosened SLOs of old drew warnings); MLS214 would say discount is unread
    assert lint.strip() == "1 file clean" and "MLS214" not in lint
    plan = run_mlstack(folder, "plan", "--explain", env=project["env"]).stdout
    assert 'target.compute.steps.train = "ray_task"' in plan
    result = _deploy(project)
    stages = {s["name"]: s for s in result["stages"]}
    for name in ("compute", "ingest", "validate", "materialize", "training_set", "train",
                 "evaluate", "register", "start_service", "skew_check", "verify", "promote"):
        assert stages[name]["status"] == "done", (name, result["stages"])
    assert "Ray head + 2 workers" in stages["compute"]["detail"]
    assert result["skew"]["mismatches"] == [] and result["skew"]["compared"] > 0
    _check_request_field(project["port"], result["example_request"]["rows"][0])

    nodes = _cluster_nodes(project)
    head = {n["id"] for n in nodes if n["alive"] and not n["cpu"]}
    workers = {n["id"] for n in nodes if n["alive"] and n["cpu"]}
    assert len(head) == 1 and len(workers) == 2
    training = json.loads((_state_dir(project) / "training.json").read_text())
    compute = training["compute"]
    assert compute["train_engine"] == "ray_task" and compute["workers"] == 2
    for step in ("ingest", "validate", "materialize", "training_set", "train", "evaluate"):
        ran_on = set(compute["nodes"][step])
        assert ran_on and ran_on <= workers, (step, ran_on, workers)
    assert len(set().union(*map(set, compute["nodes"].values()))) == 2  # both workers worked
    project.update(ray_metrics=result["metrics"], training=training)


def test_status_sees_a_killed_worker_node_until_its_supervisor_restarts_it(project):
    assert "training" in project, "the Ray deploy failed"
    status = _status(project)
    assert status["healthy"] and status["cluster"]["status"] == "ready", json.dumps(
        {k: status[k] for k in ("cluster", "problems", "prediction")})
    assert [n["name"] for n in status["cluster"]["nodes"]] == ["head", "worker-1", "worker-2"]
    victim = next(n for n in status["cluster"]["nodes"] if n["name"] == "worker-2")
    os.kill(victim["pid"], signal.SIGKILL)
    seen = _status(project)
    again = next(n for n in seen["cluster"]["nodes"] if n["name"] == "worker-2")
    if again["restarts"] == 0:  # else already back (a restart takes a few seconds)
        assert not seen["healthy"] and seen["cluster"]["status"] == "restarting", seen
        assert any("Ray cluster" in p for p in seen["problems"]), seen["problems"]
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        seen = _status(project)
        if seen["cluster"]["status"] == "ready":
            break
        time.sleep(2)
    assert seen["cluster"]["status"] == "ready" and seen["healthy"], seen
    node = next(n for n in seen["cluster"]["nodes"] if n["name"] == "worker-2")
    assert node["restarts"] >= 1 and node["alive"]  # a start can fail and be retried


def test_without_compute_the_cluster_stops_and_the_model_has_the_same_metrics(project):
    assert "ray_metrics" in project, "the Ray deploy failed"
    folder = project["folder"]
    change_spec(folder / "mlstack.yaml", {COMPUTE[1]: COMPUTE[0]})
    # the canary's judgement is not this test's (test_deploy_local's is): short steps
    result = _deploy(project, "--retrain", "--max-step-seconds", "4")
    stages = {s["name"]: s for s in result["stages"]}
    assert "Ray cluster stopped" in stages["compute"]["detail"]
    assert [p for p in project_processes(folder) if "/ray" in p.owner] == []
    assert deploy_state(folder)["cluster"]["address"] == ""
    training = json.loads((_state_dir(project) / "training.json").read_text())
    assert "compute" not in training or not training["compute"]
    assert result["metrics"] == pytest.approx(project["ray_metrics"], abs=1e-12)

    # the training set: what the Ray path wrote (v1) against the DuckDB path's (v2's store)
    state = _state_dir(project)
    written = sorted(state.glob("ray/*/training_set"))
    assert written, sorted(p.name for p in state.iterdir())
    ray_set = pd.read_parquet(written[-1])
    out = project["root"] / "duckdb_set.parquet"
    build = folder / ".mlstack" / "versions" / result["version"]
    env = dict(project["env"], PYTHONPATH=os.pathsep.join([str(build), project["env"][
        "PYTHONPATH"]]), MLSTACK_STATE_DIR=str(state), MLSTACK_PROJECT_DIR=str(folder))
    done = subprocess.run([sys.executable, "-c", DUCKDB_SET, str(out), str(folder)], env=env,
                          cwd=build, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    duck = pd.read_parquet(out)
    keys = ["event_timestamp", "customer_id"]
    columns = sorted(duck.columns)
    a = duck[columns].sort_values(keys).reset_index(drop=True)
    b = ray_set[columns].sort_values(keys).reset_index(drop=True)
    b["event_timestamp"] = b["event_timestamp"].astype(a["event_timestamp"].dtype)
    assert len(a) == len(b) > 1000 and "discount" in columns
    pd.testing.assert_frame_equal(a, b, check_dtype=False, check_exact=True)
