"""The monitoring flow's last report as Prometheus gauges: a sidecar of a local deployment
(alerting.sidecars declares it beside Prometheus, which scrapes it as the `exporter` job).

The generated rules (monitoring/prometheus-rules.yaml) read gauges that, in a cluster, the
monitoring flow reports; locally nothing else exports them. At each scrape of /metrics this
reads `<state dir>/runtime/monitoring.json` (the flow's last report, mlstack.runtime.monitoring)
and answers, in the text format 0.0.4:

- `mlstack_feature_freshness_seconds{system, view}`: now minus the view's newest event time
  in the online store, so the age keeps growing between monitoring runs as the real age does;
  a view with no row online is +Inf (stale under any SLO, as the flow judges it);
- `mlstack_feature_drift_score{system, feature}`: the drift statistic per watched feature
  (a feature without one, for want of rows, is left out);
- `mlstack_model_trained_timestamp_seconds{system}`: when the model the report judged was
  trained (the report's check time minus the model's age; left out when it was missing);
- `mlstack_live_quality_missed{system, version, metric}`: 1 where the live-quality readout
  judged a version to miss a slos.quality gate on evidence, else 0 (one per judged gate);
- `mlstack_monitoring_report_readable{system}`: 1 when the report was read, else 0.

A missing or unreadable report (no file, not JSON, not the report's shape) exports none of
the first three, so the rules' `absent(...)` (`<System>FeatureFreshnessUnknown`) still tells
the truth. GET /-/ready answers 200 once it listens.

Run as `python -m mlstack.ops.local.exporter --state-dir <.mlstack> --system <name> --port P`.
Standard library only (a sidecar the keeper restarts must stay small).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from mlstack.codegen.contract import MONITORING_FILE

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
FRESHNESS = "mlstack_feature_freshness_seconds"  # monitoring backend's FRESHNESS
DRIFT = "mlstack_feature_drift_score"
TRAINED = "mlstack_model_trained_timestamp_seconds"
READABLE = "mlstack_monitoring_report_readable"
LIVE_QUALITY_MISSED = "mlstack_live_quality_missed"  # monitoring backend's LIVE_QUALITY_MISSED
HELP = {
    FRESHNESS: "Age of the feature view's newest row in the online store (now minus its "
               "newest event time in the monitoring flow's last report).",
    DRIFT: "Drift statistic of the feature in the monitoring flow's last report.",
    TRAINED: "When the serving model was trained (seconds since the epoch), from the "
             "monitoring flow's last report.",
    READABLE: "1 when the monitoring flow's last report could be read, else 0.",
    LIVE_QUALITY_MISSED: "1 when the monitoring flow's last live-quality readout found the "
                         "version missing the slos.quality gate on the metric, else 0.",
}

Sample = tuple[str, dict[str, str], float]


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


def _epoch(text: str) -> float:
    """Seconds since the epoch of an ISO time (a naive one is UTC, as the flow writes)."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def samples(report: dict[str, Any], system: str, now: float) -> list[Sample]:
    """The gauges of one report at `now` (seconds since the epoch), sorted. Raises
    (KeyError, TypeError, ValueError, AttributeError) on a report not of the flow's shape."""
    out: list[Sample] = []
    freshness = report.get("freshness") or {}
    views: dict[str, float] = {}
    for source in (freshness.get("sources") or {}).values():
        for view, newest in (source.get("views") or {}).items():
            views[view] = math.inf if newest is None else now - _epoch(newest)
    out += [(FRESHNESS, {"system": system, "view": v}, age) for v, age in views.items()]
    drift = report.get("drift") or {}
    for feature, found in (drift.get("features") or {}).items():
        if found.get("statistic") is not None:
            out.append((DRIFT, {"system": system, "feature": feature},
                        float(found["statistic"])))
    model = report.get("staleness") or {}
    if model.get("age_seconds") is not None and report.get("checked_at"):
        trained = _epoch(report["checked_at"]) - float(model["age_seconds"])
        out.append((TRAINED, {"system": system}, trained))
    for gate in (report.get("live_quality") or {}).get("judged") or []:
        out.append((LIVE_QUALITY_MISSED, {"system": system, "version": str(gate["version"]),
                                          "metric": str(gate["metric"])},
                    1.0 if gate["status"] == "missed" else 0.0))
    return sorted(out, key=lambda s: (s[0], sorted(s[1].items())))


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


def exposition(state_dir: Path, system: str, now: float) -> str:
    """What /metrics answers at `now`: the report's gauges and whether it was readable."""
    report = read_report(report_file(state_dir))
    found: list[Sample] = []
    if report is not None:
        try:
            found = samples(report, system, now)
        except (KeyError, TypeError, ValueError, AttributeError):
            report = None
    found.append((READABLE, {"system": system}, float(report is not None)))
    return render(found)


def make_server(state_dir: Path, system: str, port: int, host: str = "127.0.0.1",
                clock: Callable[[], float] = time.time) -> ThreadingHTTPServer:
    """The HTTP server (bound, not yet serving); `clock` gives the scrape's now."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "mlstack-exporter"

        def log_message(self, *args: Any) -> None:  # keep the log for errors only
            pass

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._answer(200, exposition(state_dir, system, clock()), CONTENT_TYPE)
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
