"""Declarations nothing uses: an entity no view is keyed by, a source nothing reads, a source
column nothing reads or checks, a request field nothing reads. Each is a warning: the spec is valid, but a declaration that
does nothing is usually a typo or a leftover, and it still costs (a Feast entity, a source
read and checked on every run)."""

from __future__ import annotations

from collections.abc import Iterator

from mlstack.diagnostics.diagnostic import Diagnostic, Severity
from mlstack.frontend.checks import CheckContext, node_path
from mlstack.frontend.ir.nodes import SourceNode, SystemIR


def used_sources(s: SystemIR) -> set[str]:
    """Sources read by a feature view or the label, and the batch sources of those."""
    used = {v.source for v in s.feature_views} | {s.label.source}
    return used | {src.batch_source for src in s.sources
                   if src.name in used and src.batch_source}


def used_columns(s: SystemIR, src: SourceNode) -> set[str]:
    """The columns of `src` something reads: its timestamps and data checks, the fields and
    join keys of the views reading it, and, for the label source, the label, its join keys,
    the ranking group and the request fields logged there."""
    checks = src.checks
    used = {src.timestamp_field, *filter(None, [src.created_timestamp_field]),
            *checks.not_null, *checks.unique, *(r.column for r in checks.ranges),
            *(a.column for a in checks.allowed_values), *(r.column for r in checks.regex),
            *checks.monotonic}
    readers = [src.name] + [other.name for other in s.sources if other.batch_source == src.name]
    for view in s.feature_views:
        if view.source in readers:
            used |= {f.name for f in view.fields} | {k.name for k in view.join_keys}
    if src.name == s.label.source:
        used |= {s.label.field, s.label.timestamp_field, *(k.name for k in s.label.join_keys),
                 *filter(None, [s.model.group_by]),
                 *(f.name for r in s.request_sources for f in r.fields)}
    return used


def check_unused(ctx: CheckContext) -> Iterator[Diagnostic]:
    s = ctx.system
    keyed = {e for v in s.feature_views for e in v.entities}
    for entity in s.entities:
        if entity.name not in keyed:
            yield ctx.diag("MLS212", f"entity '{entity.name}' is declared but no feature view "
                           "is keyed by it", node_path(entity) + ("name",),
                           "remove it, or key a feature view by it",
                           severity=Severity.WARNING)
    read_fields = {(i.view, i.field) for t in s.transforms for i in t.inputs
                   if i.kind == "request"}
    read_fields |= {(f.view, f.field) for f in s.model.features if f.kind == "request"}
    for req in s.request_sources:
        for field in req.fields:
            if (req.name, field.name) not in read_fields:
                yield ctx.diag("MLS215", f"request field '{req.name}.{field.name}' is declared "
                               "but no transform or model feature reads it",
                               node_path(req) + ("fields", field.name),
                               f"remove it, or list '{req.name}.{field.name}' in "
                               "model.features", severity=Severity.WARNING, key=True)
    read = used_sources(s)
    for src in s.sources:
        if src.name not in read:
            yield ctx.diag("MLS213", f"source '{src.name}' is declared but nothing reads it "
                           "(no feature view, not the label)", node_path(src) + ("name",),
                           "remove it, or read it in a feature view", severity=Severity.WARNING)
            continue
        used = used_columns(s, src)
        for column in src.columns:
            if column.name not in used:
                yield ctx.diag("MLS214", f"column '{column.name}' of source '{src.name}' is "
                               "declared but nothing reads it (no feature view, label, key, "
                               "timestamp or data check)",
                               node_path(src) + ("columns", column.name),
                               "remove it from columns, or list it in a view's fields",
                               severity=Severity.WARNING, key=True)
