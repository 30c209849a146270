"""The exporter sidecar (mlstack.ops.local.exporter): the monitoring flow's last report as the
gauges the generated rules read, labelled as they expect: times, not ages (the rules compute
the ages with time(), tests/test_monitoring.py), computed by the runtime's report_samples, the
function the Pushgateway pusher uses too; a missing or unreadable report exports none of them
(only `mlstack_monitoring_report_readable 0`); the text passes `promtool check metrics`; and
the process answers /metrics and /-/ready over HTTP. (That a real Prometheus scrapes it:
tests/test_alerting.py; the push: tests/test_monitoring_push.py.)"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import threading
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from mlstack.ops.local import exporter
from mlstack.runtime.monitoring_gauges import report_samples

CHECKED = datetime(2026, 12, 6, 22, 0, 0, tzinfo=UTC)
NEWEST = datetime(2026, 12, 6, 21, 0, 0, tzinfo=UTC)
REPORT = {
    "checked_at": CHECKED.isoformat(),
    "drift": {"method": "psi", "threshold": 0.2, "drifted": ["tenure"], "features": {
        "tenure": {"statistic": 0.31, "drifted": True, "rows": 10},
        "charges": {"statistic": 0.05, "drifted": False, "rows": 10},
        "empty": {"statistic": None, "drifted": None, "rows": 0}}},
    "freshness": {"read_from": "online store", "slo_seconds": 86400, "stale": ["orders"],
                  "sources": {
                      "customers": {"age_seconds": 3600.0, "fresh": True,
                                    "newest": NEWEST.isoformat(),
                                    "views": {"customer_profile": NEWEST.isoformat()}},
                      "orders": {"age_seconds": None, "fresh": False, "newest": None,
                                 "views": {"order_stats": None}}}},
    "serving": {"from": "deploy", "model_tag": "churn:abc", "version": "v1"},
    "staleness": {"age_seconds": 7200.0, "limit_seconds": 604800,
                  "model_tag": "churn:abc", "stale": False},
    "alerts": [],
    "live_quality": {"enabled": True, "judged": [
        {"version": "v1", "metric": "auc", "status": "met"},
        {"version": "v2", "metric": "auc", "status": "missed"},
        {"version": "v3", "metric": "auc", "status": "not_enough"}]},
}


def write_report(state_dir: Path, report) -> None:
    path = exporter.report_file(state_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(report if isinstance(report, str) else json.dumps(report))


def parse(text: str) -> dict[tuple[str, frozenset], float]:
    """name and labels -> value, of the exposition's sample lines."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        series, value = line.rsplit(" ", 1)
        name, _, labels = series.partition("{")
        pairs = [p.split("=", 1) for p in labels.rstrip("}").split(",") if p]
        out[(name, frozenset((k, v.strip('"')) for k, v in pairs))] = float(value)
    return out


def key(name: str, **labels: str) -> tuple[str, frozenset]:
    return name, frozenset(labels.items())


def test_the_report_becomes_the_rules_gauges(tmp_path):
    write_report(tmp_path, REPORT)
    found = parse(exporter.exposition(tmp_path, "churn"))
    assert found == {
        # the newest event time online, not an age: -Inf where no row is online
        key("mlstack_feature_newest_timestamp_seconds", system="churn",
            view="customer_profile"): NEWEST.timestamp(),
        key("mlstack_feature_newest_timestamp_seconds", system="churn", view="order_stats"):
            -math.inf,
        key("mlstack_feature_drift_score", system="churn", feature="tenure"): 0.31,
        key("mlstack_feature_drift_score", system="churn", feature="charges"): 0.05,
        key("mlstack_model_trained_timestamp_seconds", system="churn"):
            CHECKED.timestamp() - 7200.0,
        key("mlstack_monitoring_report_readable", system="churn"): 1.0,
        # the live-quality readout's verdicts: 1 only where a gate was missed on evidence
        key("mlstack_live_quality_missed", system="churn", version="v1", metric="auc"): 0.0,
        key("mlstack_live_quality_missed", system="churn", version="v2", metric="auc"): 1.0,
        key("mlstack_live_quality_missed", system="churn", version="v3", metric="auc"): 0.0,
    }
    # no age is exported: the answer is the report's, whenever it is scraped (the freshness
    # the rules alert on is time() minus the newest time, recorded by Prometheus)
    assert "mlstack_feature_freshness_seconds" not in exporter.exposition(tmp_path, "churn")


def test_the_exposition_is_the_runtimes_samples_of_the_report(tmp_path):
    """One computation: what the exporter serves is report_samples of the report (what the
    pusher pushes), rendered."""
    write_report(tmp_path, REPORT)
    assert exporter.exposition(tmp_path, "churn") == exporter.render(
        report_samples(REPORT, "churn"))


@pytest.mark.parametrize("content", [None, "{not json", "[]", '{"freshness": 3}'])
def test_a_missing_or_unreadable_report_exports_only_that_it_is_unreadable(tmp_path, content):
    if content is not None:
        write_report(tmp_path, content)
    text = exporter.exposition(tmp_path, "churn")
    assert parse(text) == {key("mlstack_monitoring_report_readable", system="churn"): 0.0}
    assert "mlstack_feature_" not in text and "mlstack_model_" not in text


def test_the_exposition_passes_promtool(tmp_path):
    assert shutil.which("promtool"), "promtool: Debian's prometheus package"
    write_report(tmp_path, REPORT)
    text = exporter.exposition(tmp_path, "churn")
    done = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr + text


def test_the_server_answers_metrics_and_ready(tmp_path):
    server = exporter.make_server(tmp_path, "churn", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    view = key("mlstack_feature_newest_timestamp_seconds", system="churn",
               view="customer_profile")
    try:
        with httpx.Client(timeout=10, trust_env=False) as client:
            assert client.get(f"{base}/-/ready").status_code == 200
            answer = client.get(f"{base}/metrics")
            assert answer.status_code == 200
            assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
            assert view not in parse(answer.text)  # no report yet
            write_report(tmp_path, REPORT)  # each scrape reads the last report
            assert parse(client.get(f"{base}/metrics").text)[view] == NEWEST.timestamp()
            assert client.get(f"{base}/nothing").status_code == 404
    finally:
        server.shutdown()
        server.server_close()
