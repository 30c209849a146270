"""Text rendering of deploy results and status (the CLI's side; the library returns data)."""

from __future__ import annotations

import json

from mlstack.ops.report import DeployResult


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows, strict=False)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(("  " + x).rstrip() for x in out)


def render_summary(result: DeployResult) -> str:
    lines = []
    verb = "Deployed" if result.changed else "No change:"
    lines.append(f"{verb} {result.system} {result.version} at {result.endpoint} "
                 f"(model {result.model_tag})")
    if result.metrics:
        lines.append("Evaluation: " + ", ".join(f"{k} {v:.4f}"
                                                for k, v in sorted(result.metrics.items())))
    if result.slos:
        rows = [[r.slo, r.target, r.measured,
                 {True: "met", False: "MISSED", None: "not measured"}[r.ok]]
                for r in result.slos]
        lines.append("SLO report:")
        lines.append(_table(["SLO", "target", "measured", "result"], rows))
    if result.load:
        load = result.load
        lines.append(f"Load test: {load['requests']} requests, {load['errors']} errors, "
                     f"{load['throughput_rps']} req/s")
    if result.example_request.get("rows"):
        body = json.dumps(result.example_request)
        lines.append("Try it:")
        lines.append(f"  curl -s -X POST {result.endpoint}/predict "
                     f"-H 'Content-Type: application/json' -d '{body}'")
    return "\n".join(lines) + "\n"
