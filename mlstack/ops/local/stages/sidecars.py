"""The sidecars stage: the project's long-running services (Prefect's server and runner,
Prometheus, Alertmanager: mlstack.ops.local.sidecars) brought up after the new version is
ready and before any traffic moves, so a sidecar that cannot start fails the deploy with its
cause while the old version keeps serving."""

from __future__ import annotations

from mlstack.ops.local import sidecars
from mlstack.ops.local.stages.context import DeployContext


def run(ctx: DeployContext) -> None:
    declared = sidecars.declared(ctx.paths, ctx.system)
    if not declared:  # no provider declares any: no stage to report
        return
    with ctx.stages.stage("sidecars") as record:
        notes = sidecars.start_all(ctx.paths, declared)
        record.detail = "; ".join(notes) or (
            f"{len(declared)} running: " + ", ".join(s.name for s in declared))
