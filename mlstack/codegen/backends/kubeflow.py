"""The pipelines as Kubeflow Pipelines (target.orchestrator: kubeflow, kubernetes target).

`pipelines/kubeflow_pipeline.py` is written with the kfp SDK v2 DSL: one container component
per task of the contract's task lists (training, materialize, monitoring), each running a
step of `<package>/steps.py` (mlstack.codegen.backends.steps, shared with Airflow) in the service image the kubernetes stack builds, with
target.training's resources, training.retries and the stack's placement (training nodes,
GPU nodes for the train task). The steps call the same mlstack.runtime functions as the
Prefect tasks of the same name; data between them are artifacts. The Prefect backend then
writes only the settings module the steps share (`<package>/pipeline.py`).
"""

from __future__ import annotations

from mlstack.codegen.backends import CompileOptions
from mlstack.codegen.backends.infra_model import image_tag, pushgateway_url
from mlstack.codegen.backends.prefect import MONITORING_INTERVAL_SECONDS, cron_schedule
from mlstack.codegen.backends.shared import header
from mlstack.codegen.backends.steps import (
    STEPS_TEMPLATE,
    render_steps,
    steps_module,
    steps_path,
)
from mlstack.codegen.contract import (
    ENV_PUSHGATEWAY_URL,
    ENV_STATE_DIR,
    MATERIALIZE_TASKS,
    MONITORING_TASKS,
    TELEMETRY_ENV,
    TRAINING_TASKS,
    package_name,
)
from mlstack.codegen.filetree import FileTree
from mlstack.codegen.jinja import render_template
from mlstack.frontend.ir.nodes import SystemIR

PIPELINE_FILE = "pipelines/kubeflow_pipeline.py"
# where the steps keep the state files in their pod (as the stack's Prefect jobs do)
POD_STATE_DIR = "/tmp/mlstack-state"
GPU_RESOURCE = "nvidia.com/gpu"


def kubeflow_cron(schedule: str | None) -> str | None:
    """A spec schedule as Kubeflow's cron: six fields, seconds first ('@daily' -> '0 0 0 * * *')."""
    cron = cron_schedule(schedule)
    return None if cron is None else f"0 {cron}"


def cpu_quantity(cpu: float) -> str:
    return f"{round(cpu * 1000)}m"


def step_env(system: SystemIR) -> dict[str, str]:
    """The variables every step's container gets (the stack's training jobs get the same)."""
    t = system.target
    env = {**TELEMETRY_ENV, "MLSTACK_ONLINE_STORE": t.online_store,
           ENV_STATE_DIR: POD_STATE_DIR, ENV_PUSHGATEWAY_URL: pushgateway_url(system)}
    if t.online_store == "redis":
        env["MLSTACK_REDIS_CONNECTION"] = f"{system.name}-redis.{t.namespace}.svc:6379"
    return dict(sorted(env.items()))


def pipeline_context(system: SystemIR) -> dict:
    t, training = system.target, system.training
    return dict(
        image=f"{system.name}-service:{image_tag(system)}", namespace=t.namespace,
        env=step_env(system), registry_secret=f"{system.name}-feast-registry",
        redis=t.online_store == "redis", cpu=cpu_quantity(t.training.cpu),
        memory=f"{t.training.memory_mib}Mi", gpus=t.training.gpu, gpu_type=t.training.gpu_type,
        spot=t.training.spot, retries=training.retries,
        retry_delay_seconds=training.retry_delay_seconds,
        training_cron=kubeflow_cron(training.schedule),
        materialize_interval=training.materialize_interval_seconds,
        monitoring_interval=min(MONITORING_INTERVAL_SECONDS,
                                training.materialize_interval_seconds),
        training_tasks=TRAINING_TASKS, materialize_tasks=MATERIALIZE_TASKS,
        monitoring_tasks=MONITORING_TASKS)


class KubeflowBackend:
    name = "kubeflow"
    templates = ("kubeflow/pipeline.py.j2", STEPS_TEMPLATE)

    def applies(self, system: SystemIR) -> bool:
        return system.target.orchestrator == "kubeflow"

    def render(self, system: SystemIR, options: CompileOptions) -> FileTree:
        tree = FileTree()
        common = dict(system=system, package=package_name(system), header=header(system))
        tree.add(PIPELINE_FILE, render_template(
            "kubeflow/pipeline.py.j2", **common, steps_module=steps_module(system),
            **pipeline_context(system)))
        tree.add(steps_path(system), render_steps(system))
        return tree
