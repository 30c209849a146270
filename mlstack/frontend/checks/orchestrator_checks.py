"""target.orchestrator checks: what runs the pipelines, and where each orchestrator can run.

Every choice either compiles into pipelines that run end to end, or is refused here with its
location: Prefect everywhere; Kubeflow Pipelines on a kubernetes target (it runs on
Kubernetes, its steps are pods); Airflow on the local target (`mlstack deploy` runs the DAGs
under a supervised Airflow, and training.schedule's retrain as mlstack's own DAG:
mlstack.ops.local.airflow_scheduler), refused on the others with what is missing there.
"""

from __future__ import annotations

from collections.abc import Iterator

from mlstack.diagnostics.diagnostic import Diagnostic
from mlstack.frontend.checks import CheckContext

WHERE = ("target", "orchestrator")


def check_orchestrator(ctx: CheckContext) -> Iterator[Diagnostic]:
    t = ctx.system.target
    if t.orchestrator == "airflow":
        yield from _airflow(ctx)
    if t.orchestrator != "kubeflow":
        return
    if t.kind == "local":
        yield ctx.diag("MLS509", "orchestrator kubeflow cannot run on the local target: Kubeflow "
                       "Pipelines runs each step as a pod on a Kubernetes cluster", WHERE,
                       "use orchestrator: prefect locally, or target kind: kubernetes")
    elif t.kind != "kubernetes":  # gcp is refused as a target (MLS901) already
        yield ctx.diag("MLS901", f"orchestrator kubeflow is not supported yet on the {t.kind} "
                       "target: its stack places no workloads on the cluster", WHERE,
                       "use target kind: kubernetes, or orchestrator: prefect")
    if t.compute is not None:
        yield ctx.diag("MLS901", "orchestrator kubeflow with target.compute is not supported "
                       "yet: the pipeline's steps are pods of their own, and none joins a Ray "
                       "cluster", WHERE, "remove target.compute, or use orchestrator: prefect")


# What each target lacks to run the Airflow DAGs (pipelines/airflow_dags.py) end to end
# (the kubernetes stack deploys Airflow: mlstack.codegen.backends.airflow_kubernetes).
AIRFLOW_MISSING = {
    "aws": "the stack deploys no Airflow (MWAA) and no task runs as a container of the "
           "service image yet",
}


def _airflow(ctx: CheckContext) -> Iterator[Diagnostic]:
    kind = ctx.system.target.kind
    if kind == "local":  # deploy runs the DAGs, and the scheduled retrain, under its own
        return  # Airflow services (every schedule the spec takes is a cron line Airflow runs)
    if kind == "kubernetes":  # the stack deploys Airflow; each task is a pod of its own
        if ctx.system.target.compute is not None:
            yield ctx.diag("MLS901", "orchestrator airflow with target.compute is not "
                           "supported yet on the kubernetes target: each step runs in a pod "
                           "of its own, and none joins a Ray cluster", ("target", "compute"),
                           "remove target.compute, or use orchestrator: prefect")
        return
    missing = AIRFLOW_MISSING.get(kind, "its stack runs no Airflow")
    yield ctx.diag("MLS901", f"orchestrator airflow is not supported yet on the {kind} target: "
                   f"{missing}", WHERE,
                   "use orchestrator: prefect (the default) for now")
