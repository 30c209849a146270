"""The monitoring flow's report as the Prometheus gauges the generated rules read: one
computation for both ways they reach Prometheus, the local exporter sidecar that serves the
last report on each scrape (mlstack.ops.local.exporter) and the push to a cluster's
Pushgateway at the end of each monitoring run (mlstack.runtime.pushgateway).

Every value is a fact of the report, never an age at the time it is read: a pushed value is
frozen until the next push, so an age pushed at 10:00 would still say 10:00's age at 10:59.
Ages are computed by Prometheus from the times below, with `time()` at each evaluation
(the rules' `mlstack_feature_freshness_seconds` recording rule and `...ModelStale` alert):

- `mlstack_feature_newest_timestamp_seconds{system, view}`: the view's newest event time
  in the online store (seconds since the epoch); -Inf for a view with no row online (its age
  is then +Inf: stale under any SLO, as the flow judges it);
- `mlstack_feature_drift_score{system, feature}`: the drift statistic per watched feature
  (a feature without one, for want of rows, is left out);
- `mlstack_model_trained_timestamp_seconds{system}`: when the model the report judged was
  trained (the report's check time minus the model's age; left out when it was missing);
- `mlstack_live_quality_missed{system, version, metric}`: 1 where the live-quality readout
  judged a version to miss a slos.quality gate on evidence, else 0 (one per judged gate);
- `mlstack_monitoring_report_readable{system}`: 1 when the report was read, else 0.

A missing report, or one not of the flow's shape, gives only the last, at 0, so the rules'
`absent(...)` (`<System>FeatureFreshnessUnknown`) still tells the truth. Standard library only
(the exporter is a small sidecar).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "DRIFT",
    "HELP",
    "LIVE_QUALITY_MISSED",
    "NEWEST_EVENT",
    "READABLE",
    "TRAINED",
    "Sample",
    "report_samples",
]

# the names the monitoring backend's rules read (mlstack.codegen.backends.monitoring; the
# compiler imports no runtime code, tests/test_monitoring_gauges.py checks they agree)
NEWEST_EVENT = "mlstack_feature_newest_timestamp_seconds"
DRIFT = "mlstack_feature_drift_score"
TRAINED = "mlstack_model_trained_timestamp_seconds"
LIVE_QUALITY_MISSED = "mlstack_live_quality_missed"
READABLE = "mlstack_monitoring_report_readable"
HELP = {
    NEWEST_EVENT: "Newest event time of the feature view in the online store (seconds since "
                  "the epoch; -Inf: no row online), from the monitoring flow's last report.",
    DRIFT: "Drift statistic of the feature in the monitoring flow's last report.",
    TRAINED: "When the serving model was trained (seconds since the epoch), from the "
             "monitoring flow's last report.",
    READABLE: "1 when the monitoring flow's last report could be read, else 0.",
    LIVE_QUALITY_MISSED: "1 when the monitoring flow's last live-quality readout found the "
                         "version missing the slos.quality gate on the metric, else 0.",
}

Sample = tuple[str, dict[str, str], float]  # (gauge, labels, value)


def _epoch(text: str) -> float:
    """Seconds since the epoch of an ISO time (a naive one is UTC, as the flow writes)."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _samples(report: Mapping[str, Any], system: str) -> list[Sample]:
    """The report's gauges, but the readable one. Raises (KeyError, TypeError, ValueError,
    AttributeError) on a report not of the flow's shape."""
    out: list[Sample] = []
    freshness = report.get("freshness") or {}
    views: dict[str, float] = {}  # one series a view
    for source in (freshness.get("sources") or {}).values():
        for view, newest in (source.get("views") or {}).items():
            views[str(view)] = -math.inf if newest is None else _epoch(newest)
    out += [(NEWEST_EVENT, {"system": system, "view": v}, at) for v, at in views.items()]
    drift = report.get("drift") or {}
    for feature, found in (drift.get("features") or {}).items():
        if found.get("statistic") is not None:
            out.append((DRIFT, {"system": system, "feature": str(feature)},
                        float(found["statistic"])))
    model = report.get("staleness") or {}
    if model.get("age_seconds") is not None and report.get("checked_at"):
        trained = _epoch(report["checked_at"]) - float(model["age_seconds"])
        out.append((TRAINED, {"system": system}, trained))
    for gate in (report.get("live_quality") or {}).get("judged") or []:
        out.append((LIVE_QUALITY_MISSED, {"system": system, "version": str(gate["version"]),
                                          "metric": str(gate["metric"])},
                    1.0 if gate["status"] == "missed" else 0.0))
    return out


def report_samples(report: Mapping[str, Any] | None, system: str) -> list[Sample]:
    """The gauges of a monitoring report (None: there is none), sorted by gauge and labels,
    ending with whether it was readable; a report not of the flow's shape is unreadable."""
    found: list[Sample] = []
    readable = isinstance(report, Mapping)
    if isinstance(report, Mapping):
        try:
            found = _samples(report, system)
        except (KeyError, TypeError, ValueError, AttributeError):
            found, readable = [], False
    found.sort(key=lambda s: (s[0], sorted(s[1].items())))
    return [*found, (READABLE, {"system": system}, float(readable))]
