"""Source and feature-view checks: data checks fit column types, keys agree on their types,
and the views the model reads are available where it reads them."""

from __future__ import annotations

from collections.abc import Iterator

from mlstack.diagnostics.diagnostic import Diagnostic
from mlstack.frontend.checks import CheckContext, node_path
from mlstack.frontend.ir.nodes import FeatureViewNode
from mlstack.frontend.spec.types import NUMERIC_DTYPES

VALUE_TYPES = {"int64": (int,), "int32": (int,), "float64": (int, float),
               "float32": (int, float), "bool": (bool,), "string": (str,), "timestamp": ()}


def _fits(value: object, dtype: str) -> bool:
    if isinstance(value, bool) and dtype != "bool":
        return False
    return isinstance(value, VALUE_TYPES[dtype])


def check_sources(ctx: CheckContext) -> Iterator[Diagnostic]:
    for src in sorted(ctx.system.sources, key=node_path):
        base = node_path(src) + ("checks",)
        dtypes = {c.name: c.dtype for c in src.columns}
        for rng in src.checks.ranges:
            dtype = dtypes.get(rng.column)
            if dtype is not None and dtype not in NUMERIC_DTYPES:
                yield ctx.diag("MLS209", f"range check on '{rng.column}', a {dtype} column; "
                               "ranges apply to numeric columns", base + ("ranges", rng.column),
                               "use allowed_values for text, or remove the range", key=True)
        for allowed in src.checks.allowed_values:
            dtype = dtypes.get(allowed.column)
            if dtype is None:
                continue
            for i, value in enumerate(allowed.values):
                if not _fits(value, dtype):
                    hint = (f"write '{value}' in quotes" if dtype == "string" else
                            f"write values of type {dtype}")
                    yield ctx.diag("MLS209", f"allowed value {value!r} does not fit column "
                                   f"'{allowed.column}' ({dtype})",
                                   base + ("allowed_values", allowed.column, i), hint)
                    break
        for check in src.checks.regex:
            dtype = dtypes.get(check.column)
            if dtype is not None and dtype != "string":
                yield ctx.diag("MLS209", f"regex check on '{check.column}', a {dtype} column; "
                               "a regex applies to string columns", base + ("regex",
                                                                             check.column),
                               "use ranges or allowed_values for other types, or remove the "
                               "regex", key=True)
        if src.checks.freshness and not any(v.source == src.name
                                            for v in ctx.system.feature_views):
            yield ctx.diag("MLS217", f"freshness check on source '{src.name}', which no "
                           "feature view reads: there is no ttl to hold its newest row to",
                           base + ("freshness",), "remove freshness, or set it on the source "
                           "a feature view reads")


def check_feature_views(ctx: CheckContext) -> Iterator[Diagnostic]:
    s = ctx.system
    read = set(s.model.feature_views)
    for view in s.feature_views:
        if view.name in read and not view.online:
            yield ctx.diag("MLS211", f"the model reads feature view '{view.name}', which is "
                           "not online: the service could not fetch its features",
                           node_path(view) + ("online",), "remove online: false, or drop its "
                           "features from the model")
    label_cols = {c.name: c.dtype for c in s.source(s.label.source).columns}
    for key in s.label.join_keys:
        dtype = label_cols.get(key.name)
        if dtype is not None and dtype != key.dtype:
            yield ctx.diag("MLS209", f"join key '{key.name}' is {dtype} in the label source "
                           f"'{s.label.source}' but {key.dtype} in the feature views' sources",
                           ("label", "source"), "declare the key with one type everywhere")
    by_entity: dict[str, tuple[str, FeatureViewNode]] = {}
    for view in sorted(s.feature_views, key=node_path):
        for entity, key in zip(view.entities, view.join_keys, strict=False):
            first = by_entity.setdefault(entity, (key.dtype, view))
            if first[0] != key.dtype:
                yield ctx.diag("MLS209", f"join key '{key.name}' of entity '{entity}' is "
                               f"{key.dtype} in source '{view.source}' but {first[0]} in "
                               f"source '{first[1].source}'", node_path(view) + ("source",),
                               "declare the key with one type everywhere")
