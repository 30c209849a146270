"""The router's admission control for a spec (router.LIMITS)."""

from __future__ import annotations

import math

from mlstack.frontend.ir.nodes import SystemIR
from mlstack.ops.local.stages.context import DEFAULT_RATE


def router_limits(system: SystemIR, rate: float | None = None) -> dict:
    """The router's admission control for this spec (router.LIMITS): in flight, by Little's
    law, four times the requests the throughput SLO keeps in flight at the p99 target (at
    least 16, at most 256); as many may wait, each at most the p99 target (a request that
    waited longer has missed it anyway); the backend gets three times the service's own
    timeout (at least 5 s)."""
    rate = rate or system.slos.throughput_rps or DEFAULT_RATE
    p99 = (system.slos.p99_ms or system.serving.timeout_ms) / 1000
    in_flight = min(256, max(16, math.ceil(4 * rate * p99)))
    return {"max_in_flight": in_flight, "max_queue": in_flight,
            "queue_timeout_s": round(min(1.0, max(0.05, p99)), 3),
            "backend_timeout_s": max(5.0, 3 * system.serving.timeout_ms / 1000)}
