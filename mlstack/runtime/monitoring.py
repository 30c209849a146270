"""Monitoring: feature drift (PSI or KS), feature freshness and model staleness.

Each check returns a JSON-ready dict; `alerts(report)` turns a report of all three into the
list of problems the monitoring flow records (and fails on, when asked).

What is judged is what serves: freshness is read from the online store (`online_newest`,
Feast's event timestamps, where the service reads), and staleness is the serving version's
model (`serving_model`: $MLSTACK_MODEL_TAG and $MLSTACK_SERVING_VERSION, which `mlstack run`
sets from the deploy journal; else the models file's current model).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from mlstack.runtime.sources import SourceSpec

__all__ = [
    "MODEL_TAG_ENV",
    "ONLINE_KEYS",
    "SERVING_VERSION_ENV",
    "Monitoring",
    "alerts",
    "drift_report",
    "freshness",
    "ks",
    "newest_event_times",
    "no_drift_report",
    "online_freshness",
    "online_newest",
    "psi",
    "require_registry",
    "serving_model",
    "staleness",
]

# The serving version's model and the version's name, as the deploy passes them to what runs
# on its behalf (the service reads the first; mlstack's contract owns both names).
MODEL_TAG_ENV = "MLSTACK_MODEL_TAG"
SERVING_VERSION_ENV = "MLSTACK_SERVING_VERSION"
# Entities read per feature view to find its newest online row: those of the source's newest
# rows (a newer row that is not online yet shows as an older online one, or as none).
ONLINE_KEYS = 1000
# The suffix of the event-time columns of Feast's OnlineResponse.to_dict(True) (seconds).
_TS_SUFFIX = "__ts"


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
    # live quality (monitoring.prediction_log on): the served answers joined to their
    # outcomes, judged per version against slos.quality over the log's window
    live_quality: bool = False
    task: str = ""
    quality_gates: tuple[tuple[str, str, float], ...] = ()  # (metric, op, threshold)
    live_window_seconds: float = 7 * 86400.0


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


def no_drift_report() -> dict[str, Any]:
    """The drift section when the spec checks no drift."""
    return {"method": None, "features": {}, "drifted": []}


def drift_report(reference: pd.DataFrame, current: pd.DataFrame, monitoring: Monitoring) -> dict[str, Any]:
    """Per watched column: the statistic (nulls dropped; None when either side is empty),
    whether it is above the threshold, and the current rows; plus the drifted columns."""
    if monitoring.drift_method is None:
        return no_drift_report()
    statistic = ks if monitoring.drift_method == "ks" else psi
    threshold = monitoring.drift_threshold
    features: dict[str, dict[str, Any]] = {}
    for column in monitoring.drift_features:
        ref = reference[column].dropna().to_numpy(dtype=float)
        cur = current[column].dropna().to_numpy(dtype=float)
        if not len(ref) or not len(cur):
            features[column] = {"statistic": None, "drifted": None, "rows": len(cur)}
            continue
        value = statistic(ref, cur)
        if threshold is None:  # the IR gives every drift method its threshold
            raise ValueError(f"drift method {monitoring.drift_method!r} has no threshold")
        features[column] = {
            "statistic": value,
            "drifted": bool(value > threshold),
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
) -> dict[str, Any]:
    """Age of the newest row of each feature source (monitoring.feature_sources) at `now`
    vs the freshness SLO; `fresh` is None without an SLO or without rows."""
    timestamp_fields = {source.name: source.timestamp_field for source in sources}
    slo = monitoring.feature_freshness_seconds
    report: dict[str, dict[str, Any]] = {}
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


def newest_event_times(fetched: Mapping[str, Sequence[Any]], views: Iterable[str],
                       ) -> dict[str, datetime | None]:
    """Each view's newest event time (an aware datetime; None when no value of it is online)
    in Feast's `to_dict(include_event_timestamps=True)` answer: its 'view__field__ts'
    columns, in seconds since the epoch (0 or None: no value)."""
    newest: dict[str, datetime | None] = {}
    for view in views:
        stamps = [ts for column, values in fetched.items()
                  if column.startswith(f"{view}__") and column.endswith(_TS_SUFFIX)
                  for ts in values if ts]
        newest[view] = datetime.fromtimestamp(max(stamps), UTC) if stamps else None
    return newest


def online_newest(
    feature_store: Any,
    frames: Mapping[str, pd.DataFrame],
    sources: Iterable[SourceSpec],
    view_sources: Mapping[str, str],
    view_keys: Mapping[str, Sequence[str]],
    fetch_refs: Sequence[str],
    limit: int = ONLINE_KEYS,
) -> dict[str, datetime | None]:
    """Each feature view's newest row in the online store (what the service reads): the
    entities of the newest `limit` rows of the view's source (in `frames`) are read from
    `feature_store` (a feast.FeatureStore) with their event times. A view whose source is not
    in `frames` is left out; one with no online value for those entities is None."""
    timestamp_fields = {source.name: source.timestamp_field for source in sources}
    newest: dict[str, datetime | None] = {}
    for view, source in sorted(view_sources.items()):
        refs = [ref for ref in fetch_refs if ref.split(":", 1)[0] == view]
        if source not in frames or not refs:
            continue
        keys = list(view_keys[view])
        frame = frames[source].sort_values(timestamp_fields[source], ascending=False)
        rows = frame[keys].dropna().drop_duplicates().head(limit)
        if rows.empty:
            newest[view] = None
            continue
        entity_rows = {k: [v.item() if hasattr(v, "item") else v for v in rows[k]]
                       for k in keys}
        fetched = feature_store.get_online_features(
            features=refs, entity_rows=entity_rows, full_feature_names=True,
        ).to_dict(include_event_timestamps=True)
        newest.update(newest_event_times(fetched, [view]))
    return newest


def online_freshness(
    newest: Mapping[str, datetime | None],
    view_sources: Mapping[str, str],
    monitoring: Monitoring,
    now: datetime,
) -> dict[str, Any]:
    """Age of each feature source's newest online row (`newest`, by view, from
    online_newest; a source's views' newest) at `now` vs the freshness SLO. A source without
    a row online is stale under an SLO (serving has nothing of it); `fresh` is None without
    an SLO. Same shape as `freshness`, with the views read and `read_from: online store`."""
    slo = monitoring.feature_freshness_seconds
    report: dict[str, dict[str, Any]] = {}
    for name in monitoring.feature_sources:
        views = sorted(v for v, s in view_sources.items() if s == name and v in newest)
        stamps = [t for v in views if (t := newest[v]) is not None]
        latest = max(stamps) if stamps else None
        age = (now - latest).total_seconds() if latest is not None else None
        fresh = None if slo is None else (age is not None and age <= slo)
        report[name] = {
            "newest": None if latest is None else latest.isoformat(),
            "age_seconds": age,
            "fresh": fresh,
            "views": {v: None if (t := newest[v]) is None else t.isoformat() for v in views},
        }
    return {
        "read_from": "online store",
        "slo_seconds": slo,
        "sources": report,
        "stale": sorted(n for n, s in report.items() if s["fresh"] is False),
    }


def require_registry(config: Mapping[str, Any], state_dir: str | Path) -> None:
    """Raise FileNotFoundError, naming the cause and the command, when the Feast config's
    file registry does not exist: the flow was started without the deploy's state folder
    (MLSTACK_STATE_DIR), or before the first deploy. Other registries are not checked."""
    registry = config.get("registry")
    if isinstance(registry, Mapping):
        if registry.get("registry_type", "file") != "file":
            return
        registry = registry.get("path")
    if not isinstance(registry, str) or "://" in registry or Path(registry).exists():
        return
    raise FileNotFoundError(
        f"no feature registry at {registry}: run `mlstack run monitoring` in the deployed "
        f"project, or set MLSTACK_STATE_DIR to its .mlstack/runtime (the state folder is "
        f"{state_dir})")


def serving_model(models_state: Mapping[str, Any], environ: Mapping[str, str] | None = None,
                  ) -> dict[str, Any]:
    """The model monitoring judges: the serving version's model as the deploy passes it
    ($MLSTACK_MODEL_TAG, with the version's name from $MLSTACK_SERVING_VERSION), else the
    models file's current model (a flow that promotes by itself), else none (staleness then
    reads the newest saved model). 'from' says which."""
    env = os.environ if environ is None else environ
    tag = env.get(MODEL_TAG_ENV)
    if tag:
        return {"version": env.get(SERVING_VERSION_ENV) or None, "model_tag": tag,
                "from": "deploy"}
    current = models_state.get("current")
    return {"version": None, "model_tag": current,
            "from": "models file" if current else None}


def staleness(
    current_tag: str | None, model_name: str, monitoring: Monitoring, now: datetime
) -> dict[str, Any]:
    """Age of the promoted model (`current_tag`; else the newest saved `model_name`) in the
    BentoML model store vs the staleness limit. No model at all counts as stale; `missing`
    says so (the asked-for tag is kept)."""
    import bentoml

    limit = monitoring.model_staleness_seconds
    try:
        model = bentoml.models.get(current_tag or f"{model_name}:latest")
    except bentoml.exceptions.NotFound:
        return {"model_tag": current_tag, "age_seconds": None, "limit_seconds": limit,
                "stale": True, "missing": True}
    age = (now - model.info.creation_time).total_seconds()
    return {
        "model_tag": str(model.tag),
        "age_seconds": age,
        "limit_seconds": limit,
        "stale": None if limit is None else age > limit,
    }


def alerts(report: Mapping[str, Any]) -> list[str]:
    """The problems in a monitoring report with 'drift', 'freshness' and 'staleness'."""
    drift = report["drift"]
    found = [
        f"feature {c} drifted ({drift['method']} above {drift['threshold']:g})"
        for c in drift["drifted"]
    ]
    fresh = report["freshness"]
    for name in fresh["stale"]:
        seen = (fresh.get("sources") or {}).get(name) or {}
        found.append(f"source {name} has no row in the online store"
                     if "age_seconds" in seen and seen["age_seconds"] is None
                     else f"source {name} is older than the freshness SLO")
    model = report["staleness"]
    named = f"the model {model['model_tag']}" if model.get("model_tag") else "the model"
    if model.get("missing"):
        found.append(f"{named} is not in the model store")
    elif model["stale"]:
        found.append(f"{named} is older than its staleness limit")
    for gate in (report.get("live_quality") or {}).get("judged") or []:
        if gate["status"] == "missed":  # on evidence: the whole interval misses
            found.append(f"live {gate['metric']} of {gate['version']} is {gate['value']:g} "
                         f"[{gate['low']:g}, {gate['high']:g}] over {gate['n']} answers: "
                         f"misses slos.quality {gate['op']} {gate['threshold']:g}")
    return found


def live_quality_report(monitoring: Monitoring, folder: Any, frames: Mapping[str, Any],
                        label: Any, now: Any) -> dict[str, Any]:
    """The live quality part of the monitoring report (live_quality.monitoring_report): the
    prediction log in `folder` with outcomes from feedback and from the label source's frame
    (`label`: the flow's LabelSpec), or {"enabled": False} when the log is off."""
    if not monitoring.live_quality:
        return {"enabled": False}
    from mlstack.runtime.evaluation import Gate
    from mlstack.runtime.live_quality import monitoring_report

    task = {"multiclass_classification": "multiclass"}.get(monitoring.task, monitoring.task)
    gates = [Gate(metric, op, threshold) for metric, op, threshold in monitoring.quality_gates]
    k = next((int(g.metric.split("@")[1]) for g in gates if g.metric.startswith("ndcg@")), 10)
    labels = frames.get(label.source)
    report = monitoring_report(folder, task, gates, now=now,
                               window_seconds=monitoring.live_window_seconds, labels=labels,
                               keys=tuple(label.keys), label_field=label.column,
                               timestamp_field=label.timestamp, k=k)
    return {"enabled": True, **report}
