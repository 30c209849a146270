"""The local alerting sidecars (mlstack.ops.local.alerting): the Prometheus configuration it
writes passes `promtool check config` with the serving version's generated rules, for churn
and search-ranking; Alertmanager runs the generated alertmanager.yml where the spec declares
alerts; without Prometheus on PATH nothing is declared and one line says how to get it; and a
real Prometheus scraping a real router counts the router's 503s in the generated error-rate
rules (the relabeling onto the service's counter), seen by status_report; and it scrapes the
exporter sidecar, so the monitoring report's freshness gauge is in Prometheus.

Prometheus and promtool come from Debian's prometheus package, Alertmanager and amtool from
prometheus-alertmanager (scripts/test.sh installs both)."""

from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from mlstack.codegen.backends import CompileOptions
from mlstack.codegen.backends.monitoring import MonitoringBackend
from mlstack.frontend.analysis import require_system
from mlstack.frontend.loader import load_spec_file
from mlstack.ops.local import alerting, procs, sidecars
from mlstack.ops.local.router import write_table
from mlstack.ops.local.state import DeploymentState, RouterInfo, Version, VersionStatus
from mlstack.ops.paths import ProjectPaths
from tests.conftest import BLUEPRINTS, GENERATED

HOOK = "http://127.0.0.1:9/alerts"


def project(tmp_path: Path, blueprint: str, alerts: list | None = None):
    """(paths, system, state) of a project whose v1 serves the blueprint's compiled tree (the
    golden one, with alertmanager.yml where `alerts` are declared), the router on a port."""
    doc = copy.deepcopy(load_spec_file(BLUEPRINTS / blueprint / "mlstack.yaml").data)
    if alerts:
        doc["monitoring"]["alerts"] = alerts
    spec = tmp_path / "mlstack.yaml"
    spec.write_text(yaml.safe_dump(doc, sort_keys=False))
    system = require_system(spec)[0]
    paths = ProjectPaths.for_spec(spec)
    tree = paths.versions_dir / "v1"
    shutil.copytree(GENERATED / blueprint / "monitoring", tree / "monitoring")
    if alerts:
        rendered = MonitoringBackend().render(system, CompileOptions())
        (tree / alerting.ALERTMANAGER_FILE).write_bytes(rendered[alerting.ALERTMANAGER_FILE])
    state = DeploymentState.load(paths.deployments_file)
    state.versions.append(Version(version="v1", port=4101, status=VersionStatus.SERVING))
    state.current, state.router = "v1", RouterInfo(port=4100)
    state.save(paths.deployments_file)
    return paths, system, state


def check(tool: str, *args: str) -> str:
    assert shutil.which(tool), f"{tool}: Debian's prometheus / prometheus-alertmanager package"
    done = subprocess.run([tool, *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


@pytest.mark.parametrize("blueprint", ["churn", "search-ranking"])
def test_the_local_config_checks_with_the_serving_versions_rules(tmp_path, blueprint):
    paths, system, _ = project(tmp_path, blueprint)
    exporter, prometheus = alerting.sidecars(paths, system)
    assert prometheus.name == "prometheus" and prometheus.ready_path == "/-/ready"
    assert exporter.name == "exporter" and exporter.ready_path == "/-/ready"
    rules = paths.versions_dir / "v1" / alerting.RULES_FILE
    config = yaml.safe_load(alerting.config_file(paths).read_text())
    assert config["rule_files"] == [str(alerting.rules_copy(paths)),
                                    str(alerting.local_rules_file(paths))]
    assert alerting.rules_copy(paths).read_bytes() == rules.read_bytes()
    assert config["global"]["evaluation_interval"] == alerting.EVALUATION_INTERVAL
    assert "alerting" not in config  # no monitoring.alerts: no Alertmanager
    out = check("promtool", "check", "config", str(alerting.config_file(paths)))
    assert "2 rule files found" in out
    check("promtool", "check", "rules", str(rules), str(alerting.local_rules_file(paths)))
    # the cluster's rules name no interval: the local evaluation interval is the local config's
    assert all("interval" not in g for g in yaml.safe_load(rules.read_text())["groups"])
    router = json.loads(alerting.targets_file(paths, "router").read_text())
    service = json.loads(alerting.targets_file(paths, "service").read_text())
    assert router == [{"labels": {}, "targets": ["127.0.0.1:4100"]}]
    assert service == [{"labels": {"version": "v1"}, "targets": ["127.0.0.1:4101"]}]
    assert [j for j in config["scrape_configs"] if j["job_name"] == "exporter"] == [
        {"job_name": "exporter", "metrics_path": "/metrics",
         "static_configs": [{"targets": [f"127.0.0.1:{exporter.port}"]}]}]
    assert exporter.argv[-6:] == ("--state-dir", str(paths.state_dir), "--system",
                                  system.name, "--port", str(exporter.port))
    assert f"127.0.0.1:{prometheus.port}" in " ".join(prometheus.argv)
    assert str(paths.state_dir / "prometheus" / "data") in " ".join(prometheus.argv)


def test_alertmanager_runs_the_generated_config_where_alerts_are_declared(tmp_path):
    paths, system, _ = project(tmp_path, "churn", [{"channel": "webhook", "to": HOOK}])
    manager, _, prometheus = alerting.sidecars(paths, system)
    assert (manager.name, prometheus.name) == ("alertmanager", "prometheus")
    generated = paths.versions_dir / "v1" / alerting.ALERTMANAGER_FILE
    assert f"--config.file={alerting.alertmanager_copy(paths)}" in manager.argv
    assert alerting.alertmanager_copy(paths).read_bytes() == generated.read_bytes()
    assert prometheus.needs == ("alertmanager",)
    config = yaml.safe_load(alerting.config_file(paths).read_text())
    assert config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == [
        f"127.0.0.1:{manager.port}"]
    check("promtool", "check", "config", str(alerting.config_file(paths)))
    check("amtool", "check-config", str(alerting.alertmanager_copy(paths)))


def test_a_new_serving_version_or_port_changes_files_not_the_declaration(tmp_path):
    """A version's new port rewrites the target file (Prometheus re-reads it by itself); a
    new serving version's rules replace the copy Prometheus reads (a reload, see below):
    the declaration stays the same, so neither the keeper nor deploy restarts it."""
    paths, system, state = project(tmp_path, "churn")
    before = alerting.sidecars(paths, system)
    state.versions[0].port = 4102
    state.save()
    same = alerting.sidecars(paths, system)
    assert list(map(sidecars.digest, same)) == list(map(sidecars.digest, before))
    assert "127.0.0.1:4102" in alerting.targets_file(paths, "service").read_text()
    new_rules = paths.versions_dir / "v2" / alerting.RULES_FILE
    shutil.copytree(paths.versions_dir / "v1", paths.versions_dir / "v2")
    new_rules.write_text(new_rules.read_text().replace("for: 2m", "for: 3m"))
    state.versions.append(Version(version="v2", port=4103, status=VersionStatus.SERVING))
    state.current = "v2"
    state.save()
    after = alerting.sidecars(paths, system)
    assert list(map(sidecars.digest, after)) == list(map(sidecars.digest, before))
    assert alerting.rules_copy(paths).read_bytes() == new_rules.read_bytes()
    assert "127.0.0.1:4103" in alerting.targets_file(paths, "service").read_text()


def test_without_prometheus_nothing_is_declared_and_one_line_says_how(tmp_path, monkeypatch):
    paths, system, _ = project(tmp_path, "churn", [{"channel": "webhook", "to": HOOK}])
    assert alerting.alerts_unavailable(paths) is None
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert alerting.sidecars(paths, system) == []
    line = alerting.alerts_unavailable(paths)
    assert "not evaluated locally" in line and "apt-get install prometheus" in line
    assert "\n" not in line
    report = alerting.status_report(paths)
    assert report["state"] == line and report["alerts"] == []


RELOADED = """  - name: reloaded
    rules:
      - alert: LocalReloaded
        expr: vector(1)
        labels: {severity: ticket, system: churn}
"""


def _drive(url: str, until: float) -> int:
    sent = 0
    with httpx.Client(timeout=10) as client:
        while time.monotonic() < until:
            client.post(url, json={"rows": []})
            sent += 1
            time.sleep(0.05)
    return sent


def test_prometheus_counts_the_routers_503s_in_the_generated_error_rules(tmp_path):
    """A real router with nothing routed answers every request 503 itself; the generated
    ChurnErrorsBudgetBurn1h (errors over 5m and 1h above 14.4x the budget) goes pending
    within a few scrapes, seen by status_report, with both scrape targets up."""
    paths, system, state = project(tmp_path, "churn")
    config = paths.state_dir / "router.json"
    write_table(config, [])
    port = procs.free_port()
    router = procs.start_background(
        [sys.executable, "-m", "mlstack.ops.local.router", "--port", str(port), "--config",
         str(config)], cwd=Path(__file__).parent.parent, env=None,
        log=paths.logs_dir / "router.log", owner=f"{paths.project_id}/router")
    try:
        procs.wait_ready(f"http://127.0.0.1:{port}/-/router", router, 30)
        state.router = RouterInfo(pid=router, port=port)
        state.versions[0].status = VersionStatus.STOPPED  # nothing serves: no service target
        state.save()
        declared = alerting.sidecars(paths, system)
        sidecars.start_all(paths, declared)
        deadline = time.monotonic() + 180
        report = {}
        while time.monotonic() < deadline:
            _drive(f"http://127.0.0.1:{port}/predict", time.monotonic() + 5)
            report = alerting.status_report(paths)
            if "ChurnErrorsBudgetBurn1h" in report["pending"] + [a["name"] for a in
                                                               report["alerts"]]:
                break
        else:
            raise AssertionError(f"the error-rate alert never went pending: {report}")
            assert report["state"] == "up" and "ChurnRouterDown" not in report["pending"]
        assert [(t["job"], t["health"]) for t in report["targets"]] == [("exporter", "up"),
                                                                        ("router", "up")]
        assert report["prometheus"] == f"http://127.0.0.1:{declared[-1].port}"
        pid = sidecars.record(paths, "prometheus")["pid"]
        # v2 serves with one more rule: the running Prometheus reloads it (same PID)
        rules = paths.versions_dir / "v2" / alerting.RULES_FILE
        shutil.copytree(paths.versions_dir / "v1", paths.versions_dir / "v2")
        rules.write_text(rules.read_text() + RELOADED)
        state.current = "v2"
        state.save()
        assert alerting.sidecars(paths, system) == declared
        deadline = time.monotonic() + 60
        while "LocalReloaded" not in alerting.status_report(paths)["alerts"].__repr__():
            assert time.monotonic() < deadline, "the new rules were not loaded"
            time.sleep(1)
        assert sidecars.record(paths, "prometheus")["pid"] == pid and procs.is_alive(pid)
        os.kill(pid, signal.SIGSTOP)  # alive, not answering
        try:
            stopped = alerting.status_report(paths, timeout=1.0)
        finally:
            os.kill(pid, signal.SIGCONT)
        assert stopped["state"].startswith("unreachable: "), stopped
        # the router gone: clients are refused, the local rule sees it
        assert procs.stop_process(router)
        deadline = time.monotonic() + 90
        while "ChurnRouterDown" not in alerting.status_report(paths)["pending"]:
            assert time.monotonic() < deadline, "the router's absence was not noticed"
            time.sleep(1)
    finally:
        left = procs.stop_owned(paths.project_id, timeout=15.0)
        assert left == []
    assert alerting.status_report(paths)["state"] == "not running"


def _query(base: str, expr: str) -> list[dict]:
    answer = httpx.get(f"{base}/api/v1/query", params={"query": expr}, timeout=10,
                       trust_env=False)
    return answer.json()["data"]["result"] if answer.status_code == 200 else []


def test_prometheus_scrapes_the_monitoring_reports_gauges_from_the_exporter(tmp_path):
    """A monitoring report in the state folder: the declared exporter serves it and the real
    Prometheus has the generated rules' freshness gauge (labelled system and view), so
    ChurnFeatureFreshnessUnknown's absent(...) is false."""
    paths, system, state = project(tmp_path, "churn")
    state.versions[0].status = VersionStatus.STOPPED  # only the exporter is scraped
    state.router = RouterInfo()
    state.save()
    newest = "2026-12-06T21:00:00+00:00"
    report = paths.runtime_state_dir / "monitoring.json"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(json.dumps({
        "checked_at": "2026-12-06T22:00:00+00:00",
        "freshness": {"sources": {"customers": {"views": {"customer_profile": newest}}}},
        "drift": {"features": {}}, "staleness": {"age_seconds": None}}))
    declared = alerting.sidecars(paths, system)
    try:
        sidecars.start_all(paths, declared)
        base = f"http://127.0.0.1:{declared[-1].port}"
        expr = 'mlstack_feature_freshness_seconds{system="churn"}'
        deadline = time.monotonic() + 120
        while not (found := _query(base, expr)):
            assert time.monotonic() < deadline, "Prometheus never had the freshness gauge"
            time.sleep(1)
        (series,) = found
        assert series["metric"]["view"] == "customer_profile"
        assert series["metric"]["job"] == "exporter"
        assert float(series["value"][1]) > 3600  # its age at the scrape, an hour and more
        assert _query(base, 'absent(mlstack_feature_freshness_seconds{system="churn"})') == []
    finally:
        left = procs.stop_owned(paths.project_id, timeout=15.0)
        assert left == []
