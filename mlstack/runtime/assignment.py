"""Sticky arm assignment: an entity key keeps its arm of an experiment in every process.

`assign_arm` maps (experiment, entity key) through SHA-256 to a point of [0, 1) and that point
to an arm by the arms' weights, so a key keeps its arm across processes and restarts (Python's
hash() is salted per process and would not). `key_text` is the one text form of a key that is
hashed, so the key 42 sent as a number, as "42" or as 42.0 lands in the same arm.

Standard library only: the local router imports it, and must not load numpy.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping

__all__ = ["assign_arm", "key_text"]


def assign_arm(key: str, experiment: str, weights: Mapping[str, float]) -> str:
    """The arm of entity `key` in `experiment`: SHA-256 of the experiment name and the key
    (NUL-separated) gives a uniform point u in [0, 1) (the digest's first 8 bytes over 2^64);
    the arms, sorted by name so the caller's dict order does not matter, take consecutive
    slices of [0, 1) proportional to their weights. The same key always gets the same arm, and
    keys fall into arms independently across experiments (the name is hashed with the key)."""
    arms = sorted(weights)
    if not arms:
        raise ValueError("an experiment needs at least one arm")
    values = [float(weights[a]) for a in arms]
    if any(not math.isfinite(w) or w < 0 for w in values) or sum(values) <= 0:
        raise ValueError(f"arm weights must be finite, >= 0 and not all 0: {dict(weights)}")
    digest = hashlib.sha256(f"{experiment}\x00{key}".encode()).digest()
    point = int.from_bytes(digest[:8], "big") / 2.0**64 * sum(values)
    edge = 0.0
    for arm, weight in zip(arms, values, strict=True):
        edge += weight
        if point < edge and weight > 0:
            return arm
    return next(a for a, w in zip(reversed(arms), reversed(values), strict=True) if w > 0)


def key_text(value: object) -> str:
    """The text form of an entity key that `assign_arm` hashes: an int (not a bool) and an
    integral float as the integer's digits (a key read from JSON may be 42 or 42.0), a string
    as itself, anything else as compact JSON with sorted keys."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str):
        return value
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return json.dumps(value, sort_keys=True, separators=(",", ":"))
