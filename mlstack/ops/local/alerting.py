"""Sidecars of a local deployment that evaluate and deliver its alerts (issue 19 part 3): a
Prometheus evaluating the serving version's generated rules (monitoring/prometheus-rules.yaml)
and, where the spec declares `monitoring.alerts`, an Alertmanager running the generated
monitoring/alertmanager.yml, which delivers the firing alerts to the spec's receivers.

Both run when their binaries are on PATH (Debian's `prometheus` and `prometheus-alertmanager`
packages), on loopback ports kept per sidecar (sidecars.port_for), with their data in the
project's state (.mlstack/prometheus, .mlstack/alertmanager). Without Prometheus nothing is
declared, and `alerts_unavailable()` is the one line deploy prints instead.

Prometheus runs a configuration written here (.mlstack/prometheus/prometheus.yml):
- it scrapes the router (its /metrics: the answers clients got) and every running version
  (BentoML's /metrics) every SCRAPE_INTERVAL, and evaluates the rules every
  EVALUATION_INTERVAL, so a rule's `for:` is what decides how soon an alert fires here (the
  generated rules name no interval of their own: the cluster's Prometheus keeps its own);
- the targets are file-discovered (.mlstack/prometheus/targets/*.json, rewritten at each
  declaration; Prometheus re-reads them without a restart), so a canary or a new port is
  scraped at once;
- the generated rules count `bentoml_service_request_total`, the service's own counter. A
  client of the local deployment talks to the router, and when the service is down the
  service counts nothing while every client gets the router's 503. So here the router's
  `mlstack_router_requests_total{code, answered_by}` is renamed at scrape to the service's
  counter (code -> http_response_code, service_name = the system), and the versions' own
  request counter is dropped (every request it counts went through the router and is
  counted there already): the rules, unchanged, count what the client saw. The versions'
  latency histograms are kept as they are (the router measures no latency);
- it scrapes the exporter sidecar (mlstack.ops.local.exporter, job `exporter`, declared
  whenever Prometheus is): the gauges the generated feature-freshness, drift and
  model-staleness rules read (`mlstack_feature_newest_timestamp_seconds{system, view}`, from
  which a rule records `mlstack_feature_freshness_seconds`, ...), served from the monitoring
  flow's last report (.mlstack/runtime/monitoring.json); nothing else exports them locally
  (a cluster's flow pushes the same gauges). A missing or unreadable report exports none, so
  `<System>FeatureFreshnessUnknown` fires as it should;
- one local-only rule (.mlstack/prometheus/local-rules.yaml): `<System>RouterDown`, a page
  when the router clients reach has not answered its scrape for ROUTER_DOWN_FOR (a local
  deployment stops its router when no version can serve: then clients get refused
  connections, which no request counter sees).

Prometheus and Alertmanager read stable copies in the project's state (.mlstack/prometheus/
rules.yaml from the serving version's tree, .mlstack/alertmanager/alertmanager.yml), so their
declarations (sidecars.digest) do not change when a version is promoted: a declaration that
finds a copy or the configuration changed sends the running process SIGHUP, and it reloads
(Prometheus and Alertmanager keep the last good configuration when a reload fails). No
restart, no alert state lost, and no race with the keeper's `ensure`.

`status_report()` asks Prometheus for its targets' health and the firing alerts (standard
library only: `mlstack status` runs it).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import urllib.error
import urllib.request
from pathlib import Path

from mlstack.ops.local import sidecars as sc
from mlstack.ops.local.state import DeploymentState, VersionStatus, write_atomically
from mlstack.ops.paths import ProjectPaths

PROMETHEUS, ALERTMANAGER, EXPORTER = "prometheus", "alertmanager", "exporter"
PROMETHEUS_BINARY = "prometheus"
ALERTMANAGER_BINARIES = ("prometheus-alertmanager", "alertmanager")  # Debian's name first
RULES_FILE = "monitoring/prometheus-rules.yaml"
ALERTMANAGER_FILE = "monitoring/alertmanager.yml"
SCRAPE_INTERVAL = "5s"
EVALUATION_INTERVAL = "5s"
RETENTION = "4d"  # the rules' longest window is 3d
ROUTER_METRIC = "mlstack_router_requests_total"
SERVICE_REQUESTS = "bentoml_service_request_total"  # monitoring.REQUESTS, the rules' counter
SCRAPED = (VersionStatus.STARTING, VersionStatus.READY, VersionStatus.SERVING)
ROUTER_DOWN_FOR = "1m"
INSTALL_HINT = "apt-get install prometheus prometheus-alertmanager"


def prometheus_binary() -> str | None:
    return shutil.which(PROMETHEUS_BINARY)


def alertmanager_binary() -> str | None:
    return next(filter(None, map(shutil.which, ALERTMANAGER_BINARIES)), None)


def prometheus_dir(paths: ProjectPaths) -> Path:
    return paths.state_dir / "prometheus"


def alertmanager_dir(paths: ProjectPaths) -> Path:
    return paths.state_dir / "alertmanager"


def config_file(paths: ProjectPaths) -> Path:
    return prometheus_dir(paths) / "prometheus.yml"


def targets_file(paths: ProjectPaths, job: str) -> Path:
    return prometheus_dir(paths) / "targets" / f"{job}.json"


def rules_copy(paths: ProjectPaths) -> Path:
    return prometheus_dir(paths) / "rules.yaml"


def alertmanager_copy(paths: ProjectPaths) -> Path:
    return alertmanager_dir(paths) / "alertmanager.yml"


def local_rules_file(paths: ProjectPaths) -> Path:
    return prometheus_dir(paths) / "local-rules.yaml"


def local_rules(system_name: str) -> dict:
    """The rules only a local deployment needs, labelled as the generated ones are."""
    prefix = "".join(part.capitalize() for part in system_name.split("-"))
    return {"groups": [{"name": f"{system_name}-local", "rules": [{
        "alert": f"{prefix}RouterDown", "expr": 'up{job="router"} == 0',
        "for": ROUTER_DOWN_FOR,
        "labels": {"system": system_name, "severity": "page", "slo": "availability"},
        "annotations": {"summary": f"{system_name}: the local router does not answer: "
                                   "clients cannot reach the service"}}]}]}


def serving_tree(paths: ProjectPaths, state: DeploymentState) -> Path:
    """The generated tree of the serving version (the build folder before any serves)."""
    if state.current and (paths.versions_dir / state.current / RULES_FILE).is_file():
        return paths.versions_dir / state.current
    return paths.build_dir


def targets(state: DeploymentState) -> dict[str, list[dict]]:
    """file_sd target groups by job: the router, and every version with a port that runs."""
    router = ([{"targets": [f"127.0.0.1:{state.router.port}"], "labels": {}}]
              if state.router.port else [])
    versions = [{"targets": [f"127.0.0.1:{v.port}"], "labels": {"version": v.version}}
                for v in sorted(state.versions, key=lambda v: v.version)
                if v.port and v.status in SCRAPED]
    return {"router": router, "service": versions}


def prometheus_config(paths: ProjectPaths, system_name: str, rule_files: list[Path],
                      alertmanager_port: int | None, exporter_port: int | None = None) -> dict:
    """The local Prometheus's configuration, as data (see the module's docstring)."""
    rename_router = [
        {"source_labels": ["__name__"], "regex": ROUTER_METRIC, "target_label": "__name__",
         "replacement": SERVICE_REQUESTS},
        {"source_labels": ["__name__", "code"], "regex": f"{SERVICE_REQUESTS};(.+)",
         "target_label": "http_response_code", "replacement": "$1"},
        {"source_labels": ["__name__"], "regex": SERVICE_REQUESTS,
         "target_label": "service_name", "replacement": system_name},
        {"regex": "code", "action": "labeldrop"},
    ]
    config: dict = {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "scrape_timeout": "4s",
                   "evaluation_interval": EVALUATION_INTERVAL},
        "rule_files": [str(p) for p in rule_files],
        "scrape_configs": [
            {"job_name": "router", "metrics_path": "/metrics",
             "file_sd_configs": [{"files": [str(targets_file(paths, "router"))]}],
             "metric_relabel_configs": rename_router},
            {"job_name": "service", "metrics_path": "/metrics",
             "file_sd_configs": [{"files": [str(targets_file(paths, "service"))]}],
             "metric_relabel_configs": [{"source_labels": ["__name__"],
                                         "regex": SERVICE_REQUESTS, "action": "drop"}]},
        ],
    }
    if exporter_port is not None:  # a kept port (sidecars.port_for): a static target
        config["scrape_configs"].append(
            {"job_name": EXPORTER, "metrics_path": "/metrics",
             "static_configs": [{"targets": [f"127.0.0.1:{exporter_port}"]}]})
    if alertmanager_port is not None:
        config["alerting"] = {"alertmanagers": [
            {"static_configs": [{"targets": [f"127.0.0.1:{alertmanager_port}"]}]}]}
    return config


def _write_if_changed(path: Path, data: bytes | None) -> bool:
    """Write (None: remove) `path` where its bytes differ; True when it changed."""
    try:
        if path.read_bytes() == data:
            return False
    except OSError:
        if data is None:
            return False
    if data is None:
        path.unlink()
        return True
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, data)
    return True


def _environment() -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}


def _reload(paths: ProjectPaths, name: str) -> None:
    """SIGHUP to the sidecar where it runs: Prometheus and Alertmanager re-read their
    configuration (and rule files) on it."""
    for proc in sc.running(paths, name):
        try:
            os.kill(proc.pid, signal.SIGHUP)
        except OSError:
            pass  # gone meanwhile: its next start reads the new files


def write_config(paths: ProjectPaths, system_name: str, state: DeploymentState,
                 alertmanager_port: int | None, exporter_port: int | None = None,
                 ) -> tuple[Path, bool]:
    """Write prometheus.yml, the copy of the serving version's rules and the target files;
    returns (prometheus.yml, whether what Prometheus reads at a reload changed)."""
    import yaml

    tree = serving_tree(paths, state)
    found = tree / RULES_FILE
    rules = found.read_bytes() if found.is_file() else None
    changed = _write_if_changed(rules_copy(paths), rules)
    for job, groups in targets(state).items():
        _write_if_changed(targets_file(paths, job),
                          (json.dumps(groups, indent=2, sort_keys=True) + "\n").encode())
    local = yaml.safe_dump(local_rules(system_name), sort_keys=True).encode()
    changed = _write_if_changed(local_rules_file(paths), local) or changed
    config = prometheus_config(paths, system_name,
                               [rules_copy(paths)] * bool(rules) + [local_rules_file(paths)],
                               alertmanager_port, exporter_port)
    text = ("# Written by mlstack for the local deployment (mlstack.ops.local.alerting).\n"
            + yaml.safe_dump(config, sort_keys=True, default_flow_style=False)).encode()
    changed = _write_if_changed(config_file(paths), text) or changed
    (prometheus_dir(paths) / "data").mkdir(parents=True, exist_ok=True)
    return config_file(paths), changed


def sidecars(paths: ProjectPaths, system) -> list[sc.Sidecar]:
    """Alertmanager (where the spec declares alerts and its binary is on PATH), the
    exporter of the monitoring report's gauges and Prometheus (both where Prometheus's
    binary is on PATH), in start order. Writes Prometheus's
    configuration, target files and copies (only what changed; a running one that reads a
    changed file is told to reload)."""
    prometheus = prometheus_binary()
    if prometheus is None:
        return []
    state = DeploymentState.load(paths.deployments_file)
    out: list[sc.Sidecar] = []
    generated = serving_tree(paths, state) / ALERTMANAGER_FILE
    alertmanager = alertmanager_binary()
    am_port = None
    if alertmanager is not None and generated.is_file():
        am_port = sc.port_for(paths, ALERTMANAGER)
        if _write_if_changed(alertmanager_copy(paths), generated.read_bytes()):
            _reload(paths, ALERTMANAGER)
        out.append(sc.Sidecar(
            name=ALERTMANAGER,
            argv=(alertmanager, f"--config.file={alertmanager_copy(paths)}",
                  f"--storage.path={alertmanager_dir(paths)}",
                  f"--web.listen-address=127.0.0.1:{am_port}",
                  "--cluster.listen-address="),  # no peers: no gossip port
            env=_environment(), cwd=alertmanager_dir(paths),
            port=am_port, ready_path="/-/ready",
            what="Alertmanager (delivers the firing alerts to monitoring.alerts)"))
    exporter_port = sc.port_for(paths, EXPORTER)
    out.append(sc.Sidecar(
        name=EXPORTER,
        argv=(sys.executable, "-m", "mlstack.ops.local.exporter", "--state-dir",
              str(paths.state_dir), "--system", system.name, "--port", str(exporter_port)),
        env=_environment(), cwd=paths.state_dir, port=exporter_port, ready_path="/-/ready",
        what="exporter of the monitoring report's gauges (freshness, drift, model age)"))
    port = sc.port_for(paths, PROMETHEUS)
    config, changed = write_config(paths, system.name, state, am_port, exporter_port)
    if changed:
        _reload(paths, PROMETHEUS)
    out.append(sc.Sidecar(
        name=PROMETHEUS,
        argv=(prometheus, f"--config.file={config}",
              f"--storage.tsdb.path={prometheus_dir(paths) / 'data'}",
              f"--storage.tsdb.retention.time={RETENTION}",
              f"--web.listen-address=127.0.0.1:{port}"),
        env=_environment(), cwd=prometheus_dir(paths), port=port, ready_path="/-/ready",
        needs=(ALERTMANAGER,) if am_port is not None else (),
        what="Prometheus (evaluates the SLO alert rules)"))
    return out


def alerts_unavailable(paths: ProjectPaths) -> str | None:
    """One line for deploy to print when alerts are not evaluated (or not delivered) here;
    None when they are."""
    if prometheus_binary() is None:
        return ("alerts are not evaluated locally: Prometheus is not on PATH (Debian: "
                f"{INSTALL_HINT})")
    if alertmanager_binary() is None and (paths.build_dir / ALERTMANAGER_FILE).is_file():
        return ("alerts are evaluated but not delivered locally: Alertmanager is not on PATH "
                f"(Debian: {INSTALL_HINT})")
    return None


# -- status ---------------------------------------------------------------------------------
def _get_json(url: str, timeout: float) -> dict:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=timeout) as response:
        data = json.loads(response.read())
    if not isinstance(data, dict) or data.get("status") != "success":
        raise ValueError(f"{url} answered {str(data)[:200]}")
    return data["data"]


def status_report(paths: ProjectPaths, timeout: float = 3.0) -> dict:
    """Where Prometheus listens, its targets' health and the firing alerts (name, severity,
    since, summary), as JSON-able data; `state` is "up", "not running", "unreachable: <why>"
    or the line of alerts_unavailable()."""
    unavailable = alerts_unavailable(paths)
    port = sc.record(paths, PROMETHEUS).get("port")
    report: dict = {"prometheus": f"http://127.0.0.1:{port}" if port else None,
                    "alertmanager": None, "targets": [], "alerts": [], "pending": []}
    am_port = sc.record(paths, ALERTMANAGER).get("port")
    if am_port and sc.running(paths, ALERTMANAGER):
        report["alertmanager"] = f"http://127.0.0.1:{am_port}"
    if not port or not sc.running(paths, PROMETHEUS):
        report["state"] = unavailable or "not running"
        return report
    if unavailable:
        report["note"] = unavailable
    base = report["prometheus"]
    try:
        found = _get_json(f"{base}/api/v1/targets?state=active", timeout)
        alerts = _get_json(f"{base}/api/v1/alerts", timeout)
    except (OSError, ValueError) as exc:  # refused, timed out, not JSON, an error answer
        why = getattr(exc, "reason", None) or exc
        report["state"] = f"unreachable: {why}"
        return report
    report["state"] = "up"
    report["targets"] = sorted(
        ({"job": t.get("labels", {}).get("job", ""), "url": t.get("scrapeUrl", ""),
          "health": t.get("health", ""), "error": t.get("lastError", "")}
         for t in found.get("activeTargets", [])), key=lambda t: (t["job"], t["url"]))
    for alert in alerts.get("alerts", []):
        labels, notes = alert.get("labels", {}), alert.get("annotations", {})
        if alert.get("state") == "firing":
            report["alerts"].append({"name": labels.get("alertname", ""),
                                     "severity": labels.get("severity", ""),
                                     "since": alert.get("activeAt", ""),
                                     "summary": notes.get("summary", "").strip()})
        else:
            report["pending"].append(labels.get("alertname", ""))
    report["alerts"].sort(key=lambda a: (a["since"], a["name"]))
    report["pending"].sort()
    return report
