"""target.compute on the cluster targets, on the mlstack side (pure and fast: no synth, which
tests/engine/test_infra_kubernetes.py and test_infra_aws.py run): what the infra app is given,
which resources the stack holds, what `mlstack plan` prices and which inputs it diffs."""

from __future__ import annotations

import shutil

import pytest
import yaml

from mlstack.codegen.backends.infra_costs import estimate_monthly_cost
from mlstack.codegen.backends.infra_inputs import infra_properties
from mlstack.codegen.backends.infra_model import infra_config, infra_resources
from mlstack.codegen.backends.infra_sizing import ray_worker_nodes
from mlstack.codegen.generate import compile_system
from mlstack.frontend.analysis import require_system
from tests.conftest import BLUEPRINTS

COMPUTE = {"engine": "ray", "workers": 4, "worker": {"cpu": 4, "memory": "16Gi"}}
RAY_K8S = {("kubernetes_manifest", "ray_cluster"), ("kubernetes_service_v1", "ray_head"),
           ("kubernetes_network_policy_v1", "ray_ingress")}


def _system(tmp_path, blueprint: str, **target):
    folder = tmp_path / blueprint
    shutil.copytree(BLUEPRINTS / blueprint, folder)
    spec = folder / "mlstack.yaml"
    data = yaml.safe_load(spec.read_text())
    data["target"] = {**data["target"], **target}
    spec.write_text(yaml.safe_dump(data, sort_keys=False))
    return require_system(spec)[0]


def test_kubernetes_target_runs_its_own_ray_cluster(tmp_path):
    plain = require_system(BLUEPRINTS / "churn-k8s" / "mlstack.yaml")[0]
    system = _system(tmp_path, "churn-k8s", compute=COMPUTE)
    ray = infra_config(system)["ray"]
    assert ray["managed"] is True
    assert ray["address"] == "ray://churn-k8s-ray-head.churn.svc:10001"
    assert (ray["workers_min"], ray["workers_max"]) == (0, 4)
    assert ray["worker"] == {"cpu": 4.0, "memory_mib": 16384, "gpu": 0, "gpu_type": None}
    assert set(infra_resources(system)) - set(infra_resources(plain)) == RAY_K8S
    props = infra_properties(system)
    assert props[("kubernetes_manifest", "ray_cluster")]["ray.workers_max"] == 4
    assert props[("kubernetes_config_map_v1", "training_job_template")]["ray.address"] == (
        ray["address"])
    stack = compile_system(system)["infra/kubernetes_stack.py"].decode()
    assert '"kind": "RayCluster"' in stack and "MLSTACK_RAY_ADDRESS" in stack
    assert "ray worker nodes" in {line.item for line in estimate_monthly_cost(system).lines}


def test_kubernetes_target_joins_a_ray_address(tmp_path):
    address = "ray://ray-head.data.svc:10001"
    system = _system(tmp_path, "churn-k8s", compute={**COMPUTE, "address": address})
    assert infra_config(system)["ray"] == {"address": address, "managed": False}
    assert not RAY_K8S & set(infra_resources(system))
    stack = compile_system(system)["infra/kubernetes_stack.py"].decode()
    assert "MLSTACK_RAY_ADDRESS" in stack  # the job template's env, from config.RAY
    # someone else's cluster: not priced
    assert "ray worker nodes" not in {line.item for line in estimate_monthly_cost(system).lines}


def test_without_compute_the_stacks_have_no_ray(tmp_path):
    for blueprint in ("churn-k8s", "fraud-gpu"):
        system = require_system(BLUEPRINTS / blueprint / "mlstack.yaml")[0]
        config = infra_config(system)
        assert "ray" not in config and "ray_nodes" not in config
        tree = compile_system(system)
        stack = tree[f"infra/{system.target.kind}_stack.py"].decode()
        assert "ray" not in stack.lower().replace("array", "")


@pytest.mark.parametrize("address,node_group", [("local", True),
                                                ("ray://ray.example.com:10001", False)])
def test_aws_target_sizes_a_ray_worker_node_group(tmp_path, address, node_group):
    # the Ray workers have no GPU: training on the cluster is on the CPU (MLS901 otherwise)
    system = _system(tmp_path, "fraud-gpu", compute={**COMPUTE, "address": address},
                     training={"cpu": 4, "memory": "16Gi"})
    assert (("aws_eks_node_group", "ray_workers") in infra_resources(system)) == node_group
    lines = {line.item: line for line in estimate_monthly_cost(system).lines}
    if not node_group:
        assert "ray_nodes" not in infra_config(system) and "ray worker nodes" not in lines
        return
    nodes = ray_worker_nodes(system)
    assert infra_config(system)["ray_nodes"] == {
        "instance_type": nodes.instance_type, "min": 0, "max": 4, "role": "ray-worker"}
    assert nodes.vcpu >= 4 and nodes.memory_gib >= 16 and nodes.gpu == 0
    line = lines["ray worker nodes"]
    assert line.monthly_min_usd == 0 < line.monthly_max_usd
    stack = compile_system(system)["infra/aws_stack.py"].decode()
    assert '"ray_workers"' in stack
