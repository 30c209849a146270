"""A scheduled retrain of a deployed local project: deploy's own stages, unattended.

`retrain(spec)` (the scheduled training flow calls it) works on the spec that serves:
- it takes the project lock, waiting a bounded time for a command that holds it;
- when the project's spec no longer matches the serving version's (its spec hash), or
  nothing serves, it does nothing: the spec's change is `mlstack deploy`'s to roll out;
- when the source data did not change since the serving version trained (its data key),
  it makes no version;
- otherwise it trains a candidate from the serving version's own tree and, with
  `training.on_new_model: rollout` (the default), walks the rest of deploy's plan: profile,
  skew check, SLO verification, sidecars, the canary with the spec's abort rules, then
  promote or roll back; with `register` it stops after the model is registered and the
  candidate waits for `mlstack deploy`, which rolls it out without training again.
Every outcome is recorded in the journal, the deploy's entries naming the trigger "schedule".
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from mlstack.diagnostics.errors import UsageError
from mlstack.ops.local.services import supervised
from mlstack.ops.local.stages import compute
from mlstack.ops.local.stages.context import (
    DeployOptions,
    JournaledProgress,
    NullProgress,
    StageLog,
)
from mlstack.ops.local.stages.plan import (
    NEW_VERSION_STAGES,
    DeployPlan,
    data_key,
    deployed_system,
)
from mlstack.ops.local.state import DeploymentState, Version
from mlstack.ops.paths import RETRAIN_HOLDER, ProjectPaths, project_lock
from mlstack.ops.report import DeployResult
from mlstack.workspace.plan import DeployActions

LOCK_WAIT = 600.0  # seconds a retrain waits for a command holding the project (a deploy)
TRIGGER = "schedule"
LOCK_HOLDER = RETRAIN_HOLDER  # who the lock file names while a retrain holds the project
WAITS_FOR_DEPLOY = "the scheduled retrain waits for `mlstack deploy`"


@dataclass(frozen=True)
class RetrainDecision:
    action: str  # wait (nothing done until a deploy), unchanged (no version), train
    reason: str


def decide(current: Version | None, alive: bool, serving_hash: str | None,
           spec_hash: str | None, key: str) -> RetrainDecision:
    """What a scheduled retrain does: `current` the version the record says serves (`alive`:
    its supervisor runs), `serving_hash` its spec hash (None: its snapshot is unreadable),
    `spec_hash` the project's spec's now (None: it does not compile), `key` the source
    data's fingerprint now."""
    if current is None or not current.model_tag or serving_hash is None:
        return RetrainDecision("wait", f"nothing is deployed: {WAITS_FOR_DEPLOY}")
    if not alive:
        return RetrainDecision("wait", f"{current.version} is not running: {WAITS_FOR_DEPLOY}")
    if spec_hash != serving_hash:
        what = "does not compile" if spec_hash is None else "changed"
        return RetrainDecision("wait", f"the spec {what} since {current.version} was "
                                       f"deployed: {WAITS_FOR_DEPLOY} to roll it out")
    if key == current.training_key:
        return RetrainDecision("unchanged", f"the source data did not change since "
                                            f"{current.version} trained: no new version")
    return RetrainDecision("train", f"source data changed since {current.version} trained: "
                                    "retrain")


def retrain_plan(system, current: Version, reason: str) -> DeployPlan:
    """Deploy's plan for a retrain: train, then the whole rollout (on_new_model: rollout) or
    only the registered candidate (register)."""
    stages = NEW_VERSION_STAGES if system.training.on_new_model == "rollout" else ("train",)
    return DeployPlan(DeployActions(True, True, True, (reason,)), current.version, True,
                      stages=stages, trigger=TRIGGER)


def retrain(spec_path: Path | str, progress=None, *,
            lock_wait: float = LOCK_WAIT) -> DeployResult | None:
    """Run deploy's stages for the spec that serves, on new data (see the module's doc).
    Returns the deploy's result, or None when it made no version (the reason goes to
    `progress.note` and the journal). StageError (with `.result`) when a stage fails: the
    serving version keeps serving."""
    from mlstack.ops.local.deploy import run_plan  # deploy imports nothing of this module
    from mlstack.workspace.build import spec_paths

    paths = ProjectPaths.for_spec(spec_paths(spec_path).spec)
    with ExitStack() as held:
        _wait_for_lock(held, paths, lock_wait)
        state = DeploymentState.load(paths.deployments_file, spec=paths.spec)
        stages = StageLog(JournaledProgress(progress or NullProgress(), state))
        current = state.get(state.current)
        serving = deployed_system(paths, current)
        decision = decide(current, supervised(paths, current),
                          current.spec_hash if current is not None and serving else None,
                          _spec_hash(paths.spec),
                          data_key(serving, paths.project_dir) if serving else "")
        if decision.action != "train":
            state.record("retrain-skipped", trigger=TRIGGER, reason=decision.reason,
                         **({"version": current.version} if current else {}))
            state.save(paths.deployments_file)
            stages.note(decision.reason)
            return None
        # decide() trains only a version that serves with a readable snapshot (serving_hash)
        assert current is not None and serving is not None
        compute.run(serving, paths, state, stages)
        options = DeployOptions(port=state.router.port or DeployOptions.port)
        return run_plan(serving, paths, options, state,
                        retrain_plan(serving, current, decision.reason), stages,
                        source=paths.versions_dir / current.version)


def _spec_hash(spec: Path) -> str | None:
    """The spec hash of the project's spec as it is now, None when it does not compile."""
    from mlstack.diagnostics.errors import SpecError
    from mlstack.frontend.analysis import require_system

    try:
        system, _ = require_system(spec)
    except (SpecError, OSError):
        return None
    return system.spec_hash


def _wait_for_lock(held: ExitStack, paths: ProjectPaths, wait: float) -> None:
    """The project lock, waiting up to `wait` seconds for a command that holds it."""
    deadline = time.monotonic() + wait
    while True:
        try:
            held.enter_context(project_lock(paths, holder=LOCK_HOLDER))
            return
        except UsageError:
            if time.monotonic() >= deadline:
                raise UsageError(
                    f"another mlstack command held the project for {wait:g} s: the scheduled "
                    "retrain gave up", "it runs again at its next scheduled time") from None
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
