"""What the infra app of a system contains, computed from the IR on the mlstack side.

`infra_config(system)` is the data the generated cdktn app reads (written to infra/config.py as
literals); `infra_resources(system)` lists the (terraform type, name) pairs the synthesized
stack holds, for `mlstack plan` and for the tests that compare it with the real synth.
"""

from __future__ import annotations

from typing import cast

from mlstack.codegen.backends.airflow_kubernetes import airflow_config
from mlstack.codegen.backends.infra_sizing import (
    price_table,
    ray_worker_nodes,
    serving_nodes,
    training_nodes,
)
from mlstack.frontend.ir.nodes import ComputeNode, SystemIR

AWS_PROVIDER_VERSION = "5.100.0"  # the provider version the stack is pinned to (and planned with)
KUBERNETES_PROVIDER_VERSION = "3.4.0"  # the schema the tests check the stack against
KUBERNETES_VERSION = "1.33"
HELM_PROVIDER_VERSION = "3.3.0"  # the schema the tests check the Airflow release against
SERVICE_PORT = 3000  # BentoML's default HTTP port
REDIS_IMAGE = "redis:7.4.2-alpine"
PREFECT_IMAGE = "prefecthq/prefect:3.4.25-python3.11-kubernetes"
# the kubernetes target's Pushgateway: the monitoring flow's jobs push its report's gauges
# there (mlstack.runtime.pushgateway), Prometheus scrapes it with honor_labels
PUSHGATEWAY_IMAGE = "prom/pushgateway:v1.11.3"
PUSHGATEWAY_PORT = 9091
BUCKETS = ("offline_store", "artifacts")
GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NO_SCHEDULE"}
# target.compute on a cluster target: a KubeRay RayCluster (ray.io/v1). Its schema is the CRD
# of KubeRay v1.7.0, the operator the cluster must run (as it runs the Prometheus Operator).
KUBERAY_VERSION = "v1.7.0"
RAY_VERSION = "2.60.0"  # the Ray the service image installs: head, workers and clients agree
RAY_CLIENT_PORT = 10001
# the head schedules no tasks (num-cpus 0): GCS, dashboard, the Ray Client server and the
# autoscaler's sidecar only
RAY_HEAD = {"cpu": 1.0, "memory_mib": 4096, "gpu": 0, "gpu_type": None}
RAY_WORKER_ROLE = "ray-worker"  # node label mlstack/role and taint mlstack/ray-worker


def stack_name(system: SystemIR) -> str:
    return f"{system.name}-{system.target.kind}"


def pushgateway_url(system: SystemIR) -> str:
    """Where the kubernetes stack's Pushgateway answers in the cluster: its Service in the
    target's namespace (the flows' jobs get it as MLSTACK_PUSHGATEWAY_URL)."""
    return (f"http://{system.name}-pushgateway.{system.target.namespace}.svc:"
            f"{PUSHGATEWAY_PORT}")


def work_pool(system: SystemIR) -> str:
    """The Prefect Kubernetes work pool the worker polls."""
    return f"{system.name}-kubernetes"


def online_views(system: SystemIR) -> tuple[str, ...]:
    return tuple(sorted(v.name for v in system.feature_views if v.online))


def _slos(system: SystemIR) -> dict:
    s = system.slos
    return {k: v for k, v in (("p50_ms", s.p50_ms), ("p95_ms", s.p95_ms), ("p99_ms", s.p99_ms),
                              ("availability", s.availability), ("error_rate", s.error_rate),
                              ("throughput_rps", s.throughput_rps),
                              ("feature_freshness_seconds", s.feature_freshness_seconds))
            if v is not None}


def _pod(res) -> dict:
    return {"cpu": res.cpu, "memory_mib": res.memory_mib, "gpu": res.gpu,
            "gpu_type": res.gpu_type}


def ray_cluster_name(system: SystemIR) -> str:
    return f"{system.name}-ray"


def ray_head_service(system: SystemIR) -> str:
    return f"{system.name}-ray-head"


def runs_ray_cluster(system: SystemIR) -> bool:
    """The target runs the Ray cluster itself (address local); a ray:// address is joined."""
    c = system.target.compute
    return c is not None and c.address == "local" and system.target.kind in ("aws", "kubernetes")


def ray_address(system: SystemIR) -> str | None:
    """What the flows connect to (MLSTACK_RAY_ADDRESS): the head Service's Ray Client port in
    the target's namespace, or the spec's ray:// address."""
    c = system.target.compute
    if c is None:
        return None
    if c.address != "local":
        return c.address
    return (f"ray://{ray_head_service(system)}.{system.target.namespace}.svc:"
            f"{RAY_CLIENT_PORT}")


def _ray_config(system: SystemIR) -> dict:
    c = system.target.compute
    if not runs_ray_cluster(system):
        return {"address": ray_address(system), "managed": False}
    return {"address": ray_address(system), "managed": True,
            "cluster": ray_cluster_name(system), "head_service": ray_head_service(system),
            "client_port": RAY_CLIENT_PORT, "ray_version": RAY_VERSION,
            "kuberay_version": KUBERAY_VERSION, "head": dict(RAY_HEAD),
            "worker": _pod(cast(ComputeNode, c).worker), "workers_min": 0,
            "workers_max": cast(ComputeNode, c).workers,
            "node_role": RAY_WORKER_ROLE}


def image_tag(system: SystemIR) -> str:
    """The service image's tag: the spec hash, and the user files' hashes when the spec names
    any (the image holds their copies, and a tag is immutable in the registry)."""
    if not system.user_files:
        return system.spec_hash[:12]
    import hashlib

    parts = [system.spec_hash, *(f"{f.path}:{f.sha256}" for f in system.user_files)]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]


def infra_config(system: SystemIR) -> dict:
    t = system.target
    config = {
        "system": system.name,
        "project": system.python_name,
        "target": t.kind,
        "stack": stack_name(system),
        "namespace": t.namespace,
        "online_store": t.online_store,
        "online_views": online_views(system),
        "service_port": SERVICE_PORT,
        "service_image": f"{system.name}-service:{image_tag(system)}",
        "serving": {**_pod(t.serving), "replicas_min": t.replicas_min,
                    "replicas_max": t.replicas_max,
                    "target_rps_per_replica": t.autoscale_target_rps_per_replica},
        "training": {**_pod(t.training), "spot": t.training.spot},
        "slos": _slos(system),
    }
    if t.kind == "aws":
        serving, training = serving_nodes(system), training_nodes(system)
        config.update(
            region=t.region, buckets=BUCKETS,
            redis_node_type=price_table()["aws"]["elasticache_node"]["type"], aws_provider_version=AWS_PROVIDER_VERSION,
            kubernetes_version=KUBERNETES_VERSION,
            serving_nodes={"instance_type": serving.instance_type, "min": serving.min_nodes,
                           "max": serving.max_nodes, "spot": False, "gpu": serving.gpu > 0},
            training_nodes={"instance_type": training.instance_type, "min": 0, "max": 1,
                            "spot": training.spot, "gpu": training.gpu > 0})
        if runs_ray_cluster(system):
            ray = ray_worker_nodes(system)
            config.update(ray_nodes={"instance_type": ray.instance_type, "min": ray.min_nodes,
                                     "max": ray.max_nodes, "role": RAY_WORKER_ROLE})
    if t.kind == "kubernetes":
        config.update(kubernetes_provider_version=KUBERNETES_PROVIDER_VERSION,
                      redis_image=REDIS_IMAGE,
                      pushgateway_image=PUSHGATEWAY_IMAGE, pushgateway_port=PUSHGATEWAY_PORT,
                      pushgateway_url=pushgateway_url(system),
                      registry_secret=f"{system.name}-feast-registry")
        # the stack provisions only the orchestrator that runs the pipelines
        if t.orchestrator == "prefect":
            config.update(prefect_image=PREFECT_IMAGE, work_pool=work_pool(system))
        elif t.orchestrator == "airflow":
            config.update(airflow=airflow_config(system),
                          helm_provider_version=HELM_PROVIDER_VERSION)
        if t.compute is not None:  # absent without compute: config.py stays as it was
            config.update(ray=_ray_config(system))
    return config


def aws_resources(system: SystemIR) -> list[tuple[str, str]]:
    t = system.target
    out = [("aws_kms_key", "key"), ("aws_kms_alias", "key_alias"),
           ("aws_sns_topic", "alerts")]
    for b in BUCKETS:
        out += [("aws_s3_bucket", b), ("aws_s3_bucket_versioning", f"{b}_versioning"),
                ("aws_s3_bucket_server_side_encryption_configuration", f"{b}_encryption"),
                ("aws_s3_bucket_public_access_block", f"{b}_public_access"),
                ("aws_s3_bucket_lifecycle_configuration", f"{b}_lifecycle")]
    if t.online_store == "dynamodb":
        out += [("aws_dynamodb_table", f"online_{v}") for v in online_views(system)]
    else:
        out += [("aws_security_group", "redis"), ("aws_elasticache_subnet_group", "redis_subnets"),
                ("aws_elasticache_replication_group", "online_store")]
    out += [("aws_ecr_repository", "service"), ("aws_ecr_lifecycle_policy", "service_lifecycle")]
    out += [("aws_iam_role", "cluster_role"),
            ("aws_iam_role_policy_attachment", "cluster_policy"),
            ("aws_cloudwatch_log_group", "cluster_logs"), ("aws_eks_cluster", "cluster"),
            ("aws_iam_role", "node_role"), ("aws_eks_node_group", "serving_nodes"),
            ("aws_eks_node_group", "training_nodes"), ("aws_eks_addon", "pod_identity_agent")]
    if runs_ray_cluster(system):
        out.append(("aws_eks_node_group", "ray_workers"))
    out += [("aws_iam_role_policy_attachment", f"node_role_{p}")
            for p in ("worker", "cni", "registry")]
    for who in ("serving", "training"):
        out += [("aws_iam_role", f"{who}_pods"), ("aws_iam_role_policy", f"{who}_pods_access"),
                ("aws_eks_pod_identity_association", f"{who}_pods_identity")]
    out += [("aws_cloudwatch_metric_alarm", a) for a in slo_alarms(system)]
    return sorted(out)


def slo_alarms(system: SystemIR) -> tuple[str, ...]:
    s = system.slos
    names = []
    if s.p99_ms is not None:
        names.append("slo_latency_p99")
    if s.error_rate is not None:
        names.append("slo_error_rate")
    if s.availability is not None:
        names.append("slo_availability")
    if s.feature_freshness_seconds is not None:
        names.append("slo_feature_freshness")
    return tuple(names)


def kubernetes_resources(system: SystemIR) -> list[tuple[str, str]]:
    t = system.target
    out = [("kubernetes_namespace_v1", "namespace"),
           ("kubernetes_network_policy_v1", "default_deny"),
           ("kubernetes_network_policy_v1", "serving_ingress"),
           ("kubernetes_service_account_v1", "serving"),
           ("kubernetes_deployment_v1", "serving"), ("kubernetes_service_v1", "serving"),
           ("kubernetes_horizontal_pod_autoscaler_v2", "serving"),
           ("kubernetes_pod_disruption_budget_v1", "serving"),
           ("kubernetes_service_account_v1", "training"),
           ("kubernetes_manifest", "prometheus_rules"),
           ("kubernetes_deployment_v1", "pushgateway"), ("kubernetes_service_v1", "pushgateway"),
           ("kubernetes_network_policy_v1", "pushgateway_ingress"),
           ("kubernetes_manifest", "pushgateway_monitor")]
    if t.online_store == "redis":
        out += [("kubernetes_deployment_v1", "redis"), ("kubernetes_service_v1", "redis"),
                ("kubernetes_network_policy_v1", "redis_ingress")]
    if runs_ray_cluster(system):
        out += [("kubernetes_manifest", "ray_cluster"), ("kubernetes_service_v1", "ray_head"),
                ("kubernetes_network_policy_v1", "ray_ingress")]
    if t.orchestrator == "prefect":  # its worker and its work pool's job template
        out += [(type_, "prefect_worker") for type_ in (
            "kubernetes_service_account_v1", "kubernetes_role_v1",
            "kubernetes_role_binding_v1", "kubernetes_deployment_v1")]
        out.append(("kubernetes_config_map_v1", "training_job_template"))
    elif t.orchestrator == "airflow":  # the chart's release, its DAGs, the steps' volume
        out += [("helm_release", "airflow"), ("kubernetes_config_map_v1", "airflow_dags"),
                ("kubernetes_persistent_volume_claim_v1", "pipeline_data")]
    return sorted(out)


def infra_resources(system: SystemIR) -> list[tuple[str, str]]:
    """(terraform resource type, name) of every resource the infra stack creates, sorted."""
    if system.target.kind == "aws":
        return aws_resources(system)
    if system.target.kind == "kubernetes":
        return kubernetes_resources(system)
    return []
