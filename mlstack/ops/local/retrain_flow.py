"""The flow behind a local project's training schedule (`<system>-training`): a scheduled
retrain goes through deploy's rollout (mlstack.ops.local.retrain: train, the gates, then the
canary), so a model reaches serving the way `mlstack deploy` brings it, never by a write to
the model registry alone.

Until mlstack.ops.local.retrain exists the flow runs the generated training flow of the
serving version's code folder (the working folder of the runner's flow runs), as a subflow.
"""

from __future__ import annotations

import importlib
from dataclasses import asdict, is_dataclass

from prefect import flow

RETRAIN_MODULE = "mlstack.ops.local.retrain"


@flow(name="scheduled-training")
def scheduled_training(spec: str) -> dict:
    """Retrain the project of `spec` and roll the model out when it passes the gates."""
    try:
        retrain = importlib.import_module(RETRAIN_MODULE).retrain
    except ModuleNotFoundError as exc:
        if exc.name != RETRAIN_MODULE:
            raise
        return dict(importlib.import_module("pipelines.flows").training_flow() or {})
    return _as_dict(retrain(spec))


def _as_dict(outcome: object) -> dict:
    if is_dataclass(outcome) and not isinstance(outcome, type):
        return asdict(outcome)
    if isinstance(outcome, dict):
        return outcome
    return {"outcome": None if outcome is None else str(outcome)}
