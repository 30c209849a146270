"""Idle cost of the local alerting sidecars (issue 19 part 3): Prometheus and Alertmanager as
mlstack.ops.local.alerting declares them for churn (the generated rules, 40 of them, evaluated
every 5 s; a webhook alert, so Alertmanager runs too), scraping a real router and a stub
version every 5 s, with no client traffic.

Run: `python -m bench.alerting_idle [seconds] [warmup]` (defaults 60 and 30). A scratch project
in a temporary folder; the stub version serves a BentoML-shaped /metrics (the request counter
and the 15-bucket duration histogram for two endpoints), so each scrape parses what a real
version's would. CPU is utime + stime from /proc/<pid>/stat over the window, as % of one CPU;
RSS is VmRSS at the end. Prints one JSON object. Everything started is stopped by its marker.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml

from mlstack.codegen.backends import CompileOptions
from mlstack.codegen.backends.monitoring import BENTOML_BUCKETS, MonitoringBackend
from mlstack.frontend.analysis import require_system
from mlstack.frontend.loader import load_spec_file
from mlstack.ops.local import alerting, procs, sidecars
from mlstack.ops.local.router import write_table
from mlstack.ops.local.state import DeploymentState, RouterInfo, Version, VersionStatus
from mlstack.ops.paths import ProjectPaths

REPO = Path(__file__).resolve().parents[1]


def bentoml_metrics() -> bytes:
    lines = []
    for endpoint in ("/predict", "/readyz"):
        labels = f'endpoint="{endpoint}",http_response_code="200",service_name="churn"'
        lines.append(f"bentoml_service_request_total{{{labels}}} 1000")
        for le in (*BENTOML_BUCKETS, "+Inf"):
            lines.append(f'bentoml_service_request_duration_seconds_bucket{{{labels},le="{le}"}}'
                         " 1000")
        lines.append(f"bentoml_service_request_duration_seconds_sum{{{labels}}} 12.5")
        lines.append(f"bentoml_service_request_duration_seconds_count{{{labels}}} 1000")
    return ("\n".join(lines) + "\n").encode()


def stub_version() -> ThreadingHTTPServer:
    payload = bentoml_metrics()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main(seconds: float = 60.0, warmup: float = 30.0) -> dict:
    folder = Path(tempfile.mkdtemp(prefix="mlstack-alerting-bench-"))
    doc = copy.deepcopy(load_spec_file(REPO / "blueprints" / "churn" / "mlstack.yaml").data)
    doc["monitoring"]["alerts"] = [{"channel": "webhook", "to": "http://127.0.0.1:9/alerts"}]
    spec = folder / "mlstack.yaml"
    spec.write_text(yaml.safe_dump(doc, sort_keys=False))
    system = require_system(spec)[0]
    paths = ProjectPaths.for_spec(spec)
    tree = paths.versions_dir / "v1"
    for name, data in MonitoringBackend().render(system, CompileOptions()).items():
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_bytes(data)
    version = stub_version()
    state = DeploymentState.load(paths.deployments_file)
    state.versions.append(Version(version="v1", port=version.server_port,
                                  status=VersionStatus.SERVING))
    state.current = "v1"
    state.save(paths.deployments_file)
    config = paths.state_dir / "router.json"
    write_table(config, [])
    port = procs.free_port()
    router = procs.start_background(
        [sys.executable, "-m", "mlstack.ops.local.router", "--port", str(port), "--config",
         str(config)], cwd=REPO, env=None, log=paths.logs_dir / "router.log",
        owner=f"{paths.project_id}/router")
    try:
        procs.wait_ready(f"http://127.0.0.1:{port}/-/router", router, 30)
        state.router = RouterInfo(pid=router, port=port)
        state.save()
        declared = alerting.sidecars(paths, system)
        sidecars.start_all(paths, declared)
        pids = {s.name: sidecars.record(paths, s.name)["pid"] for s in declared}
        time.sleep(warmup)
        report = alerting.status_report(paths)
        before = {name: cpu_ticks(pid) for name, pid in pids.items()}
        began = time.monotonic()
        load_before = os.getloadavg()[0]
        time.sleep(seconds)
        elapsed = time.monotonic() - began
        hz = os.sysconf("SC_CLK_TCK")
        result = {name: {"cpu_percent": round(100 * (cpu_ticks(pid) - before[name]) / hz
                                              / elapsed, 2),
                         "rss_mb": round(rss_mb(pid), 1)} for name, pid in pids.items()}
        result["together"] = {key: round(sum(r[key] for r in result.values()), 2)
                              for key in ("cpu_percent", "rss_mb")}
        result["window_s"] = round(elapsed, 1)
        result["load_average"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
        result["targets"] = [(t["job"], t["health"]) for t in report["targets"]]
        result["rules"] = "churn's generated rules (40), evaluated every 5 s"
        return result
    finally:
        procs.stop_owned(paths.project_id, timeout=15.0)
        version.shutdown()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    args = [float(a) for a in sys.argv[1:3]]
    print(json.dumps(main(*args), indent=2))
