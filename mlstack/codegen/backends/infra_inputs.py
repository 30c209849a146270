"""Which config values each Terraform resource of the generated stack is built from: what
`mlstack plan` compares, property by property, to say which resources change.

Every resource of a stack reads the target-wide values of INFRA_COMMON; the patterns below
('type.name', fnmatch) add what the generated stack (templates/infra/*_stack.py.j2) builds
that resource from. A dotted key reads inside a mapping of infra_config(system).
"""

from __future__ import annotations

import hashlib
import json
from fnmatch import fnmatchcase

from mlstack.codegen.backends.infra_model import infra_config, infra_resources
from mlstack.frontend.ir.nodes import SystemIR


def flat_properties(value, prefix: str = "") -> dict[str, object]:
    """Nested dicts -> {'a.b': leaf}; lists stay whole (their order is meaningful)."""
    if isinstance(value, dict):
        out: dict[str, object] = {}
        for key in sorted(value):
            out.update(flat_properties(value[key], f"{prefix}.{key}" if prefix else key))
        return out
    return {prefix: value}


INFRA_COMMON = {"aws": ("system", "region", "aws_provider_version"),
                "kubernetes": ("system", "namespace", "kubernetes_provider_version")}
INFRA_INPUTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("aws_dynamodb_table.*", ("project",)),
    ("aws_elasticache_replication_group.*", ("redis_node_type",)),
    ("aws_eks_cluster.*", ("kubernetes_version",)),
    ("aws_eks_addon.*", ("kubernetes_version",)),
    ("aws_eks_node_group.serving_nodes", ("serving_nodes",)),
    ("aws_eks_node_group.training_nodes", ("training_nodes",)),
    ("aws_eks_node_group.ray_workers", ("ray_nodes",)),
    ("aws_iam_role_policy.*", ("online_store", "online_views")),
    ("aws_eks_pod_identity_association.*", ("namespace",)),
    ("aws_cloudwatch_metric_alarm.*", ("namespace",)),
    ("aws_cloudwatch_metric_alarm.slo_latency_p99", ("slos.p99_ms",)),
    ("aws_cloudwatch_metric_alarm.slo_error_rate", ("slos.error_rate",)),
    ("aws_cloudwatch_metric_alarm.slo_availability", ("slos.availability",)),
    ("aws_cloudwatch_metric_alarm.slo_feature_freshness", ("slos.feature_freshness_seconds",)),
    ("kubernetes_deployment_v1.serving", (
        "serving.cpu", "serving.memory_mib", "serving.gpu", "serving.gpu_type",
        "service_image", "service_port", "online_store", "registry_secret")),
    ("kubernetes_service_v1.serving", ("service_port",)),
    ("kubernetes_network_policy_v1.serving_ingress", ("service_port",)),
    ("kubernetes_horizontal_pod_autoscaler_v2.serving", (
        "serving.replicas_min", "serving.replicas_max", "serving.target_rps_per_replica")),
    ("kubernetes_deployment_v1.redis", ("redis_image",)),
    ("kubernetes_deployment_v1.prefect_worker", ("prefect_image", "work_pool")),
    ("kubernetes_config_map_v1.training_job_template", (
        "training", "service_image", "online_store", "registry_secret", "ray.address",
        "pushgateway_url")),
    ("kubernetes_deployment_v1.pushgateway", ("pushgateway_image", "pushgateway_port")),
    ("kubernetes_service_v1.pushgateway", ("pushgateway_port",)),
    ("kubernetes_network_policy_v1.pushgateway_ingress", ("pushgateway_port",)),
    ("kubernetes_manifest.ray_cluster", (
        "ray.ray_version", "ray.head", "ray.worker", "ray.workers_min", "ray.workers_max",
        "ray.node_role", "service_image", "online_store", "registry_secret")),
    ("kubernetes_service_v1.ray_head", ("ray.client_port",)),
    ("kubernetes_network_policy_v1.ray_ingress", ("ray.client_port",)),
    ("kubernetes_manifest.prometheus_rules", ("prometheus_rules_sha256",)),
    # orchestrator airflow: the chart's release, the DAGs and the steps' pod templates, the
    # volume the steps share
    ("helm_release.airflow", ("helm_provider_version", "airflow")),
    ("kubernetes_config_map_v1.airflow_dags", (
        "airflow_dags_sha256", "training", "service_image", "online_store", "registry_secret",
        "pushgateway_url", "airflow.state_dir", "airflow.bentoml_home",
        "airflow.shared_claim")),
    ("kubernetes_persistent_volume_claim_v1.pipeline_data", (
        "airflow.shared_claim", "airflow.shared_storage")),
)


def _infra_inputs(system: SystemIR) -> dict[str, object]:
    config = infra_config(system)
    if system.target.kind == "kubernetes":
        from mlstack.codegen.backends.monitoring import rule_groups

        text = json.dumps(rule_groups(system), sort_keys=True).encode()
        config["prometheus_rules_sha256"] = hashlib.sha256(text).hexdigest()[:16]
    if "airflow" in config:  # the DAG file the stack's ConfigMap delivers
        from mlstack.codegen.backends.airflow import dags_file

        dags = dags_file(system).encode()
        config["airflow_dags_sha256"] = hashlib.sha256(dags).hexdigest()[:16]
    return config


def _lookup(config: dict, key: str) -> object:
    value: object = config
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def infra_properties(system: SystemIR) -> dict[tuple[str, str], dict[str, object]]:
    """{(terraform type, name): {input: value}} for every resource of the system's stack."""
    resources = infra_resources(system)
    if not resources:
        return {}
    config = _infra_inputs(system)
    out = {}
    for type_, name in resources:
        keys = list(INFRA_COMMON[system.target.kind])
        keys += [k for pattern, inputs in INFRA_INPUTS
                 if fnmatchcase(f"{type_}.{name}", pattern) for k in inputs]
        out[(type_, name)] = flat_properties({k: _lookup(config, k) for k in keys})
    return out
