"""kubernetes target: the generated cdktn app synthesizes in its isolated environment and the
Terraform JSON holds what the spec implies (asserted structurally). No terraform init here:
only hashicorp/aws is in the local provider mirror, so the kubernetes provider cannot be
installed offline. Instead every resource is checked against the provider's schema (from the
prebuilt bindings' jsii assembly, for the provider version the stack pins), and checkov scans
the workloads.

Every kubernetes blueprint is tested, plus a variant of the first with GPU training on spot and
target.compute (a KubeRay RayCluster of its own), and one that joins a running Ray cluster
(ray://: no RayCluster, only the address in the work pool's job template).

The RayCluster is a kubernetes_manifest: the provider schema checks the resource around it,
not the manifest. Its fields were validated against the openAPIV3Schema of the KubeRay v1.7.0
CRD (unknown fields made errors) when this was written; the CRD is not on a package registry,
so here the manifest is checked structurally: what the spec implies, and what the namespace's
restricted Pod Security level asks of every pod.
"""

from __future__ import annotations

import json

import pytest

from mlstack.codegen.backends.infra_model import (
    KUBERNETES_PROVIDER_VERSION,
    PUSHGATEWAY_IMAGE,
    PUSHGATEWAY_PORT,
    RAY_CLIENT_PORT,
    infra_resources,
    pushgateway_url,
    ray_address,
    runs_ray_cluster,
)
from mlstack.codegen.backends.monitoring import rule_groups
from mlstack.codegen.contract import ENV_PUSHGATEWAY_URL
from tests.conftest import BLUEPRINTS
from tests.engine.infra_fixtures import (
    Synthesized,
    blueprints_of,
    infra_cache,  # noqa: F401  (fixture)
    infra_envs,  # noqa: F401  (fixture)
    run_checkov,
    unaccepted_failures,
    variant_spec,
)
from tests.engine.infra_k8s_schema import KubernetesSchema, check_stack, load_assembly

pytestmark = [pytest.mark.engine, pytest.mark.slow]
KUBE = blueprints_of("kubernetes")
CASES = KUBE + ["gpu-variant", "ray-variant", "ray-join-variant"] if KUBE else []
RAY_COMPUTE = {"engine": "ray", "workers": 3, "worker": {"cpu": 4, "memory": "16Gi"}}


@pytest.fixture(scope="module")
def stacks(infra_envs, tmp_path_factory):  # noqa: F811
    out = {}
    tmp = tmp_path_factory.mktemp("kubernetes")
    for case in CASES:
        if case == "gpu-variant":
            spec = variant_spec(tmp / "specs", KUBE[0], "k8s-gpu", {"training": {
                "cpu": 8, "memory": "32Gi", "gpu": 2, "gpu_type": "nvidia-l4", "spot": True}})
        elif case == "ray-variant":  # the Ray workers have no GPUs: CPU training (MLS901)
            spec = variant_spec(tmp / "specs", KUBE[0], "k8s-ray", {"compute": RAY_COMPUTE})
        elif case == "ray-join-variant":
            spec = variant_spec(tmp / "specs", KUBE[0], "k8s-ray-join", {"compute": {
                **RAY_COMPUTE, "address": "ray://ray-head.data-platform.svc:10001"}})
        else:
            spec = BLUEPRINTS / case / "mlstack.yaml"
        out[case] = Synthesized(spec, tmp / case / "out")
    return out


def _container(resource: dict) -> dict:
    return resource["spec"]["template"]["spec"]["container"][0]


def _cpu_quantity(cpu: float) -> str:
    return f"{round(cpu * 1000)}m"


@pytest.mark.parametrize("case", CASES)
def test_synth_has_the_resources_the_spec_implies(stacks, case):
    s = stacks[case]
    system, doc, t = s.system, s.json, s.system.target
    assert s.resource_pairs() == infra_resources(system)
    assert doc["terraform"]["required_providers"]["kubernetes"] == {
        "source": "hashicorp/kubernetes", "version": KUBERNETES_PROVIDER_VERSION}
    assert s.resources("kubernetes_namespace_v1")["namespace"]["metadata"]["name"] == t.namespace

    serving = s.resources("kubernetes_deployment_v1")["serving"]
    assert serving["metadata"]["namespace"] == t.namespace
    assert serving["spec"]["replicas"] == str(t.replicas_min)
    container = _container(serving)
    amounts = {"cpu": _cpu_quantity(t.serving.cpu), "memory": f"{t.serving.memory_mib}Mi"}
    assert container["resources"] == {"requests": amounts, "limits": amounts}
    assert container["port"][0]["container_port"] == 3000
    assert container["readiness_probe"]["http_get"]["path"] == "/readyz"
    assert container["liveness_probe"]["http_get"]["path"] == "/livez"
    sc = container["security_context"]
    assert sc["run_as_non_root"] and sc["read_only_root_filesystem"]
    assert not sc["allow_privilege_escalation"] and sc["capabilities"]["drop"] == ["ALL"]
    pod = serving["spec"]["template"]["spec"]
    assert pod["security_context"]["seccomp_profile"]["type"] == "RuntimeDefault"
    assert pod["automount_service_account_token"] is False
    env = {e["name"]: e for e in container["env"]}
    assert env["MLSTACK_FEAST_REGISTRY_URL"]["value_from"]["secret_key_ref"]["key"] == "url"
    if t.online_store == "redis":
        assert env["MLSTACK_REDIS_CONNECTION"]["value"] == (
            f"{system.name}-redis.{t.namespace}.svc:6379")

    hpa = s.resources("kubernetes_horizontal_pod_autoscaler_v2")["serving"]["spec"]
    assert (hpa["min_replicas"], hpa["max_replicas"]) == (t.replicas_min, t.replicas_max)
    assert hpa["scale_target_ref"]["name"] == serving["metadata"]["name"]
    targets = {m["type"]: m for m in hpa["metric"]}
    if t.autoscale_target_rps_per_replica:
        assert targets["Pods"]["pods"]["target"]["average_value"] == str(
            t.autoscale_target_rps_per_replica)
    service = s.resources("kubernetes_service_v1")["serving"]["spec"]
    assert service["selector"] == serving["spec"]["selector"]["match_labels"]

    if t.online_store == "redis":
        redis = s.resources("kubernetes_deployment_v1")["redis"]
        assert _container(redis)["security_context"]["run_as_non_root"] is True
        ingress = s.resources("kubernetes_network_policy_v1")["redis_ingress"]["spec"]
        allowed = ingress["ingress"][0]["from"][0]["pod_selector"]["match_labels"]
        labels = serving["spec"]["template"]["metadata"]["labels"]
        assert allowed.items() <= labels.items()  # the service may reach Redis

    worker = _container(s.resources("kubernetes_deployment_v1")["prefect_worker"])
    assert worker["command"][:3] == ["prefect", "worker", "start"]
    assert "kubernetes" in worker["command"]

    template = json.loads(s.resources("kubernetes_config_map_v1")["training_job_template"]
                          ["data"]["base-job-template.json"])
    job_pod = template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]
    job_container = job_pod["containers"][0]
    tolerations = {tol["key"] for tol in job_pod["tolerations"]}
    if t.training.gpu:
        assert job_container["resources"]["limits"]["nvidia.com/gpu"] == str(t.training.gpu)
        assert job_pod["nodeSelector"]["nvidia.com/gpu.present"] == "true"
        assert job_pod["nodeSelector"]["mlstack/gpu-type"] == t.training.gpu_type
        assert "nvidia.com/gpu" in tolerations
    else:
        assert "nvidia.com/gpu" not in job_container["resources"]["limits"]
        assert "nvidia.com/gpu" not in tolerations
    assert ("mlstack/spot" in tolerations) == t.training.spot
    assert job_container["resources"]["requests"]["cpu"] == _cpu_quantity(t.training.cpu)

    rules = s.resources("kubernetes_manifest")["prometheus_rules"]["manifest"]
    assert rules["kind"] == "PrometheusRule"
    assert rules["spec"]["groups"] == rule_groups(system)
    _check_pushgateway(s, template["job_configuration"]["job_manifest"]["spec"]["template"])

    env = {e["name"]: e.get("value") for e in job_container["env"]}
    if t.compute is None:
        assert "MLSTACK_RAY_ADDRESS" not in env
    else:  # the flows the work pool runs reach the Ray cluster there
        assert env["MLSTACK_RAY_ADDRESS"] == ray_address(system)
    assert ("ray_cluster" in s.resources("kubernetes_manifest")) == runs_ray_cluster(system)


def _check_pushgateway(s, job: dict) -> None:
    """The monitoring flow's gauges: the work pool's jobs get the Pushgateway's URL, which is
    its Service in the namespace; the gateway is pinned, sized and as locked down as the other
    workloads; Prometheus scrapes it with honor_labels (the ServiceMonitor's honorLabels, the
    chart's pushgateway job by the Service's annotation); only the jobs and Prometheus's
    namespace reach it."""
    system, t = s.system, s.system.target
    env = {e["name"]: e.get("value") for e in job["spec"]["containers"][0]["env"]}
    assert env[ENV_PUSHGATEWAY_URL] == pushgateway_url(system) == (
        f"http://{system.name}-pushgateway.{t.namespace}.svc:{PUSHGATEWAY_PORT}")
    gateway = s.resources("kubernetes_deployment_v1")["pushgateway"]
    container = _container(gateway)
    assert container["image"] == PUSHGATEWAY_IMAGE and ":v" in PUSHGATEWAY_IMAGE
    assert container["port"][0]["container_port"] == PUSHGATEWAY_PORT
    assert container["resources"]["limits"] == container["resources"]["requests"]
    assert container["readiness_probe"]["http_get"]["path"] == "/-/ready"
    assert container["liveness_probe"]["http_get"]["path"] == "/-/healthy"
    sc = container["security_context"]
    assert sc["run_as_non_root"] and sc["read_only_root_filesystem"]
    assert not sc["allow_privilege_escalation"] and sc["capabilities"]["drop"] == ["ALL"]
    pod = gateway["spec"]["template"]["spec"]
    assert pod["security_context"]["seccomp_profile"]["type"] == "RuntimeDefault"
    assert pod["automount_service_account_token"] is False
    # the persistence file is on a writable volume (the root filesystem is read-only)
    [persist] = [a for a in container["args"] if a.startswith("--persistence.file=")]
    [mount] = container["volume_mount"]
    assert persist.split("=", 1)[1].startswith(mount["mount_path"] + "/")
    service = s.resources("kubernetes_service_v1")["pushgateway"]
    assert service["metadata"]["name"] == f"{system.name}-pushgateway"
    assert service["metadata"]["annotations"] == {"prometheus.io/probe": "pushgateway"}
    assert service["spec"]["selector"] == gateway["spec"]["selector"]["match_labels"]
    assert service["spec"]["port"][0]["port"] == PUSHGATEWAY_PORT
    monitor = s.resources("kubernetes_manifest")["pushgateway_monitor"]["manifest"]
    assert (monitor["apiVersion"], monitor["kind"]) == ("monitoring.coreos.com/v1",
                                                        "ServiceMonitor")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= (
        service["metadata"]["labels"].items())
    assert monitor["spec"]["endpoints"] == [{"port": service["spec"]["port"][0]["name"],
                                             "path": "/metrics", "honorLabels": True}]
    ingress = s.resources("kubernetes_network_policy_v1")["pushgateway_ingress"]["spec"]
    assert ingress["pod_selector"]["match_labels"] == service["spec"]["selector"]
    sources = [rule["from"][0] for rule in ingress["ingress"]]
    [jobs] = [src["pod_selector"]["match_labels"] for src in sources if "pod_selector" in src]
    assert jobs.items() <= job["metadata"]["labels"].items()  # the flows' jobs may push
    assert {"namespace_selector": {"match_labels": {
        "kubernetes.io/metadata.name": "${var.prometheus_namespace}"}}} in sources
    assert s.json["variable"]["prometheus_namespace"]["default"] == "monitoring"


def _restricted(pod: dict) -> None:
    """What the namespace's enforced 'restricted' Pod Security level asks of a pod."""
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    for container in pod["containers"]:
        sc = container["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"]


@pytest.mark.parametrize("case", ["ray-variant"] if KUBE else [])
def test_ray_cluster_is_what_target_compute_says(stacks, case):
    s = stacks[case]
    system, t = s.system, s.system.target
    c = t.compute
    cluster = s.resources("kubernetes_manifest")["ray_cluster"]
    manifest = cluster["manifest"]
    assert (manifest["apiVersion"], manifest["kind"]) == ("ray.io/v1", "RayCluster")
    assert manifest["metadata"]["namespace"] == t.namespace
    spec = manifest["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    _restricted({"securityContext": {"runAsNonRoot": True,
                                     "seccompProfile": {"type": "RuntimeDefault"}},
                 "containers": [spec["autoscalerOptions"]]})

    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"  # tasks go to the workers
    head_pod = head["template"]["spec"]
    _restricted(head_pod)
    head_container = head_pod["containers"][0]
    assert head_container["image"] == "${var.service_image}"  # the serving image, as served
    assert {"name": "client", "containerPort": RAY_CLIENT_PORT} in head_container["ports"]

    [group] = spec["workerGroupSpecs"]
    assert (group["minReplicas"], group["maxReplicas"], group["replicas"]) == (0, c.workers, 0)
    worker_pod = group["template"]["spec"]
    _restricted(worker_pod)
    worker = worker_pod["containers"][0]
    amounts = {"cpu": _cpu_quantity(c.worker.cpu), "memory": f"{c.worker.memory_mib}Mi"}
    assert worker["resources"] == {"requests": amounts, "limits": amounts}
    assert worker["image"] == head_container["image"]
    # the aws target's Ray node group carries this label and taint (test_infra_aws)
    assert worker_pod["nodeSelector"] == {"mlstack/role": "ray-worker"}
    assert worker_pod["tolerations"] == [{"key": "mlstack/ray-worker", "operator": "Equal",
                                          "value": "true", "effect": "NoSchedule"}]
    assert worker_pod["serviceAccountName"] == f"{system.name}-training"
    env = {e["name"] for e in worker["env"]}
    assert "MLSTACK_FEAST_REGISTRY_URL" in env  # the workers run Feast's Ray engine
    # the autoscaler owns the replica count: terraform does not fight it
    assert "spec.workerGroupSpecs[0].replicas" in cluster["computed_fields"]

    service = s.resources("kubernetes_service_v1")["ray_head"]
    assert ray_address(system) == (f"ray://{service['metadata']['name']}.{t.namespace}.svc:"
                                   f"{service['spec']['port'][0]['port']}")
    assert service["spec"]["selector"] == {"ray.io/cluster": manifest["metadata"]["name"],
                                           "ray.io/node-type": "head"}
    ingress = s.resources("kubernetes_network_policy_v1")["ray_ingress"]["spec"]["ingress"]
    job_labels = {"mlstack/role": "training"}
    assert any(rule["from"][0]["pod_selector"]["match_labels"] == job_labels
               and rule["ports"][0]["port"] == str(RAY_CLIENT_PORT) for rule in ingress)


@pytest.fixture(scope="module")
def schema(infra_cache):  # noqa: F811
    assembly = load_assembly(infra_cache)
    assert f"hashicorp/kubernetes provider version {KUBERNETES_PROVIDER_VERSION}" in (
        assembly["readme"]["markdown"])
    return KubernetesSchema(assembly)


@pytest.mark.parametrize("case", CASES)
def test_every_resource_matches_the_provider_schema(stacks, schema, case):
    assert check_stack(schema, stacks[case].json) == []


def test_schema_check_catches_unknown_and_missing_attributes(stacks, schema):
    doc = json.loads(json.dumps(stacks[CASES[0]].json))
    container = doc["resource"]["kubernetes_deployment_v1"]["serving"]["spec"]["template"][
        "spec"]["container"][0]
    container["imagee"] = container.pop("image")
    errors = check_stack(schema, doc)
    assert any(e.endswith("container[0].imagee: not an attribute or block of the schema")
               for e in errors)
    del container["name"]
    assert any(e.endswith("container[0].name: required, missing") for e in check_stack(
        schema, doc))


@pytest.mark.parametrize("case", CASES)
def test_checkov_accepts_only_reasoned_skips(stacks, infra_envs, case):  # noqa: F811
    report = run_checkov(infra_envs["checkov"], stacks[case].result.path)
    assert report["summary"]["parsing_errors"] == 0
    assert report["summary"]["passed"] > 30  # the CKV_K8S_* checks ran on the workloads
    assert unaccepted_failures(report) == []
