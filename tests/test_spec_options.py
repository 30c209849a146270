"""Nothing a user writes is silently ignored.

For every key of the spec language, changing its value either changes the resolved IR (so
the backends can honour it) or makes lint say something new about it (an error such as
MLS901 "not supported yet", or a warning such as MLS503 "no effect on this target"). The
table below must name every leaf key of the spec models; a new key without an entry fails.
"""

from __future__ import annotations

import copy
import typing
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from mlstack.frontend.analysis import analyze_spec
from mlstack.frontend.loader import load_spec_file
from mlstack.frontend.spec import models
from tests.conftest import BLUEPRINTS

LOCAL = load_spec_file(BLUEPRINTS / "churn" / "mlstack.yaml").data
CLUSTER = copy.deepcopy(LOCAL)
CLUSTER["target"] = {"kind": "kubernetes", "serving": {"replicas": {"min": 2, "max": 4}}}
CLUSTER["sources"] += [
    {"name": "events", "kind": "postgres", "table": "analytics.events",
     "timestamp_field": "ts", "columns": {"customer_id": "int64", "ts": "timestamp"}},
    {"name": "clicks", "kind": "kafka", "topic": "clicks", "timestamp_field": "ts",
     "columns": {"customer_id": "int64", "ts": "timestamp"}},
]
ALERTS = copy.deepcopy(LOCAL)
ALERTS["monitoring"]["alerts"] = [{"channel": "slack", "to": "#ml"}]
USER_CODE = copy.deepcopy(LOCAL)
USER_CODE["features"]["transforms"][0] = {
    "name": "charges_per_tenure", "python": "features.py:ratio",
    "inputs": ["customer_profile.monthly_charges", "customer_profile.tenure_months"]}
# the project's own code the user-code cases name (written beside every spec below)
USER_FILES = {
    "features.py": "def ratio(a, b):\n    return a / (b + 1)\n\n\n"
                   "def scaled(a, b, scale=2.0):\n    return scale * a / (b + 1)\n",
    "models.py": "from sklearn.linear_model import LogisticRegression\n\n\n"
                 "def build_model(c=1.0, random_state=None):\n"
                 "    return LogisticRegression(C=c, random_state=random_state)\n",
}
REQUEST = copy.deepcopy(LOCAL)  # a value each request carries, logged in the label source
REQUEST["features"]["request_sources"] = [{"name": "offer", "fields": {"discount": "float64"}}]
REQUEST["sources"][1]["columns"]["discount"] = "float64"
REQUEST["model"]["features"].append("offer.discount")
RAY = copy.deepcopy(LOCAL)  # the offline steps on a Ray cluster
RAY["target"]["compute"] = {"engine": "ray"}
STRINGS = copy.deepcopy(LOCAL)  # a string column, for the checks that apply to text
STRINGS["sources"][0]["columns"]["plan"] = "string"
BASES = {"local": LOCAL, "strings": STRINGS, "cluster": CLUSTER, "alerts": ALERTS, "user_code": USER_CODE,
         "request": REQUEST, "ray": RAY}
WAREHOUSE, STREAM = ("sources", 2), ("sources", 3)


def write_user_files(folder: Path) -> None:
    for name, text in USER_FILES.items():
        (folder / name).write_text(text)


def _estimator_factory(doc):
    model = doc["model"]
    del model["algorithm"]
    model["estimator"] = "models.py:build_model"
    model["params"] = {"c": 0.5}


def _python_transform(doc):
    doc["features"]["transforms"][0] = copy.deepcopy(USER_CODE["features"]["transforms"][0])


def _query_instead_of_table(doc):
    source = doc["sources"][2]
    del source["table"]
    source["query"] = "SELECT customer_id, ts FROM analytics.events"


# "Model.field": (base, path, new value) -- or (base, function that edits the document)
CHANGES = {
    "Metadata.name": ("local", ("metadata", "name"), "churn-two"),
    "Metadata.owner": ("local", ("metadata", "owner"), "other-team"),
    "Metadata.description": ("local", ("metadata", "description"), "Another description."),
    "Metadata.tags": ("local", ("metadata", "tags"), {"team": "growth"}),
    "SourceBase.name": ("local", ("sources", 0, "name"), "clients"),
    "SourceBase.timestamp_field": ("local", ("sources", 0, "timestamp_field"), "tenure_months"),
    "SourceBase.created_timestamp_field": ("local", ("sources", 0, "created_timestamp_field"),
                                           "event_timestamp"),
    "SourceBase.columns": ("local", ("sources", 0, "columns", "region_code"), "int64"),
    "SourceBase.description": ("local", ("sources", 0, "description"), "CRM extract."),
    "FileSource.kind": ("local", ("sources", 0, "kind"), "csv"),
    "FileSource.path": ("local", ("sources", 0, "path"), "data/other.parquet"),
    "Checks.not_null": ("local", ("sources", 0, "checks", "not_null"), ["customer_id"]),
    "Checks.unique": ("local", ("sources", 0, "checks", "unique"),
                      ["customer_id", "event_timestamp"]),
    "Checks.ranges": ("local", ("sources", 0, "checks", "ranges"), {"support_calls": [0, 50]}),
    "Checks.allowed_values": ("local", ("sources", 0, "checks", "allowed_values"),
                              {"is_monthly_contract": [0, 1]}),
    "Checks.min_rows": ("local", ("sources", 0, "checks", "min_rows"), 5),
    "Checks.max_null_fraction": ("local", ("sources", 0, "checks", "max_null_fraction"), 0.1),
    "Checks.regex": ("strings", ("sources", 0, "checks", "regex"), {"plan": "[a-z]+_v[0-9]"}),
    "Checks.monotonic": ("local", ("sources", 0, "checks", "monotonic"), ["customer_id"]),
    "Checks.freshness": ("local", ("sources", 0, "checks", "freshness"), True),
    "WarehouseSource.kind": ("cluster", WAREHOUSE + ("kind",), "snowflake"),
    "WarehouseSource.table": ("cluster", WAREHOUSE + ("table",), "analytics.events_v2"),
    "WarehouseSource.query": ("cluster", _query_instead_of_table),
    "StreamSource.kind": ("cluster", STREAM + ("kind",), "kinesis"),
    "StreamSource.topic": ("cluster", STREAM + ("topic",), "clicks.v2"),
    "StreamSource.bootstrap_servers": ("cluster", STREAM + ("bootstrap_servers",),
                                       "kafka-0:9092"),
    "StreamSource.batch_source": ("cluster", STREAM + ("batch_source",), "events"),
    "Entity.name": ("local", ("entities", 0, "name"), "client"),
    "Entity.join_keys": ("local", ("entities", 0, "join_keys"), ["client_id"]),
    "Entity.description": ("local", ("entities", 0, "description"), "A paying customer."),
    "FeatureView.name": ("local", ("features", "views", 0, "name"), "profile"),
    "FeatureView.entity": ("local", ("features", "views", 0, "entity"), ["customer", "account"]),
    "FeatureView.source": ("local", ("features", "views", 0, "source"), "churn_labels"),
    "FeatureView.ttl": ("local", ("features", "views", 0, "ttl"), "10d"),
    "FeatureView.fields": ("local", ("features", "views", 0, "fields"),
                           ["tenure_months", "monthly_charges", "support_calls",
                            "is_monthly_contract", "event_timestamp"]),
    "FeatureView.online": ("local", ("features", "views", 0, "online"), False),
    "FeatureView.offline": ("local", ("features", "views", 0, "offline"), False),
    "FeatureView.description": ("local", ("features", "views", 0, "description"), "Profile."),
    "Features.request_sources": ("local", ("features", "request_sources"),
                                 [{"name": "offer", "fields": {"discount": "float64"}}]),
    "RequestSource.name": ("request", ("features", "request_sources", 0, "name"), "deal"),
    "RequestSource.fields": ("request", ("features", "request_sources", 0, "fields"),
                             {"discount": "int64"}),
    "RequestSource.description": ("request", ("features", "request_sources", 0,
                                              "description"), "The retention offer."),
    "Transform.name": ("local", ("features", "transforms", 0, "name"), "ratio"),
    "Transform.expr": ("local", ("features", "transforms", 0, "expr"), "monthly_charges * 2"),
    "Transform.dtype": ("local", ("features", "transforms", 0, "dtype"), "int64"),
    "Transform.description": ("local", ("features", "transforms", 0, "description"), "Ratio."),
    "Transform.python": ("local", _python_transform),
    "Transform.inputs": ("user_code", ("features", "transforms", 0, "inputs"),
                         ["customer_profile.support_calls", "customer_profile.tenure_months"]),
    "Label.source": ("local", ("label", "source"), "customers"),
    "Label.field": ("local", ("label", "field"), "event_timestamp"),
    "Model.task": ("local", ("model", "task"), "regression"),
    "Model.framework": ("local", ("model", "framework"), "xgboost"),
    "Model.algorithm": ("local", ("model", "algorithm"), "random_forest"),
    "Model.estimator": ("local", _estimator_factory),
    "Model.params": ("local", ("model", "params"), {"n_estimators": 10}),
    "Model.features": ("local", ("model", "features"), ["customer_profile.tenure_months"]),
    "Model.group_by": ("local", ("model", "group_by"), "customer_id"),
    "Split.by": ("local", ("training", "split", "by"), "random"),
    "Split.test_fraction": ("local", ("training", "split", "test_fraction"), 0.3),
    "Training.schedule": ("local", ("training", "schedule"), "0 */6 * * *"),
    "Training.retries": ("local", ("training", "retries"), 5),
    "Training.retry_delay_seconds": ("local", ("training", "retry_delay_seconds"), 30),
    "Training.timeout_minutes": ("local", ("training", "timeout_minutes"), 15),
    "Training.seed": ("local", ("training", "seed"), 99),
    "Training.on_new_model": ("local", ("training", "on_new_model"), "register"),
    "Evaluation.metrics": ("local", ("evaluation", "metrics"), ["auc"]),
    "Evaluation.gates": ("local", ("evaluation", "gates"), {"auc": ">= 0.5"}),
    "Batching.mode": ("local", ("serving", "batching"), "off"),
    "Batching.max_batch_size": ("local", ("serving", "batching"),
                                {"mode": "fixed", "max_batch_size": 4}),
    "Batching.max_latency_ms": ("local", ("serving", "batching"),
                                {"mode": "fixed", "max_latency_ms": 3}),
    "AbortRules.latency_p99_ms": ("local", ("serving", "rollout", "abort_if", "latency_p99_ms"),
                                  "> 120"),
    "AbortRules.error_rate": ("local", ("serving", "rollout", "abort_if", "error_rate"), "> 0.05"),
    "Rollout.strategy": ("local", ("serving", "rollout"), {"strategy": "all_at_once"}),
    "Rollout.steps": ("local", ("serving", "rollout", "steps"), [10, 100]),
    "Rollout.step_seconds": ("local", ("serving", "rollout", "step_seconds"), 9),
    "Rollout.shadow": ("local", ("serving", "rollout", "shadow"), {"tolerance": 0.1}),
    "Rollout.ab": ("local", ("serving", "rollout", "ab"), {"baseline": 0.2}),
    "ShadowRules.min_agreement": ("local", ("serving", "rollout"), {
        "strategy": "shadow", "steps": [100], "shadow": {"min_agreement": ">= 0.9"}}),
    "ShadowRules.tolerance": ("local", ("serving", "rollout"), {
        "strategy": "shadow", "steps": [100], "shadow": {"tolerance": 0.2}}),
    "ShadowRules.min_requests": ("local", ("serving", "rollout"), {
        "strategy": "shadow", "steps": [100], "shadow": {"min_requests": 50}}),
    **{f"AbTest.{name}": ("local", ("serving", "rollout"), {
        "strategy": "ab", "steps": [100], "ab": {"baseline": 0.2, name: value}})
       for name, value in (("baseline", 0.3), ("metric", "mean"), ("higher_is_better", False),
                           ("split", 10), ("key", "customer_id"), ("alpha", 0.01),
                           ("minimum_lift", 0.2), ("min_samples", 50),
                           ("max_samples", 5000), ("max_duration", "2d"))},
    "Rollout.feedback": ("local", ("serving", "rollout"), {
        "strategy": "canary", "steps": [10, 100], "feedback": {"baseline": 0.2}}),
    # the fields both share (FeedbackTest), each through an A/B (above) and a canary's guard
    **{f"{owner}.{name}": ("local", ("serving", "rollout"), {
        "strategy": "canary", "steps": [10, 100], "feedback": {"baseline": 0.2, name: value}})
       for name, value in (("baseline", 0.3), ("metric", "mean"), ("higher_is_better", False),
                           ("alpha", 0.01), ("minimum_lift", 0.2), ("min_samples", 50),
                           ("max_samples", 5000), ("max_duration", "2d"))
       for owner in ("FeedbackTest", "CanaryFeedback")},
    "Serving.protocol": ("local", ("serving", "protocol"), "grpc"),
    "Serving.timeout_ms": ("local", ("serving", "timeout_ms"), 2500),
    "Serving.runtime": ("local", ("serving", "runtime"), "native"),
    "Serving.max_request_rows": ("local", ("serving", "max_request_rows"), 32),
    "Latency.p50_ms": ("local", ("slos", "latency", "p50_ms"), 20),
    "Latency.p95_ms": ("local", ("slos", "latency", "p95_ms"), 70),
    "Latency.p99_ms": ("local", ("slos", "latency", "p99_ms"), 150),
    "Slos.throughput_rps": ("local", ("slos", "throughput_rps"), 80),
    "Slos.availability": ("local", ("slos", "availability"), 99.5),
    "Slos.error_rate": ("local", ("slos", "error_rate"), 0.002),
    "Slos.quality": ("local", ("slos", "quality"), {"auc": ">= 0.7"}),
    "Slos.feature_freshness": ("local", ("slos", "feature_freshness"), "2h"),
    "Drift.method": ("local", ("monitoring", "drift", "method"), "ks"),
    "Drift.threshold": ("local", ("monitoring", "drift", "threshold"), 0.3),
    "Drift.features": ("local", ("monitoring", "drift", "features"),
                       ["customer_profile.tenure_months"]),
    "Monitoring.model_staleness": ("local", ("monitoring", "model_staleness"), "14d"),
    "Monitoring.alerts": ("local", ("monitoring", "alerts"), [{"channel": "email", "to": "x"}]),
    "PredictionLog.enabled": ("local", ("monitoring", "prediction_log", "enabled"), False),
    "PredictionLog.retention": ("local", ("monitoring", "prediction_log", "retention"), "2d"),
    "PredictionLog.queue": ("local", ("monitoring", "prediction_log", "queue"), 500),
    "Alert.channel": ("alerts", ("monitoring", "alerts", 0, "channel"), "pagerduty"),
    "Alert.to": ("alerts", ("monitoring", "alerts", 0, "to"), "#ml-oncall"),
    "Alert.severity": ("alerts", ("monitoring", "alerts", 0, "severity"), ["page"]),
    "Alert.secret_file": ("alerts", ("monitoring", "alerts", 0, "secret_file"),
                          "/run/secrets/slack-url"),
    "Alert.smarthost": ("alerts", ("monitoring", "alerts", 0, "smarthost"), "smtp.example.com:25"),
    "Alert.sender": ("alerts", ("monitoring", "alerts", 0, "sender"), "alerts@example.com"),
    "Alert.username": ("alerts", ("monitoring", "alerts", 0, "username"), "alerts"),
    "Replicas.min": ("cluster", ("target", "serving", "replicas", "min"), 3),
    "Replicas.max": ("cluster", ("target", "serving", "replicas", "max"), 8),
    "ServingResources.cpu": ("local", ("target", "serving", "cpu"), 4),
    "ServingResources.memory": ("local", ("target", "serving", "memory"), "3Gi"),
    "ServingResources.gpu": ("cluster", ("target", "serving", "gpu"), 1),
    "ServingResources.gpu_type": ("cluster", ("target", "serving", "gpu_type"), "nvidia-l4"),
    "TrainingResources.cpu": ("local", ("target", "training", "cpu"), 3),
    "TrainingResources.memory": ("local", ("target", "training", "memory"), "6Gi"),
    "TrainingResources.gpu": ("cluster", ("target", "training", "gpu"), 1),
    "TrainingResources.gpu_type": ("cluster", ("target", "training", "gpu_type"), "nvidia-l4"),
    "TrainingResources.spot": ("cluster", ("target", "training", "spot"), True),
    "Target.kind": ("local", ("target", "kind"), "kubernetes"),
    "Target.region": ("local", ("target", "region"), "us-east-1"),
    "Target.namespace": ("cluster", ("target", "namespace"), "ml-prod"),
    "Target.online_store": ("cluster", ("target", "online_store"), "redis"),
    "Target.orchestrator": ("cluster", ("target", "orchestrator"), "kubeflow"),
    "Compute.address": ("ray", ("target", "compute", "address"), "ray://ray-head:10001"),
    "Compute.workers": ("ray", ("target", "compute", "workers"), 3),
    "ComputeWorker.cpu": ("ray", ("target", "compute", "worker", "cpu"), 2),
    "ComputeWorker.memory": ("ray", ("target", "compute", "worker", "memory"), "4Gi"),
    "ServingResources.replicas": ("local", ("target", "serving", "replicas"), {"min": 2, "max": 3}),
}


def _holds_models(annotation) -> bool:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return True
    return any(_holds_models(a) for a in typing.get_args(annotation))


def _leaf_keys() -> set[str]:
    """'Owner.field' for every field users write that is not itself a block of fields."""
    keys = set()
    for model in vars(models).values():
        if not (isinstance(model, type) and issubclass(model, models.Strict)):
            continue
        for name, info in model.model_fields.items():
            owner = next(c for c in model.__mro__ if name in getattr(c, "__annotations__", {}))
            if typing.get_origin(info.annotation) is typing.Literal and len(
                    typing.get_args(info.annotation)) == 1:
                continue  # one allowed value (apiVersion, kind, compute.engine): no change
            if not _holds_models(info.annotation):
                keys.add(f"{owner.__name__}.{name}")
    return keys


def test_every_key_has_a_change_in_the_table():
    assert sorted(_leaf_keys() - set(CHANGES)) == []
    unknown = [k for k in CHANGES if k.split(".")[1] not in getattr(
        models, k.split(".")[0]).model_fields]
    assert unknown == []


def _outcome(doc: dict, folder: Path) -> tuple[str | None, frozenset]:
    spec = folder / "mlstack.yaml"
    spec.write_text(yaml.safe_dump(doc, sort_keys=False))
    write_user_files(folder)
    analysis = analyze_spec(spec)
    ir = analysis.system.model_dump_json() if analysis.system is not None else None
    return ir, frozenset((d.code, d.pointer, d.message) for d in analysis.diagnostics)


@pytest.fixture(scope="module")
def baselines(tmp_path_factory) -> dict:
    out = {}
    for name, doc in BASES.items():
        ir, diags = _outcome(doc, tmp_path_factory.mktemp(name))
        assert ir is not None, name
        out[name] = (ir, diags)
    return out


def _apply(doc: dict, change) -> None:
    if callable(change[0]):
        change[0](doc)
        return
    path, value = change
    node = doc
    for part in path[:-1]:
        node = node.setdefault(part, {}) if isinstance(part, str) else node[part]
    node[path[-1]] = copy.deepcopy(value)


@pytest.mark.parametrize("key", sorted(CHANGES))
def test_changing_a_key_changes_the_ir_or_is_reported(key, baselines, tmp_path):
    base, *change = CHANGES[key]
    doc = copy.deepcopy(BASES[base])
    _apply(doc, change)
    ir, diags = _outcome(doc, tmp_path)
    base_ir, base_diags = baselines[base]
    assert ir != base_ir or diags - base_diags, f"{key}: ignored without a word"
