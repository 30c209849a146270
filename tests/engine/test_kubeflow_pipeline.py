"""The Kubeflow Pipelines backend, checked with kfp's own tools: every blueprint whose target
is kubernetes, with `orchestrator: kubeflow` (and a GPU variant), compiles with
`kfp.compiler.Compiler` into its IR YAML; loaded back with `kfp.components.
load_component_from_file`, each pipeline's tasks, their order (dependencies), resources, GPU
requests, placement and retries are the spec's, and each runs the contract's step.

kfp pins protobuf and friends apart from the runtime layers: it runs in an environment of its
own, kept in the infra tests' cache (tests/engine/infra_fixtures.py) and shared by the session.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from mlstack.codegen.contract import MATERIALIZE_TASKS, MONITORING_TASKS, TRAINING_TASKS
from mlstack.codegen.generate import compile_system
from mlstack.frontend.analysis import require_system
from mlstack.ops.cluster.infra_env import InfraEnv, ensure_env
from tests.engine.infra_fixtures import (
    blueprints_of,
    infra_cache,  # noqa: F401  (fixture)
    variant_spec,
)

KFP = ("kfp==2.17.3", "kfp-kubernetes==2.17.3")
# Compiles the three pipelines of the generated tree (cwd) and reads them back with kfp's
# loader: per pipeline and task, what the compiled PipelineSpec and its kubernetes
# PlatformSpec say.
READ_BACK = r"""
import json, sys, tempfile
from pathlib import Path
from google.protobuf import json_format
from kfp import components
sys.path.insert(0, ".")
from pipelines import kubeflow_pipeline

out = {}
for name, path in kubeflow_pipeline.compile_all(Path(tempfile.mkdtemp())).items():
    loaded = components.load_component_from_file(str(path))
    spec = loaded.pipeline_spec
    executors = json_format.MessageToDict(spec.deployment_spec)["executors"]
    platform = json_format.MessageToDict(loaded.platform_spec)
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    tasks = {}
    for task_name, task in spec.root.dag.tasks.items():
        label = spec.components[task.component_ref.name].executor_label
        container = executors[label]["container"]
        tasks[task_name] = {
            "after": sorted(task.dependent_tasks),
            "retries": task.retry_policy.max_retry_count,
            "backoff": task.retry_policy.backoff_duration.seconds,
            "backoff_factor": task.retry_policy.backoff_factor,
            "command": container["command"], "image": container["image"],
            "resources": container.get("resources", {}),
            "env": {e["name"]: e["value"] for e in container.get("env", [])},
            "k8s": k8s.get(label, {}),
        }
    out[name] = {"name": spec.pipeline_info.name, "tasks": tasks}
print(json.dumps(out))
"""


@pytest.fixture(scope="session")
def kfp_env(infra_cache) -> InfraEnv:  # noqa: F811
    reqs = infra_cache / "requirements" / "kubeflow.txt"
    reqs.parent.mkdir(parents=True, exist_ok=True)
    reqs.write_text("\n".join(KFP) + "\n")
    return ensure_env(reqs)


CASES = {f"{name}-kubeflow": (name, {"orchestrator": "kubeflow"})
         for name in blueprints_of("kubernetes")}
CASES["churn-k8s-kubeflow-gpu"] = ("churn-k8s", {
    "orchestrator": "kubeflow", "training": {"cpu": 4, "memory": "8Gi", "gpu": 1,
                                             "gpu_type": "nvidia-l4", "spot": True}})


@pytest.fixture(scope="module", params=sorted(CASES))
def read_back(request, kfp_env, tmp_path_factory):
    blueprint, target = CASES[request.param]
    tmp = tmp_path_factory.mktemp(request.param)
    system = require_system(variant_spec(tmp, blueprint, request.param, target))[0]
    out = tmp / "build"
    for path, content in compile_system(system).items():
        (out / path).parent.mkdir(parents=True, exist_ok=True)
        (out / path).write_bytes(content)
    done = subprocess.run([str(kfp_env.python), "-c", READ_BACK], cwd=out, capture_output=True,
                          text=True, timeout=300, env=kfp_env.environment())
    assert done.returncode == 0, done.stderr[-3000:]
    return system, json.loads(done.stdout)


def kfp_name(task: str) -> str:
    return task.replace("_", "-")  # kfp names a task after its component, '_' as '-'


def order(tasks: dict) -> list[str]:
    """The tasks in an order their dependencies allow, ties broken by the contract's order
    (a task only depends on tasks before it, or this raises)."""
    done: list[str] = []
    while len(done) < len(tasks):
        ready = [t for t in tasks if t not in done and set(tasks[t]["after"]) <= set(done)]
        assert ready, f"a cycle among {sorted(set(tasks) - set(done))}"
        done.append(ready[0])
    return done


def test_the_pipelines_run_the_contracts_tasks_in_order(read_back):
    system, pipelines = read_back
    assert {p: pipelines[p]["name"] for p in pipelines} == {
        p: f"{system.name}-{p}" for p in ("training", "materialize", "monitoring")}
    for name, tasks in (("training", TRAINING_TASKS), ("materialize", MATERIALIZE_TASKS),
                        ("monitoring", ("ingest", *MONITORING_TASKS))):
        compiled = pipelines[name]["tasks"]
        expected = [kfp_name(t) for t in tasks]
        assert sorted(compiled) == sorted(expected)
        # each task depends on the one before it in the contract (data or .after), so the
        # only order the dependencies allow is the contract's
        for before, task in zip(expected, expected[1:], strict=False):
            assert before in compiled[task]["after"], (name, task)
        assert order({t: compiled[t] for t in reversed(expected)}) == expected
        for task in tasks:
            command = compiled[kfp_name(task)]["command"]
            assert command[-1] == task and command[:2] == ["python", "-m"]


def test_every_task_has_the_specs_resources_retries_and_image(read_back):
    system, pipelines = read_back
    t = system.target.training
    cpu, memory = f"{round(t.cpu * 1000)}m", f"{t.memory_mib}Mi"
    for pipeline in pipelines.values():
        for name, task in pipeline["tasks"].items():
            res = task["resources"]
            assert (res["resourceCpuRequest"], res["resourceCpuLimit"]) == (cpu, cpu), name
            assert (res["resourceMemoryRequest"], res["resourceMemoryLimit"]) == (memory, memory)
            assert task["retries"] == system.training.retries
            assert task["backoff"] == system.training.retry_delay_seconds
            assert task["backoff_factor"] == 1.0  # a fixed delay, as training.retry_delay
            assert task["image"].startswith(f"{system.name}-service:")
            assert task["env"]["MLSTACK_ONLINE_STORE"] == system.target.online_store
            k8s = task["k8s"]
            assert k8s["nodeSelector"]["labels"]["mlstack/role"] == "training"
            assert k8s["secretAsEnv"][0]["keyToEnv"] == [
                {"envVar": "MLSTACK_FEAST_REGISTRY_URL", "secretKey": "url"}]
            gpu = name == "train" and t.gpu > 0
            assert ("accelerator" in res) == gpu, name
            if gpu:
                assert res["accelerator"]["resourceType"] == "nvidia.com/gpu"
                assert res["accelerator"]["resourceCount"] == str(t.gpu)
                assert k8s["nodeSelector"]["labels"]["mlstack/gpu-type"] == t.gpu_type
                assert {"key": "nvidia.com/gpu", "operator": "Exists",
                        "effect": "NoSchedule"} in k8s["tolerations"]
            spot = {"key": "mlstack/spot", "operator": "Exists", "effect": "NoSchedule"}
            assert (spot in k8s["tolerations"]) == t.spot
