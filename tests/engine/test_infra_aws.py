"""aws target: the generated cdktn app synthesizes in its isolated environment, the Terraform
JSON holds what the spec implies, `terraform init` (local provider mirror), `validate` and an
offline `plan` succeed with the plan's resource count equal to the IR's, and checkov finds
nothing that the generated code does not accept with a reason.

Every aws blueprint is tested, plus a variant of the first with a Redis online store,
on-demand CPU training and target.compute (the other branches of the stack: a Ray worker node
group).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from mlstack.codegen.backends.infra_model import (
    AWS_PROVIDER_VERSION,
    infra_resources,
    online_views,
    runs_ray_cluster,
    slo_alarms,
)
from mlstack.codegen.backends.infra_sizing import (
    ray_worker_nodes,
    serving_nodes,
    training_nodes,
)
from mlstack.ops.cluster.terraform import deploy_infra, mirror_cli_config, plan_counts
from tests.conftest import BLUEPRINTS
from tests.engine.infra_fixtures import (
    TIMINGS,
    Synthesized,
    blueprints_of,
    infra_cache,  # noqa: F401  (fixture)
    infra_envs,  # noqa: F401  (fixture)
    run_checkov,
    unaccepted_failures,
    variant_spec,
)

pytestmark = [pytest.mark.engine, pytest.mark.slow]
AWS = blueprints_of("aws")
CASES = AWS + ["redis-variant"] if AWS else []
MIRROR = Path(os.environ.get("MLSTACK_TF_PROVIDER_MIRROR", "/opt/tf-plugins"))
SUBNETS = ["subnet-0123456789abcdef0", "subnet-0fedcba9876543210"]


@pytest.fixture(scope="module")
def stacks(infra_envs, tmp_path_factory):  # noqa: F811
    out = {}
    tmp = tmp_path_factory.mktemp("aws")
    for case in CASES:
        if case == "redis-variant":
            spec = variant_spec(tmp / "specs", AWS[0], "aws-redis",
                                {"online_store": "redis",
                                 "training": {"cpu": 4, "memory": "16Gi", "spot": False},
                                 "compute": {"engine": "ray", "workers": 6,
                                             "worker": {"cpu": 8, "memory": "32Gi"}}})
        else:
            spec = BLUEPRINTS / case / "mlstack.yaml"
        out[case] = Synthesized(spec, tmp / case / "out")
    return out


@pytest.mark.parametrize("case", CASES)
def test_synth_has_the_resources_the_spec_implies(stacks, case):
    s = stacks[case]
    system, doc = s.system, s.json
    assert s.result.stack == f"{system.name}-aws"
    assert s.resource_pairs() == infra_resources(system)
    # provider pinned to the mirrored version; backend path relative (deterministic)
    assert doc["terraform"]["required_providers"]["aws"]["version"] == AWS_PROVIDER_VERSION
    assert not Path(doc["terraform"]["backend"]["local"]["path"]).is_absolute()
    assert doc["provider"]["aws"][0]["region"] == system.target.region

    # storage: every bucket versioned, KMS-encrypted, public access blocked
    buckets = s.resources("aws_s3_bucket")
    assert set(buckets) == {"offline_store", "artifacts"}
    for name in buckets:
        v = s.resources("aws_s3_bucket_versioning")[f"{name}_versioning"]
        assert v["versioning_configuration"]["status"] == "Enabled"
        enc = s.resources("aws_s3_bucket_server_side_encryption_configuration")[
            f"{name}_encryption"]["rule"][0]["apply_server_side_encryption_by_default"]
        assert enc["sse_algorithm"] == "aws:kms" and "aws_kms_key.key" in enc[
            "kms_master_key_id"]
        block = s.resources("aws_s3_bucket_public_access_block")[f"{name}_public_access"]
        assert all(block[k] is True for k in ("block_public_acls", "block_public_policy",
                                              "ignore_public_acls", "restrict_public_buckets"))
    assert s.resources("aws_kms_key")["key"]["enable_key_rotation"] is True

    # online store: one Feast-named DynamoDB table per online view, or ElastiCache Redis
    if system.target.online_store == "dynamodb":
        tables = s.resources("aws_dynamodb_table")
        assert sorted(t["name"] for t in tables.values()) == [
            f"{system.python_name}.{v}" for v in online_views(system)]
        for t in tables.values():
            assert t["hash_key"] == "entity_id" and t["billing_mode"] == "PAY_PER_REQUEST"
            assert t["server_side_encryption"]["enabled"] is True
            assert t["point_in_time_recovery"]["enabled"] is True
        assert "aws_elasticache_replication_group" not in s.resources()
    else:
        redis = s.resources("aws_elasticache_replication_group")["online_store"]
        assert redis["at_rest_encryption_enabled"] == "true"
        assert redis["transit_encryption_enabled"] is True
        assert redis["auth_token"] == "${var.redis_auth_token}"
        assert doc["variable"]["redis_auth_token"]["sensitive"] is True
        assert "aws_dynamodb_table" not in s.resources()

    # EKS: private endpoint, secrets encrypted, node groups sized from the spec
    cluster = s.resources("aws_eks_cluster")["cluster"]
    assert cluster["vpc_config"]["endpoint_public_access"] is False
    assert cluster["encryption_config"]["resources"] == ["secrets"]
    groups = s.resources("aws_eks_node_group")
    serving, training = groups["serving_nodes"], groups["training_nodes"]
    expected_serving = serving_nodes(system)
    assert serving["instance_types"] == [expected_serving.instance_type]
    assert serving["scaling_config"] == {"min_size": system.target.replicas_min,
                                         "max_size": system.target.replicas_max,
                                         "desired_size": system.target.replicas_min}
    assert serving["capacity_type"] == "ON_DEMAND"
    expected_training = training_nodes(system)
    assert training["instance_types"] == [expected_training.instance_type]
    assert training["scaling_config"]["min_size"] == 0
    assert training["capacity_type"] == ("SPOT" if system.target.training.spot else "ON_DEMAND")
    taints = {t["key"] for t in training["taint"]}
    if system.target.training.gpu:
        assert expected_training.gpu >= system.target.training.gpu
        assert expected_training.gpu_type == system.target.training.gpu_type
        assert training["ami_type"] == "AL2023_x86_64_NVIDIA"
        assert "nvidia.com/gpu" in taints
    else:
        assert training["ami_type"] == "AL2023_x86_64_STANDARD"
        assert "nvidia.com/gpu" not in taints

    # target.compute: a node group for the Ray workers, from zero to the spec's workers, that
    # only the RayCluster's worker group selects and tolerates (test_infra_kubernetes)
    assert ("ray_workers" in groups) == runs_ray_cluster(system)
    if runs_ray_cluster(system):
        ray, compute = groups["ray_workers"], system.target.compute
        expected_ray = ray_worker_nodes(system)
        assert ray["instance_types"] == [expected_ray.instance_type]
        assert expected_ray.vcpu >= compute.worker.cpu
        assert expected_ray.memory_gib * 1024 >= compute.worker.memory_mib
        assert ray["scaling_config"] == {"min_size": 0, "max_size": compute.workers,
                                         "desired_size": 0}
        assert ray["labels"] == {"mlstack/role": "ray-worker"}
        assert ray["taint"] == [{"key": "mlstack/ray-worker", "value": "true",
                                 "effect": "NO_SCHEDULE"}]

    # IAM: pod roles trusted by EKS Pod Identity only, no wildcard actions or resources
    for who in ("serving", "training"):
        role = s.resources("aws_iam_role")[f"{who}_pods"]
        trust = json.loads(role["assume_role_policy"])
        assert trust["Statement"][0]["Principal"] == {"Service": "pods.eks.amazonaws.com"}
        policy = json.loads(s.resources("aws_iam_role_policy")[f"{who}_pods_access"]["policy"])
        for statement in policy["Statement"]:
            assert all("*" != a and not a.endswith(":*") for a in statement["Action"])
            assert "*" not in statement["Resource"]
    serving_actions = {a for st in json.loads(s.resources("aws_iam_role_policy")[
        "serving_pods_access"]["policy"])["Statement"] for a in st["Action"]}
    assert not {"s3:PutObject", "dynamodb:PutItem", "dynamodb:BatchWriteItem"} & serving_actions

    # CloudWatch alarms: one per SLO, thresholds from the spec
    alarms = s.resources("aws_cloudwatch_metric_alarm")
    assert sorted(alarms) == sorted(slo_alarms(system))
    if system.slos.p99_ms is not None:
        assert alarms["slo_latency_p99"]["threshold"] == system.slos.p99_ms / 1000
        assert alarms["slo_latency_p99"]["extended_statistic"] == "p99"
    if system.slos.error_rate is not None:
        assert alarms["slo_error_rate"]["threshold"] == system.slos.error_rate
    for alarm in alarms.values():
        assert alarm["alarm_actions"] == ["${aws_sns_topic.alerts.arn}"]


def test_synth_is_deterministic(stacks, infra_cache):  # noqa: F811
    from mlstack.ops.cluster.infra_env import synth

    s = stacks[CASES[0]]
    first = s.result.path.read_bytes()
    assert synth(s.out).path.read_bytes() == first
    for machine_path in (str(s.out), str(infra_cache), str(Path.home())):
        assert machine_path.encode() not in first


@pytest.fixture(scope="module")
def terraform_env(tmp_path_factory):
    """An offline terraform run's environment; scripts/test.sh checks for the tool and mirror."""
    if shutil.which("terraform") is None and shutil.which("tofu") is None:
        pytest.fail("neither terraform nor tofu is installed", pytrace=False)
    if not any(MIRROR.glob("registry.terraform.io/hashicorp/aws/*/*/terraform-provider-aws*")):
        pytest.fail(f"no hashicorp/aws provider in the local mirror {MIRROR} "
                    "($MLSTACK_TF_PROVIDER_MIRROR)", pytrace=False)
    tmp = tmp_path_factory.mktemp("terraform")
    config = mirror_cli_config(MIRROR, tmp / "cli.tfrc")
    return {**os.environ, "TF_CLI_CONFIG_FILE": str(config), "AWS_ACCESS_KEY_ID": "AKIAFAKEFAKEFAKE",
            "AWS_SECRET_ACCESS_KEY": "fake", "AWS_EC2_METADATA_DISABLED": "true",
            "TF_PLUGIN_CACHE_DIR": "", "CHECKPOINT_DISABLE": "1"}


OFFLINE = {"provider": {"aws": [{"skip_credentials_validation": True,
                                 "skip_requesting_account_id": True,
                                 "skip_metadata_api_check": "true",
                                 "skip_region_validation": True}]}}


@pytest.mark.parametrize("case", CASES)
def test_terraform_init_validate_plan_offline(stacks, terraform_env, case, tmp_path):
    s = stacks[case]
    result = deploy_infra(s.out, dry_run=True, env=terraform_env, override=OFFLINE,
                          synthesized=s.result,
                          variables={"subnet_ids": SUBNETS, "vpc_id": "vpc-0123456789abcdef0",
                                     "redis_auth_token": "not-a-real-token-0123456789"}
                          if s.system.target.online_store == "redis" else
                          {"subnet_ids": SUBNETS},
                          state_path=tmp_path / "state.tfstate")
    # a dry run times each step it ran, and applies nothing
    assert sorted(result.seconds) == ["init", "plan", "synth"]
    assert all(seconds >= 0 for seconds in result.seconds.values())
    for step, seconds in result.seconds.items():
        TIMINGS[f"terraform {step} {s.system.name}"] = seconds
    tool = shutil.which("terraform") or shutil.which("tofu")
    done = subprocess.run([tool, "validate", "-json", "-no-color"], cwd=result.stack_dir,
                          env=terraform_env, capture_output=True, text=True)
    assert json.loads(done.stdout)["valid"] is True, done.stdout
    assert not result.applied
    assert result.plan.update == result.plan.delete == result.plan.replace == ()
    expected = infra_resources(s.system)
    assert len(result.plan.create) == len(expected)
    assert sorted(result.plan.create) == sorted(f"{t}.{n}" for t, n in expected)
    assert sum(plan_counts(result.plan).values()) == len(expected)


@pytest.mark.parametrize("case", CASES)
def test_checkov_accepts_only_reasoned_skips(stacks, infra_envs, case):  # noqa: F811
    report = run_checkov(infra_envs["checkov"], stacks[case].result.path)
    assert report["summary"]["parsing_errors"] == 0
    assert report["summary"]["passed"] > 50
    assert unaccepted_failures(report) == []


@pytest.fixture(scope="module", autouse=True)
def report_timings():
    """Prints what the module's tests measured when they are done (pytest -s shows it)."""
    yield
    for key, seconds in sorted(TIMINGS.items()):
        print(f"infra timing: {key}: {seconds:.1f} s")
