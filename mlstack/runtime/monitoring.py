"""Monitoring: feature drift (PSI or KS), feature freshness and model staleness.

Each check returns a JSON-ready dict; `alerts(report)` turns a report of all three into the
list of problems the monitoring flow records (and fails on, when asked).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from mlstack.runtime.sources import SourceSpec

__all__ = [
    "Monitoring",
    "alerts",
    "drift_report",
    "freshness",
    "ks",
    "no_drift_report",
    "psi",
    "staleness",
]


@dataclass(frozen=True)
class Monitoring:
    """The spec's monitoring: the drift statistic ('psi', 'ks' or None: no drift check), its
    threshold and the model columns it watches; the sources behind the feature views with
    the features' freshness SLO; the model's staleness limit (None: no limit)."""

    drift_method: str | None = "psi"
    drift_threshold: float | None = 0.2
    drift_features: tuple[str, ...] = ()
    feature_sources: tuple[str, ...] = ()
    feature_freshness_seconds: float | None = None
    model_staleness_seconds: float | None = None


def psi(reference: np.ndarray, current: np.ndarray, bins: int = 10) -> float:
    """Population stability index of `current` against `reference`, over the reference's
    quantile bins (open-ended at both ends; empty bins count as 1e-6). A constant reference:
    0 when `current` is the same constant, else infinity."""
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)))
    if len(edges) < 2:
        return 0.0 if np.all(current == edges[0]) else float("inf")
    edges[0], edges[-1] = -np.inf, np.inf
    ref = np.histogram(reference, edges)[0] / len(reference)
    cur = np.histogram(current, edges)[0] / len(current)
    ref, cur = np.clip(ref, 1e-6, None), np.clip(cur, 1e-6, None)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def ks(reference: np.ndarray, current: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic (the largest distance between the samples'
    empirical CDFs)."""
    ref, cur = np.sort(reference), np.sort(current)
    points = np.concatenate([ref, cur])
    cdf_ref = np.searchsorted(ref, points, side="right") / len(ref)
    cdf_cur = np.searchsorted(cur, points, side="right") / len(cur)
    return float(np.max(np.abs(cdf_ref - cdf_cur)))


def no_drift_report() -> dict:
    """The drift section when the spec checks no drift."""
    return {"method": None, "features": {}, "drifted": []}


def drift_report(reference: pd.DataFrame, current: pd.DataFrame, monitoring: Monitoring) -> dict:
    """Per watched column: the statistic (nulls dropped; None when either side is empty),
    whether it is above the threshold, and the current rows; plus the drifted columns."""
    if monitoring.drift_method is None:
        return no_drift_report()
    statistic = ks if monitoring.drift_method == "ks" else psi
    features = {}
    for column in monitoring.drift_features:
        ref = reference[column].dropna().to_numpy(dtype=float)
        cur = current[column].dropna().to_numpy(dtype=float)
        if not len(ref) or not len(cur):
            features[column] = {"statistic": None, "drifted": None, "rows": len(cur)}
            continue
        value = statistic(ref, cur)
        features[column] = {
            "statistic": value,
            "drifted": bool(value > monitoring.drift_threshold),
            "rows": len(cur),
        }
    return {
        "method": monitoring.drift_method,
        "threshold": monitoring.drift_threshold,
        "features": features,
        "drifted": sorted(c for c, f in features.items() if f["drifted"]),
    }


def freshness(
    frames: Mapping[str, pd.DataFrame],
    sources: Iterable[SourceSpec],
    monitoring: Monitoring,
    now: datetime,
) -> dict:
    """Age of the newest row of each feature source (monitoring.feature_sources) at `now`
    vs the freshness SLO; `fresh` is None without an SLO or without rows."""
    timestamp_fields = {source.name: source.timestamp_field for source in sources}
    slo = monitoring.feature_freshness_seconds
    report = {}
    for name in monitoring.feature_sources:
        newest = frames[name][timestamp_fields[name]].max()
        age = (now - newest.to_pydatetime()).total_seconds() if pd.notna(newest) else None
        fresh = None if age is None or slo is None else (age <= slo)
        report[name] = {
            "newest": None if age is None else newest.isoformat(),
            "age_seconds": age,
            "fresh": fresh,
        }
    return {
        "slo_seconds": slo,
        "sources": report,
        "stale": sorted(n for n, s in report.items() if s["fresh"] is False),
    }


def staleness(
    current_tag: str | None, model_name: str, monitoring: Monitoring, now: datetime
) -> dict:
    """Age of the promoted model (`current_tag`; else the newest saved `model_name`) in the
    BentoML model store vs the staleness limit. No model at all counts as stale."""
    import bentoml

    limit = monitoring.model_staleness_seconds
    try:
        model = bentoml.models.get(current_tag or f"{model_name}:latest")
    except bentoml.exceptions.NotFound:
        return {"model_tag": None, "age_seconds": None, "limit_seconds": limit, "stale": True}
    age = (now - model.info.creation_time).total_seconds()
    return {
        "model_tag": str(model.tag),
        "age_seconds": age,
        "limit_seconds": limit,
        "stale": None if limit is None else age > limit,
    }


def alerts(report: Mapping) -> list[str]:
    """The problems in a monitoring report with 'drift', 'freshness' and 'staleness'."""
    drift = report["drift"]
    found = [
        f"feature {c} drifted ({drift['method']} above {drift['threshold']:g})"
        for c in drift["drifted"]
    ]
    found += [f"source {s} is older than the freshness SLO" for s in report["freshness"]["stale"]]
    if report["staleness"]["stale"]:
        found.append("the model is stale (or missing)")
    return found
