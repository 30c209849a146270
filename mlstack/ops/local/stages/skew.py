"""The skew_check stage: entities sampled offline, asked of the new version online, compared
feature by feature and prediction by prediction; the rows that served features become the
load's requests and the version's example request."""

from __future__ import annotations

from mlstack.diagnostics.errors import StageError
from mlstack.ops.local.services import run_worker, version_url
from mlstack.ops.local.stages.context import DeployContext
from mlstack.ops.local.stages.requests import example_rows, load_requests


def run(ctx: DeployContext) -> None:
    with ctx.stages.stage("skew_check") as record:
        skew = worker(ctx, "skew", url=version_url(ctx.version), size=ctx.options.skew_sample,
                      freshness=int(measures_freshness(ctx)))
        if skew["mismatches"]:
            raise StageError("skew_check", "; ".join(skew["mismatches"][:5]),
                             "online and offline features (or predictions) differ")
        record.detail = (f"{skew['compared']} of {skew['sampled']} entities: online = offline, "
                         f"max prediction diff {skew['max_abs_prediction_diff']}"
                         + (f"; /rank order = offline order in {skew['groups']} groups"
                            if skew.get("groups") else ""))
    ctx.skew = skew
    # the load test and the example a user is shown (and status re-checks) use rows that
    # serve features: a row past its views' TTLs is answered null without scoring
    served = skew.get("served_rows") or skew["rows"]
    ctx.endpoint, ctx.bodies = load_requests(ctx.system, served)
    ctx.version.example_rows = example_rows(ctx.system, served)


def measures_freshness(ctx: DeployContext) -> bool:
    return ctx.options.verify and ctx.system.slos.feature_freshness_seconds is not None


def worker(ctx: DeployContext, job: str, **options) -> dict:
    outcome = run_worker(ctx.paths, ctx.code_dir, job, ctx.package, **options)
    if not outcome.ok:
        raise RuntimeError(f"{outcome.error_type}: {outcome.error}")
    return outcome.result
