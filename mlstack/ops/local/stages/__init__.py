"""The deploy's stages, one module each, every one a `run(ctx: DeployContext)`; `execute`
walks the stage list of a plan (stages.plan, computed against the serving version) in order.

    train -> profile -> start_service -> skew_check -> verify -> sidecars -> rollout -> promote

or, when no new version is needed, keep_serving. A stage that fails raises StageError naming
itself; the caller (deploy.py, retrain.py) puts the traffic back and records the failure.
"""

from __future__ import annotations

import importlib

from mlstack.ops.local.stages.context import DeployContext

# stage name -> module (under mlstack.ops.local.stages) whose run(ctx) does it
MODULES = {"train": "train", "profile": "profile", "start_service": "start",
           "skew_check": "skew", "verify": "verify", "sidecars": "sidecars",
           "rollout": "rollout", "promote": "promote", "keep_serving": "keep"}


def execute(ctx: DeployContext, stages: tuple[str, ...] | None = None) -> None:
    """Run the plan's stages (or `stages`, a part of them) on `ctx`, in order."""
    if stages is None:
        assert ctx.plan is not None  # the caller applies a plan
        stages = ctx.plan.stages
    for name in stages:
        importlib.import_module(f"{__name__}.{MODULES[name]}").run(ctx)
