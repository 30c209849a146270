"""The monitoring backend: Prometheus alert rules for every SLO, a Grafana dashboard and,
where the spec declares `monitoring.alerts`, the Alertmanager configuration that delivers them
(monitoring_alertmanager.py).

Service metrics are the ones BentoML 1.4 exposes on /metrics (namespace `bentoml_service`):
`bentoml_service_request_duration_seconds` (histogram) and `bentoml_service_request_total`
(counter), labelled endpoint, service_name, service_version, http_response_code. Feature
freshness, drift, model age and live quality come from gauges of the monitoring flow's last
report (mlstack.runtime.monitoring_gauges: `mlstack_feature_newest_timestamp_seconds{view}`,
`mlstack_feature_drift_score{feature}`, `mlstack_model_trained_timestamp_seconds`,
`mlstack_live_quality_missed{version, metric}`, each labelled `system`): locally the exporter
sidecar (mlstack.ops.local.exporter) serves them, on the kubernetes target the flow pushes
them to the stack's Pushgateway (mlstack.runtime.pushgateway). They hold times, not ages (a
pushed value stays until the next push): a recording rule turns the newest event time into
`mlstack_feature_freshness_seconds{view}` = `time()` minus it at each evaluation, and the
model-age alert takes `time()` minus the trained time, so both ages keep growing between
monitoring runs on either target, from the same rule file.

Latency and error SLOs get multi-window, multi-burn-rate alerts (the Google SRE workbook
scheme): page when the error budget burns 14.4x over 1h (confirmed over 5m) or 6x over 6h
(30m); open a ticket at 3x over 1d (2h) or 1x over 3d (6h).
"""

from __future__ import annotations

import json

import yaml

from mlstack.codegen.backends import CompileOptions
from mlstack.codegen.backends.shared import header
from mlstack.codegen.filetree import FileTree
from mlstack.frontend.ir.nodes import SystemIR

DURATION = "bentoml_service_request_duration_seconds"
REQUESTS = "bentoml_service_request_total"
# the newest event time per feature view (a gauge of the report; runtime.monitoring_gauges)
# and the age recorded from it at each evaluation (the freshness alerts and the dashboard)
NEWEST_EVENT = "mlstack_feature_newest_timestamp_seconds"
FRESHNESS = "mlstack_feature_freshness_seconds"
DRIFT = "mlstack_feature_drift_score"
MODEL_TRAINED = "mlstack_model_trained_timestamp_seconds"
# 1 while the monitoring flow's last live-quality readout found a version missing a
# slos.quality gate on evidence (its whole interval on the wrong side), else 0
LIVE_QUALITY_MISSED = "mlstack_live_quality_missed"
RPS_PER_POD = "mlstack_requests_per_second"  # the autoscaler's per-pod metric (via an adapter)
# BentoML's default histogram buckets (seconds), bentoml/_internal/utils/metrics.py
BENTOML_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                   120.0, 180.0)
# (severity, long window, short window, burn rate)
SEVERITIES = ("page", "ticket")  # every rule's severity label; Alertmanager routes on it
BURN_WINDOWS = (("page", "1h", "5m", 14.4), ("page", "6h", "30m", 6.0),
                ("ticket", "1d", "2h", 3.0), ("ticket", "3d", "6h", 1.0))
WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")
PERCENTILES = (("p50_ms", 0.50), ("p95_ms", 0.95), ("p99_ms", 0.99))


def _matchers(system: SystemIR, extra: str = "") -> list[str]:
    return [f'service_name="{system.name}"', 'endpoint!~"/(healthz|livez|readyz|metrics)"',
            *([extra] if extra else [])]


def _selector(system: SystemIR, extra: str = "") -> str:
    """The service's label matchers on one line (the dashboard's queries)."""
    return "{" + ",".join(_matchers(system, extra)) + "}"


def _range(metric: str, system: SystemIR, window: str, extra: str = "") -> str:
    """`metric{matchers}[window]` laid out one matcher a line: the rule files stay readable
    and within a YAML linter's line length (PromQL ignores the whitespace)."""
    inner = ",\n".join("  " + m for m in _matchers(system, extra))
    return f"{metric}{{\n{inner}\n}}[{window}]"


def _indent(text: str, spaces: int = 2) -> str:
    return "\n".join(" " * spaces + line for line in text.split("\n"))


def latency_bucket(threshold_ms: float) -> float:
    """The histogram boundary the latency SLO is measured at: the largest default bucket at or
    below the threshold, so a request counted good is never slower than the SLO."""
    seconds = threshold_ms / 1000.0
    fitting = [b for b in BENTOML_BUCKETS if b <= seconds + 1e-12]
    return fitting[-1] if fitting else BENTOML_BUCKETS[0]


def error_budget(system: SystemIR) -> float | None:
    """The allowed share of failed requests: the stricter of availability and error_rate."""
    s = system.slos
    budgets = [b for b in ((1 - s.availability / 100.0) if s.availability else None,
                           s.error_rate) if b]
    return round(min(budgets), 10) if budgets else None


def _bad_ratio_rules(system: SystemIR) -> list[tuple[str, str, float]]:
    """(name, ratio expression template over the window `[W]`, budget) per burn-rate SLO."""
    out = []
    budget = error_budget(system)
    if budget:
        failed = _range(REQUESTS, system, "W", 'http_response_code=~"5.."')
        errors, total = f"sum(rate({failed}))", f"sum(rate({_range(REQUESTS, system, 'W')}))"
        out.append(("errors", f"{errors}\n/\n{total}", budget))
    for key, quantile in PERCENTILES:
        threshold = getattr(system.slos, key)
        if threshold is None or (1 - quantile) * BURN_WINDOWS[0][3] >= 1:
            continue  # a median has no meaningful burn rate: a plain threshold alert below
        le = latency_bucket(threshold)
        fast = _range(f"{DURATION}_bucket", system, "W", f'le="{le:g}"')
        good = f"sum(rate({fast}))"
        count = f"sum(rate({_range(f'{DURATION}_count', system, 'W')}))"
        ratio = _indent(f"{good}\n/\n{count}")
        out.append((f"latency_{key[:-3]}", f"1 - (\n{ratio}\n)", round(1 - quantile, 10)))
    return out


def rule_groups(system: SystemIR) -> list[dict]:
    """The Prometheus rule groups (recording + alerting), as data."""
    name, labels = system.name, {"system": system.name}
    prefix = "".join(part.capitalize() for part in name.split("-"))
    recording, alerts = [], []
    recording.append({"record": RPS_PER_POD,
                      "expr": f"sum by (namespace, pod) (rate({_range(REQUESTS, system, '1m')}))",
                      "labels": dict(labels)})
    # the age of each view's newest online row, now: time() at each evaluation, so it grows
    # between monitoring runs (-Inf, no row online: +Inf)
    recording.append({"record": FRESHNESS,
                      "expr": f"time() - (\n  {NEWEST_EVENT}{_series_selector(name)}\n)",
                      "labels": dict(labels)})
    for slo, expr, budget in _bad_ratio_rules(system):
        for window in WINDOWS:
            recording.append({"record": f"mlstack:{slo}:ratio_rate{window}",
                              "expr": expr.replace("}[W]", f"}}[{window}]"),
                              "labels": dict(labels)})
        for severity, long, short, burn in BURN_WINDOWS:
            threshold = round(burn * budget, 10)
            if threshold >= 1:
                continue
            sel = _series_selector(name)
            alerts.append({
                "alert": f"{prefix}{_camel(slo)}BudgetBurn{long.capitalize()}",
                "expr": (f"mlstack:{slo}:ratio_rate{long}{sel} > {threshold:g}\n"
                         f"and\nmlstack:{slo}:ratio_rate{short}{sel} > {threshold:g}"),
                "for": "2m" if severity == "page" else "15m",
                "labels": {**labels, "severity": severity, "slo": slo},
                "annotations": {
                    "summary": f"{name}: {slo} error budget burning {burn:g}x over {long}",
                    "description": (f"Over the last {long} (and {short}) the share of bad "
                                    f"requests is above {threshold:g} = {burn:g} x the budget "
                                    f"{budget:g}.")}})
    p50 = system.slos.p50_ms
    if p50 is not None:
        expr = (f"histogram_quantile(0.5, sum by (le) (rate(\n"
                f"{_indent(_range(f'{DURATION}_bucket', system, '5m'))}\n"
                f"))) > {p50 / 1000.0:g}")
        alerts.append(_alert(prefix + "LatencyP50High", expr, "10m", "ticket", "latency_p50",
                             labels, f"{name}: median latency above the {p50:g} ms SLO"))
    if system.slos.throughput_rps:
        rps = system.slos.throughput_rps
        alerts.append(_alert(prefix + "TrafficAboveSlo",
                             f"sum(rate({_range(REQUESTS, system, '5m')})) > {rps:g}", "15m",
                             "ticket", "throughput", labels,
                             f"{name}: traffic above the {rps:g} req/s the system is sized for"))
    fresh = system.slos.feature_freshness_seconds
    if fresh is not None:
        sel = _series_selector(name)
        alerts.append(_alert(prefix + "FeaturesStale", f"max by (view) (\n  {FRESHNESS}{sel}\n) > "
                             f"{fresh}", "5m", "page", "feature_freshness", labels,
                             f"{name}: online features older than the {fresh} s freshness SLO"))
        alerts.append(_alert(prefix + "FeatureFreshnessUnknown", f"absent({FRESHNESS}{sel})",
                             "1h", "ticket", "feature_freshness", labels,
                             f"{name}: no feature freshness reported for an hour"))
    m = system.monitoring
    if m.model_staleness_seconds is not None:
        sel = _series_selector(name)
        alerts.append(_alert(prefix + "ModelStale", f"time() - max(\n  {MODEL_TRAINED}{sel}\n) > "
                             f"{m.model_staleness_seconds}", "10m", "ticket", "model_staleness",
                             labels, f"{name}: the served model is older than "
                             f"{m.model_staleness_seconds} s"))
    if m.drift_method is not None and m.drift_threshold is not None:
        sel = _series_selector(name)
        alerts.append(_alert(prefix + "FeatureDrift", f"max by (feature) (\n  {DRIFT}{sel}\n) > "
                             f"{m.drift_threshold:g}", "15m", "ticket", "drift", labels,
                             f"{name}: {m.drift_method} drift above {m.drift_threshold:g}"))
    if m.prediction_log.enabled and system.slos.quality:
        sel = _series_selector(name)
        gates = ", ".join(f"{g.metric} {g.op} {g.threshold:g}" for g in system.slos.quality)
        alerts.append(_alert(prefix + "LiveQualityMissed",
                             f"max by (version, metric) (\n  {LIVE_QUALITY_MISSED}{sel}\n) > 0",
                             "5m", "ticket", "quality", labels,
                             f"{name}: live quality misses slos.quality ({gates}) on the "
                             "answers' outcomes"))
    groups = [{"name": f"{name}-slo-recording", "rules": recording}]
    if alerts:
        groups.append({"name": f"{name}-slo-alerts", "rules": alerts})
    return groups


def _series_selector(name: str) -> str:
    return '{system="' + name + '"}'


def _camel(slo: str) -> str:
    return "".join(part.capitalize() for part in slo.split("_"))


def _alert(alert, expr, for_, severity, slo, labels, summary) -> dict:
    return {"alert": alert, "expr": expr, "for": for_,
            "labels": {**labels, "severity": severity, "slo": slo},
            "annotations": {"summary": summary}}


def dashboard(system: SystemIR) -> dict:
    from mlstack.codegen.backends.monitoring_dashboard import grafana_dashboard

    return grafana_dashboard(system)


class _Folded(str):
    """Text emitted as a folded block scalar (`>-`): wrapped in the file, one line loaded."""


class _RulesDumper(yaml.SafeDumper):
    """Block style that passes `yamllint` with its default config: sequences indented under
    their key, multi-line strings (the PromQL) as literal blocks (`|-`), annotations folded."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)

    def ignore_aliases(self, data: object) -> bool:
        return True


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = ">" if isinstance(value, _Folded) else "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", str(value), style=style)


_RulesDumper.add_representer(str, _represent_str)
_RulesDumper.add_representer(_Folded, _represent_str)


def rules_yaml(system: SystemIR) -> str:
    """The rule file: a `---` document after the generated-file header. It loads back to
    exactly `{"groups": rule_groups(system)}`; lines stay within yamllint's default 80
    columns (PromQL laid out by the rules, annotation text folded at 68)."""
    groups = rule_groups(system)
    for group in groups:
        for rule in group["rules"]:
            if "annotations" in rule:
                rule["annotations"] = {k: _Folded(v) for k, v in rule["annotations"].items()}
    body = yaml.dump({"groups": groups}, Dumper=_RulesDumper, sort_keys=False, width=68,
                     default_flow_style=False, allow_unicode=True)
    return header(system) + "---\n" + body


class MonitoringBackend:
    name = "monitoring"
    templates = ()

    def applies(self, system: SystemIR) -> bool:
        return True  # the rules and the dashboard are useful on every target, local included

    def render(self, system: SystemIR, options: CompileOptions) -> FileTree:
        tree = FileTree()
        tree.add("monitoring/prometheus-rules.yaml", rules_yaml(system))
        tree.add("monitoring/grafana-dashboard.json",
                 json.dumps(dashboard(system), indent=2, sort_keys=True) + "\n")
        if system.monitoring.alerts:
            from mlstack.codegen.backends.monitoring_alertmanager import alertmanager_yaml

            tree.add("monitoring/alertmanager.yml", alertmanager_yaml(system))
        return tree
