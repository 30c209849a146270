"""The train stage: the generated Prefect flow (ingest, validate, feast_apply, materialize,
training_set, train, evaluate, register) in a worker, one stage record per flow task; or,
when the plan reuses a model, the reused model taken over."""

from __future__ import annotations

import time

from mlstack.diagnostics.errors import StageError
from mlstack.ops.local.services import run_worker
from mlstack.ops.local.stages.context import FLOW_STAGES, DeployContext
from mlstack.ops.report import StageRecord, StageStatus


def run(ctx: DeployContext) -> None:
    assert ctx.plan is not None  # the train stage runs as a step of a plan
    reuse = ctx.state.get(ctx.plan.reuse)
    if reuse is None or not reuse.model_tag:
        train(ctx)
        return
    ctx.version.model_tag, ctx.version.metrics = reuse.model_tag, reuse.metrics
    ctx.stages.skip("train", f"{'; '.join(ctx.plan.reasons)}: reusing {reuse.model_tag}")


def train(ctx: DeployContext) -> None:
    stages, paths = ctx.stages, ctx.paths
    pending = list(FLOW_STAGES)
    failed: list[str] = []
    stages.progress.start(pending[0])
    began = time.perf_counter()

    def on_progress(line: dict) -> None:
        nonlocal began
        name = line["task"]
        if name not in pending:
            return
        ok = line["state"] == "COMPLETED"
        if not ok:
            failed.append(name)
        stages.add(StageRecord(name, StageStatus.DONE if ok else StageStatus.FAILED,
                               round(line.get("seconds") or time.perf_counter() - began, 3),
                               line.get("error", "")))
        pending.remove(name)
        began = time.perf_counter()
        if ok and pending:
            stages.progress.start(pending[0])

    outcome = run_worker(paths, ctx.code_dir, "train", ctx.package,
                         progress_file=paths.state_dir / "train-progress.jsonl",
                         on_progress=on_progress, profile=1)
    if not outcome.ok:
        # the task that failed, else the flow failed before or between its tasks
        stage = failed[0] if failed else "train"
        raise StageError(stage, outcome.error, f"log: {paths.logs_dir / 'worker-train.log'}")
    ctx.version.model_tag = outcome.result["model_tag"]
    ctx.version.metrics = outcome.result["metrics"]
    ctx.profiled = outcome.result.get("profile")  # measured after training, in its process
    device = outcome.result.get("device")
    record = next((r for r in stages.records if r.name == "train"), None)
    if device and record is not None and not record.detail:  # the flow's choice, and why
        record.detail = f"on {device['device']}: {device['reason']}"
