"""The report's pages about what the system is: the overview (with the system graph), the
feature catalog and the model card (every deployed version's model, metrics and gates; the
latest version's held-out ROC and PR curves, confusion matrix and feature importance)."""

from __future__ import annotations

from mlstack.codegen.graph_svg import render_svg
from mlstack.frontend.ir.nodes import GateNode, SystemIR
from mlstack.ops.report import gate_holds
from mlstack.ops.site.collect import SiteData, VersionRecord
from mlstack.ops.site.html import Markup, definitions, h, join, table, verdict
from mlstack.ops.site.layout import cards, code, duration, notes, number, short, when
from mlstack.ops.site.model_charts import held_out_evaluation

KIND_NAMES = {"source": "source", "feature_view": "feature view", "transform": "transform",
              "model": "model", "service": "service", "task": "training flow task"}


def _svg_body(svg: str) -> Markup:
    """The SVG element of a standalone SVG document, for inline use."""
    return Markup(svg[svg.index("<svg"):].rstrip())


def _target(system: SystemIR) -> str:
    t = system.target
    parts = [t.kind] + ([t.region] if t.region else []) + [f"namespace {t.namespace}",
                                                            f"{t.online_store} online store"]
    return ", ".join(parts)


def overview(data: SiteData) -> Markup:
    s = data.system
    serving = data.state.current
    current = data.state.get(serving)
    serving_card = (f"{serving} ({current.status})" if current is not None
                    else serving or "not deployed")
    last = next((r for r in reversed(data.versions) if r.version.slo_report.get("rows")), None)
    rows = (last.version.slo_report.get("rows") or []) if last else []
    missed = sum(1 for r in rows if r.get("ok") is False)
    slo_card = ("-" if last is None else
                f"{last.version.version}: " + ("all met" if not missed else f"{missed} missed"))
    summary = cards([("sources", len(s.sources)), ("feature views", len(s.feature_views)),
                     ("transforms", len(s.transforms)), ("model", s.model.algorithm),
                     ("versions deployed", len(data.versions)),
                     ("current version", serving_card), ("last SLO verification", slo_card)])
    about = definitions([
        ("description", s.description), ("owner", s.owner),
        ("tags", ", ".join(f"{k}={v}" for k, v in s.tags) or None),
        ("target", _target(s)), ("spec", code(s.spec_file)),
        ("spec hash", code(short(s.spec_hash))),
        ("endpoint", f"http://127.0.0.1:{data.state.router.port}"
         if current is not None and current.status == "serving" and data.state.router.port
         else None)])
    warnings = [f"{d.location}: {d.code} {d.message}" for d in data.warnings]
    legend = table(("shape", "is"), [(k.replace("_", " "), v) for k, v in (
        ("cylinder", "a data source"), ("box", "a feature view"), ("hexagon", "a transform"),
        ("double box", "the model"), ("pill", "the service"),
        ("rounded box", "a task of the training flow, in the order it runs"))])
    return join([
        summary, about, notes(data.notes),
        h("h2", "System graph"),
        h("p", "Sources feed feature views; transforms compute from them; the model reads "
               "both and the service serves it. Below: the training flow's tasks, whose "
               "promote step deploys the model. Also as ", h("a", "graph.svg", href="graph.svg"),
          ".", class_="lead"),
        h("div", _svg_body(render_svg(data.graph)), class_="graph"),
        legend,
        h("h2", "Lint warnings") if warnings else None,
        h("ul", [h("li", w) for w in warnings]) if warnings else None])


def features(data: SiteData) -> Markup:
    s = data.system
    used = {(f.view, f.field) for f in s.model.fetch}
    freshness = s.slos.feature_freshness_seconds
    parts = [definitions([
        ("freshness SLO", duration(freshness) if freshness is not None else "none"),
        ("materialized every", duration(s.training.materialize_interval_seconds)),
        ("online store", s.target.online_store)])]
    parts += [h("h2", "Entities"), table(
        ("entity", "join keys", "description"),
        [(code(e.name), ", ".join(f"{k.name}: {k.dtype}" for k in e.join_keys),
          e.description or "") for e in s.entities])]
    parts += [h("h2", "Sources"), table(
        ("source", "kind", "location", "timestamp", "columns", "checks", "description"),
        [(code(src.name), src.kind, src.path or src.table or src.topic or src.query or "",
          src.timestamp_field, len(src.columns), _checks(src.checks), src.description or "")
         for src in s.sources])]
    parts.append(h("h2", "Feature views"))
    for v in s.feature_views:
        stale = (freshness is not None and v.ttl_seconds < freshness)
        parts.append(h("section", h("h3", code(v.name)), definitions([
            ("description", v.description),
            ("entities", ", ".join(v.entities)), ("source", code(v.source)),
            ("join keys", ", ".join(f"{k.name}: {k.dtype}" for k in v.join_keys)),
            ("TTL", duration(v.ttl_seconds) + (" (shorter than the freshness SLO)"
                                               if stale else "")),
            ("stores", ", ".join(n for n, on in (("online", v.online), ("offline", v.offline))
                                 if on) or "none")]),
            table(("field", "dtype", "read by the model"),
                  [(code(f.name), f.dtype, "yes" if (v.name, f.name) in used else "no")
                   for f in v.fields]), class_="view", id=f"view-{v.name}"))
    parts += [h("h2", "Transforms"), table(
        ("transform", "expression", "dtype", "reads"),
        [(code(t.name), code(t.function.ref if t.function else t.expr), t.dtype,
          ", ".join(i.ref for i in t.inputs))
         for t in s.transforms], empty="no transforms")]
    parts += [h("h2", "Model features"), table(
        ("column", "reference", "kind", "dtype"),
        [(code(f.column), f.ref, f.kind.replace("_", " "), f.dtype) for f in s.model.features])]
    return join(parts)


def _checks(checks) -> str:
    found = [f"not null: {', '.join(checks.not_null)}" if checks.not_null else "",
             f"unique: {', '.join(checks.unique)}" if checks.unique else "",
             ", ".join(f"{r.column} in [{r.low:g}, {r.high:g}]" for r in checks.ranges),
             ", ".join(f"{a.column} in {{{', '.join(map(str, a.values))}}}"
                       for a in checks.allowed_values),
             f"at least {checks.min_rows} rows" if checks.min_rows else "",
             f"null fraction <= {checks.max_null_fraction:g}"
             if checks.max_null_fraction is not None else ""]
    return "; ".join(f for f in found if f) or "none"


def _gate(g: GateNode) -> str:
    return f"{g.metric} {g.op} {g.threshold:g}"


def _params(system: SystemIR) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in system.model.estimator.params) or "defaults"


def model_card(data: SiteData) -> Markup:
    s, m = data.system, data.system.model
    parts = [definitions([
        ("task", m.task), ("framework", m.framework), ("algorithm", m.algorithm),
        ("estimator", code(m.estimator.display)),
        ("parameters", _params(s)),
        ("label", f"{s.label.source}.{s.label.field} ({s.label.dtype})"),
        ("grouped by", m.group_by),
        ("request keys", ", ".join(f"{k.name}: {k.dtype}" for k in m.request_keys)),
        ("features", f"{len(m.features)} (see the feature catalog)"),
        ("split", f"by {s.training.split_by}, {s.training.test_fraction:g} held out, "
                  f"seed {s.training.seed}"),
        ("schedule", s.training.schedule or "none (on deploy)"),
        ("metrics", ", ".join(s.evaluation.metrics)),
        ("gates", ", ".join(_gate(g) for g in s.evaluation.gates) or "none")])]
    parts += [h("h2", "Latest training run"), _training(data.training)]
    parts.append(h("h2", "Versions"))
    if not data.versions:
        parts.append(h("p", "Not deployed yet: mlstack deploy trains and serves a first "
                            "version.", class_="empty"))
        return join(parts)
    names = sorted({k for r in data.versions for k in r.version.metrics})
    parts.append(table(
        ("version", "status", "model", "created", *names, "gates"),
        [(r.version.version, r.version.status, code(r.version.model_tag or "-"),
          when(r.version.created_at), *[number(r.version.metrics.get(n)) for n in names],
          _gate_badges(r, s)) for r in reversed(data.versions)]))
    latest = data.versions[-1]
    for record in reversed(data.versions):
        charts = (held_out_evaluation(record.version.model_tag, data.training)
                  if record is latest else None)
        parts.append(_version_card(record, s, charts))
    return join(parts)


def _version_gates(record: VersionRecord, current: SystemIR) -> tuple[GateNode, ...]:
    return (record.system or current).evaluation.gates


def _gate_badges(record: VersionRecord, current: SystemIR) -> Markup:
    metrics = record.version.metrics
    return join([(h("span", _gate(g), " ", verdict(gate_holds(g, metrics.get(g.metric)),
                                                   "not measured")), " ")
                 for g in _version_gates(record, current)] or ["none"])


def _version_card(record: VersionRecord, current: SystemIR,
                  charts: Markup | None = None) -> Markup:
    v = record.version
    system = record.system or current
    gates = {g.metric: g for g in _version_gates(record, current)}
    names = sorted(set(v.metrics) | set(gates))
    rows = [(code(n), number(v.metrics.get(n)), _gate(gates[n]) if n in gates else "",
             verdict(gate_holds(gates[n], v.metrics.get(n)), "not measured") if n in gates
             else "") for n in names]
    source = ("the IR it ran (its snapshot)" if record.system is not None
              else "the current spec (its snapshot is gone)")
    return h("section", h("h3", f"{v.version} ({v.status})"), definitions([
        ("model", code(v.model_tag or "-")), ("created", when(v.created_at)),
        ("framework", f"{system.model.framework}, {system.model.algorithm}"),
        ("parameters", _params(system)), ("spec hash", code(short(v.spec_hash))),
        ("training data", code(short(v.training_key)) if v.training_key else None),
        ("gates from", source), ("failure", v.failure)]),
        table(("metric", "value", "gate", "result"), rows, empty="no metrics recorded"),
        charts, class_="version", id=f"model-{v.version}")


def _training(training: dict | None) -> Markup:
    if training is None:
        return h("p", "No training run recorded yet (.mlstack/runtime/training.json).",
                 class_="empty")
    if training.get("status") != "completed":
        return definitions([("status", training.get("status", "unknown")),
                            ("flow run", training.get("flow_run_id")),
                            ("error", f"{training.get('error_type', '')}: "
                                      f"{training.get('error', '')}")])
    rows = training.get("rows") or {}
    sources = rows.get("sources") or {}
    gates = [(code(g.get("metric")), f"{g.get('op')} {number(g.get('threshold'))}",
              number(g.get("value")), verdict(g.get("passed"), "not judged"))
             for g in training.get("gates") or [] if isinstance(g, dict)]
    return join([definitions([
        ("status", "completed"), ("model", code(training.get("model_tag") or "-")),
        ("flow run", training.get("flow_run_id")),
        ("data fingerprint", code(short(training.get("data_fingerprint")))),
        ("source rows", ", ".join(f"{k}: {v}" for k, v in sorted(sources.items())) or None),
        ("training set", " / ".join(f"{k} {rows[k]}" for k in ("training_set", "train", "test")
                                    if k in rows) or None),
        ("metrics", ", ".join(f"{k} {number(v)}" for k, v in
                              sorted((training.get("metrics") or {}).items())) or None)]),
        table(("gate", "threshold", "value", "result"), gates, empty="no gates")])
