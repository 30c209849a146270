"""The pipelines as Airflow DAGs (target.orchestrator: airflow).

`pipelines/airflow_dags.py` is written as Airflow 3's docs write DAGs, with the TaskFlow API
(`from airflow.sdk import dag, task`): the training, materialize and monitoring DAGs, one
`@task` per task of the contract's task lists, each calling the step of the same name in
`<package>/steps.py` (shared with the Kubeflow backend), which calls the same mlstack.runtime
functions as the Prefect task. The data between tasks are files in the DAG run's folder under
the state folder; XCom carries only their paths, and a run that succeeds removes its folder
(CLEANUP_TASK). Schedules, retries, retry delay and the
task timeout come from the spec; no catch-up, one run of a DAG at a time, a fixed start date.

`pipelines/airflow_requirements.txt` pins what the DAGs' environment needs: Airflow (which
cannot share an environment with Prefect) and the runtime layers the steps import; mlstack
itself goes on PYTHONPATH beside the generated folder.

On the kubernetes target (mlstack.codegen.backends.airflow_kubernetes) the same DAGs run each
task as a KubernetesPodOperator pod of the service image, `python -m <package>.steps STEP
--NAME PATH ...` as the Kubeflow components run them, with the stack's pod templates; the
paths are in the DAG run's folder on the volume every step's pod mounts, rendered by Airflow
per run. There the environment is the official Airflow image (Airflow and the cncf.kubernetes
provider).
"""

from __future__ import annotations

from mlstack.codegen.backends import CompileOptions
from mlstack.codegen.backends.airflow_kubernetes import (
    AIRFLOW_VERSION,
    PROVIDER,
    SHARED_MOUNT,
    STATE_DIR,
    STEP_POD_KEY,
    TRAIN_POD_KEY,
    runs_on_kubernetes,
)
from mlstack.codegen.backends.prefect import MONITORING_INTERVAL_SECONDS, cron_schedule
from mlstack.codegen.backends.shared import header
from mlstack.codegen.backends.steps import (
    STEPS_TEMPLATE,
    render_steps,
    steps_module,
    steps_path,
)
from mlstack.codegen.contract import (
    MATERIALIZE_TASKS,
    MONITORING_TASKS,
    TELEMETRY_ENV,
    TRAINING_TASKS,
    package_name,
)
from mlstack.codegen.filetree import FileTree
from mlstack.codegen.jinja import render_template
from mlstack.frontend.ir.nodes import SystemIR

DAGS_FILE = "pipelines/airflow_dags.py"
REQUIREMENTS_FILE = "pipelines/airflow_requirements.txt"
# The folder of each DAG run's files (the data between its tasks), under the state folder:
# <state>/airflow_runs/<dag_id>/<run_id>/<task_id>/<name>
RUNS_DIR = "airflow_runs"
# The task after the contract's last one in the training and monitoring DAGs: a run that
# succeeded removes its folder (a failed one keeps it for a cleared task to run again).
CLEANUP_TASK = "remove_run_files"
# A fixed start date: the DAGs are the same bytes every compile (catchup is off, so no run
# before the DAG was deployed is ever scheduled).
START_DATE = (2026, 1, 1)
# Airflow's own telemetry (Scarf) off too: no network at run time.
AIRFLOW_ENV = {"AIRFLOW__USAGE_DATA_COLLECTION__ENABLED": "False"}
# What the DAGs' environment installs, pinned (Airflow's constraints file is not fetched at
# run time): Airflow, and what the steps import (mlstack.runtime's layers: Feast and its
# stores, BentoML's model store, scikit-learn, the ONNX export and its check).
REQUIREMENTS = (
    f"apache-airflow=={AIRFLOW_VERSION}",
    "bentoml==1.4.40",
    "feast[duckdb,postgres,redis]==0.67.0",
    "numpy==2.4.6",
    "onnx==1.23.2",
    "onnxruntime==1.32.0",
    "pandas==2.3.3",
    "prometheus-client==0.24.1",
    "pyarrow==26.0.1",
    "scikit-learn==1.9.1",
    "skl2onnx==1.20.0",
)
# The model's framework when it is not scikit-learn (the train step imports it), pinned to the
# versions the runtime layers are tested with (catalog.FRAMEWORK_PACKAGES names the package).
FRAMEWORK_REQUIREMENTS = {"xgboost": "xgboost==3.2.0", "lightgbm": "lightgbm==4.7.0",
                          "pytorch": "torch==2.13.0"}


def dag_ids(system: SystemIR) -> dict[str, str]:
    """Each pipeline's DAG id: {'training': 'churn_training', ...}."""
    return {name: f"{system.python_name}_{name}"
            for name in ("training", "materialize", "monitoring")}


def dags_context(system: SystemIR) -> dict:
    training = system.training
    return dict(
        dag_ids=dag_ids(system), owner=system.owner or "mlstack",
        runs_dir=RUNS_DIR, cleanup_task=CLEANUP_TASK, start_date=START_DATE,
        env=dict(sorted({**TELEMETRY_ENV, **AIRFLOW_ENV}.items())),
        retries=training.retries, retry_delay_seconds=training.retry_delay_seconds,
        timeout_seconds=training.timeout_seconds,
        training_cron=cron_schedule(training.schedule),
        materialize_interval=training.materialize_interval_seconds,
        monitoring_interval=min(MONITORING_INTERVAL_SECONDS,
                                training.materialize_interval_seconds),
        training_tasks=TRAINING_TASKS, materialize_tasks=MATERIALIZE_TASKS,
        monitoring_tasks=MONITORING_TASKS)


# On kubernetes the steps run in the service image: the DAGs' environment (the official
# Airflow image has both) needs only Airflow and the KubernetesPodOperator's provider.
KUBERNETES_REQUIREMENTS = (f"apache-airflow=={AIRFLOW_VERSION}", PROVIDER)


def requirements(system: SystemIR) -> tuple[str, ...]:
    """What the DAGs' environment installs for this system, sorted."""
    if runs_on_kubernetes(system):
        return tuple(sorted(KUBERNETES_REQUIREMENTS))
    framework = FRAMEWORK_REQUIREMENTS.get(system.model.framework)
    return tuple(sorted((*REQUIREMENTS, *([framework] if framework else ()))))


def requirements_text(system: SystemIR) -> str:
    if runs_on_kubernetes(system):
        return (f"# The environment {DAGS_FILE} runs in on the cluster (the official Airflow\n"
                "# image of the kubernetes stack has it); the steps run in the service image.\n"
                + "".join(f"{line}\n" for line in requirements(system)))
    return (f"# The environment {DAGS_FILE} runs in (Airflow's scheduler and workers), pinned.\n"
            "# mlstack itself goes on PYTHONPATH (or pip install --no-deps), with the generated\n"
            "# folder.\n" + "".join(f"{line}\n" for line in requirements(system)))


def kubernetes_context(system: SystemIR) -> dict:
    """What the kubernetes DAG file adds: each task a pod of the service image running its
    step, the data in the run's folder on the volume every step's pod mounts."""
    return dict(steps_module=steps_module(system), namespace=system.target.namespace,
                shared_mount=SHARED_MOUNT, runs_root=f"{STATE_DIR}/{RUNS_DIR}",
                step_pod=STEP_POD_KEY, train_pod=TRAIN_POD_KEY)


def dags_file(system: SystemIR) -> str:
    """pipelines/airflow_dags.py: the local form (tasks in the worker's process), or on
    kubernetes each task a pod of the service image."""
    context = dict(system=system, package=package_name(system), header=header(system),
                   **dags_context(system))
    if runs_on_kubernetes(system):
        return render_template("airflow/dags_kubernetes.py.j2", **context,
                               **kubernetes_context(system))
    return render_template("airflow/dags.py.j2", **context)


class AirflowBackend:
    name = "airflow"
    templates = ("airflow/dags.py.j2", "airflow/dags_kubernetes.py.j2", STEPS_TEMPLATE)

    def applies(self, system: SystemIR) -> bool:
        return system.target.orchestrator == "airflow"

    def render(self, system: SystemIR, options: CompileOptions) -> FileTree:
        tree = FileTree()
        tree.add(DAGS_FILE, dags_file(system))
        tree.add(steps_path(system), render_steps(system))
        tree.add(REQUIREMENTS_FILE, requirements_text(system))
        return tree
