"""Models of the other frameworks deploy locally for real: churn-mlp (the PyTorch MLP) and a
local copy of fraud-gpu (XGBoost, gpu: preferred). On this machine without a GPU the flow
falls back to the CPU and says so; the model is exported to ONNX and matches the native one;
the service answers through the router."""

from __future__ import annotations

import json

import httpx
import pytest

from mlstack.ops.local import procs
from tests.conftest import redate_project
from tests.engine.deploy_support import deploy_env, loosen, run_mlstack, stop_everything

pytestmark = [pytest.mark.engine, pytest.mark.slow]

# SLOs a busy 2-core test machine meets; the models and the device rule are the blueprints'
LOOSE = {
    "churn-mlp": {"p50_ms: 25, p95_ms: 60, p99_ms: 100": "p50_ms: 200, p95_ms: 400, p99_ms: 500",
                  "feature_freshness: 1d": "feature_freshness: 3650d"},
    "fraud-gpu": {"p50_ms: 10, p95_ms: 25, p99_ms: 50": "p50_ms: 200, p95_ms: 400, p99_ms: 500",
                  "throughput_rps: 500": "throughput_rps: 50",
                  "error_rate: 0.0005": "error_rate: 0.01", "availability: 99.95": "availability: 99",
                  # one row per transaction, valid an hour online: only the sample's last
                  # hour would serve (as in test_deploy_ranking)
                  "ttl: 1h": "ttl: 30d",
                  "step_seconds: 600": "step_seconds: 3",
                  'latency_p99_ms: "> 50"': 'latency_p99_ms: "> 500"',
                  "feature_freshness: 5m": "feature_freshness: 3650d",
                  # a local target: the same model and device rule, no cluster
                  "kind: aws\n  region: us-east-1\n  online_store: dynamodb\n":
                  "kind: local\n",
                  "    replicas: {min: 2, max: 10}\n": "",
                  "    cpu: 8\n    memory: 32Gi\n    gpu: preferred\n    gpu_type: nvidia-l4\n"
                  "    spot: true": "    cpu: 2\n    memory: 4Gi\n    gpu: preferred"},
}
EXPECTED = {"churn-mlp": ("MLPClassifier", "auc", 0.80, "pytorch"),
            "fraud-gpu": ("XGBClassifier", "auc", 0.85, "xgboost")}


@pytest.mark.parametrize("blueprint", sorted(LOOSE))
def test_framework_blueprint_deploys_on_the_cpu_fallback(blueprint, tmp_path):
    env = deploy_env(tmp_path, CUDA_VISIBLE_DEVICES="")  # no GPU, even on a machine with one
    project = tmp_path / blueprint
    port = procs.free_port()
    cls, metric, gate, framework = EXPECTED[blueprint]

    def mlstack(*args):
        return run_mlstack(tmp_path, *args, env=env)

    mlstack("init", str(project), "--blueprint", blueprint)
    spec = project / "mlstack.yaml"
    loosen(spec, LOOSE[blueprint])
    redate_project(project)
    try:
        result = json.loads(mlstack("deploy", str(spec), "--json", "--port", str(port),
                                    "--duration", "3").stdout)
        stages = {s["name"]: s for s in result["stages"]}
        assert all(stages[n]["status"] == "done" for n in ("train", "register", "verify"))
        assert stages["train"]["detail"] == (
            f"on cpu: gpu: preferred but no CUDA device is visible: {framework} falls back to "
            "the CPU")
        assert result["metrics"][metric] >= gate
        assert result["skew"]["mismatches"] == []
        rows = [{k: v for k, v in r.items()} for r in result["example_request"]["rows"]]
        base = f"http://127.0.0.1:{port}"
        answer = httpx.post(f"{base}/predict", json={"rows": rows}, timeout=30)
        assert answer.status_code == 200 and isinstance(answer.json()[0], float)
        info = httpx.post(f"{base}/info", json={}, timeout=30).json()
        assert info["runtime"]["runtime"] == "onnx", info["runtime"]
        assert info["runtime"]["reason"].startswith(f"ONNX export of {cls} matches")
    finally:
        stop_everything(project, env)
