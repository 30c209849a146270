"""The A/B test's statistics: the mSPRT's likelihood ratio, p-value and interval on known
cases (the formula written out here, and the mixture integrated numerically), the sequential
state and decision rule, simulated A/A experiments with continuous peeking (the false-decision
rate stays under alpha), simulated true lifts (most promote), and sticky hash assignment."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

from mlstack.runtime.experiment_stats import (
    DECISIONS,
    ArmStats,
    ExperimentConfig,
    ExperimentState,
    always_valid_halfwidth,
    assign_arm,
    look,
    mixture_log_likelihood_ratio,
    new_state,
    simulate_conversions,
    tau_for,
)

ALPHA = 0.05


def config(**overrides: object) -> ExperimentConfig:
    values: dict = {"name": "ranker-v2", "control": "v1", "candidate": "v2", "tau": 0.01,
                    "alpha": ALPHA, "min_samples": 200, "max_samples": 10_000,
                    "max_duration_s": 86_400.0}
    values.update(overrides)
    return ExperimentConfig(**values)


# -- known cases ---------------------------------------------------------------------------

def lambda_by_hand(n_a: int, p_a: float, n_b: int, p_b: float, tau: float) -> float:
    """Johari-Pekelis-Walsh's normal-mixture likelihood ratio, written out."""
    v = p_a * (1 - p_a) / n_a + p_b * (1 - p_b) / n_b
    theta = p_b - p_a
    return math.sqrt(v / (v + tau**2)) * math.exp(theta**2 * tau**2 / (2 * v * (v + tau**2)))


def lambda_by_integration(theta: float, v: float, tau: float) -> float:
    """The same ratio from its definition: the likelihood of the estimate averaged over the
    effect's N(0, tau^2) prior, over its likelihood at effect 0 (trapezoid rule)."""
    grid = np.linspace(-12 * tau, 12 * tau, 200_001)

    def normal(x: np.ndarray | float, mean: np.ndarray | float, var: float) -> np.ndarray:
        return np.exp(-((x - mean) ** 2) / (2 * var)) / math.sqrt(2 * math.pi * var)

    mixture = normal(theta, grid, v) * normal(grid, 0.0, tau**2)
    integral = float(np.sum((mixture[1:] + mixture[:-1]) / 2 * np.diff(grid)))
    return integral / float(normal(theta, 0.0, v))


def test_the_likelihood_ratio_and_p_value_of_a_known_case():
    # 2000 per arm, 10% against 13% conversion, tau 0.01
    cfg = config(min_samples=100)
    control, candidate = ArmStats.from_conversions(2000, 200), ArmStats.from_conversions(2000, 260)
    expected = lambda_by_hand(2000, 0.10, 2000, 0.13, 0.01)
    v = 0.1 * 0.9 / 2000 + 0.13 * 0.87 / 2000
    assert expected == pytest.approx(lambda_by_integration(0.03, v, 0.01), rel=1e-6)
    assert expected == pytest.approx(6.3975, abs=5e-4)  # by hand: 0.70983 * e^2.19861
    got = float(np.exp(mixture_log_likelihood_ratio(0.03, v, 0.01)))
    assert got == pytest.approx(expected, rel=1e-9)
    state, readout = look(cfg, new_state(0.0), control, candidate, now=1.0)
    assert readout.p_value == pytest.approx(1 / expected, rel=1e-9)  # 0.1563: continue
    assert readout.decision == "continue" and state.p_value == readout.p_value
    assert readout.effect == pytest.approx(0.03)
    assert readout.relative_lift == pytest.approx(0.3)
    # the threshold is p < alpha, at alpha itself: just above p promotes, just below waits
    _, above = look(config(min_samples=100, alpha=0.157), new_state(0.0), control, candidate, 1.0)
    _, below = look(config(min_samples=100, alpha=0.156), new_state(0.0), control, candidate, 1.0)
    assert (above.decision, below.decision) == ("promote", "continue")


def test_the_interval_is_the_set_of_effects_the_test_does_not_reject():
    v, tau, theta = 1.2e-4, 0.01, 0.03
    half = float(always_valid_halfwidth(v, tau, ALPHA))
    by_hand = math.sqrt(v * (v + tau**2) / tau**2
                        * (2 * math.log(1 / ALPHA) + math.log((v + tau**2) / v)))
    assert half == pytest.approx(by_hand, rel=1e-12)
    # at the interval's edges the ratio against that effect is exactly 1/alpha
    for edge in (theta - half, theta + half):
        assert float(mixture_log_likelihood_ratio(theta - edge, v, tau)) == pytest.approx(
            math.log(1 / ALPHA), rel=1e-9)
    state, readout = look(config(min_samples=100), new_state(0.0),
                          ArmStats(1000, 0.10, 90.0), ArmStats(1000, 0.13, 113.1), now=1.0)
    v_look = 0.09 / 1000 + 0.13 * 0.87 / 1000
    half_look = float(always_valid_halfwidth(v_look, 0.01, ALPHA))
    assert readout.effect_low == pytest.approx(0.03 - half_look)
    assert readout.effect_high == pytest.approx(0.03 + half_look)
    assert readout.relative_low == pytest.approx((0.03 - half_look) / 0.10)


def test_the_p_value_is_the_running_minimum_and_never_increases():
    # a strong effect early that fades: 1/Lambda rises again, the p-value must not
    cfg = config(alpha=1e-12, min_samples=100)  # never decides, so every look updates
    state = new_state(0.0)
    looks = [(500, 50, 80), (1000, 100, 130), (2000, 200, 225), (4000, 400, 410),
             (8000, 800, 801)]
    seen, low, high = [], -math.inf, math.inf
    for n, conv_a, conv_b in looks:
        control, candidate = ArmStats.from_conversions(n, conv_a), ArmStats.from_conversions(
            n, conv_b)
        state, readout = look(cfg, state, control, candidate, now=1.0)
        seen.append(readout.p_value)
        assert readout.decision == "continue"
        # the interval is the running intersection: each look's lies inside the last one's
        assert readout.effect_low is not None and readout.effect_high is not None
        assert low <= readout.effect_low <= readout.effect_high <= high
        v = (conv_a / n * (1 - conv_a / n) + conv_b / n * (1 - conv_b / n)) / n
        half = float(always_valid_halfwidth(v, 0.01, 1e-12))
        theta = (conv_b - conv_a) / n
        assert readout.effect_low == pytest.approx(max(low, theta - half))
        assert readout.effect_high == pytest.approx(min(high, theta + half))
        low, high = readout.effect_low, readout.effect_high
    # a carried interval narrower than this look's own one is kept on each side it binds
    control, candidate = ArmStats.from_conversions(1000, 100), ArmStats.from_conversions(1000, 110)
    carried = ExperimentState(started_at=0.0, looks=3, p_value=0.5, effect_low=-0.001,
                              effect_high=0.004)
    _, both = look(cfg, carried, control, candidate, now=1.0)
    assert (both.effect_low, both.effect_high) == (-0.001, 0.004)
    _, upper = look(cfg, replace(carried, effect_low=None), control, candidate, now=1.0)
    assert upper.effect_high == 0.004 and upper.effect_low is not None
    assert upper.effect_low < -0.001
    per_look = [min(1.0, 1 / lambda_by_hand(n, a / n, n, b / n, 0.01)) for n, a, b in looks]
    assert per_look[-1] > per_look[0]  # the case does fade
    assert seen == pytest.approx(list(np.minimum.accumulate(per_look)), rel=1e-9)
    assert all(later <= earlier for earlier, later in zip(seen, seen[1:], strict=False))


def test_promote_and_abort_follow_the_metric_direction():
    control, candidate = ArmStats.from_conversions(5000, 500), ArmStats.from_conversions(5000, 650)
    _, up = look(config(), new_state(0.0), control, candidate, now=1.0)
    assert up.decision == "promote" and up.p_value < ALPHA and up.effect_low > 0
    assert "favours v2" in up.reason
    _, down = look(config(), new_state(0.0), candidate, control, now=1.0)
    assert down.decision == "abort" and down.effect_high < 0 and "keeping v1" in down.reason
    # a latency-like mean where lower is better: the candidate's lower mean promotes it
    rng = np.random.default_rng(3)
    slow, fast = rng.normal(100.0, 10.0, 3000), rng.normal(98.0, 10.0, 3000)
    lower = config(metric="mean", higher_is_better=False, tau=1.0)
    _, lat = look(lower, new_state(0.0), ArmStats.from_values(slow), ArmStats.from_values(fast),
                  now=1.0)
    assert lat.decision == "promote" and lat.effect < 0
    _, lat_bad = look(lower, new_state(0.0), ArmStats.from_values(fast),
                      ArmStats.from_values(slow), now=1.0)
    assert lat_bad.decision == "abort"


def test_budget_limits_end_inconclusive_and_a_decision_is_final():
    control, candidate = ArmStats.from_conversions(300, 30), ArmStats.from_conversions(300, 31)
    state, r = look(config(), new_state(0.0), control, candidate, now=86_400.0)
    assert r.decision == "inconclusive" and "max_duration" in r.reason and "keeping v1" in r.reason
    big_a, big_b = ArmStats.from_conversions(10_000, 1000), ArmStats.from_conversions(10_000, 1010)
    _, r2 = look(config(), new_state(0.0), big_a, big_b, now=1.0)
    assert r2.decision == "inconclusive" and "max_samples 10000" in r2.reason
    # a later look with a huge effect does not undo the decision
    later, r3 = look(config(), state, big_a, ArmStats.from_conversions(10_000, 3000), now=2.0)
    assert later == state and r3.decision == "inconclusive"


def test_edge_cases_give_no_nan_and_no_decision():
    cfg = config()
    cases = [(ArmStats(), ArmStats()),  # empty arms
             (ArmStats.from_conversions(50, 5), ArmStats.from_conversions(40, 20)),  # below min
             (ArmStats.from_conversions(500, 0), ArmStats.from_conversions(500, 0)),  # zero var
             (ArmStats.from_values([3.0] * 300), ArmStats.from_values([3.0] * 300)),
             (ArmStats(), ArmStats.from_conversions(900, 90))]
    for control, candidate in cases:
        state, readout = look(cfg, new_state(0.0), control, candidate, now=1.0)
        assert readout.decision == "continue" and readout.p_value == 1.0
        assert readout.effect_low is None and readout.effect_high is None
        text = readout.to_json()
        assert "NaN" not in text and "Infinity" not in text
        assert json.loads(text)["decision"] == "continue"
        assert all(math.isfinite(v) for v in (readout.effect, readout.tau, readout.alpha))
    _, waiting = look(cfg, new_state(0.0), *cases[1], now=1.0)
    assert waiting.reason.startswith("waiting for 200 samples per arm")
    # a control mean of 0 has no relative lift
    _, zero = look(cfg, new_state(0.0), ArmStats.from_conversions(500, 0),
                   ArmStats.from_conversions(500, 5), now=1.0)
    assert zero.relative_lift is None and zero.relative_low is None
    assert float(always_valid_halfwidth(0.0, 0.01, ALPHA)) == math.inf
    assert float(mixture_log_likelihood_ratio(0.5, 0.0, 0.01)) == 0.0


def test_invalid_configurations_are_refused():
    for bad in ({"alpha": 0.0}, {"alpha": 1.0}, {"tau": 0.0}, {"tau": float("nan")},
                {"min_samples": 0}, {"min_samples": 20_000}, {"metric": "auc"}):
        with pytest.raises(ValueError):
            config(**bad)
    with pytest.raises(ValueError):
        tau_for(0.0, 0.1)
    assert tau_for(0.05, 0.1) == pytest.approx(0.005)


def test_arm_stats_merge_exactly_and_conversions_have_bernoulli_variance():
    rng = np.random.default_rng(0)
    x, y = rng.normal(2.0, 3.0, 700), rng.normal(2.5, 1.0, 300)
    merged = ArmStats.from_values(x).merged(ArmStats.from_values(y))
    whole = ArmStats.from_values(np.concatenate([x, y]))
    assert merged.n == whole.n and merged.mean == pytest.approx(whole.mean)
    assert merged.variance("mean") == pytest.approx(float(np.var(np.concatenate([x, y]),
                                                                 ddof=1)))
    conv = ArmStats.from_conversions(1000, 120)
    assert conv.variance("conversion") == pytest.approx(0.12 * 0.88)
    assert ArmStats().merged(ArmStats()) == ArmStats()
    with pytest.raises(ValueError):
        ArmStats.from_conversions(10, 11)


def test_state_and_readout_are_json_and_deterministic():
    cfg = config(min_samples=100)
    a1, b1 = ArmStats.from_conversions(400, 40), ArmStats.from_conversions(400, 52)
    a2, b2 = ArmStats.from_conversions(900, 91), ArmStats.from_conversions(900, 105)
    direct, _ = look(cfg, new_state(10.0), a1, b1, now=20.0)
    stored = ExperimentState.from_dict(json.loads(json.dumps(direct.to_dict())))
    assert stored == direct
    s_direct, r_direct = look(cfg, direct, a2, b2, now=30.0)
    s_stored, r_stored = look(cfg, stored, a2, b2, now=30.0)
    assert s_direct == s_stored and r_direct.to_json() == r_stored.to_json()
    data = json.loads(r_direct.to_json())
    assert list(data) == sorted(data)
    assert data["arms"] == {"v1": {"mean": 0.101111, "n": 900}, "v2": {"mean": 0.116667, "n": 900}}
    assert data["method"].startswith("mSPRT") and data["looks"] == 2
    assert set(data) >= {"alpha", "tau", "effect", "effect_low", "effect_high", "relative_lift",
                         "p_value", "decision", "reason"}


# -- simulations ---------------------------------------------------------------------------

def test_aa_experiments_with_continuous_peeking_promote_at_most_alpha():
    """1000 A/A experiments, 10% conversion in both arms, looked at after every 50 samples per
    arm, evaluated from 200 to 10000 (197 looks each): promotions, and all decisions together (the
    two-sided guarantee), stay under alpha."""
    cfg = config(tau=tau_for(0.10, 0.10))
    result = simulate_conversions(cfg, 0.10, 0.10, experiments=1000, batch=50, seed=20)
    assert result.rate("promote") <= ALPHA
    assert result.rate("promote") + result.rate("abort") <= ALPHA
    assert result.rate("promote") + result.rate("abort") > 0  # the test can reject at all
    assert np.mean(result.covered) >= 1 - ALPHA
    # where lower is better, promotions are the other tail: still under alpha
    lower = simulate_conversions(config(tau=0.01, higher_is_better=False), 0.10, 0.10,
                                 experiments=1000, batch=50, seed=21)
    assert lower.rate("promote") <= ALPHA


def test_a_true_lift_mostly_promotes_and_the_interval_covers_it():
    """10% -> 12% conversion, up to 10000 per arm, a look every 50: 0.942 of
    these 500 promote (bench/experiment_power.py reports the figures); the floor is loose."""
    cfg = config(tau=tau_for(0.10, 0.10))
    result = simulate_conversions(cfg, 0.10, 0.12, experiments=500, batch=50, seed=22)
    assert result.rate("promote") >= 0.85
    assert result.rate("abort") <= 0.01
    assert np.mean(result.covered) >= 1 - ALPHA
    promoted = result.decisions == DECISIONS.index("promote")
    assert np.median(result.samples[promoted]) < cfg.max_samples


def test_the_simulator_decides_as_the_look_by_look_state_does():
    """The vectorized simulator and `look` are one rule: replay the simulator's draws (same
    seed, same order) through look() per experiment and compare decisions and samples."""
    cfg = config(tau=0.01, max_samples=4000)
    seed, experiments, batch = 5, 24, 100
    result = simulate_conversions(cfg, 0.10, 0.125, experiments, batch, seed)
    rng = np.random.default_rng(seed)
    draws = [(rng.binomial(batch, 0.10, experiments), rng.binomial(batch, 0.125, experiments))
             for _ in range(cfg.max_samples // batch)]
    for e in range(experiments):
        state, conv_a, conv_b = new_state(0.0), 0, 0
        for i, (da, db) in enumerate(draws):
            conv_a, conv_b, n = conv_a + int(da[e]), conv_b + int(db[e]), (i + 1) * batch
            state, _ = look(cfg, state, ArmStats.from_conversions(n, conv_a),
                            ArmStats.from_conversions(n, conv_b), now=1.0)
            if state.decision != "continue":
                break
        assert state.decision == DECISIONS[int(result.decisions[e])]
        assert n == int(result.samples[e])
    assert len(set(result.decisions.tolist())) > 1  # the case has promotions and stops both


# -- assignment ----------------------------------------------------------------------------

def test_assignment_is_sticky_and_independent_of_dict_order_and_process():
    weights = {"v1": 0.7, "v2": 0.3}
    keys = [f"user-{i}" for i in range(200)]
    first = [assign_arm(k, "exp", weights) for k in keys]
    assert first == [assign_arm(k, "exp", {"v2": 0.3, "v1": 0.7}) for k in keys]
    code = ("from mlstack.runtime.experiment_stats import assign_arm;"
            f"print(','.join(assign_arm(f'user-{{i}}', 'exp', {weights!r}) for i in range(200)))")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         check=True).stdout.strip()
    assert out.split(",") == first
    # pinned: SHA-256("exp\0user-0")'s first 8 bytes as a fraction of 2^64
    import hashlib
    u = int.from_bytes(hashlib.sha256(b"exp\x00user-0").digest()[:8], "big") / 2**64
    assert first[0] == ("v1" if u < 0.7 else "v2")


def test_assignment_proportions_match_the_weights():
    """100k keys: each arm's count is within 4 binomial standard deviations of n * weight
    (sd = sqrt(n w (1 - w)): 145 keys for w=0.3); a zero weight gets no keys; the same keys
    in a second experiment land independently of the first."""
    n = 100_000
    weights = {"control": 0.5, "candidate": 0.3, "holdout": 0.2, "off": 0.0}
    arms = [assign_arm(str(i), "exp-a", weights) for i in range(n)]
    for arm, w in weights.items():
        count = arms.count(arm)
        assert abs(count - n * w) <= 4 * math.sqrt(n * w * (1 - w)) + 1e-9, (arm, count)
    other = [assign_arm(str(i), "exp-b", {"x": 0.5, "y": 0.5}) for i in range(n)]
    in_control = [o for a, o in zip(arms, other, strict=True) if a == "control"]
    m = len(in_control)
    assert abs(in_control.count("x") - m / 2) <= 4 * math.sqrt(m / 4)
    for bad in ({}, {"a": -1.0, "b": 2.0}, {"a": 0.0}, {"a": float("inf")}):
        with pytest.raises(ValueError):
            assign_arm("k", "exp", bad)
