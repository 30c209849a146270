"""The sidecars stage: the project's long-running services (Prefect's server and runner,
Prometheus, Alertmanager: mlstack.ops.local.sidecars) brought up after the new version is
ready and before any traffic moves, so a sidecar that cannot start fails the deploy with its
cause while the old version keeps serving."""

from __future__ import annotations

import time

from mlstack.diagnostics.errors import StageError
from mlstack.ops.local import airflow_scheduler, alerting, sidecars
from mlstack.ops.local.stages.context import DeployContext
from mlstack.ops.report import StageRecord, StageStatus


def run(ctx: DeployContext, *, report_healthy: bool = True) -> None:
    """Start what is declared and not running healthy. `report_healthy` False (the serving
    version stays): no stage is reported when every sidecar already ran healthy."""
    declared = sidecars.declared(ctx.paths, ctx.system)
    if not declared:  # no provider declares any: no stage to report
        return
    if not report_healthy:
        began = time.perf_counter()
        try:
            notes = sidecars.start_all(ctx.paths, declared)
            notes += airflow_scheduler.settle(ctx.paths, ctx.system, declared)
        except RuntimeError as exc:
            ctx.stages.add(StageRecord("sidecars", StageStatus.FAILED,
                                       round(time.perf_counter() - began, 3), str(exc)))
            raise StageError("sidecars", str(exc)) from exc
        if notes:
            ctx.stages.add(StageRecord("sidecars", StageStatus.DONE,
                                       round(time.perf_counter() - began, 3), "; ".join(notes)))
        return
    with ctx.stages.stage("sidecars") as record:
        notes = sidecars.start_all(ctx.paths, declared)
        notes += airflow_scheduler.settle(ctx.paths, ctx.system, declared)
        record.detail = "; ".join(notes) or (
            f"{len(declared)} running: " + ", ".join(s.name for s in declared))
        missing = alerting.alerts_unavailable(ctx.paths)  # said once, with the stage
        if missing:
            record.detail += f"; {missing}"
