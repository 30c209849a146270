"""target.compute, resolved: which offline step runs where on the Ray cluster, and why.

Without a compute section nothing changes (every step runs in the flow's own process). With
one, each step gets a placement that `plan --explain` prints and the generated flow follows:

- ingest and validate: one Prefect task per file source on the RayTaskRunner;
- materialize: one Prefect task per online feature view on the RayTaskRunner, each writing
  through Feast's Ray compute engine;
- training_set: Feast's Ray offline store (a distributed point-in-time join, Ray Data);
- train: Ray Train data-parallel for the frameworks whose sklearn estimators train
  distributed (xgboost, lightgbm), else one Ray task on a worker node;
- evaluate: the metrics and gates in one Ray task on a worker.
"""

from __future__ import annotations

from collections.abc import Callable

from mlstack.frontend.ir import nodes as ir
from mlstack.frontend.loader import Path_
from mlstack.frontend.spec.models import SystemSpec
from mlstack.frontend.spec.types import memory_mib

# Frameworks whose scikit-learn estimators train data-parallel under Ray Train: xgboost's
# collective (rabit) and lightgbm's socket network both join the workers of one fit.
RAY_TRAIN_FRAMEWORKS = ("lightgbm", "xgboost")


def train_placement(model: ir.ModelNode) -> tuple[str, str]:
    """('ray_train' | 'ray_task', why) for the model's fit."""
    fw = model.framework
    if model.estimator.factory is not None:
        return "ray_task", (f"model.estimator is user code ({model.estimator.display}): it "
                            "fits in one Ray task on a worker node")
    if fw not in RAY_TRAIN_FRAMEWORKS:
        why = {"sklearn": "Ray Train has no scikit-learn trainer",
               "pytorch": "mlstack's MLP estimator fits in one process (Ray Train's "
                          "TorchTrainer needs a DDP training loop)"}.get(
            fw, f"{fw} has no Ray Train path in mlstack")
        return "ray_task", f"{why}: the model fits in one Ray task on a worker node"
    if model.group_by is not None:
        return "ray_task", ("a ranker needs every query group in one process: the model fits "
                            "in one Ray task on a worker node")
    return "ray_train", (f"{fw} trains data-parallel with Ray Train: each of the workers fits "
                         f"on its shard and {fw} joins them into one model")


def resolve_compute(spec: SystemSpec, model: ir.ModelNode, online_views: int,
                    pointer: Callable[[Path_], str]) -> ir.ComputeNode | None:
    """The compute node of a spec with target.compute, else None."""
    c = spec.target.compute
    if c is None:
        return None
    engine, how = train_placement(model)
    where = ("a Ray head and workers this machine starts" if c.address == "local"
             else f"the Ray cluster at {c.address}")
    if c.address == "local" and spec.target.kind != "local":
        where = "the target's KubeRay cluster"
    steps = (
        ir.ComputeStepNode(step="ingest", runs_on="ray_tasks", reason=(
            f"one Prefect task per file source ({len(spec.sources)}) on the RayTaskRunner "
            f"({where}); they are independent")),
        ir.ComputeStepNode(step="validate", runs_on="ray_tasks", reason=(
            "each source's data checks run in its ingest task, on the worker that read it")),
        ir.ComputeStepNode(step="materialize", runs_on="ray_tasks" if c.workers > 1 else "flow",
                           reason=(
            f"one Prefect task per online feature view ({online_views}) on the RayTaskRunner, "
            "each through Feast's Ray compute engine, at most workers - 1 at a time (a task "
            "holds a CPU its Ray Data tasks need)" if c.workers > 1 else
            "in the flow's process, through Feast's Ray compute engine: with one worker a "
            "task would hold the CPU its own Ray Data tasks need")),
        ir.ComputeStepNode(step="training_set", runs_on="ray_data", reason=(
            "Feast's Ray offline store joins the label rows with the features point-in-time "
            "in Ray Data blocks on the workers; the joined set is written as parquet and "
            "never collected into the flow's process")),
        ir.ComputeStepNode(step="train", runs_on=engine, reason=how),
        ir.ComputeStepNode(step="evaluate", runs_on="ray_task", reason=(
            "one Ray task on a worker reads the held-out part and computes the metrics and "
            "gates as the single-process flow does (the held-out rows also come into the "
            "flow's process for the registration's ONNX parity check)")),
    )
    return ir.ComputeNode(
        engine=c.engine, address=c.address, workers=c.workers,
        worker=ir.ResourcesNode(cpu=c.worker.cpu, memory_mib=int(memory_mib(c.worker.memory)),
                                gpu=0, gpu_type=None),
        train_engine=engine, steps=steps, at=pointer(("target", "compute")))
