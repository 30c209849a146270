"""The statistics of an A/B test that stays valid under continuous monitoring.

Sticky assignment: `assign_arm` (mlstack.runtime.assignment, re-exported here: the router
uses it without numpy) maps (experiment, entity key) through SHA-256 to a point of [0, 1) and
that point to an arm by the arms' weights, so a key keeps its arm across processes and
restarts (Python's hash() is salted per process and would not).

The test: the mixture sequential probability ratio test (mSPRT) of Johari, Pekelis and Walsh,
"Always Valid Inference: Continuous Monitoring of A/B Tests" (2017; Optimizely's stats engine),
for the difference of two means under the normal approximation. At each look, with the control
arm A and the candidate arm B (counts n, means m, per-unit variances s2: p(1-p) for a
conversion, the sample variance for a mean):

    theta = m_B - m_A                       the effect (candidate minus control)
    V     = s2_A / n_A + s2_B / n_B         its variance
    Lambda = sqrt(V / (V + tau^2)) * exp(theta^2 tau^2 / (2 V (V + tau^2)))

Lambda is the likelihood ratio of "effect ~ N(0, tau^2)" (the mixture) against "effect = 0".
The always-valid p-value is the running minimum of min(1, 1/Lambda) over the looks, and the
always-valid confidence sequence is the running intersection of the intervals

    theta +- sqrt(V (V + tau^2) / tau^2 * (2 log(1/alpha) + log((V + tau^2) / V)))

(the effects theta0 whose Lambda(theta - theta0) stays below 1/alpha). Guarantee: under
H0 (no effect), P(p-value ever < alpha) <= alpha, at any data-dependent stopping time, so a
dashboard may be peeked at after every event; the interval covers the true effect at all
looks at once with probability >= 1 - alpha. The guarantee is exact for normal data with known
variance and holds asymptotically under the normal approximation used here.

The decision rule (`look`): nothing is decided before each arm has `min_samples`; then the
candidate is promoted once p < alpha with the effect in the metric's good direction, aborted
(control kept) once p < alpha against it, and the experiment stops "inconclusive" (control
kept) when an arm reaches `max_samples` or `max_duration_s` has passed. A decision is final.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from mlstack.runtime.assignment import assign_arm
from mlstack.runtime.rounding import rounded

__all__ = ["METHOD", "ArmStats", "ExperimentConfig", "ExperimentState", "Readout",
           "SimulationResult", "always_valid_halfwidth", "assign_arm", "look",
           "mixture_log_likelihood_ratio", "new_state", "simulate_conversions", "tau_for"]

METHOD = "mSPRT (normal mixture, always-valid p-value; Johari, Pekelis, Walsh 2017)"
Decision = Literal["continue", "promote", "abort", "inconclusive"]
DECISIONS: tuple[Decision, ...] = ("continue", "promote", "abort", "inconclusive")
Floats = npt.NDArray[np.float64]


def tau_for(baseline_mean: float, relative_lift: float) -> float:
    """The mixing scale tau by the rule the docs state: the absolute effect of the smallest
    relative lift worth detecting, at the control's expected mean (tau = lift * |baseline|).
    The mSPRT reaches a decision fastest for effects near tau."""
    tau = abs(relative_lift * baseline_mean)
    if not tau > 0 or not math.isfinite(tau):
        raise ValueError(f"tau must be positive: lift {relative_lift} at {baseline_mean}")
    return tau


def mixture_log_likelihood_ratio(theta: Any, variance: Any, tau: float) -> Floats:
    """log Lambda (module docstring) for arrays of effects and their variances; 0 (no
    evidence either way) where the variance is not positive."""
    theta_a = np.asarray(theta, dtype=np.float64)
    v = np.asarray(variance, dtype=np.float64)
    ok = v > 0
    safe = np.where(ok, v, 1.0)
    t2 = tau * tau
    log_lr = 0.5 * np.log(safe / (safe + t2)) + theta_a**2 * t2 / (2.0 * safe * (safe + t2))
    return np.asarray(np.where(ok, log_lr, 0.0), dtype=np.float64)


def always_valid_halfwidth(variance: Any, tau: float, alpha: float) -> Floats:
    """The half-width of one look's interval (module docstring); inf where the variance is
    not positive (nothing is known yet)."""
    v = np.asarray(variance, dtype=np.float64)
    ok = v > 0
    safe = np.where(ok, v, 1.0)
    t2 = tau * tau
    width = np.sqrt(safe * (safe + t2) / t2 * (2.0 * math.log(1.0 / alpha)
                                               + np.log((safe + t2) / safe)))
    return np.asarray(np.where(ok, width, np.inf), dtype=np.float64)


@dataclass(frozen=True)
class ArmStats:
    """One arm's metric so far: count, mean and the sum of squared deviations (m2), which
    merge exactly (Chan et al.), so batches of feedback add up look by look."""

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0

    @classmethod
    def from_conversions(cls, n: int, successes: int) -> ArmStats:
        if not 0 <= successes <= n:
            raise ValueError(f"successes {successes} not in [0, n={n}]")
        p = successes / n if n else 0.0
        return cls(n, p, n * p * (1.0 - p))

    @classmethod
    def from_values(cls, values: Sequence[float] | Floats) -> ArmStats:
        x = np.asarray(values, dtype=np.float64)
        if x.size == 0:
            return cls()
        mean = float(x.mean())
        return cls(int(x.size), mean, float(((x - mean) ** 2).sum()))

    def merged(self, other: ArmStats) -> ArmStats:
        n = self.n + other.n
        if n == 0:
            return ArmStats()
        delta = other.mean - self.mean
        return ArmStats(n, self.mean + delta * other.n / n,
                        self.m2 + other.m2 + delta * delta * self.n * other.n / n)

    def variance(self, metric: str) -> float:
        """The per-unit variance: p(1-p) for a conversion, the sample variance for a mean."""
        if metric == "conversion":
            return max(self.mean * (1.0 - self.mean), 0.0)
        return self.m2 / (self.n - 1) if self.n > 1 else 0.0


@dataclass(frozen=True)
class ExperimentConfig:
    """What an experiment decides on: the arms, the test's alpha and tau, the sample and time
    budget (samples per arm), the metric's kind and which direction is better."""

    name: str
    control: str
    candidate: str
    tau: float
    alpha: float = 0.05
    min_samples: int = 200
    max_samples: int = 100_000
    max_duration_s: float = 14 * 86400.0
    metric: Literal["conversion", "mean"] = "conversion"
    higher_is_better: bool = True

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), not {self.alpha}")
        if not (self.tau > 0 and math.isfinite(self.tau)):
            raise ValueError(f"tau must be positive, not {self.tau}")
        if not 1 <= self.min_samples <= self.max_samples:
            raise ValueError("need 1 <= min_samples <= max_samples")
        if self.metric not in ("conversion", "mean"):
            raise ValueError(f"metric must be conversion or mean, not {self.metric!r}")


@dataclass(frozen=True)
class ExperimentState:
    """What is carried from look to look (JSON-ready via asdict / from_dict): the running
    minimum p-value, the running intersection of the intervals (None: unbounded), the looks
    counted and the decision, final once it is not "continue"."""

    started_at: float
    looks: int = 0
    p_value: float = 1.0
    effect_low: float | None = None
    effect_high: float | None = None
    decision: Decision = "continue"
    reason: str = "not looked at yet"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExperimentState:
        return cls(**dict(data))


def new_state(started_at: float) -> ExperimentState:
    return ExperimentState(started_at=started_at)


@dataclass(frozen=True)
class Readout:
    """One look's readout: what the docs, `mlstack status` and the JSON show. The relative
    interval is the absolute one over the observed control mean (the guarantee covers the
    absolute difference); None where a value is undefined (no control mean, no bound yet)."""

    experiment: str
    method: str
    alpha: float
    tau: float
    arms: dict[str, dict[str, float]]
    effect: float
    effect_low: float | None
    effect_high: float | None
    relative_lift: float | None
    relative_low: float | None
    relative_high: float | None
    p_value: float
    looks: int
    decision: Decision
    reason: str
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = rounded(asdict(self))
        return out

    def to_json(self) -> str:
        """Deterministic JSON: sorted keys, floats to 6 significant digits."""
        return json.dumps(self.to_dict(), sort_keys=True, allow_nan=False)


def _update(p_prev: Any, low_prev: Any, high_prev: Any, evaluable: Any, theta: Any,
            variance: Any, tau: float, alpha: float) -> tuple[Floats, Floats, Floats]:
    """One look, elementwise: the running-min p-value and the running interval intersection.
    Looks that are not evaluable (an arm below min_samples) leave both as they were."""
    log_lr = mixture_log_likelihood_ratio(theta, variance, tau)
    half = always_valid_halfwidth(variance, tau, alpha)
    p_now = np.exp(-np.maximum(log_lr, 0.0))
    p = np.where(evaluable, np.minimum(p_prev, p_now), p_prev)
    low = np.where(evaluable, np.maximum(low_prev, theta - half), low_prev)
    high = np.where(evaluable, np.minimum(high_prev, theta + half), high_prev)
    return p, low, high


def _decide(p: Any, evaluable: Any, theta: Any, out_of_budget: Any, alpha: float,
            higher_is_better: bool) -> npt.NDArray[np.int64]:
    """The decision rule, elementwise, as indices into DECISIONS."""
    crossed = np.asarray(evaluable) & (np.asarray(p) < alpha)
    favours = np.asarray(theta) > 0 if higher_is_better else np.asarray(theta) < 0
    code = np.where(crossed, np.where(favours, 1, 2), np.where(out_of_budget, 3, 0))
    return np.asarray(code, dtype=np.int64)


def look(config: ExperimentConfig, state: ExperimentState, control: ArmStats,
         candidate: ArmStats, now: float) -> tuple[ExperimentState, Readout]:
    """One look at the arms' cumulative stats at time `now` (seconds, the clock of
    `started_at`): the next state and the readout. After a decision the state no longer
    changes (the readout still shows the current numbers)."""
    var_a, var_b = control.variance(config.metric), candidate.variance(config.metric)
    theta = candidate.mean - control.mean if control.n and candidate.n else 0.0
    variance = (var_a / control.n + var_b / candidate.n) if control.n and candidate.n else 0.0
    evaluable = min(control.n, candidate.n) >= config.min_samples
    low_prev = -math.inf if state.effect_low is None else state.effect_low
    high_prev = math.inf if state.effect_high is None else state.effect_high
    if state.decision == "continue":
        p_a, low_a, high_a = _update(state.p_value, low_prev, high_prev, evaluable, theta,
                                     variance, config.tau, config.alpha)
        p, low, high = float(p_a), float(low_a), float(high_a)
        out_of_budget = (max(control.n, candidate.n) >= config.max_samples
                         or now - state.started_at >= config.max_duration_s)
        decision = DECISIONS[int(_decide(p, evaluable, theta, out_of_budget, config.alpha,
                                         config.higher_is_better))]
        reason = _reason(config, decision, p, theta, control, candidate, evaluable,
                         now - state.started_at)
        state = replace(state, looks=state.looks + 1, p_value=p,
                        effect_low=low if math.isfinite(low) else None,
                        effect_high=high if math.isfinite(high) else None,
                        decision=decision, reason=reason)
    return state, _readout(config, state, control, candidate, theta)


def _reason(config: ExperimentConfig, decision: Decision, p: float, theta: float,
            control: ArmStats, candidate: ArmStats, evaluable: bool, elapsed: float) -> str:
    if decision == "promote":
        return (f"promote: always-valid p={p:.3g} < alpha={config.alpha:g} and the effect "
                f"{theta:+.4g} favours {config.candidate}")
    if decision == "abort":
        return (f"abort: always-valid p={p:.3g} < alpha={config.alpha:g} and the effect "
                f"{theta:+.4g} is against {config.candidate}; keeping {config.control}")
    if decision == "inconclusive":
        budget = (f"max_samples {config.max_samples}" if elapsed < config.max_duration_s
                  else f"max_duration {config.max_duration_s:g}s")
        return (f"inconclusive: {budget} reached with p={p:.3g} >= alpha={config.alpha:g}; "
                f"keeping {config.control}")
    if not evaluable:
        return (f"waiting for {config.min_samples} samples per arm "
                f"({config.control}: {control.n}, {config.candidate}: {candidate.n})")
    return f"continue: always-valid p={p:.3g} >= alpha={config.alpha:g}"


def _readout(config: ExperimentConfig, state: ExperimentState, control: ArmStats,
             candidate: ArmStats, theta: float) -> Readout:
    base = abs(control.mean) if control.n else 0.0

    def relative(x: float | None) -> float | None:
        return x / base if x is not None and base > 0 else None

    return Readout(
        experiment=config.name, method=METHOD, alpha=config.alpha, tau=config.tau,
        arms={config.control: {"n": control.n, "mean": control.mean},
              config.candidate: {"n": candidate.n, "mean": candidate.mean}},
        effect=theta, effect_low=state.effect_low, effect_high=state.effect_high,
        relative_lift=relative(theta), relative_low=relative(state.effect_low),
        relative_high=relative(state.effect_high), p_value=state.p_value, looks=state.looks,
        decision=state.decision, reason=state.reason,
        settings={"control": config.control, "candidate": config.candidate,
               "metric": config.metric, "higher_is_better": config.higher_is_better,
               "min_samples": config.min_samples, "max_samples": config.max_samples,
               "max_duration_s": config.max_duration_s})


@dataclass(frozen=True)
class SimulationResult:
    """Simulated experiments: each one's decision (index into DECISIONS), the samples per arm
    at its decision (at max_samples when inconclusive), and whether its interval covered the
    true effect at every look."""

    decisions: npt.NDArray[np.int64]
    samples: npt.NDArray[np.int64]
    covered: npt.NDArray[np.bool_]

    def rate(self, decision: Decision) -> float:
        return float(np.mean(self.decisions == DECISIONS.index(decision)))


def simulate_conversions(config: ExperimentConfig, p_control: float, p_candidate: float,
                         experiments: int, batch: int, seed: int) -> SimulationResult:
    """`experiments` conversion experiments with equal arms, looked at after every `batch`
    samples per arm up to config.max_samples (continuous peeking), through the same update
    and decision rule as `look` (vectorized over experiments; the time budget is not used).
    Each batch's conversions are one binomial draw, the exact sum of its Bernoulli trials."""
    rng = np.random.default_rng(seed)
    shape = experiments
    p = np.ones(shape)
    low, high = np.full(shape, -np.inf), np.full(shape, np.inf)
    decision = np.zeros(shape, dtype=np.int64)
    samples = np.zeros(shape, dtype=np.int64)
    covered = np.ones(shape, dtype=bool)
    succ_a, succ_b = np.zeros(shape), np.zeros(shape)
    truth = p_candidate - p_control
    n = 0
    while n < config.max_samples:
        step = min(batch, config.max_samples - n)
        n += step
        succ_a += rng.binomial(step, p_control, shape)
        succ_b += rng.binomial(step, p_candidate, shape)
        m_a, m_b = succ_a / n, succ_b / n
        variance = (m_a * (1 - m_a) + m_b * (1 - m_b)) / n
        theta = m_b - m_a
        live = decision == 0
        evaluable = live & (n >= config.min_samples)
        p, low, high = _update(p, low, high, evaluable, theta, variance, config.tau,
                               config.alpha)
        covered &= (low <= truth) & (truth <= high)
        code = _decide(p, evaluable, theta, n >= config.max_samples, config.alpha,
                       config.higher_is_better)
        decision = np.where(live, code, decision)
        samples = np.where(live, n, samples)
    return SimulationResult(decision, samples, covered)
