"""The Grafana dashboard of a system: latency percentiles, QPS, error rate, drift, freshness.

Plain dashboard JSON (schemaVersion 39) with a Prometheus datasource variable, SLO
thresholds drawn on the panels. Deterministic: panel ids follow the panel order.
"""

from __future__ import annotations

from mlstack.codegen.backends.monitoring import (
    DRIFT,
    DURATION,
    FRESHNESS,
    MODEL_TRAINED,
    REQUESTS,
    _selector,
    _series_selector,
)
from mlstack.frontend.ir.nodes import SystemIR

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def _panel(title: str, targets: list[tuple[str, str]], unit: str, x: int, y: int,
           thresholds: list[float] | None = None) -> dict:
    steps = [{"color": "green", "value": None}] + [
        {"color": "red", "value": t} for t in sorted(thresholds or [])]
    return {
        "type": "timeseries",
        "title": title,
        "datasource": DATASOURCE,
        "gridPos": {"h": 8, "w": 12, "x": x, "y": y},
        "fieldConfig": {"defaults": {
            "unit": unit,
            "thresholds": {"mode": "absolute", "steps": steps},
            "custom": {"thresholdsStyle": {"mode": "line" if thresholds else "off"}}},
            "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"},
                    "tooltip": {"mode": "multi"}},
        "targets": [{"datasource": DATASOURCE, "expr": expr, "legendFormat": legend,
                     "refId": chr(ord("A") + i)} for i, (expr, legend) in enumerate(targets)],
    }


def grafana_dashboard(system: SystemIR) -> dict:
    s, m = system.slos, system.monitoring
    sel, series = _selector(system), _series_selector(system.name)
    latency = [(f"histogram_quantile({q}, sum by (le) (rate({DURATION}_bucket{sel}[5m])))",
                label) for q, label in ((0.5, "p50"), (0.95, "p95"), (0.99, "p99"))]
    latency_slos = [v / 1000.0 for v in (s.p50_ms, s.p95_ms, s.p99_ms) if v is not None]
    failed = _selector(system, 'http_response_code=~"5.."')
    budget = [b for b in ((1 - s.availability / 100.0) if s.availability else None,
                          s.error_rate) if b]
    panels = [
        _panel("Latency p50 / p95 / p99", latency, "s", 0, 0, latency_slos),
        _panel("Requests per second", [(f"sum(rate({REQUESTS}{sel}[1m]))", "req/s")],
               "reqps", 12, 0, [s.throughput_rps] if s.throughput_rps else None),
        _panel("Error rate (5xx share)",
               [(f"sum(rate({REQUESTS}{failed}[5m])) / sum(rate({REQUESTS}{sel}[5m]))",
                 "errors")], "percentunit", 0, 8, [min(budget)] if budget else None),
        _panel("Feature drift", [(f"max by (feature) ({DRIFT}{series})", "{{feature}}")],
               "none", 12, 8, [m.drift_threshold] if m.drift_threshold else None),
        _panel("Feature freshness (age of online features)",
               [(f"max by (view) ({FRESHNESS}{series})", "{{view}}")], "s", 0, 16,
               [s.feature_freshness_seconds] if s.feature_freshness_seconds else None),
        _panel("Model age", [(f"time() - max({MODEL_TRAINED}{series})", "model")], "s", 12, 16,
               [m.model_staleness_seconds] if m.model_staleness_seconds else None),
    ]
    for i, panel in enumerate(panels, start=1):
        panel["id"] = i
    return {
        "title": f"{system.name} (mlstack)",
        "uid": f"mlstack-{system.name}"[:40],
        "description": system.description or f"SLOs of {system.name}",
        "tags": ["mlstack", system.name],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": [{"name": "datasource", "type": "datasource",
                                 "query": "prometheus", "label": "Prometheus"}]},
        "annotations": {"list": []},
        "panels": panels,
    }
