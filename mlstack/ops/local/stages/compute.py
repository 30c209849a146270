"""The compute stage: target.compute's Ray cluster, which the flows and the skew check run
on, made to match the spec before anything runs (started, kept from the last deploy,
resized, or joined); without compute, a cluster this project started before is stopped."""

from __future__ import annotations

from mlstack.frontend.ir.nodes import SystemIR
from mlstack.ops.local import ray_cluster
from mlstack.ops.local.stages.context import StageLog
from mlstack.ops.local.state import DeploymentState
from mlstack.ops.paths import ProjectPaths


def run(system: SystemIR, paths: ProjectPaths, state: DeploymentState, stages: StageLog) -> None:
    compute = system.target.compute
    if compute is None:
        if state.cluster.address:
            with stages.stage("compute") as record:
                left = ray_cluster.stop(paths, state)
                record.detail = "target.compute is gone: the project's Ray cluster stopped" + (
                    f" ({len(left)} processes would not stop)" if left else "")
        return
    with stages.stage("compute") as record:
        outcome = ray_cluster.ensure(paths, state, compute)
        workers = [n for n in outcome.nodes if n["name"] != "head"]
        if compute.address != "local":
            record.detail = f"joining the Ray cluster at {outcome.address}"
        else:
            record.detail = (f"Ray head + {len(workers)} workers ({compute.worker.cpu:g} CPU, "
                             f"{compute.worker.memory_mib} MiB each) on {outcome.address}, "
                             + (f"started in {outcome.seconds:g} s" if outcome.started
                                else "kept from the last deploy"))
