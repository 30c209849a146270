"""The start_service stage: the version's supervised service, on a port of its own, ready
before anything else looks at it; no traffic reaches it yet."""

from __future__ import annotations

from mlstack.ops.local.services import start_version, version_url
from mlstack.ops.local.stages.context import DeployContext


def run(ctx: DeployContext) -> None:
    with ctx.stages.stage("start_service") as record:
        start_version(ctx.paths, ctx.version, ctx.code_dir, ctx.state)
        record.detail = (f"{ctx.version.version} on {version_url(ctx.version)} "
                         f"(pid {ctx.version.pid})")
