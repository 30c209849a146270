"""The flow behind a local project's training schedule (`<system>-training`): a scheduled
retrain goes through deploy's rollout (mlstack.ops.local.retrain: train, the gates, then the
canary), so a model reaches serving the way `mlstack deploy` brings it, never by a write to
the model registry alone.
"""

from __future__ import annotations

from dataclasses import asdict, is_dataclass

from prefect import flow

from mlstack.ops.local.retrain import retrain


@flow(name="scheduled-training")
def scheduled_training(spec: str) -> dict:
    """Retrain the project of `spec` and roll the model out when it passes the gates."""
    return _as_dict(retrain(spec))


def _as_dict(outcome: object) -> dict:
    if is_dataclass(outcome) and not isinstance(outcome, type):
        return asdict(outcome)
    if isinstance(outcome, dict):
        return outcome
    return {"outcome": None if outcome is None else str(outcome)}
