"""The router's admission control for a spec (router.LIMITS): the IR's derived limits
(frontend.ir.derive.router_limits: from what the service can hold, with reasons that
`plan --explain` shows); an IR from before they were derived gets them derived here."""

from __future__ import annotations

from mlstack.frontend.ir.derive import router_limits as derive_limits
from mlstack.frontend.ir.derive import serving_workers
from mlstack.frontend.ir.nodes import SystemIR


def router_limits(system: SystemIR) -> dict:
    serving = system.serving
    if serving.router is not None:
        return serving.router.model_dump()
    limits, _ = derive_limits(serving_workers(system.target), serving.batching,
                              serving.timeout_ms)
    return limits
