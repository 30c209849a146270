"""JSON-ready figures, the one rule every runtime report (live quality, drift, evaluation
details, the A/B readout) writes its numbers by: floats to 6 significant digits, None where
not finite (JSON has no NaN), numpy scalars and arrays as Python's, containers element by
element. So a report is deterministic and its files stay small."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["rounded"]


def rounded(value: Any) -> Any:
    """`value` with every float rounded as the module says."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return float(f"{value:.6g}") if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [rounded(v) for v in value]
    return value
