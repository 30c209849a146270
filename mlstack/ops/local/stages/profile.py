"""The profile stage: the version's batching derived from the measured cost of its served
path, written where its service reads it at start (mlstack.ops.local.profile)."""

from __future__ import annotations

from mlstack.ops.local.profile import profile_version
from mlstack.ops.local.stages.context import DeployContext


def run(ctx: DeployContext) -> None:
    profile_version(ctx)
