"""The keep_serving stage: no new version, the serving one stays. Its snapshot takes the new
tree (the service's files are byte-identical, checked by the plan) and, when an SLO changed,
it is re-verified."""

from __future__ import annotations

import shutil

from mlstack.diagnostics.errors import StageError
from mlstack.ops.local.services import version_url
from mlstack.ops.local.stages import sidecars
from mlstack.ops.local.stages.context import DeployContext
from mlstack.ops.local.stages.plan import digest, tree_files
from mlstack.ops.local.stages.requests import load_requests
from mlstack.ops.local.stages.verify import freshness, verify


def run(ctx: DeployContext) -> None:
    system, paths, options, state = ctx.system, ctx.paths, ctx.options, ctx.state
    assert ctx.plan is not None  # keep_serving runs as a step of a plan
    current, actions = ctx.current, ctx.plan.actions
    assert current is not None  # planned only when a version serves
    if actions.nothing:
        ctx.stages.skip("unchanged", f"{current.version} already serves this spec and data")
        sidecars.run(ctx, report_healthy=False)
        return
    ctx.stages.skip("train", "; ".join(actions.reasons) + f": {current.version} keeps serving")
    if actions.verify and options.verify:  # a missed SLO fails here: the version stays as is
        endpoint, bodies = load_requests(system, current.example_rows, one_request=True)
        try:
            verify(system, options, version_url(current), bodies, ctx.stages, current.metrics,
                   freshness=freshness(system, paths, current), version=current,
                   endpoint=endpoint)
        except StageError as exc:  # the report of the failed re-verification is shown
            state.record("deploy-failed", version=current.version, stage=exc.stage,
                         error=exc.message)
            state.save()
            raise
    sidecars.run(ctx, report_healthy=False)
    shutil.copytree(paths.build_dir, paths.versions_dir / current.version, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns(".state", "__pycache__", "*.pyc"))
    current.spec_hash = system.spec_hash
    current.tree_hash = digest(tree_files(paths.build_dir))
    state.record("deploy-updated", version=current.version, reasons=list(actions.reasons))
    state.save(paths.deployments_file)
