"""orchestrator airflow on the kubernetes target: the stack deploys Airflow from its official
Helm chart, and the DAG file runs each task as a pod of the service image.

The churn-k8s blueprint with `orchestrator: airflow` (and a variant with GPU training on spot)
compiles and synthesizes; every kubernetes_* resource is checked against the hashicorp/
kubernetes schema and the helm_release (and the helm provider's configuration) against the
hashicorp/helm 3.3.0 schema, both read from the cdktn bindings' jsii assemblies as
tests/engine/test_infra_kubernetes.py does (neither provider can be installed offline, so
there is no `terraform plan` here); checkov passes with reasoned skips only. The chart's values
and the steps' pod templates are asserted structurally against the spec; no Prefect worker is
provisioned (nor with kubeflow). Airflow's DagBag, in an environment of Airflow 3.3.2 and the
cncf.kubernetes provider (pipelines/airflow_requirements.txt), imports the DAG file with zero
import errors, and the KubernetesPodOperators read back run the contract's steps in order on
the stack's pod templates, with paths in the run's folder on the shared volume.

The chart's values are not validated against the chart's values.schema.json here: the chart
is not on a package registry, so it is not fetched. When this was written only the
securityContexts part was compared with a development copy of that schema (apache/airflow,
read with the read_file tool; it names the containers' key `container`, the chart's
templates read `securityContexts.containers`, used here). The other keys (airflowVersion,
defaultAirflowRepository/Tag, executor, labels, env, config, networkPolicies, postgresql,
data.metadataSecretName, redis, statsd, triggerer, workers.resources, volumes, volumeMounts,
logs.persistence) are the chart's documented values, asserted here structurally only.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from mlstack.codegen.backends.airflow import CLEANUP_TASK, RUNS_DIR, dag_ids, requirements
from mlstack.codegen.backends.airflow_kubernetes import (
    AIRFLOW_VERSION,
    CHART_REPOSITORY,
    CHART_VERSION,
    DAGS_FOLDER,
    STATE_DIR,
)
from mlstack.codegen.backends.infra_model import (
    HELM_PROVIDER_VERSION,
    infra_resources,
    pushgateway_url,
)
from mlstack.codegen.backends.steps import steps_module
from mlstack.codegen.contract import MATERIALIZE_TASKS, MONITORING_TASKS, TRAINING_TASKS
from mlstack.ops.cluster.infra_env import ensure_env
from tests.conftest import REPO
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
CASES = ["airflow", "airflow-gpu"] if KUBE else []
PREFECT_WORKER = {("kubernetes_deployment_v1", "prefect_worker"),
                  ("kubernetes_role_v1", "prefect_worker"),
                  ("kubernetes_role_binding_v1", "prefect_worker"),
                  ("kubernetes_service_account_v1", "prefect_worker"),
                  ("kubernetes_config_map_v1", "training_job_template")}


@pytest.fixture(scope="module")
def stacks(infra_envs, tmp_path_factory):  # noqa: F811
    tmp = tmp_path_factory.mktemp("k8s_airflow")
    specs = {
        "airflow": variant_spec(tmp / "specs", KUBE[0], "k8s-airflow",
                                {"orchestrator": "airflow"}),
        "airflow-gpu": variant_spec(tmp / "specs", KUBE[0], "k8s-airflow-gpu", {
            "orchestrator": "airflow", "training": {
                "cpu": 8, "memory": "32Gi", "gpu": 2, "gpu_type": "nvidia-l4", "spot": True}}),
        "kubeflow": variant_spec(tmp / "specs", KUBE[0], "k8s-kubeflow",
                                 {"orchestrator": "kubeflow"}),
    }
    return {case: Synthesized(spec, tmp / case / "out") for case, spec in specs.items()}


def _values(s) -> dict:
    [values] = s.resources("helm_release")["airflow"]["values"]
    return json.loads(values)


def _pods(s) -> dict[str, dict]:
    data = s.resources("kubernetes_config_map_v1")["airflow_dags"]["data"]
    return {key: json.loads(data[key]) for key in ("step-pod-template", "train-pod-template")}


@pytest.mark.parametrize("case", CASES)
def test_the_stack_deploys_the_airflow_chart_and_no_prefect_worker(stacks, case):
    s = stacks[case]
    system, t = s.system, s.system.target
    assert s.resource_pairs() == infra_resources(system)
    assert not PREFECT_WORKER & set(s.resource_pairs())
    assert "prefect_api_url" not in s.json["variable"]
    assert s.json["terraform"]["required_providers"]["helm"] == {
        "source": "hashicorp/helm", "version": HELM_PROVIDER_VERSION}
    assert s.json["provider"]["helm"] == [{"kubernetes": {
        "config_path": "${var.kube_config_path}"}}]
    release = s.resources("helm_release")["airflow"]
    assert (release["repository"], release["chart"], release["version"]) == (
        CHART_REPOSITORY, "airflow", CHART_VERSION) == ("https://airflow.apache.org",
                                                         "airflow", "1.22.0")
    assert release["namespace"] == t.namespace and release["name"] == f"{system.name}-airflow"
    assert "kubernetes_config_map_v1.airflow_dags" in release["depends_on"]

    values = _values(s)
    assert values["executor"] == "KubernetesExecutor"
    assert values["airflowVersion"] == AIRFLOW_VERSION == "3.3.2"
    assert (values["defaultAirflowRepository"], values["defaultAirflowTag"]) == (
        "apache/airflow", f"{AIRFLOW_VERSION}-python3.12")  # pinned, never latest
    env = {e["name"]: e["value"] for e in values["env"]}
    assert env == {"AIRFLOW__USAGE_DATA_COLLECTION__ENABLED": "False",
                   "SCARF_ANALYTICS": "false"}  # telemetry off
    # the DAGs ConfigMap is the DAGs folder of every Airflow pod (the executor's too)
    [volume] = values["volumes"]
    assert volume["configMap"]["name"] == (
        s.resources("kubernetes_config_map_v1")["airflow_dags"]["metadata"]["name"])
    assert values["volumeMounts"] == [{"name": volume["name"], "mountPath": DAGS_FOLDER,
                                       "readOnly": True}]
    # the namespace enforces the restricted Pod Security level
    pod, container = values["securityContexts"]["pod"], values["securityContexts"]["containers"]
    assert pod["runAsNonRoot"] is True and pod["seccompProfile"]["type"] == "RuntimeDefault"
    assert container == {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    assert values["networkPolicies"]["enabled"] is True  # ingress is denied by default
    assert values["postgresql"]["enabled"] is False  # an external metadata database
    assert values["data"]["metadataSecretName"] == f"{system.name}-airflow-metadata"
    assert values["redis"]["enabled"] is False  # no Celery broker with this executor
    launcher = values["workers"]["resources"]
    assert launcher["requests"] == launcher["limits"] == {"cpu": "250m", "memory": "512Mi"}
    logs = values["logs"]["persistence"]
    assert logs["enabled"] and logs["storageClassName"] == "${var.pipeline_storage_class}"
    claim = s.resources("kubernetes_persistent_volume_claim_v1")["pipeline_data"]
    assert claim["spec"]["access_modes"] == ["ReadWriteMany"]
    assert claim["spec"]["storage_class_name"] == "${var.pipeline_storage_class}"
    assert "default" not in s.json["variable"]["pipeline_storage_class"]  # you name it


@pytest.mark.parametrize("case", CASES)
def test_the_steps_pod_templates_are_sized_and_placed_from_the_spec(stacks, case):
    s = stacks[case]
    system, t = s.system, s.system.target
    data = s.resources("kubernetes_config_map_v1")["airflow_dags"]["data"]
    dags = (s.out / "pipelines" / "airflow_dags.py").read_text()
    # the DAG file as generated (Terraform's own ${ and %{ escaped), and its ignore file
    assert data["airflow_dags.py"].replace("$${", "${").replace("%%{", "%{") == dags
    assert data[".airflowignore"] == "..*\n"
    cpu = f"{round(t.training.cpu * 1000)}m"
    for key, pod in _pods(s).items():
        assert (pod["apiVersion"], pod["kind"]) == ("v1", "Pod")
        assert pod["metadata"]["namespace"] == t.namespace
        labels = pod["metadata"]["labels"]
        assert labels["mlstack/role"] == "training"  # may push to the Pushgateway
        assert labels["mlstack/redis-client"] == "true"  # may reach Redis
        spec = pod["spec"]
        assert spec["serviceAccountName"] == f"{system.name}-training"
        assert spec["automountServiceAccountToken"] is False
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        [container] = spec["containers"]
        assert container["name"] == "base"  # the KubernetesPodOperator's container
        assert container["image"] == "${var.service_image}"  # what serving runs
        assert container["securityContext"] == {"allowPrivilegeEscalation": False,
                                                "capabilities": {"drop": ["ALL"]}}
        resources = container["resources"]
        assert resources["requests"] == resources["limits"]
        assert resources["requests"]["cpu"] == cpu
        assert resources["requests"]["memory"] == f"{t.training.memory_mib}Mi"
        gpus = t.training.gpu if key == "train-pod-template" else 0
        assert resources["limits"].get("nvidia.com/gpu") == (str(gpus) if gpus else None)
        tolerations = {tol["key"] for tol in spec["tolerations"]}
        assert ("nvidia.com/gpu" in tolerations) == bool(gpus)
        assert ("mlstack/spot" in tolerations) == t.training.spot
        assert spec["nodeSelector"]["mlstack/role"] == "training"
        assert spec["nodeSelector"].get("mlstack/gpu-type") == (
            t.training.gpu_type if gpus else None)
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["MLSTACK_STATE_DIR"] == STATE_DIR and env["BENTOML_HOME"].startswith(
            "/mlstack/")  # the state files and the model store on the shared volume
        assert env["MLSTACK_PUSHGATEWAY_URL"] == pushgateway_url(system)
        assert env["MLSTACK_REDIS_CONNECTION"] == f"{system.name}-redis.{t.namespace}.svc:6379"
        assert env["DO_NOT_TRACK"] == "1"
        [registry] = [e for e in container["env"] if e["name"] == "MLSTACK_FEAST_REGISTRY_URL"]
        assert registry["valueFrom"]["secretKeyRef"] == {
            "name": f"{system.name}-feast-registry", "key": "url"}
        [mount] = container["volumeMounts"]
        assert STATE_DIR.startswith(mount["mountPath"] + "/")
        [volume] = spec["volumes"]
        assert volume["name"] == mount["name"]
        assert volume["persistentVolumeClaim"]["claimName"] == (
            s.resources("kubernetes_persistent_volume_claim_v1")["pipeline_data"]
            ["metadata"]["name"])


def test_kubeflow_provisions_no_prefect_worker(stacks):
    s = stacks["kubeflow"]
    assert s.resource_pairs() == infra_resources(s.system)
    assert not PREFECT_WORKER & set(s.resource_pairs())
    assert ("kubernetes_service_account_v1", "training") in s.resource_pairs()
    assert "helm_release" not in s.resources() and "prefect_api_url" not in s.json["variable"]


@pytest.fixture(scope="module")
def schemas(infra_cache):  # noqa: F811
    helm = load_assembly(infra_cache, "helm")
    assert f"hashicorp/helm provider version {HELM_PROVIDER_VERSION}" in (
        helm["readme"]["markdown"])
    return [KubernetesSchema(load_assembly(infra_cache)), KubernetesSchema(helm, "helm")]


@pytest.mark.parametrize("case", [*CASES, "kubeflow"] if KUBE else [])
def test_every_resource_matches_its_providers_schema(stacks, schemas, case):
    s = stacks[case]
    assert check_stack(schemas, s.json) == []
    if "helm" in s.json["provider"]:
        assert schemas[1].check_block("provider.HelmProviderConfig",
                                      s.json["provider"]["helm"][0], "provider.helm") == []


def test_the_helm_schema_check_catches_unknown_and_missing_attributes(stacks, schemas):
    doc = json.loads(json.dumps(stacks[CASES[0]].json))
    release = doc["resource"]["helm_release"]["airflow"]
    release["chart_version"] = release.pop("version")
    del release["chart"]
    errors = check_stack(schemas, doc)
    assert "helm_release.airflow.chart_version: not an attribute or block of the schema" in (
        errors)
    assert "helm_release.airflow.chart: required, missing" in errors


@pytest.mark.parametrize("case", CASES)
def test_checkov_accepts_only_reasoned_skips(stacks, infra_envs, case):  # noqa: F811
    report = run_checkov(infra_envs["checkov"], stacks[case].result.path)
    assert report["summary"]["parsing_errors"] == 0
    assert report["summary"]["passed"] > 30
    assert unaccepted_failures(report) == []


# -- the DAG file, read back by Airflow's own DagBag ----------------------------------------
READ_BACK = r"""
import json
from pathlib import Path
from airflow.dag_processing.dagbag import DagBag

bag = DagBag(dag_folder=str(Path("pipelines").resolve()))
out = {"import_errors": {str(k): v for k, v in bag.import_errors.items()}, "dags": {}}
for dag_id, dag in bag.dags.items():
    out["dags"][dag_id] = {
        "cron": getattr(dag.timetable, "expression", None),
        "tasks": {t.task_id: {
            "type": type(t).__name__, "upstream": sorted(t.upstream_task_ids),
            "pod_template_file": t.pod_template_file, "cmds": t.cmds,
            "arguments": t.arguments, "do_xcom_push": t.do_xcom_push,
            "retries": t.retries, "timeout": t.execution_timeout.total_seconds()}
            for t in dag.tasks},
    }
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def read_back(stacks, infra_cache):  # noqa: F811
    s = stacks["airflow"]
    reqs = infra_cache / "requirements" / "airflow-kubernetes.txt"
    reqs.parent.mkdir(parents=True, exist_ok=True)
    reqs.write_text("\n".join(requirements(s.system)) + "\n")
    env = ensure_env(reqs)
    home = s.out.parent / "airflow_home"
    variables = {**env.environment(), "AIRFLOW_HOME": str(home),
                 "AIRFLOW__CORE__DAGS_FOLDER": str(s.out / "pipelines"),
                 "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                 "AIRFLOW__USAGE_DATA_COLLECTION__ENABLED": "False", "SCARF_ANALYTICS": "false",
                 "PYTHONPATH": os.pathsep.join([str(s.out), str(REPO)])}
    done = subprocess.run([str(env.python), "-c", READ_BACK], cwd=s.out, env=variables,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return s, json.loads(done.stdout.strip().splitlines()[-1])


def test_the_requirements_are_airflow_and_its_kubernetes_provider(stacks):
    lines = (stacks["airflow"].out / "pipelines" / "airflow_requirements.txt").read_text()
    pinned = [line for line in lines.splitlines() if not line.startswith("#")]
    assert pinned == ["apache-airflow-providers-cncf-kubernetes==10.25.0",
                      f"apache-airflow=={AIRFLOW_VERSION}"]


def test_the_dagbag_imports_the_kubernetes_dags_with_no_error(read_back):
    s, read = read_back
    assert read["import_errors"] == {}
    ids = dag_ids(s.system)
    assert sorted(read["dags"]) == sorted(ids.values())
    assert read["dags"][ids["training"]]["cron"] == "0 0 * * *"
    runs = f"{STATE_DIR}/{RUNS_DIR}/{{{{ dag.dag_id }}}}/{{{{ run_id | path_safe }}}}"
    for name, tasks in (("training", (*TRAINING_TASKS, CLEANUP_TASK)),
                        ("materialize", MATERIALIZE_TASKS),
                        ("monitoring", ("ingest", *MONITORING_TASKS, CLEANUP_TASK))):
        read_tasks = read["dags"][ids[name]]["tasks"]
        assert sorted(read_tasks) == sorted(tasks), name
        for before, task in zip(tasks, tasks[1:], strict=False):
            assert read_tasks[task]["upstream"] == [before], (name, task)
        for task_id, task in read_tasks.items():
            assert task["type"] == "KubernetesPodOperator"
            assert task["do_xcom_push"] is False  # paths, not XComs
            assert task["retries"] == s.system.training.retries
            assert task["timeout"] == s.system.training.timeout_seconds
            template = "train-pod-template" if task_id == "train" else "step-pod-template"
            assert task["pod_template_file"] == f"{s.out}/pipelines/{template}"
            if task_id == CLEANUP_TASK:
                assert task["arguments"] == [runs]
                continue
            # `python -m <package>.steps STEP --NAME PATH ...`, as the Kubeflow components
            assert task["cmds"] == ["python", "-m", steps_module(s.system)]
            assert task["arguments"][0] == task_id
            options = dict(zip(task["arguments"][1::2], task["arguments"][2::2], strict=True))
            for option, value in options.items():
                if option in ("--run_id", "--promote_model", "--fail_on_alert"):
                    assert value.startswith("{{ ") and value.endswith(" }}")
                else:  # every path is in the run's folder, each output under its task
                    assert value.startswith(runs + "/"), (task_id, option, value)
    train = read["dags"][ids["training"]]["tasks"]["train"]
    assert f"{runs}/train/model" in train["arguments"]
    assert f"{runs}/training_set/out" in train["arguments"]
