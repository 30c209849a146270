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
    if result.failed:
        lines.append(f"Not deployed: {result.system} {result.version} failed; "
                     f"{result.serving or 'no version'} serves at {result.endpoint}")
    else:
        verb = "Deployed" if result.changed else "No change:"
        lines.append(f"{verb} {result.system} {result.version} at {result.endpoint} "
                     f"(model {result.model_tag})")
    if result.metrics:
        lines.append("Evaluation: " + ", ".join(f"{k} {v:.4f}"
                                                for k, v in sorted(result.metrics.items())))
    if result.slos:
        rows = [[r.slo, r.target, r.measured, r.verdict] for r in result.slos]
        lines.append("SLO report:")
        lines.append(_table(["SLO", "target", "measured", "result"], rows))
    if result.load:
        load = result.load
        lines.append(f"Load test: {load['requests']} requests, {load['errors']} errors, "
                     f"{load['throughput_rps']} req/s")
        if load.get("contention"):
            lines.append("Machine: " + render_contention(load["contention"]))
    for step in result.rollout:
        if step.get("unjudged"):
            lines.append(f"Canary {step['weight']}%: not judged: " + "; ".join(step["unjudged"]))
        if step.get("strategy") == "shadow":
            lines.append(f"Shadow of {step['version']} against {step['against']}:")
            lines += [f"  {v['rule']:38} {v['measured']:34} "
                      f"{ {True: 'ok', False: 'FAILED', None: 'not judged'}[v['ok']]}"
                      for v in step["verdicts"]]
        if step.get("strategy") == "ab":
            lines.append(f"A/B experiment {step['experiment']}: {result.version} on "
                         f"{step['split']}% of {step['key']} (sticky), {step['control']} on "
                         "the rest; the keeper promotes or aborts by the readout, and "
                         "`mlstack status` shows it")
        if step.get("held"):
            lines.append(f"Canary held at {step['held']}%: {result.version} takes that share "
                         f"of the requests, {step['control']} the rest, until the keeper's "
                         f"test of the feedback decides ({step['experiment']}); `mlstack "
                         "status` shows it")
    if not result.failed and not result.slos_met:
        missed = ", ".join(r.slo for r in result.slos if r.ok is False)
        lines.append(f"SLO missed: {missed} ({result.version} serves; see the report above)")
    if result.failed:
        lines.append("Next: `mlstack logs` shows the service and worker logs, `mlstack status` "
                     "what serves; fix the cause and run `mlstack deploy` again.")
    if (result.example_request.get("rows") or result.example_request.get("candidates")) and (
            not result.failed):
        body = json.dumps(result.example_request)
        lines.append("Try it:")
        lines.append(f"  curl -s -X POST {result.endpoint}/{result.example_endpoint} "
                     f"-H 'Content-Type: application/json' -d '{body}'")
    return "\n".join(lines) + "\n"


def render_contention(c: dict) -> str:
    """How busy the machine was while the figures were measured."""
    busy = c.get("cpu_busy_during")
    parts = [f"load {c.get('load_per_cpu_before')} per CPU before, "
             f"{c.get('load_per_cpu_after')} after ({c.get('cpus')} CPUs)"]
    if busy is not None:
        parts.append(f"CPU {busy:.0%} busy during")
    if c.get("sender_lag_p99_ms") is not None:
        parts.append(f"load generator lag p99 {c['sender_lag_p99_ms']:g} ms, "
                     f"max {c['sender_lag_max_ms']:g} ms")
    text = "; ".join(parts)
    if (c.get("load_per_cpu_before") or 0) > 1 or (c.get("sender_lag_p99_ms") or 0) > 50:
        text += " (a busy machine: latencies include its contention)"
    return text
