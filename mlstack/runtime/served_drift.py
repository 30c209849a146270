"""Drift on the prediction log: the model inputs as served against the training set.

    served = served_features(folder, ["tenure"], since=now - window, until=now)
    served_drift_report(reference, served, monitoring)      # one drift section
    drift_section(reference, read_online, monitoring, folder, now)   # the monitoring flow's

`served_drift_report` judges each drift feature with the spec's statistic (monitoring.psi or
monitoring.ks, nulls dropped, as `drift_report` does) between the training frame and the
values the service logged (`feature.<column>` in the log) over a window. Below `min_rows`
logged rows in the window it judges nothing (`enough: false`): a handful of answers is not a
distribution. Beside the statistic, per feature:

    histograms   shared bins: the edges are the training values' deciles (`HISTOGRAM_BINS`
                 quantiles, duplicates merged; a constant training column takes the edges of
                 both sides' values), the first and last bins open-ended (a value below the
                 training minimum counts in the first, above the maximum in the last: the
                 bins PSI uses), each side's counts and proportions (of its non-null values)
                 and its nulls counted apart
    statistics   each side's rows, nulls, null rate, mean and p5/p25/p50/p75/p95

The section is JSON-ready (no NaN or infinity: null) and deterministic, its floats rounded to
6 significant digits. `drift_section` is what the monitoring flow runs: the log when it holds
enough rows in the window (`source: "prediction_log"`), else the online store's values as
before (`source: "online_store"`, read only then), with the log's count beside it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlstack.runtime.monitoring import Monitoring, drift_report, no_drift_report
from mlstack.runtime.rounding import rounded

__all__ = ["FEATURE_PREFIX", "HISTOGRAM_BINS", "MIN_SERVED_ROWS", "QUANTILES",
           "drift_section", "feature_statistics", "histogram", "served_drift_report",
           "served_features"]

# The log's column of a model input as served (prediction_log: `feature.<name>`).
FEATURE_PREFIX = "feature."
# Fewer logged rows than this in the window: drift is not judged on the log.
MIN_SERVED_ROWS = 100
# The bins of each feature's histogram (the training values' quantiles).
HISTOGRAM_BINS = 10
# The quantiles of each side's statistics, by name.
QUANTILES = (("p5", 0.05), ("p25", 0.25), ("p50", 0.5), ("p75", 0.75), ("p95", 0.95))


def served_features(folder: str | Path, columns: Iterable[str], *, since: datetime,
                    until: datetime) -> pd.DataFrame:
    """The model inputs the service logged in `folder` with since <= ts < until, one row per
    logged row, one float column per name in `columns` (a column the log lacks, or a value
    that is not a number, is null)."""
    from mlstack.runtime.prediction_log import read_log

    log = read_log(folder, since=since, until=until)
    return pd.DataFrame({
        column: pd.to_numeric(log[f"{FEATURE_PREFIX}{column}"], errors="coerce").astype(float)
        if f"{FEATURE_PREFIX}{column}" in log else np.full(len(log), np.nan)
        for column in columns}, index=range(len(log)))


def _values(frame: pd.DataFrame, column: str) -> pd.Series:
    if column not in frame:
        return pd.Series(np.full(len(frame), np.nan))
    return pd.to_numeric(frame[column], errors="coerce").astype(float)


def _edges(reference: np.ndarray, current: np.ndarray, bins: int) -> np.ndarray:
    """The shared bin edges: the reference's quantiles, else (a constant reference) those of
    both sides, else the one value twice (one bin)."""
    for values in (reference, np.concatenate([reference, current])):
        if len(values):
            edges = np.unique(np.quantile(values, np.linspace(0, 1, bins + 1)))
            if len(edges) >= 2:
                return edges
    value = reference[0] if len(reference) else current[0] if len(current) else 0.0
    return np.array([value, value], dtype=float)


def _side(values: np.ndarray, nulls: int, edges: np.ndarray) -> dict[str, Any]:
    open_ended = edges.copy()
    open_ended[0], open_ended[-1] = -np.inf, np.inf
    counts = np.histogram(values, open_ended)[0] if len(values) else np.zeros(len(edges) - 1)
    return {"counts": [int(c) for c in counts],
            "proportions": [float(c) / len(values) if len(values) else None for c in counts],
            "nulls": nulls}


def histogram(reference: pd.Series, current: pd.Series, bins: int = HISTOGRAM_BINS
              ) -> dict[str, Any]:
    """Both sides of one feature on shared bins: {"edges", "training": {"counts",
    "proportions", "nulls"}, "current": {...}} (proportions of the side's non-null values;
    null where it has none)."""
    ref, cur = reference.dropna().to_numpy(dtype=float), current.dropna().to_numpy(dtype=float)
    edges = _edges(ref, cur, bins)
    return {"edges": [float(e) for e in edges],
            "training": _side(ref, int(reference.isna().sum()), edges),
            "current": _side(cur, int(current.isna().sum()), edges)}


def feature_statistics(values: pd.Series) -> dict[str, Any]:
    """rows, nulls, null_rate, mean and the QUANTILES of one side's values (null where it has
    no value)."""
    present = values.dropna().to_numpy(dtype=float)
    rows, nulls = len(values), int(values.isna().sum())
    found = bool(len(present))
    return {"rows": rows, "nulls": nulls, "null_rate": nulls / rows if rows else None,
            "mean": float(present.mean()) if found else None,
            **{name: float(np.quantile(present, q)) if found else None
               for name, q in QUANTILES}}


def _distributions(reference: pd.DataFrame, current: pd.DataFrame, columns: Iterable[str]
                   ) -> dict[str, Any]:
    histograms, statistics = {}, {}
    for column in columns:
        ref, cur = _values(reference, column), _values(current, column)
        histograms[column] = histogram(ref, cur)
        statistics[column] = {"training": feature_statistics(ref),
                              "current": feature_statistics(cur)}
    return {"histograms": histograms, "statistics": statistics}


def served_drift_report(reference: pd.DataFrame, served: pd.DataFrame, monitoring: Monitoring,
                        *, min_rows: int = MIN_SERVED_ROWS) -> dict[str, Any]:
    """The drift section judged on `served` (served_features' frame), source
    "prediction_log": drift_report's keys (method, threshold, features, drifted), `served`
    ({"rows", "min_rows", "enough"}), the histograms and statistics. With fewer than
    `min_rows` rows: enough false, no feature judged and none drifted."""
    if monitoring.drift_method is None:
        return no_drift_report()
    enough = len(served) >= min_rows
    columns = list(monitoring.drift_features)
    base = {"source": "prediction_log",
            "served": {"rows": len(served), "min_rows": min_rows, "enough": enough}}
    report: dict[str, Any] = (
        drift_report(reference, served, monitoring) if enough else
        {"method": monitoring.drift_method, "threshold": monitoring.drift_threshold,
         "features": {}, "drifted": []})
    out: dict[str, Any] = rounded({**report, **base, **_distributions(
        reference, served, columns if enough else [])})
    return out


def drift_section(reference: pd.DataFrame, read_online: Callable[[], pd.DataFrame],
                  monitoring: Monitoring, folder: str | Path, now: datetime,
                  *, window_seconds: float | None = None, min_rows: int = MIN_SERVED_ROWS,
                  ) -> dict[str, Any]:
    """The monitoring flow's drift section: judged on the prediction log in `folder` over the
    window before `now` (default: the log's retention, monitoring.live_window_seconds) when
    the log is on and holds `min_rows` rows there; else on the online store's values
    (`read_online()`, called only then), source "online_store", with the log's `served`
    count beside it when the log is on."""
    if monitoring.drift_method is None:
        return no_drift_report()
    served_meta: Mapping[str, Any] | None = None
    if monitoring.live_quality:  # the prediction log is on
        window = monitoring.live_window_seconds if window_seconds is None else window_seconds
        served = served_features(folder, monitoring.drift_features,
                                 since=now - timedelta(seconds=window), until=now)
        report = served_drift_report(reference, served, monitoring, min_rows=min_rows)
        if report["served"]["enough"]:
            report["served"]["window_seconds"] = window
            return report
        served_meta = {**report["served"], "window_seconds": window}
    current = read_online()
    online: dict[str, Any] = rounded({
        **drift_report(reference, current, monitoring), "source": "online_store",
        **_distributions(reference, current, monitoring.drift_features)})
    if served_meta is not None:
        online["served"] = dict(served_meta)
    return online
