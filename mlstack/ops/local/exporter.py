"""The monitoring flow's last report as Prometheus gauges: a sidecar of a local deployment
(alerting.sidecars declares it beside Prometheus, which scrapes it as the `exporter` job).

The generated rules (monitoring/prometheus-rules.yaml) read gauges the monitoring flow
reports: on the kubernetes target it pushes them to the stack's Pushgateway at the end of each
run (mlstack.runtime.pushgateway); locally this serves them. At each scrape of /metrics it
reads `<state dir>/runtime/monitoring.json` (the flow's last report, mlstack.runtime.monitoring)
and answers, in the text format 0.0.4, the gauges mlstack.runtime.monitoring_gauges computes
from it, the pusher's own: `mlstack_feature_newest_timestamp_seconds{system, view}`,
`mlstack_feature_drift_score{system, feature}`, `mlstack_model_trained_timestamp_seconds{system}`,
`mlstack_live_quality_missed{system, version, metric}` and
`mlstack_monitoring_report_readable{system}`. None is an age: the rules compute ages with
`time()` (the feature freshness recording rule, the model-age alert), so they keep growing
between monitoring runs as the real ages do, whether the gauges are scraped here or pushed.

A missing or unreadable report (no file, not JSON, not the report's shape) exports only
`mlstack_monitoring_report_readable 0`, so the rules' `absent(...)`
(`<System>FeatureFreshnessUnknown`) still tells the truth. GET /-/ready answers 200 once it
listens.

Run as `python -m mlstack.ops.local.exporter --state-dir <.mlstack> --system <name> --port P`.
Standard library only, and the runtime's standard-library gauge module (a sidecar the keeper
restarts must stay small).
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from mlstack.codegen.contract import MONITORING_FILE
from mlstack.runtime.monitoring_gauges import HELP, Sample, report_samples

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def report_file(state_dir: Path) -> Path:
    """Where the monitoring flow writes its report under a project's .mlstack."""
    return Path(state_dir) / "runtime" / MONITORING_FILE


def read_report(path: Path) -> dict[str, Any] | None:
    """The report as JSON data; None when it is missing, unreadable or not a JSON object."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render(found: Iterable[Sample]) -> str:
    """Samples as the text exposition format 0.0.4: each family's HELP and TYPE once."""
    lines: list[str] = []
    family = None
    for name, labels, value in found:
        if name != family:
            family = name
            lines += [f"# HELP {name} {HELP[name]}", f"# TYPE {name} gauge"]
        text = ",".join(f'{k}="{_label(v)}"' for k, v in sorted(labels.items()))
        lines.append(f"{name}{{{text}}} {_value(value)}")
    return "\n".join(lines) + "\n"


def exposition(state_dir: Path, system: str) -> str:
    """What /metrics answers: the last report's gauges and whether it was readable."""
    return render(report_samples(read_report(report_file(state_dir)), system))


def make_server(state_dir: Path, system: str, port: int,
                host: str = "127.0.0.1") -> ThreadingHTTPServer:
    """The HTTP server (bound, not yet serving)."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "mlstack-exporter"

        def log_message(self, *args: Any) -> None:  # keep the log for errors only
            pass

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._answer(200, exposition(state_dir, system), CONTENT_TYPE)
            elif path == "/-/ready":
                self._answer(200, "ready\n", "text/plain; charset=utf-8")
            else:
                self._answer(404, "not found: /metrics or /-/ready\n",
                             "text/plain; charset=utf-8")

        def _answer(self, code: int, text: str, content_type: str) -> None:
            body = text.encode()
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--system", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    make_server(args.state_dir, args.system, args.port, args.host).serve_forever()


if __name__ == "__main__":
    main()
