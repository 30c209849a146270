"""Judging latency and error figures from a sample that may be small.

A percentile is only reported as met when enough requests were measured for it
(`min_samples`: 1/(1-q), so p99 needs 100, p95 20, p50 10); with fewer, a miss can still be
proven early, when so many requests exceeded the target that a service within it would
produce that many with probability below ALPHA (a binomial tail). Otherwise the verdict is
None: "not enough samples". Error rates are judged the same way: a rate within the target
needs 1/target requests to be called met; one above it is a miss as soon as it is proven.
Standard library only.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass

ALPHA = 0.001  # a miss is proven when a compliant service would show it this rarely
OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt,
       "==": operator.eq}


def min_samples(q: float) -> int:
    """Requests needed to report the q-th percentile (q in 0..100): p99 100, p95 20."""
    return max(10, math.ceil(1 / (1 - q / 100) - 1e-9))


def min_requests(rate: float) -> int:
    """Requests needed to call an error rate within `rate` met: 1/rate (0.01: 100)."""
    return math.ceil(1 / rate - 1e-9) if rate > 0 else 1_000_000


def binomial_tail(k: int, n: int, p: float) -> float:
    """P(K >= k) for K ~ Binomial(n, p)."""
    if k <= 0:
        return 1.0
    if k > n or p <= 0:
        return 0.0
    if p >= 1:
        return 1.0
    log_p, log_q = math.log(p), math.log1p(-p)
    total = 0.0
    for i in range(k, n + 1):
        total += math.exp(math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1)
                          + i * log_p + (n - i) * log_q)
    return min(1.0, total)


def percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    data = sorted(values)
    rank = q / 100 * (len(data) - 1)
    low = int(rank)
    high = min(low + 1, len(data) - 1)
    return data[low] + (data[high] - data[low]) * (rank - low)


@dataclass(frozen=True)
class Verdict:
    """ok: True met (or no breach), False missed (or breached), None not enough samples."""

    ok: bool | None
    value: float | None  # the measured figure (a percentile, a rate)
    samples: int
    needed: int
    proven_early: bool = False  # a miss proven from fewer than `needed` samples

    @property
    def note(self) -> str:
        if self.ok is None:
            return f"not enough samples ({self.samples} of {self.needed})"
        if self.proven_early:
            return f"missed, proven from {self.samples} samples"
        return ""


def latency_within(latencies: Sequence[float], q: float, target_ms: float) -> Verdict:
    """Is the q-th percentile <= target_ms?"""
    needed = min_samples(q)
    value = percentile(latencies, q)
    over = sum(1 for x in latencies if x > target_ms)
    if len(latencies) >= needed:
        assert value is not None  # needed >= 10 samples: a percentile
        return Verdict(value <= target_ms, value, len(latencies), needed)
    if over and binomial_tail(over, len(latencies), 1 - q / 100) < ALPHA:
        return Verdict(False, value, len(latencies), needed, proven_early=True)
    return Verdict(None, value, len(latencies), needed)


def latency_breach(latencies: Sequence[float], q: float, op: str, threshold: float) -> Verdict:
    """Does the q-th percentile meet an abort rule `p{q} OP threshold` (ok=False: breach)?
    Judged from enough samples, or proven early; else None (not enough samples)."""
    needed = min_samples(q)
    value = percentile(latencies, q)
    beyond = sum(1 for x in latencies if OPS[op](x, threshold))
    if len(latencies) >= needed:
        assert value is not None  # needed >= 10 samples: a percentile
        return Verdict(not OPS[op](value, threshold), value, len(latencies), needed)
    if beyond and binomial_tail(beyond, len(latencies), 1 - q / 100) < ALPHA:
        return Verdict(False, value, len(latencies), needed, proven_early=True)
    return Verdict(None, value, len(latencies), needed)


def errors_within(errors: int, requests: int, allowed: float) -> Verdict:
    """Is the error rate <= allowed? A rate above it is a miss at any sample size (the
    conservative side of an SLO); one within it needs 1/allowed requests to be met."""
    needed = min_requests(allowed)
    rate = errors / requests if requests else None
    if rate is not None and rate > allowed:
        return Verdict(False, rate, requests, needed, proven_early=requests < needed)
    if requests >= needed:
        return Verdict(True, rate, requests, needed)
    return Verdict(None, rate, requests, needed)


def error_breach(errors: int, requests: int, op: str, threshold: float) -> Verdict:
    """Does the error rate meet an abort rule `error_rate OP threshold` (ok=False: breach)?
    Judged from 1/threshold requests, or proven early by the binomial tail; else None."""
    needed = min_requests(threshold)
    rate = errors / requests if requests else None
    if rate is None:
        return Verdict(None, None, 0, needed)
    if requests >= needed:
        return Verdict(not OPS[op](rate, threshold), rate, requests, needed)
    if OPS[op](rate, threshold) and binomial_tail(errors, requests, threshold) < ALPHA:
        return Verdict(False, rate, requests, needed, proven_early=True)
    return Verdict(None, rate, requests, needed)
