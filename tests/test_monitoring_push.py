"""The monitoring report's gauges (mlstack.runtime.monitoring_gauges) and their push to a
Pushgateway (mlstack.runtime.pushgateway), how the kubernetes target's monitoring flow, a
batch job, gets them to Prometheus.

- report_samples: the report's times and scores, labelled as the generated rules read them,
  the same names the monitoring backend's rules use; none depends on when it is computed;
- push_report: an HTTP PUT of the group job="mlstack-monitoring", system=<name> with those
  samples in the text format (a tiny recording server of the test's own), to the URL given or
  $MLSTACK_PUSHGATEWAY_URL, nothing without one; a gateway that refuses, fails or hangs gives
  a warning and False, never an exception (the flow goes on);
- end to end, where Debian's prometheus and prometheus-pushgateway are installed (skipped
  only without them; scripts/test.sh installs both): a real Pushgateway gets a stale report
  pushed, a real Prometheus scrapes it with honor_labels on the generated rules, records the
  freshness as time() minus the pushed newest time (growing between scrapes while the pushed
  value stays), and the feature-staleness and model-age alerts go pending; a fresh report
  pushed over it clears the staleness alert.
"""

from __future__ import annotations

import http.server
import logging
import math
import os
import shutil
import socket
import subprocess
import threading
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import yaml

from mlstack.codegen.backends import monitoring as rules_backend
from mlstack.ops.local import procs
from mlstack.runtime import monitoring_gauges as gauges
from mlstack.runtime import pushgateway
from tests.conftest import GENERATED
from tests.test_exporter import CHECKED, NEWEST, REPORT, key, parse


def test_report_samples_are_the_reports_times_and_scores_sorted_readable_last():
    found = gauges.report_samples(REPORT, "churn")
    assert found == [
        ("mlstack_feature_drift_score", {"system": "churn", "feature": "charges"}, 0.05),
        ("mlstack_feature_drift_score", {"system": "churn", "feature": "tenure"}, 0.31),
        ("mlstack_feature_newest_timestamp_seconds",
         {"system": "churn", "view": "customer_profile"}, NEWEST.timestamp()),
        ("mlstack_feature_newest_timestamp_seconds",
         {"system": "churn", "view": "order_stats"}, -math.inf),
        ("mlstack_live_quality_missed", {"system": "churn", "version": "v1", "metric": "auc"},
         0.0),
        ("mlstack_live_quality_missed", {"system": "churn", "version": "v2", "metric": "auc"},
         1.0),
        ("mlstack_live_quality_missed", {"system": "churn", "version": "v3", "metric": "auc"},
         0.0),
        ("mlstack_model_trained_timestamp_seconds", {"system": "churn"},
         CHECKED.timestamp() - 7200.0),
        ("mlstack_monitoring_report_readable", {"system": "churn"}, 1.0)]


@pytest.mark.parametrize("report", [None, {"freshness": 3}, {"drift": {"features": {
    "x": {"statistic": "high"}}}}])
def test_no_report_or_one_not_of_the_flows_shape_is_only_unreadable(report):
    assert gauges.report_samples(report, "churn") == [
        ("mlstack_monitoring_report_readable", {"system": "churn"}, 0.0)]


def test_the_gauges_are_the_ones_the_generated_rules_read():
    """The compiler imports no runtime code: the names are written on both sides, and must
    agree (a rule on a gauge nobody exports would stay silent)."""
    assert gauges.NEWEST_EVENT == rules_backend.NEWEST_EVENT
    assert gauges.DRIFT == rules_backend.DRIFT
    assert gauges.TRAINED == rules_backend.MODEL_TRAINED
    assert gauges.LIVE_QUALITY_MISSED == rules_backend.LIVE_QUALITY_MISSED
    assert set(gauges.HELP) == {gauges.NEWEST_EVENT, gauges.DRIFT, gauges.TRAINED,
                                gauges.LIVE_QUALITY_MISSED, gauges.READABLE}


# -- the push, against a recording server ---------------------------------------------------

class Recorder(http.server.ThreadingHTTPServer):
    """Records each request (method, path, content type, body); answers `status` after
    `delay` seconds."""

    def __init__(self, status: int = 200, delay: float = 0.0):
        self.requests: list[tuple[str, str, str, str]] = []
        self.status, self.delay = status, delay
        recorder = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_PUT(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                recorder.requests.append((self.command, self.path,
                                          self.headers.get("Content-Type", ""), body.decode()))
                time.sleep(recorder.delay)
                self.send_response(recorder.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_POST = do_PUT  # noqa: N815

        super().__init__(("127.0.0.1", 0), Handler)
        self.daemon_threads = True
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


@pytest.fixture
def recorder():
    servers: list[Recorder] = []

    def start(**kwargs) -> Recorder:
        servers.append(Recorder(**kwargs))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def test_the_push_replaces_the_systems_group_with_the_reports_samples(recorder):
    gateway = recorder()
    assert pushgateway.push_report(REPORT, "churn", url=gateway.url) is True
    [(method, path, content_type, body)] = gateway.requests
    # PUT: the group's metrics are replaced, so a view or version gone from the report goes
    assert method == "PUT"
    assert path == "/metrics/job/mlstack-monitoring/system/churn"
    assert content_type.startswith("text/plain; version=0.0.4")
    assert parse(body) == {key(name, **labels): value
                           for name, labels, value in gauges.report_samples(REPORT, "churn")}
    assert f"# HELP {gauges.NEWEST_EVENT} {gauges.HELP[gauges.NEWEST_EVENT]}" in body
    assert f"# TYPE {gauges.NEWEST_EVENT} gauge" in body
    assert "mlstack_feature_freshness_seconds" not in body  # ages are Prometheus's to compute


def test_the_gateway_comes_from_the_environment_and_none_means_no_push(recorder, monkeypatch):
    gateway = recorder()
    monkeypatch.delenv(pushgateway.PUSHGATEWAY_ENV, raising=False)
    assert pushgateway.push_report(REPORT, "churn") is False  # locally: nothing named
    monkeypatch.setenv(pushgateway.PUSHGATEWAY_ENV, "  ")
    assert pushgateway.push_report(REPORT, "churn") is False
    assert gateway.requests == []
    monkeypatch.setenv(pushgateway.PUSHGATEWAY_ENV, gateway.url)
    assert pushgateway.push_report(REPORT, "churn-k8s") is True
    assert [r[1] for r in gateway.requests] == ["/metrics/job/mlstack-monitoring/system/churn-k8s"]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("gateway", ["refused", "http 500", "http 400", "hangs", "bad url"])
def test_a_failed_push_warns_and_never_raises(recorder, caplog, gateway):
    if gateway == "refused":
        url = f"http://127.0.0.1:{_closed_port()}"
    elif gateway == "bad url":
        url = "http://[not a host"
    else:
        server = recorder(status=500 if gateway == "http 500" else 400 if gateway == "http 400"
                          else 200, delay=3.0 if gateway == "hangs" else 0.0)
        url = server.url
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="mlstack.runtime"):
        assert pushgateway.push_report(REPORT, "churn", url=url, timeout=0.5) is False
    assert time.monotonic() - started < 2.5  # the timeout holds: the flow is not kept waiting
    [record] = [r for r in caplog.records if r.name == "mlstack.runtime"]
    assert record.levelno == logging.WARNING
    assert "not pushed to the Pushgateway" in record.getMessage() and url in record.getMessage()


# -- end to end: a real Pushgateway and a real Prometheus on the generated rules -------------

def _binary(*names: str) -> str | None:
    return next((found for name in names if (found := shutil.which(name))), None)


PUSHGATEWAY = _binary("prometheus-pushgateway", "pushgateway")  # Debian's name, upstream's
PROMETHEUS = _binary("prometheus")
BLUEPRINT = "churn-k8s"  # a kubernetes target: its flows push


def _query(base: str, expr: str) -> list[dict]:
    answer = httpx.get(f"{base}/api/v1/query", params={"query": expr}, timeout=10,
                       trust_env=False)
    return answer.json()["data"]["result"] if answer.status_code == 200 else []


def _alerts(base: str) -> dict[tuple[str, str], str]:
    """(alert name, view or '') -> state, of Prometheus's active alerts."""
    answer = httpx.get(f"{base}/api/v1/alerts", timeout=10, trust_env=False)
    if answer.status_code != 200:
        return {}
    return {(a["labels"]["alertname"], a["labels"].get("view", "")): a["state"]
            for a in answer.json()["data"]["alerts"]}


def _wait(what: str, check, timeout: float = 90.0):
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.5)
    return found


def _report(newest: datetime, model_age: timedelta, checked: datetime) -> dict:
    return {"checked_at": checked.isoformat(),
            "freshness": {"sources": {"customers": {
                "views": {"customer_profile": newest.isoformat()}}}},
            "drift": {"features": {"tenure": {"statistic": 0.01}}},
            "staleness": {"age_seconds": model_age.total_seconds()}}


@pytest.mark.skipif(PUSHGATEWAY is None or PROMETHEUS is None,
                    reason="prometheus or prometheus-pushgateway is not installed (Debian's "
                           "prometheus and prometheus-pushgateway packages)")
def test_pushed_stale_gauges_raise_the_generated_alerts_in_prometheus(tmp_path):
    rules = GENERATED / BLUEPRINT / "monitoring" / "prometheus-rules.yaml"
    prefix = "ChurnK8s"
    gateway_port, prometheus_port = procs.free_port(), procs.free_port()
    gateway_url = f"http://127.0.0.1:{gateway_port}"
    base = f"http://127.0.0.1:{prometheus_port}"
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules)],
        # as the stack's ServiceMonitor (honorLabels) and the chart's pushgateway job do
        "scrape_configs": [{"job_name": "pushgateway", "honor_labels": True,
                            "static_configs": [{"targets": [f"127.0.0.1:{gateway_port}"]}]}]}))
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    started: list[subprocess.Popen] = []
    try:
        with open(tmp_path / "pushgateway.log", "wb") as log:
            started.append(subprocess.Popen(
                [PUSHGATEWAY, f"--web.listen-address=127.0.0.1:{gateway_port}"],
                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True))
        with open(tmp_path / "prometheus.log", "wb") as log:
            started.append(subprocess.Popen(
                [PROMETHEUS, f"--config.file={config}",
                 f"--storage.tsdb.path={tmp_path / 'data'}",
                 f"--web.listen-address=127.0.0.1:{prometheus_port}"],
                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True))
        procs.wait_ready(f"{gateway_url}/-/ready", started[0].pid, 60,
                         tmp_path / "pushgateway.log")
        procs.wait_ready(f"{base}/-/ready", started[1].pid, 120, tmp_path / "prometheus.log")

        # the monitoring run of an hour ago saw features three days old and a model of 30
        # days (churn-k8s: freshness SLO 1 day, model staleness 7 days)
        now = datetime.now(UTC)
        checked = now - timedelta(hours=1)
        stale = _report(checked - timedelta(days=3), timedelta(days=30), checked)
        assert pushgateway.push_report(stale, BLUEPRINT, url=gateway_url) is True

        series = _wait("the recorded freshness", lambda: _query(
            base, f'mlstack_feature_freshness_seconds{{system="{BLUEPRINT}"}}'))
        [first] = series
        # honor_labels: the pushed group's job, not the scrape job's name
        assert first["metric"]["job"] == "mlstack-monitoring"
        assert first["metric"]["view"] == "customer_profile"
        age = float(first["value"][1])
        expected = time.time() - (checked - timedelta(days=3)).timestamp()
        assert abs(age - expected) < 30, (age, expected)  # time() minus the pushed time
        # it grows between scrapes while the pushed value stays as it was
        pushed = _query(base, f'mlstack_feature_newest_timestamp_seconds{{system="{BLUEPRINT}"}}')
        time.sleep(3)
        [later] = _query(base, f'mlstack_feature_freshness_seconds{{system="{BLUEPRINT}"}}')
        assert float(later["value"][1]) >= age + 2
        assert _query(base, f'mlstack_feature_newest_timestamp_seconds{{system="{BLUEPRINT}"}}'
                      )[0]["value"][1] == pushed[0]["value"][1]

        wanted = {(f"{prefix}FeaturesStale", "customer_profile"), (f"{prefix}ModelStale", "")}

        def stale_alerts() -> dict | None:
            found = _alerts(base)
            return found if wanted <= found.keys() else None

        states = _wait("the stale alerts", stale_alerts)
        assert states[(f"{prefix}FeaturesStale", "customer_profile")] in ("pending", "firing")
        assert states[(f"{prefix}ModelStale", "")] in ("pending", "firing")
        assert (f"{prefix}FeatureFreshnessUnknown", "") not in states

        # the next run's report, fresh, replaces the group: the staleness alert clears
        fresh = _report(now - timedelta(minutes=5), timedelta(days=30), now)
        assert pushgateway.push_report(fresh, BLUEPRINT, url=gateway_url) is True
        _wait("the staleness alert clearing", lambda: (
            f"{prefix}FeaturesStale", "customer_profile") not in _alerts(base))
        assert (f"{prefix}ModelStale", "") in _alerts(base)  # the model is still 30 days old
    finally:
        for process in reversed(started):
            assert procs.stop_process(process.pid, timeout=15.0), process.args[0]
            process.wait(timeout=15)
    assert all(process.poll() is not None for process in started)

