"""The report's pages about what happened and what would: the SLO verification of every
deploy (tables and latency plots), the rollout history, the monitoring flow's last report and
the current plan against build/."""

from __future__ import annotations

import json

from mlstack.frontend.ir.nodes import SystemIR
from mlstack.ops.site.charts import latency_bars, latency_history
from mlstack.ops.site.collect import SiteData
from mlstack.ops.site.drift import drift_section
from mlstack.ops.site.experiments import ab_readout, shadow_readouts
from mlstack.ops.site.html import Markup, definitions, h, join, table, verdict
from mlstack.ops.site.layout import code, details, duration, number, short, when
from mlstack.ops.site.quality_charts import live_quality_table, quality_section
from mlstack.workspace.writer import CONFLICT_REASONS


def _targets(system: SystemIR) -> dict[str, float | None]:
    slo = system.slos
    return {"p50_ms": slo.p50_ms, "p95_ms": slo.p95_ms, "p99_ms": slo.p99_ms}


def _slo_targets(system: SystemIR) -> Markup:
    slo = system.slos
    error = (f"<= {slo.error_rate:g}" if slo.error_rate is not None else
             f"availability {slo.availability:g}%" if slo.availability is not None else None)
    return definitions([
        *[(f"latency {k[:3]}", f"<= {v:g} ms") for k, v in _targets(system).items()
          if v is not None],
        ("throughput", f">= {slo.throughput_rps:g} rps" if slo.throughput_rps else None),
        ("error rate", error),
        ("quality", ", ".join(f"{g.metric} {g.op} {g.threshold:g}" for g in slo.quality)
         or None),
        ("feature freshness", duration(slo.feature_freshness_seconds)
         if slo.feature_freshness_seconds is not None else None)])


def slos(data: SiteData) -> Markup:
    parts = [h("p", "What the spec asks, then what each deploy measured: a load test against "
                    "the new version before any traffic moved to it.", class_="lead"),
             _slo_targets(data.system)]
    verified = [(r.version.version, r.version.slo_report.get("load") or {})
                for r in data.versions]
    measured = [(v, load) for v, load in verified
                if any(load.get(p) is not None for p in ("p50_ms", "p95_ms", "p99_ms"))]
    parts.append(h("h2", "Latency across deploys"))
    parts.append(latency_history(measured, _targets(data.system)) if measured else
                 h("p", "No load test measured yet.", class_="empty"))
    parts.append(h("h2", "Every deploy"))
    if not data.versions:
        parts.append(h("p", "Not deployed yet.", class_="empty"))
    for record in reversed(data.versions):
        v = record.version
        report = v.slo_report or {}
        rows = [r for r in report.get("rows") or [] if isinstance(r, dict)]
        load = report.get("load") or {}
        missed = [r for r in rows if r.get("ok") is False]
        state = ("not verified" if not rows else
                 "all SLOs met" if not missed else f"{len(missed)} SLO(s) missed")
        targets = _targets(record.system or data.system)
        contention = load.get("contention") or {}
        summary = definitions([
            ("requests", load.get("requests")), ("errors", load.get("errors")),
            ("error rate", number(load.get("error_rate")) if "error_rate" in load else None),
            ("throughput", f"{number(load['throughput_rps'])} rps"
             if load.get("throughput_rps") is not None else None),
            ("machine", f"{contention.get('cpus')} CPUs, load/CPU "
                        f"{contention.get('load_per_cpu_before')} -> "
                        f"{contention.get('load_per_cpu_after')}" if contention else None)])
        parts.append(h("section", h("h3", f"{v.version} ({v.status}): {state}"),
                       h("div", summary, latency_bars(load, targets), class_="split"),
                       table(("SLO", "target", "measured", "result"),
                             [(r.get("slo"), r.get("target"), r.get("measured"),
                               verdict(r.get("ok"), r.get("note") or "not measured"))
                              for r in rows], empty="No SLO report recorded."),
                       class_="version", id=f"slo-{v.version}"))
    return join(parts)


def rollouts(data: SiteData) -> Markup:
    r = data.system.serving.rollout
    state = data.state
    current = state.get(state.current)
    abort = [f"p99 {g.op} {g.threshold:g} ms" for g in (r.abort_latency_p99,) if g]
    abort += [f"error rate {g.op} {g.threshold:g}" for g in (r.abort_error_rate,) if g]
    parts = [definitions([
        ("strategy", r.strategy.replace("_", " ")),
        ("steps", " -> ".join(f"{w}%" for w in r.steps) if r.strategy == "canary" else None),
        ("each step", duration(r.step_seconds) if r.strategy == "canary" else None),
        ("shadowed at least", duration(r.step_seconds) if r.shadow else None),
        ("promoted when", f"agreement {r.shadow.min_agreement.op} "
         f"{r.shadow.min_agreement.threshold:g} (scores within {r.shadow.tolerance:g}) over "
         f"at least {r.shadow.min_requests} mirrored requests" if r.shadow else None),
        ("experiment", f"{r.ab.split}% of {r.ab.key} on the candidate; {r.ab.metric} "
         f"(baseline {r.ab.baseline:g}, tau {r.ab.tau:g}), alpha {r.ab.alpha:g}, "
         f"{r.ab.min_samples} to {r.ab.max_samples} outcomes per arm, at most "
         f"{duration(r.ab.max_duration_seconds)}" if r.ab else None),
        ("held on feedback", f"at {r.feedback.weight}% until {r.feedback.metric} (baseline "
         f"{r.feedback.baseline:g}, tau {r.feedback.tau:g}, alpha {r.feedback.alpha:g}) shows "
         f"harm (rolled back) or a gain (promoted), or {r.feedback.max_samples} outcomes or "
         f"{duration(r.feedback.max_duration_seconds)} pass: then promoted with "
         f"{r.feedback.min_samples}+ outcomes per version, else rolled back"
         if r.feedback is not None else None),
        ("aborts when", ", ".join(abort) or None),
        ("current version", f"{state.current} ({current.status})" if current is not None
         else state.current or "none"), ("previous", state.previous)])]
    if state.deploy:
        parts.append(h("p", f"A deploy of {state.deploy.get('version')} was in progress at "
                            f"stage {state.deploy.get('stage')} when this report was built.",
                       class_="warn"))
    parts += [h("p", f"Begun and not finished: {e.get('action')} ({details(e, ('action',))})",
                class_="warn") for e in state.journal]
    parts += [h("h2", "Traffic"), table(("version", "weight"),
                                         [(v, f"{w}%") for v, w in sorted(state.routes.items())],
                                         empty="No traffic is routed.")]
    events = [e for e in state.history if isinstance(e, dict)]
    parts += [ab_readout(state.experiment), shadow_readouts(events)]
    parts += [h("h2", "History"), table(
        ("when", "event", "version", "details"),
        [(when(e.get("at")), _event(e), e.get("version") or "",
          details(e, ("at", "event", "version"))) for e in reversed(events)],
        empty="No deploys yet.")]
    return join(parts)


def _event(entry: dict) -> Markup:
    event = str(entry.get("event", "?"))
    bad = event.endswith(("failed", "interrupted")) or entry.get("ok") is False
    good = event.endswith(("succeeded", "updated"))
    return h("span", event, class_="badge bad" if bad else "badge ok" if good else
             "badge unknown")


def _living(data: SiteData) -> list:
    """Alerts firing now (Prometheus) and the schedules' runs (Prefect's server), as observed
    when the report was built."""
    if data.living is None:
        return []
    alerts, schedules = data.living.alerts, data.living.schedules
    parts: list = [h("h2", "Alerts now")]
    if alerts.get("state") != "up":
        parts.append(h("p", f"Not evaluated: {alerts.get('state') or 'Prometheus is not running'}.",
                       class_="empty"))
    else:
        parts.append(table(("alert", "severity", "firing since", "summary"),
                           [(h("span", a["name"], class_="badge bad"), a.get("severity") or "-",
                             a.get("since") or "-", a.get("summary") or "")
                            for a in alerts.get("alerts") or []],
                           empty=f"No alert firing (Prometheus {alerts.get('prometheus')})."))
    parts.append(h("h2", "Schedules"))
    rows = []
    for d in schedules.get("deployments") or []:
        last, upcoming = d.get("last_run") or {}, d.get("next_run") or {}
        rows.append((code(d["name"]), ", ".join(d.get("schedules") or []) or "-",
                     f"{last.get('state')} at {last.get('start')}" if last else "never ran",
                     f"{last['seconds']:.0f}s" if last.get("seconds") is not None else "-",
                     upcoming.get("at") or "-"))
    parts.append(table(("deployment", "schedule", "last run", "took", "next run"), rows,
                       empty=f"No schedules: Prefect's server is "
                             f"{schedules.get('server') or 'not started'}."))
    return parts


def monitoring(data: SiteData) -> Markup:
    m, slo = data.system.monitoring, data.system.slos
    parts = [definitions([
        ("drift", f"{m.drift_method} above {m.drift_threshold:g}" if m.drift_method else "off"),
        ("watched features", ", ".join(m.drift_features) or None),
        ("freshness SLO", duration(slo.feature_freshness_seconds)
         if slo.feature_freshness_seconds is not None else "none"),
        ("model staleness limit", duration(m.model_staleness_seconds)
         if m.model_staleness_seconds is not None else "none"),
        ("alerts to", ", ".join(f"{a.channel}: {a.to or '-'}" for a in m.alerts) or None)]),
        *_living(data)]
    report = data.monitoring
    if report is None:
        parts.append(h("p", "No monitoring report yet: the monitoring flow "
                            "(pipelines/monitoring.py) writes .mlstack/runtime/monitoring.json "
                            "when it runs; mlstack run monitoring runs it now.",
                       class_="empty"))
        return join(parts)
    alerts = [a for a in report.get("alerts") or []]
    drift = report.get("drift") or {}
    fresh = report.get("freshness") or {}
    stale = report.get("staleness") or {}
    serving = report.get("serving") or {}
    parts += [h("h2", "Last report"), definitions([
        ("checked at", report.get("checked_at")),
        ("serving", f"{serving.get('version') or '-'} (model {serving.get('model_tag') or '-'})"
         if serving else None),
        ("data fingerprint", code(short(report.get("data_fingerprint"))))]),
        h("ul", [h("li", verdict(False), " ", a) for a in alerts]) if alerts
        else h("p", verdict(True), " no alerts")]
    gates = {g.metric: (g.op, g.threshold) for g in data.system.slos.quality}
    parts += [live_quality_table(report.get("live_quality")),
              quality_section(data.quality_history, gates)]
    parts += drift_section(drift, data.system)
    sources = fresh.get("sources") or {}
    parts += [h("h2", "Freshness"), h("p", f"Read from the {fresh['read_from']}.")
              if fresh.get("read_from") else None, table(
        ("source", "newest row", "age", "result"),
        [(code(name), f.get("newest") or "-", duration(f.get("age_seconds")),
          _flag(None if f.get("fresh") is None else not f["fresh"], "stale", "fresh"))
         for name, f in sorted(sources.items()) if isinstance(f, dict)],
        empty="No feature source checked.")]
    parts += [h("h2", "Model staleness"), definitions([
        ("model", code(stale.get("model_tag") or "-")),
        ("age", duration(stale.get("age_seconds"))),
        ("limit", duration(stale.get("limit_seconds"))),
        ("result", _flag(stale.get("stale"), "stale", "fresh"))])]
    return join(parts)


def _flag(problem: bool | None, bad: str, good: str) -> Markup:
    if problem is None:
        return h("span", "not judged", class_="badge unknown")
    return h("span", bad if problem else good, class_="badge bad" if problem else "badge ok")


def _value(value) -> str:
    return "(none)" if value is None else json.dumps(value, sort_keys=True)


def plan(data: SiteData) -> Markup:
    p = data.plan
    baseline = {"none": f"nothing compiled in {data.build_dir}/ yet: every resource is new",
                "manifest": f"against the last compile in {data.build_dir}/ (spec "
                            f"{short(p.previous_spec_hash)})",
                "unreadable": f"the last compile in {data.build_dir}/ is from an incompatible "
                              "mlstack: file changes only"}[p.baseline]
    counts = {a: sum(1 for f in p.files if f.action == a)
              for a in ("create", "update", "delete", "unchanged")}
    parts = [h("p", "What mlstack compile (and deploy) would change now: ", baseline, ".",
               class_="lead"),
             definitions([("spec hash", code(short(p.spec_hash))),
                          ("files", ", ".join(f"{n} to {a}" if a != "unchanged" else
                                              f"{n} unchanged" for a, n in counts.items())),
                          ("consequences", ", ".join(p.consequences) or "none")])]
    if p.interrupted_write:
        parts.append(h("p", "An earlier write was interrupted; the next compile finishes it.",
                       class_="warn"))
    actions = p.deploy
    if actions is not None:
        parts += [h("h2", "What deploy would do"), definitions([
            ("train", "yes" if actions.train else "no (reuse the serving model)"),
            ("new version", "yes" if actions.new_version else "no"),
            ("verify SLOs", "yes" if actions.verify else "no")]),
            h("ul", [h("li", reason) for reason in actions.reasons]) if actions.reasons
            else join([])]
    parts += [h("h2", "Resources"), table(
        ("resource", "action", "consequence", "changes"),
        [(code(f"{r.kind} {r.name}"), r.action, r.consequence,
          h("ul", [h("li", code(c.name), f": {_value(c.old)} -> {_value(c.new)}")
                   for c in r.properties]) if r.properties else "")
         for r in p.resources], empty="No resource changes.")]
    parts += [h("h2", "Files"), table(
        ("file", "action", "note"),
        [(code(f.path), f.action, CONFLICT_REASONS[f.conflict] if f.conflict else "")
         for f in p.file_changes], empty=f"No file changes: {data.build_dir}/ matches the spec.")]
    parts += [h("h2", "Derived settings"), table(
        ("setting", "value", "previous", "why"),
        [(code(d.setting), d.value, d.previous or "", d.reason) for d in p.derivations],
        empty="None: the spec sets everything explicitly.")]
    if p.infra.stack is not None:
        parts += [h("h2", f"Infrastructure (stack {p.infra.stack})"), table(
            ("resource", "action"), [(code(c.address), c.action) for c in p.infra.changes],
            empty=f"No infrastructure changes ({p.infra.unchanged} unchanged).")]
    if p.cost is not None:
        low, high = p.cost.monthly_min_usd, p.cost.monthly_max_usd
        amount = f"${low:,.2f}" if low == high else f"${low:,.2f} - ${high:,.2f}"
        parts += [h("h2", "Cost estimate"), h("p", f"{amount} a month ({p.cost.target}, "
                                                   f"{p.cost.label}, price table "
                                                   f"{p.cost.price_table}; not a quote).")]
    return join(parts)
