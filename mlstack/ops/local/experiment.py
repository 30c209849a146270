"""A/B experiments on the local target: started by a deploy whose rollout strategy is ab,
looked at and decided by the keeper, shown by status.

A deploy (stages/rollout.py) routes the candidate its split of the entities, sticky by a hash
of the key (the router's traffic_split; runtime.assignment.assign_arm), and records the
experiment in the project's state (`state.experiment`). The control stays the current
version; the candidate runs beside it, READY. Every LOOK_EVERY seconds the keeper calls
`advance`: each arm's outcomes since the start are the outcomes POST /feedback stored joined
with the log's index of requests (runtime.feedback.outcomes_by_version: one per request, the
version that answered it; two SQLite files, no parquet), summed per version into
runtime.experiment_stats.ArmStats, and looked at by its mSPRT (`look`: always-valid, so
looking this often costs no validity). A decision is carried out at once (`conclude`):

    promote       the candidate takes all traffic and becomes current; the control stops
    abort         the control keeps all traffic; the candidate stops, rolled back
    inconclusive  (max_samples or max_duration reached) as abort

A canary's feedback guard (rollout.feedback, `hold_canary`) is the same record of kind
"canary": a canary deploy whose steps passed holds the candidate at its last step below 100%
(requests drawn at random, not sticky) and the keeper looks at it alike. Its one difference
is the end undecided (`guard_end`): with min_samples outcomes per version no harm was found,
and the canary is promoted; with fewer, too little feedback, and the control is kept.

The unit of the test is the request with an outcome: requests of one entity are counted as
independent (a per-entity analysis is not done; docs/experiments.md says what that means).
A deploy, rollback or down while an experiment runs ends it (`end`), the control serving.
"""

from __future__ import annotations

import time
from typing import Any

from mlstack.ops.local.services import route, stop_version
from mlstack.ops.local.state import DeploymentState, VersionStatus
from mlstack.ops.paths import ProjectPaths

LOOK_EVERY = 5.0  # seconds between the keeper's looks at a running experiment
RUNNING = "running"
AB, CANARY = "ab", "canary"  # an experiment's kind: strategy ab, or a canary's feedback guard


def running(state: DeploymentState) -> dict | None:
    """The experiment that runs now, None when none does."""
    e = state.experiment
    return e if e.get("status") == RUNNING else None


def start(state: DeploymentState, paths: ProjectPaths, *, system: str, control: str,
          candidate: str, ab: Any, now: float | None = None) -> dict:
    """Route the candidate its sticky split and record the experiment (saved). `ab`: the
    IR's AbNode."""
    name = f"{system}-{candidate}-vs-{control}"
    route(paths, {control: 100 - ab.split, candidate: ab.split}, state,
          {"sticky": {"experiment": name, "key": ab.key}})
    return _started(state, name, AB, control, candidate, ab, ab.split, ab.key, now)


def hold_canary(state: DeploymentState, paths: ProjectPaths, *, system: str, control: str,
                candidate: str, guard: Any, now: float | None = None) -> dict:
    """A canary's feedback guard: the candidate keeps its last step's share of the requests
    (no stickiness: a canary's requests are drawn at random), and the keeper's looks decide
    (`advance`). `guard`: the IR's FeedbackGuardNode."""
    name = f"{system}-{candidate}-canary"
    route(paths, {control: 100 - guard.weight, candidate: guard.weight}, state)
    return _started(state, name, CANARY, control, candidate, guard, guard.weight, None, now)


def _started(state: DeploymentState, name: str, kind: str, control: str, candidate: str,
             test: Any, split: int, key: str | None, now: float | None) -> dict:
    started = round(time.time() if now is None else now, 3)
    state.experiment = {
        "name": name, "kind": kind, "status": RUNNING, "control": control,
        "candidate": candidate, "key": key, "split": split, "started_at": started,
        "config": {"metric": test.metric, "higher_is_better": test.higher_is_better,
                   "baseline": test.baseline, "minimum_lift": test.minimum_lift,
                   "tau": test.tau, "alpha": test.alpha, "min_samples": test.min_samples,
                   "max_samples": test.max_samples,
                   "max_duration_s": test.max_duration_seconds},
        "state": None, "readout": None, "looked_at": None, "outcome": None}
    state.record("experiment-started", experiment=name, kind=kind, control=control,
                 candidate=candidate, split=split, key=key)
    state.save()
    return state.experiment


def kind_of(record: dict) -> str:
    return record.get("kind") or AB  # journals before the canary guard recorded no kind


def what(record: dict) -> str:
    """How status, the report and the keeper name it."""
    return "canary feedback guard" if kind_of(record) == CANARY else "A/B experiment"


def config_of(record: dict) -> Any:
    from mlstack.runtime.experiment_stats import ExperimentConfig

    c = record["config"]
    return ExperimentConfig(
        name=record["name"], control=record["control"], candidate=record["candidate"],
        tau=c["tau"], alpha=c["alpha"], min_samples=c["min_samples"],
        max_samples=c["max_samples"], max_duration_s=c["max_duration_s"], metric=c["metric"],
        higher_is_better=c["higher_is_better"])


def arm_stats(paths: ProjectPaths, record: dict) -> tuple[Any, Any, int]:
    """Each arm's ArmStats from the outcomes of its answers since the start, and how many
    outcomes were left out (a conversion that is not 0/1, true/false; a mean that is not a
    number)."""
    from mlstack.codegen.contract import PREDICTION_LOG_DIR
    from mlstack.runtime.experiment_stats import ArmStats
    from mlstack.runtime.feedback import outcomes_by_version

    folder = paths.runtime_state_dir / PREDICTION_LOG_DIR
    conversion = record["config"]["metric"] == "conversion"
    values: dict[str, list[float]] = {record["control"]: [], record["candidate"]: []}
    invalid = 0
    for version, outcome in outcomes_by_version(folder, since=record["started_at"]):
        arm = values.get(version)
        if arm is None:
            continue
        number = outcome_number(outcome, conversion)
        if number is None:
            invalid += 1
        else:
            arm.append(number)
    return (ArmStats.from_values(values[record["control"]]),
            ArmStats.from_values(values[record["candidate"]]), invalid)


def outcome_number(outcome: Any, conversion: bool) -> float | None:
    """An outcome as the test's number: a conversion is 0 or 1 (true/false too), a mean any
    finite number; None for anything else."""
    import math

    if isinstance(outcome, bool):
        return float(outcome)
    if isinstance(outcome, str):
        text = outcome.strip().lower()
        if text in ("true", "false"):
            return float(text == "true")
        try:
            outcome = float(text)
        except ValueError:
            return None
    if not isinstance(outcome, int | float) or not math.isfinite(outcome):
        return None
    if conversion and outcome not in (0, 1):
        return None
    return float(outcome)


def look(paths: ProjectPaths, state: DeploymentState, now: float | None = None) -> dict:
    """One look at the running experiment: its state and readout updated in `state` (not
    saved). Returns the readout."""
    from mlstack.runtime.experiment_stats import ExperimentState, new_state
    from mlstack.runtime.experiment_stats import look as look_at

    record = state.experiment
    now = time.time() if now is None else now
    control, candidate, invalid = arm_stats(paths, record)
    before = (ExperimentState.from_dict(record["state"]) if record.get("state")
              else new_state(record["started_at"]))
    after, readout = look_at(config_of(record), before, control, candidate, now)
    record["state"] = after.to_dict()
    record["readout"] = {**readout.to_dict(), "invalid_outcomes": invalid}
    record["looked_at"] = round(now, 3)
    return record["readout"]


def advance(paths: ProjectPaths, state: DeploymentState, now: float | None = None) -> list[str]:
    """The keeper's step (under the project lock): look, and carry out a decision. Returns
    what was done, one line each."""
    record = running(state)
    if record is None:
        return []
    readout = look(paths, state, now)
    decision, reason = readout["decision"], readout["reason"]
    if decision == "continue":
        state.save()
        return []
    if decision == "inconclusive" and kind_of(record) == CANARY:
        decision, reason = guard_end(record, readout)
    return [conclude(paths, state, decision, reason)]


def guard_end(record: dict, readout: dict) -> tuple[str, str]:
    """A canary guard ended undecided (max_samples or max_duration): no harm was found, so
    the canary is promoted, when each version has min_samples outcomes; with fewer there is
    too little feedback to judge, and the version serving is kept."""
    need = record["config"]["min_samples"]
    counts = {arm: figures["n"] for arm, figures in readout["arms"].items()}
    budget = readout["reason"].split(" reached", 1)[0].removeprefix("inconclusive: ")
    if min(counts.values(), default=0) >= need:
        return "promote", (f"no harm found: {budget} reached with p={readout['p_value']:.3g} "
                           f">= alpha={readout['alpha']:g}, {need}+ outcomes per version")
    return "abort", (f"too little feedback: {budget} reached with "
                     + ", ".join(f"{arm} {n}" for arm, n in counts.items())
                     + f" outcomes, fewer than min_samples {need}; "
                     f"keeping {record['control']}")


def conclude(paths: ProjectPaths, state: DeploymentState, decision: str, reason: str) -> str:
    """Carry out a decision (saved before any process stops)."""
    record = state.experiment
    control, candidate = state.get(record["control"]), state.get(record["candidate"])
    if decision == "promote" and candidate is not None:
        route(paths, {candidate.version: 100}, state)
        candidate.status = VersionStatus.SERVING
        state.previous, state.current = record["control"], candidate.version
        stopping, stopped_status = control, VersionStatus.STOPPED
        done = f"promoted {candidate.version} by the {readout_name(record)} ({reason})"
    else:
        route(paths, {record["control"]: 100}, state)
        stopping, stopped_status = candidate, VersionStatus.ROLLED_BACK
        done = f"kept {record['control']} by the {readout_name(record)} ({reason})"
    _ended(state, decision, reason)
    state.record(f"experiment-{decision}", experiment=record["name"], reason=reason)
    state.save()
    if stopping is not None:
        stop_version(paths, stopping)
        stopping.status = stopped_status
        state.save()
    return done


def readout_name(record: dict) -> str:
    return "canary's feedback readout" if kind_of(record) == CANARY else "A/B readout"


def end(state: DeploymentState, why: str) -> None:
    """End a running experiment without a decision of its own (a deploy, rollback or down
    came first): the control is what serves. Not saved."""
    record = running(state)
    if record is None:
        return
    _ended(state, "ended", why)
    state.record("experiment-ended", experiment=record["name"], reason=why)


def _ended(state: DeploymentState, outcome: str, reason: str) -> None:
    state.experiment.update(status="ended", outcome=outcome, reason=reason,
                            ended_at=round(time.time(), 3))


def interval_text(low: float | None, high: float | None, spec: str = "+.4g") -> str:
    """An always-valid interval as status and the report print it: '[+0.03, +inf]' (an end
    not bounded yet is infinite); `spec` formats each end ('+.1%' for a relative lift)."""
    return (f"[{'-inf' if low is None else format(low, spec)}, "
            f"{'+inf' if high is None else format(high, spec)}]")
