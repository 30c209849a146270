"""Airflow on the kubernetes target: the facts the DAG file and the infra stack share.

The stack deploys Airflow the way its users do, with the official Apache Airflow Helm chart
(`helm_release`, chart `airflow` from https://airflow.apache.org, pinned), on the
KubernetesExecutor: no standing workers and no Celery broker; each task instance is a small
pod of the Airflow image that starts the task's own pod and follows it. The DAG file, two pod
templates and an `.airflowignore` are one ConfigMap, mounted as the DAGs folder of the
dag-processor and of the executor's pods: the DAG changes with the spec, is a few kB, and a
ConfigMap delivers it with `terraform apply`, with no image to build for Airflow and no git
repository the cluster must reach.

Each task runs one step of `<package>/steps.py` in the service image, as the Kubeflow
components do (`python -m <package>.steps STEP --NAME PATH ...`): a KubernetesPodOperator
whose pod is the stack's pod template, sized from target.training (GPUs for the train task
only), on the training nodes, with the online store's settings. The data between tasks are
files in the DAG run's folder on a ReadWriteMany volume every task pod mounts, as are the
state files and BentoML's model store (register and promote run in different pods); the
paths are Jinja templates Airflow renders per run, so nothing goes through XCom.
"""

from __future__ import annotations

from mlstack.frontend.ir.nodes import SystemIR

AIRFLOW_VERSION = "3.3.2"  # the DAGs' Airflow: local environments and the cluster's image
CHART = "airflow"
CHART_REPOSITORY = "https://airflow.apache.org"
CHART_VERSION = "1.22.0"
# the official image (it bundles the cncf.kubernetes provider the DAG file imports)
IMAGE_REPOSITORY = "apache/airflow"
IMAGE_TAG = f"{AIRFLOW_VERSION}-python3.12"
# what the DAGs' environment needs on the cluster (the steps run in the service image):
# Airflow and the KubernetesPodOperator, the version the DAG file is checked with
PROVIDER = "apache-airflow-providers-cncf-kubernetes==10.25.0"
EXECUTOR = "KubernetesExecutor"
DAGS_FILE = "pipelines/airflow_dags.py"  # in the generated folder
DAGS_FOLDER = "/opt/airflow/dags"  # the chart's (and the image's) dags_folder
# the ConfigMap's keys: the DAG file and the pod templates of the steps (no .yaml or .json
# suffix: KubernetesPodOperator reads a templated field ending so as a Jinja template file)
DAGS_KEY = "airflow_dags.py"
STEP_POD_KEY = "step-pod-template"
TRAIN_POD_KEY = "train-pod-template"
# the ConfigMap volume holds the files twice more under ..data and a timestamped folder
IGNORE_KEY = ".airflowignore"
IGNORE = "..*\n"
# the shared volume, as every task pod mounts it
SHARED_MOUNT = "/mlstack"
STATE_DIR = f"{SHARED_MOUNT}/state"
BENTOML_HOME = f"{SHARED_MOUNT}/bentoml"
SHARED_STORAGE = "20Gi"  # the DAG runs' files, the state files and the model store
LOGS_STORAGE = "10Gi"  # the task logs (the executor's pods are deleted when they end)
# the executor's pod per task: it only starts the step's pod and follows its log
LAUNCHER = {"cpu": 0.25, "memory_mib": 512}
STEP_CONTAINER = "base"  # KubernetesPodOperator's container name (base_container_name)


def runs_on_kubernetes(system: SystemIR) -> bool:
    return system.target.orchestrator == "airflow" and system.target.kind == "kubernetes"


def release_name(system: SystemIR) -> str:
    return f"{system.name}-airflow"


def airflow_config(system: SystemIR) -> dict:
    """What the kubernetes stack deploys Airflow from (infra/config.py's AIRFLOW)."""
    return {
        "release": release_name(system), "chart": CHART, "repository": CHART_REPOSITORY,
        "chart_version": CHART_VERSION, "version": AIRFLOW_VERSION,
        "image_repository": IMAGE_REPOSITORY, "image_tag": IMAGE_TAG, "executor": EXECUTOR,
        "dags_configmap": f"{system.name}-airflow-dags", "dags_folder": DAGS_FOLDER,
        "dags_key": DAGS_KEY, "step_pod_key": STEP_POD_KEY, "train_pod_key": TRAIN_POD_KEY,
        "ignore_key": IGNORE_KEY, "ignore": IGNORE,
        # a Secret you create, as for the Feast registry: key `connection`, the metadata
        # database's URL (the chart's PostgreSQL subchart is not for production)
        "metadata_secret": f"{system.name}-airflow-metadata",
        "shared_claim": f"{system.name}-pipeline-data", "shared_mount": SHARED_MOUNT,
        "shared_storage": SHARED_STORAGE, "logs_storage": LOGS_STORAGE,
        "state_dir": STATE_DIR, "bentoml_home": BENTOML_HOME, "launcher": dict(LAUNCHER),
        "step_container": STEP_CONTAINER, "step_env": step_env(system),
        "dags_file": DAGS_FILE,
    }


def step_env(system: SystemIR) -> dict[str, str]:
    """What every step's pod gets (beside the registry URL from its Secret): the Kubeflow
    steps' variables, with the state folder and the model store on the shared volume."""
    from mlstack.codegen.backends.kubeflow import step_env as kubeflow_step_env
    from mlstack.codegen.contract import ENV_STATE_DIR

    return dict(sorted({**kubeflow_step_env(system), ENV_STATE_DIR: STATE_DIR,
                        "BENTOML_HOME": BENTOML_HOME}.items()))
