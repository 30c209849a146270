"""Node sizing, the cost estimate and the infra resource list `mlstack plan` shows (pure: no
environment, no network). The price table ships inside the package."""

from __future__ import annotations

from importlib import resources

import pytest

from mlstack.codegen.backends.infra_costs import estimate_monthly_cost, infra_resources
from mlstack.codegen.backends.infra_model import aws_resources, kubernetes_resources
from mlstack.codegen.backends.infra_sizing import (
    PRICE_TABLE,
    SizingError,
    pick_instance,
    price_table,
    serving_nodes,
    training_nodes,
)
from mlstack.frontend.analysis import require_system
from mlstack.frontend.ir.nodes import ResourcesNode
from tests.conftest import BLUEPRINTS


def system(name):
    return require_system(BLUEPRINTS / name / "mlstack.yaml")[0]


def test_price_table_is_package_data_and_versioned():
    table = price_table()
    assert resources.files("mlstack.data").joinpath(PRICE_TABLE).is_file()
    assert PRICE_TABLE == f"prices-{table['version']}.json"
    for name, inst in table["aws"]["instances"].items():
        assert 0 < inst["spot_hourly_usd"] < inst["hourly_usd"], name


@pytest.mark.parametrize("cpu,mem,gpu,gpu_type", [
    (0.5, 512, 0, None), (2, 2048, 0, None), (2, 4096, 0, None), (8, 32768, 0, None),
    (4, 60000, 0, None), (8, 32768, 1, "nvidia-l4"), (4, 16000, 2, "nvidia-t4"),
    (16, 65536, 1, None)])
def test_picked_instance_fits_the_pod_and_is_the_cheapest_that_does(cpu, mem, gpu, gpu_type):
    res = ResourcesNode(cpu=cpu, memory_mib=mem, gpu=gpu, gpu_type=gpu_type)
    table = price_table()
    overhead = table["assumptions"]
    name = pick_instance(res)
    inst = table["aws"]["instances"][name]
    fits = {n: i for n, i in table["aws"]["instances"].items()
            if i["vcpu"] >= cpu + overhead["node_overhead_vcpu"]
            and i["memory_gib"] >= mem / 1024 + overhead["node_overhead_memory_gib"]
            and (i["gpu"] >= gpu and (gpu_type is None or i["gpu_type"] == gpu_type)
                 if gpu else i["gpu"] == 0)}
    assert name in fits
    assert inst["hourly_usd"] == min(i["hourly_usd"] for i in fits.values())


def test_no_instance_fits_is_an_error():
    with pytest.raises(SizingError, match="no instance type"):
        pick_instance(ResourcesNode(cpu=4, memory_mib=4096, gpu=1, gpu_type="nvidia-b300"))


def test_aws_estimate_scales_with_replicas_and_spot():
    fraud = system("fraud-gpu")
    estimate = estimate_monthly_cost(fraud)
    assert estimate.label == "estimate" and estimate.price_table == price_table()["version"]
    lines = {line.item: line for line in estimate.lines}
    serving = serving_nodes(fraud)
    hourly = price_table()["aws"]["instances"][serving.instance_type]["hourly_usd"]
    hours = price_table()["hours_per_month"]
    assert lines["serving nodes"].monthly_min_usd == round(
        hourly * hours * fraud.target.replicas_min, 2)
    assert lines["serving nodes"].monthly_max_usd == round(
        hourly * hours * fraud.target.replicas_max, 2)
    training = training_nodes(fraud)
    assert training.spot and "spot" in lines["training nodes"].detail
    on_demand = price_table()["aws"]["instances"][training.instance_type]["hourly_usd"]
    assert training.hourly_usd < on_demand
    assert {"EKS control plane", "S3", "DynamoDB", "KMS"} <= set(lines)
    assert 0 < estimate.monthly_min_usd < estimate.monthly_max_usd
    assert estimate.notes  # where the prices come from and what is left out


def test_local_has_no_cloud_cost_and_no_infra():
    churn = system("churn")
    estimate = estimate_monthly_cost(churn)
    assert estimate.lines == () and estimate.monthly_max_usd == 0
    assert infra_resources(churn) == []


def test_infra_resources_follow_the_target():
    fraud = system("fraud-gpu")
    assert infra_resources(fraud) == aws_resources(fraud)
    pairs = infra_resources(fraud)
    assert pairs == sorted(pairs) and len(pairs) == len(set(pairs))
    views = [v.name for v in fraud.feature_views if v.online]
    assert sum(t == "aws_dynamodb_table" for t, _ in pairs) == len(views)
    kube = [p.parent.name for p in BLUEPRINTS.glob("*/mlstack.yaml")
            if system(p.parent.name).target.kind == "kubernetes"]
    for name in kube:
        k = system(name)
        assert infra_resources(k) == kubernetes_resources(k)
        assert ("kubernetes_horizontal_pod_autoscaler_v2", "serving") in infra_resources(k)


def test_lint_and_sizing_share_one_rule():
    """MLS507 (lint) is reported exactly when codegen could not size the pod."""
    from mlstack.frontend.ir.sizing import sizing_problem

    for cpu in (0.5, 4, 63.75, 64, 100, 191.75, 192):
        for mem in (512, 200 * 1024, 255 * 1024, 256 * 1024, 2047 * 1024, 4 * 1024 ** 2):
            for gpu, gpu_type in ((0, None), (1, None), (4, "nvidia-t4"), (8, "nvidia-h100"),
                                  (9, None), (1, "nvidia-b300")):
                res = ResourcesNode(cpu=cpu, memory_mib=mem, gpu=gpu, gpu_type=gpu_type)
                try:
                    pick_instance(res)
                    fits = True
                except SizingError:
                    fits = False
                problem = sizing_problem(res)
                assert (problem is None) == fits, (res, problem)
                if problem is not None:
                    assert problem.field in ("cpu", "memory", "gpu", "gpu_type")
