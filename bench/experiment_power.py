"""The A/B test's measured error rates and power (mlstack.runtime.experiment_stats, the mSPRT):
simulated conversion experiments with continuous peeking, through the library's own update and
decision rule (simulate_conversions).

Run: `.venv/bin/python bench/experiment_power.py`; it prints the tables docs/experiments.md
copies and writes bench/experiment_power.json (sorted keys). Every scenario has its own fixed
seed, so the output is the same on every run and machine.

Reported, at alpha 0.05 with tau = 0.10 x the base rate (the rule docs/experiments.md states):
- A/A (both arms at the base rate), 1000 experiments each: the false-promotion rate, the rate
  of any decision (promote or abort: the two-sided guarantee) and the share of experiments whose
  interval covered 0 at every look; beside it a naive fixed-sample z-test peeked at the same
  looks, which is what the mSPRT replaces.
- True lifts of 5%, 10% and 20% relative at base rates 0.05 and 0.10, 1000 experiments each:
  the power (promotion rate), the abort rate, the median samples per arm to a promotion, and the
  power of a single fixed-horizon z-test at max_samples for comparison.
"""

from __future__ import annotations

import itertools
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from mlstack.runtime.experiment_stats import (
    DECISIONS,
    ExperimentConfig,
    simulate_conversions,
    tau_for,
)

ALPHA = 0.05
TAU_LIFT = 0.10  # tau = TAU_LIFT x base rate
MIN_SAMPLES = 200
EXPERIMENTS = 1000
BASES = (0.05, 0.10)
LIFTS = (0.05, 0.10, 0.20)
# (max_samples per arm, samples per arm between looks)
HORIZON = (200_000, 1000)
SHORT = (20_000, 200)
FINE = (20_000, 50)
Z = 1.959963984540054  # the two-sided 5% normal quantile
OUT = Path(__file__).with_name("experiment_power.json")


def experiment(base: float, max_samples: int) -> ExperimentConfig:
    return ExperimentConfig(name="bench", control="A", candidate="B",
                            tau=tau_for(base, TAU_LIFT), alpha=ALPHA, min_samples=MIN_SAMPLES,
                            max_samples=max_samples, max_duration_s=math.inf)


def naive_peeking(base: float, max_samples: int, batch: int, seed: int) -> float:
    """The rate of A/A experiments a fixed-sample z-test (|z| > 1.96) stops at some look, when
    it is looked at after every batch from MIN_SAMPLES on: the error peeking makes."""
    rng = np.random.default_rng(seed)
    succ_a, succ_b = np.zeros(EXPERIMENTS), np.zeros(EXPERIMENTS)
    rejected = np.zeros(EXPERIMENTS, dtype=bool)
    for n in range(batch, max_samples + 1, batch):
        succ_a += rng.binomial(batch, base, EXPERIMENTS)
        succ_b += rng.binomial(batch, base, EXPERIMENTS)
        if n < MIN_SAMPLES:
            continue
        m_a, m_b = succ_a / n, succ_b / n
        se = np.sqrt((m_a * (1 - m_a) + m_b * (1 - m_b)) / n)
        rejected |= (se > 0) & (np.abs(m_b - m_a) > Z * np.where(se > 0, se, 1.0))
    return float(rejected.mean())


def fixed_horizon_power(base: float, lift: float, n: int, seed: int) -> float:
    """The promotion rate of one z-test at n per arm (z > 1.96), the non-sequential
    reference: valid only if nobody looks before n."""
    rng = np.random.default_rng(seed)
    m_a = rng.binomial(n, base, EXPERIMENTS) / n
    m_b = rng.binomial(n, base * (1 + lift), EXPERIMENTS) / n
    se = np.sqrt((m_a * (1 - m_a) + m_b * (1 - m_b)) / n)
    return float(np.mean(m_b - m_a > Z * se))


def aa_rows() -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    seed = 1000
    for max_samples, batch in (HORIZON, FINE):
        for base in BASES:
            seed += 1
            result = simulate_conversions(experiment(base, max_samples), base, base,
                                          EXPERIMENTS, batch, seed)
            rows.append({
                "base_rate": base, "max_samples": max_samples, "look_every": batch,
                "looks": max_samples // batch, "experiments": EXPERIMENTS, "seed": seed,
                "false_promotion_rate": result.rate("promote"),
                "any_decision_rate": result.rate("promote") + result.rate("abort"),
                "interval_covered_zero_always": float(np.mean(result.covered)),
                "naive_z_test_peeking_rate": naive_peeking(base, max_samples, batch,
                                                           seed + 500)})
    return rows


def power_rows() -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    seed = 2000
    for (max_samples, batch), base, lift in itertools.product((SHORT, HORIZON), BASES, LIFTS):
        seed += 1
        result = simulate_conversions(experiment(base, max_samples), base,
                                      base * (1 + lift), EXPERIMENTS, batch, seed)
        promoted = result.decisions == DECISIONS.index("promote")
        rows.append({
            "base_rate": base, "relative_lift": lift, "absolute_effect": base * lift,
            "max_samples": max_samples, "look_every": batch, "experiments": EXPERIMENTS,
            "seed": seed, "power": result.rate("promote"), "abort_rate": result.rate("abort"),
            "inconclusive_rate": result.rate("inconclusive"),
            "median_samples_to_promotion": (float(np.median(result.samples[promoted]))
                                            if promoted.any() else None),
            "median_samples_to_stop": float(np.median(result.samples)),
            "interval_covered_effect_always": float(np.mean(result.covered)),
            "fixed_horizon_z_test_power": fixed_horizon_power(base, lift, max_samples,
                                                              seed + 500)})
    return rows


def rounded(value: object) -> object:
    """Floats to 6 decimals (rates of 1000 experiments need 3), so the file diffs cleanly."""
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v) for v in value]
    return value


def tables(report: dict[str, object]) -> str:
    aa = report["aa"]
    power = report["power"]
    assert isinstance(aa, list) and isinstance(power, list)
    lines = ["A/A (no true effect), alpha 0.05, tau 0.10 x base, min_samples 200 per arm, "
             "1000 experiments per row", "",
             "| base rate | max samples/arm | look every | looks | false promotions | "
             "any decision | interval kept 0 | naive z-test peeked |",
             "|---|---|---|---|---|---|---|---|"]
    for r in aa:
        lines.append(f"| {r['base_rate']} | {r['max_samples']:,} | {r['look_every']} | "
                     f"{r['looks']} | {r['false_promotion_rate']:.3f} | "
                     f"{r['any_decision_rate']:.3f} | {r['interval_covered_zero_always']:.3f} | "
                     f"{r['naive_z_test_peeking_rate']:.3f} |")
    lines += ["", "True lifts, alpha 0.05, tau 0.10 x base, min_samples 200 per arm, "
              "1000 experiments per row", "",
              "| max samples/arm | look every | base rate | lift | effect | power | aborts | "
              "inconclusive | median n/arm to promote | interval covered | "
              "fixed-horizon z power |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in power:
        med = r["median_samples_to_promotion"]
        lines.append(f"| {r['max_samples']:,} | {r['look_every']} | "
                     f"{r['base_rate']} | {r['relative_lift']:.0%} | "
                     f"{r['absolute_effect']:.4f} | {r['power']:.3f} | {r['abort_rate']:.3f} | "
                     f"{r['inconclusive_rate']:.3f} | {'-' if med is None else f'{med:,.0f}'} | "
                     f"{r['interval_covered_effect_always']:.3f} | "
                     f"{r['fixed_horizon_z_test_power']:.3f} |")
    return "\n".join(lines)


def main() -> int:
    started = time.perf_counter()
    report: dict[str, object] = {
        "settings": {"alpha": ALPHA, "tau_rule": f"tau = {TAU_LIFT} x base rate",
                     "min_samples": MIN_SAMPLES, "experiments_per_row": EXPERIMENTS,
                     "method": "mSPRT, simulate_conversions (equal arms, binomial batches)"},
        "aa": aa_rows(), "power": power_rows()}
    OUT.write_text(json.dumps(rounded(report), indent=2, sort_keys=True) + "\n")
    print(tables(report))
    print(f"\nwrote {OUT} in {time.perf_counter() - started:.1f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
