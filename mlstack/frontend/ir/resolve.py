"""Resolve a validated spec into the IR: references, defaults and derived settings.

`resolve(spec, smap)` returns (SystemIR | None, diagnostics). A reference that does not
resolve is a diagnostic (never an exception); the IR is built only when all of them do.
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
from collections.abc import Callable, Hashable, Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

from mlstack.diagnostics.diagnostic import Diagnostic, Severity, did_you_mean, hint_for
from mlstack.frontend.expr import canonical, emit_python, parse_expr
from mlstack.frontend.ir import catalog
from mlstack.frontend.ir import nodes as ir
from mlstack.frontend.ir.resolve_model import FieldOwner, ModelResolution
from mlstack.frontend.loader import Path_, SourceMap
from mlstack.frontend.spec.models import (
    Alert,
    FileSource,
    PredictionLog,
    StreamSource,
    SystemSpec,
    Transform,
    WarehouseSource,
)
from mlstack.frontend.spec.types import duration_seconds, parse_gate
from mlstack.frontend.spec.validate import pointer
from mlstack.frontend.usercode import (
    UserCodeProblem,
    UserFile,
    find_function,
    local_imports,
    positional_fit,
    read_user_file,
    split_ref,
)


def spec_hash(spec: SystemSpec) -> str:
    data = spec.model_dump(mode="json", by_alias=True)
    # keys added with user code, left out while unused: a spec that does not use them keeps
    # the hash it had before they existed
    if data["model"].get("estimator") is None:
        data["model"].pop("estimator", None)
    if data["target"].get("compute") is None:
        data["target"].pop("compute", None)
    # the orchestrator added later: a spec that runs Prefect, the default, keeps its hash
    if data["target"].get("orchestrator") == "prefect":
        data["target"].pop("orchestrator", None)
    # a canary's feedback guard, added later: a rollout without one keeps its hash
    if data["serving"]["rollout"].get("feedback") is None:
        data["serving"]["rollout"].pop("feedback", None)
    if data["training"].get("on_new_model") is None:
        data["training"].pop("on_new_model", None)
    for transform in data["features"]["transforms"]:
        if transform.get("python") is None and not transform.get("inputs"):
            transform.pop("python", None)
            transform.pop("inputs", None)
    canonical_json = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical_json.encode()).hexdigest()


class _Named(Protocol):
    @property
    def name(self) -> str: ...


_NamedT = TypeVar("_NamedT", bound=_Named)


class _Resolver(ModelResolution):
    def __init__(self, spec: SystemSpec, smap: SourceMap,
                 project_dir: Path | None = None) -> None:
        self.spec = spec
        self.smap = smap
        self.project_dir = project_dir
        self.diagnostics: list[Diagnostic] = []
        self.derivations: list[ir.Derivation] = []
        self.user_files: dict[str, ir.UserFileNode] = {}
        self.function_defs: dict[str, ast.FunctionDef] = {}  # ref -> its def

    # -- helpers -------------------------------------------------------------------------
    def error(self, code: str, message: str, path: Path_, hint: str | None = None, *,
              key: bool = False, severity: Severity = Severity.ERROR) -> None:
        self.diagnostics.append(Diagnostic(code, severity, message,
                                           self.smap.locate(path, key=key), hint, pointer(path)))

    def error_in_expr(self, code: str, message: str, path: Path_, ref: str,
                      hint: str | None = None) -> None:
        """An error about `ref` inside the expression at `path`, pointing at the name."""
        text = self.spec_value(path)
        match = re.search(r"(?<![\w.])" + re.escape(ref) + r"(?![\w.])", text or "")
        location = (self.smap.locate_inside(path, match.start()) if match
                    else self.smap.locate(path))
        self.diagnostics.append(Diagnostic(code, Severity.ERROR, message, location, hint,
                                           pointer(path)))

    def spec_value(self, path: Path_) -> Any:
        node: Any = self.spec
        for part in path:
            node = node[part] if isinstance(part, int) else getattr(node, part, None)
        return node

    def derive(self, setting: str, value: object, reason: str) -> None:
        self.derivations.append(ir.Derivation(setting=setting, value=json.dumps(value),
                                              reason=reason))

    def unique(self, items: Sequence[_NamedT], what: str, base: Path_
               ) -> dict[str, tuple[int, _NamedT]]:
        seen: dict[str, int] = {}
        for i, item in enumerate(items):
            if item.name in seen:
                self.error("MLS206", f"duplicate {what} name '{item.name}' (also at "
                           f"{base[-1]}[{seen[item.name]}])", base + (i, "name"),
                           f"give each {what} its own name")
            seen.setdefault(item.name, i)
        return {item.name: (i, item) for i, item in enumerate(items) if seen[item.name] == i}

    def user_function(self, ref: str, path: Path_,
                      signature: Callable[[UserFile, ast.FunctionDef], None]
                      ) -> ir.UserFunctionNode | None:
        """The function `ref` ('file.py:function') names, checked by parsing its file;
        `signature(user_file, def_node)` raises a UserCodeProblem when the call the spec makes
        does not fit. A problem is a diagnostic at `path`, naming the file (and line)."""
        file, function = split_ref(ref)
        try:
            if self.project_dir is None:
                raise UserCodeProblem("MLS603", "user code cannot be read: the spec's folder "
                                      "is not known")
            user = read_user_file(self.project_dir, file)
            for other in self.user_files.values():
                if other.module.startswith(f"{user.module}.") or user.module.startswith(
                        f"{other.module}."):  # 'src.py' and 'src/x.py': one shadows the other
                    raise UserCodeProblem(
                        "MLS604", f"{user.path} and {other.path} would be one module and a "
                        "package of the same name in the generated code",
                        "rename one of them")
            local_imports(user, self.project_dir)
            fn = find_function(user, function)
            signature(user, fn)
        except UserCodeProblem as problem:
            if problem.param is not None:  # at the parameter the function does not take
                self.error(problem.code, problem.message, ("model", "params", problem.param),
                           problem.hint, key=True)
            else:
                self.error(problem.code, problem.message, path, problem.hint)
            return None
        self.user_files[user.path] = ir.UserFileNode(path=user.path, module=user.module,
                                                     sha256=user.sha256, text=user.text)
        self.function_defs[ref] = fn
        return ir.UserFunctionNode(ref=ref, path=user.path, module=user.module,
                                   function=function, line=fn.lineno)

    # -- passes --------------------------------------------------------------------------
    def sources(self) -> tuple[ir.SourceNode, ...]:
        self.source_by_name = self.unique(self.spec.sources, "source", ("sources",))
        out = []
        for i, src in enumerate(self.spec.sources):
            base = ("sources", i)
            cols = src.columns
            for attr in ("timestamp_field", "created_timestamp_field"):
                name = getattr(src, attr)
                if name is not None and name not in cols:
                    self.error("MLS210", f"{attr} '{name}' is not a declared column of source "
                               f"'{src.name}'", base + (attr,), hint_for(name, cols))
                elif name is not None and cols[name] != "timestamp":
                    self.error("MLS209", f"{attr} '{name}' must have dtype timestamp, not "
                               f"{cols[name]}", base + ("columns", name),
                               f"declare '{name}: timestamp' in columns")
            checks = src.checks
            named = [("not_null", c) for c in checks.not_null] + [
                ("unique", c) for c in checks.unique] + [
                ("ranges", c) for c in checks.ranges] + [
                ("allowed_values", c) for c in checks.allowed_values] + [
                ("regex", c) for c in checks.regex] + [
                ("monotonic", c) for c in checks.monotonic]
            for group, col in named:
                if col not in cols:
                    keyed = group in ("ranges", "allowed_values", "regex")
                    path = base + ("checks", group) + ((col,) if keyed else ())
                    self.error("MLS203", f"check {group} names '{col}', which is not a column "
                               f"of source '{src.name}'", path, hint_for(col, cols),
                               key=keyed)
            for col, (low, high) in checks.ranges.items():
                if low > high:
                    self.error("MLS103", f"range for '{col}' has min {low:g} > max {high:g}",
                               base + ("checks", "ranges", col))
            if isinstance(src, StreamSource) and src.batch_source is not None and (
                    src.batch_source not in self.source_by_name):
                self.error("MLS202", f"unknown batch_source '{src.batch_source}'",
                           base + ("batch_source",), hint_for(src.batch_source,
                                                              self.source_by_name))
            family = ("file" if isinstance(src, FileSource) else
                      "warehouse" if isinstance(src, WarehouseSource) else "stream")
            out.append(ir.SourceNode(
                name=src.name, kind=src.kind, family=family,
                path=getattr(src, "path", None), table=getattr(src, "table", None),
                query=getattr(src, "query", None), topic=getattr(src, "topic", None),
                bootstrap_servers=getattr(src, "bootstrap_servers", None),
                batch_source=getattr(src, "batch_source", None),
                timestamp_field=src.timestamp_field,
                created_timestamp_field=src.created_timestamp_field,
                columns=tuple(ir.ColumnNode(name=k, dtype=v) for k, v in sorted(cols.items())),
                checks=ir.ChecksNode(
                    not_null=tuple(sorted(checks.not_null)), unique=tuple(checks.unique),
                    ranges=tuple(ir.RangeCheck(column=k, low=v[0], high=v[1])
                                 for k, v in sorted(checks.ranges.items())),
                    allowed_values=tuple(ir.AllowedValuesCheck(column=k, values=tuple(v))
                                         for k, v in sorted(checks.allowed_values.items())),
                    min_rows=checks.min_rows, max_null_fraction=checks.max_null_fraction,
                    regex=tuple(ir.RegexCheck(column=k, pattern=v)
                                for k, v in sorted(checks.regex.items())),
                    monotonic=tuple(checks.monotonic), freshness=checks.freshness),
                at=pointer(base), description=src.description))
        self.source_nodes = {s.name: s for s in out}
        return tuple(sorted(out, key=lambda s: s.name))

    def entities(self) -> None:
        self.entity_by_name = self.unique(self.spec.entities, "entity", ("entities",))
        # a join key's dtype comes from the sources of the views keyed by the entity
        self.entity_key_dtype: dict[str, str] = {}
        for view in self.spec.features.views:
            src = self.source_nodes.get(view.source)
            for ename in _as_list(view.entity):
                if ename in self.entity_by_name and src is not None:
                    key = self.entity_by_name[ename][1].join_keys[0]
                    col = src.column(key)
                    if col is not None:
                        self.entity_key_dtype.setdefault(ename, col.dtype)

    def feature_views(self) -> tuple[ir.FeatureViewNode, ...]:
        views = self.spec.features.views
        self.view_by_name = self.unique(views, "feature view", ("features", "views"))
        for t_i, t in enumerate(self.spec.features.transforms):
            if t.name in self.view_by_name:
                self.error("MLS206", f"transform '{t.name}' has the name of a feature view",
                           ("features", "transforms", t_i, "name"))
        out = []
        for i, view in enumerate(views):
            base = ("features", "views", i)
            entity_names = _as_list(view.entity)
            src = self.source_nodes.get(view.source)
            ok = True
            if src is None:
                self.error("MLS202", f"feature view '{view.name}' reads unknown source "
                           f"'{view.source}'", base + ("source",),
                           hint_for(view.source, self.source_by_name))
                ok = False
            keys = []
            for e_i, ename in enumerate(entity_names):
                epath = base + ("entity",) + ((e_i,) if isinstance(view.entity, list) else ())
                if ename not in self.entity_by_name:
                    self.error("MLS201", f"feature view '{view.name}' names unknown entity "
                               f"'{ename}'", epath, hint_for(ename, self.entity_by_name))
                    ok = False
                    continue
                key = self.entity_by_name[ename][1].join_keys[0]
                if src is not None and src.column(key) is None:
                    self.error("MLS207", f"join key '{key}' of entity '{ename}' is not a column "
                               f"of source '{src.name}'", epath, hint_for(key, [
                                   c.name for c in src.columns]))
                    ok = False
                    continue
                if src is not None:
                    keys.append(ir.ColumnNode(name=key,
                                              dtype=cast(ir.ColumnNode, src.column(key)).dtype))
            fields = []
            for f_i, field in enumerate(view.fields):
                col = src.column(field) if src is not None else None
                if src is not None and col is None:
                    self.error("MLS203", f"field '{field}' is not a column of source "
                               f"'{src.name}'", base + ("fields", f_i),
                               hint_for(field, [c.name for c in src.columns]))
                    ok = False
                elif col is not None and src is not None:
                    if field in {k.name for k in keys} or field == src.timestamp_field:
                        self.error("MLS209", f"field '{field}' is a join key or the timestamp "
                                   "of the source, not a feature", base + ("fields", f_i),
                                   "remove it from fields; keys and timestamps come with the "
                                   "entity and the source")
                        ok = False
                    fields.append(col)
            for f_i in _repeats(view.fields):
                self.error("MLS206", f"feature view '{view.name}' lists field "
                           f"'{view.fields[f_i]}' twice", base + ("fields", f_i),
                           "remove the second one")
            if view.ttl is not None:
                ttl = duration_seconds(view.ttl)
            elif self.spec.slos.feature_freshness is not None:
                fresh = duration_seconds(self.spec.slos.feature_freshness)
                ttl = max(2 * fresh, 3600)
                self.derive(f"features.views.{view.name}.ttl", ttl,
                            f"twice the feature_freshness SLO ({self.spec.slos.feature_freshness}"
                            ", at least 1h): older values count as missing")
            else:
                ttl = catalog.DEFAULT_TTL_SECONDS
                self.derive(f"features.views.{view.name}.ttl", ttl,
                            "no ttl and no feature_freshness SLO: the 30-day default")
            if ok:
                out.append(ir.FeatureViewNode(
                    name=view.name, entities=tuple(entity_names), source=view.source,
                    join_keys=tuple(keys), ttl_seconds=ttl, fields=tuple(fields),
                    online=view.online, offline=view.offline, at=pointer(base),
                    description=view.description))
        self.view_nodes = {v.name: v for v in out}
        return tuple(sorted(out, key=lambda v: v.name))

    def request_sources(self) -> tuple[ir.RequestSourceNode, ...]:
        """Request sources (values each request carries): names apart from the views',
        field names unique across them and apart from the entities' join keys."""
        sources = self.spec.features.request_sources
        self.request_by_name = self.unique(sources, "request source",
                                           ("features", "request_sources"))
        keys = {e.join_keys[0] for _, e in self.entity_by_name.values()}
        transforms = {t.name for t in self.spec.features.transforms}
        owner: dict[str, str] = {}
        out = []
        for i, src in enumerate(sources):
            base = ("features", "request_sources", i)
            if src.name in self.view_by_name:
                self.error("MLS206", f"request source '{src.name}' has the name of a feature "
                           "view", base + ("name",), "give it its own name")
                continue
            for field in src.fields:
                path = base + ("fields", field)
                if field in owner:
                    self.error("MLS206", f"request field '{field}' is declared by request "
                               f"sources '{owner[field]}' and '{src.name}'", path,
                               "declare it once", key=True)
                elif field in keys:
                    self.error("MLS209", f"request field '{field}' is an entity's join key; "
                               "requests carry join keys already", path,
                               "remove it from the request source", key=True)
                elif field in transforms:
                    self.error("MLS206", f"request field '{field}' has the name of a "
                               "transform", path, "give it its own name", key=True)
                owner.setdefault(field, src.name)
            out.append(ir.RequestSourceNode(
                name=src.name, fields=tuple(ir.ColumnNode(name=f, dtype=d)
                                            for f, d in src.fields.items()),
                at=pointer(base), description=src.description))
        self.request_nodes = {r.name: r for r in out}
        return tuple(sorted(out, key=lambda r: r.name))

    def _view_field(self, ref: str, path: Path_, what: str,
                    in_expr: bool = False) -> FieldOwner | None:
        """Resolve 'view.field' (or a bare field unique across views) -> (view, ColumnNode).
        A request source's field resolves the same way -> (RequestSourceNode, ColumnNode).

        `in_expr`: `path` is an expression and errors point at `ref` inside it."""

        def report(code: str, message: str, hint: str | None = None) -> None:
            if in_expr:
                self.error_in_expr(code, message, path, ref, hint)
            else:
                self.error(code, message, path, hint)

        owner: ir.FeatureViewNode | ir.RequestSourceNode | None
        if "." in ref:
            vname, field = ref.split(".", 1)
            if vname in self.request_nodes:
                owner, kind = self.request_nodes[vname], "request source"
            elif vname not in self.view_by_name:
                report("MLS204", f"{what} '{ref}' names unknown feature view '{vname}'",
                       hint_for(vname, self.view_by_name))
                return None
            else:
                owner, kind = self.view_nodes.get(vname), "feature view"
                if owner is None:
                    return None  # the view itself has errors, reported there
            col = next((f for f in owner.fields if f.name == field), None)
            if col is None:
                report("MLS204", f"{what} '{ref}': {kind} '{vname}' has no field "
                       f"'{field}'", hint_for(field, [f.name for f in owner.fields]))
                return None
            return owner, col
        holders: list[ir.FeatureViewNode | ir.RequestSourceNode] = [
            *self.view_nodes.values(), *self.request_nodes.values()]
        owners = [v for v in holders if any(f.name == ref for f in v.fields)]
        if not owners and len(self.view_nodes) < len(self.view_by_name):
            return None  # perhaps a field of a view with errors, reported there
        if len(owners) == 1:
            view = owners[0]
            return view, next(f for f in view.fields if f.name == ref)
        if len(owners) > 1:
            names = sorted(v.name for v in owners)
            report("MLS208", f"{what} '{ref}' is ambiguous: it is a field of "
                   + ", ".join(names), f"write '{names[0]}.{ref}'")
            return None
        candidates = [f"{v.name}.{f.name}" for v in self.view_nodes.values() for f in v.fields]
        report("MLS204", f"{what} '{ref}' is not a field of any feature view",
               did_you_mean(ref, [c.split(".")[1] for c in candidates])
               or hint_for(ref, candidates))
        return None

    def transforms(self) -> tuple[ir.TransformNode, ...]:
        self.transform_by_name = self.unique(self.spec.features.transforms, "transform",
                                             ("features", "transforms"))
        self.transform_nodes_so_far: dict[str, ir.TransformNode] = {}
        out = []
        for i, t in enumerate(self.spec.features.transforms):
            if t.python is not None:
                node = self.python_transform(i, t)
                if node is not None:
                    out.append(node)
                continue
            path = ("features", "transforms", i, "expr")
            parsed = parse_expr(cast(str, t.expr))  # a transform has expr or python
            inputs, columns = [], {}
            for ref in parsed.names:
                if ref in self.transform_by_name:
                    self.error_in_expr("MLS208", f"transform '{t.name}' reads transform "
                                       f"'{ref}'; transforms read view fields only (not "
                                       "supported yet)", path, ref,
                                       "write the other transform's expression out")
                    continue
                found = self._view_field(ref, path, "transform input", in_expr=True)
                if found is None:
                    continue
                view, col = found
                request = isinstance(view, ir.RequestSourceNode)
                column = col.name if request else f"{view.name}__{col.name}"
                if col.dtype not in ("int64", "int32", "float64", "float32", "bool"):
                    self.error_in_expr("MLS209", f"transform input '{ref}' has dtype "
                                       f"{col.dtype}; transforms compute on numbers", path, ref,
                                       "use a numeric field (encode text in the source)")
                    continue
                columns[ref] = column
                inputs.append(ir.TransformInput(ref=ref, view=view.name, field=col.name,
                                                column=column,
                                                kind="request" if request else "view"))
            if len(columns) == len(parsed.names):
                out.append(ir.TransformNode(
                    name=t.name, expr=canonical(parsed), dtype=t.dtype,
                    inputs=tuple(sorted(inputs, key=lambda x: x.column)),
                    python=emit_python(parsed, columns),
                    at=pointer(("features", "transforms", i)), description=t.description))
                self.transform_nodes_so_far[t.name] = out[-1]
        self.transform_nodes = {t.name: t for t in out}
        return tuple(sorted(out, key=lambda t: t.name))

    def python_transform(self, i: int, t: Transform) -> ir.TransformNode | None:
        """A transform computed by a function of the project's code: its inputs (view fields
        or transforms listed earlier) are passed positionally, in order."""
        base = ("features", "transforms", i)
        inputs, ok = [], True
        for k, ref in enumerate(t.inputs):
            path = base + ("inputs", k)
            if ref in t.inputs[:k]:
                self.error("MLS206", f"transform '{t.name}' lists input '{ref}' twice", path,
                           "remove the second one")
                ok = False
            elif "." not in ref and ref in self.transform_by_name:
                index = self.transform_by_name[ref][0]
                if index >= i:
                    self.error("MLS208", f"transform '{t.name}' reads transform '{ref}', "
                               "which is not listed before it", path, "list the transforms "
                               "a python transform reads before it")
                    ok = False
                elif ref not in self.transform_nodes_so_far:
                    ok = False  # that transform has errors, reported there
                else:
                    inputs.append(ir.TransformInput(ref=ref, column=ref, transform=ref,
                                                    kind="transform"))
            else:
                found = self._view_field(ref, path, "transform input")
                if found is None:
                    ok = False
                    continue
                view, col = found
                if col.dtype not in ("int64", "int32", "float64", "float32", "bool"):
                    self.error("MLS209", f"transform input '{ref}' has dtype {col.dtype}; "
                               "transforms compute on numbers", path,
                               "use a numeric field (encode text in the source)")
                    ok = False
                    continue
                request = isinstance(view, ir.RequestSourceNode)
                inputs.append(ir.TransformInput(
                    ref=ref, view=view.name, field=col.name,
                    column=col.name if request else f"{view.name}__{col.name}",
                    kind="request" if request else "view"))
        function = self.user_function(
            cast(str, t.python), base + ("python",),
            lambda user, fn: positional_fit(user, fn, len(t.inputs)))
        if function is None or not ok:
            return None
        node = ir.TransformNode(name=t.name, expr="", dtype=t.dtype, inputs=tuple(inputs),
                                python="", at=pointer(base), description=t.description,
                                function=function)
        self.transform_nodes_so_far[t.name] = node
        return node

    def transform_fetch(self, t: ir.TransformNode) -> list[ir.TransformInput]:
        """The view fields a transform reads, through the transforms it reads."""
        found = []
        for inp in t.inputs:
            if inp.kind != "transform":
                found.append(inp)
            elif inp.transform in self.transform_nodes:
                found.extend(self.transform_fetch(self.transform_nodes[inp.transform]))
        return found


def _repeats(items: Iterable[Hashable]) -> list[int]:
    """Indices of items that appeared earlier in the list."""
    seen: set[Hashable] = set()
    out = []
    for i, item in enumerate(items):
        if item in seen:
            out.append(i)
        seen.add(item)
    return out


def _as_list(value: str | list[str]) -> list[str]:
    return list(value) if isinstance(value, list) else [value]


def _gate(metric: str, text: str) -> ir.GateNode:
    op, threshold = parse_gate(text)
    return ir.GateNode(metric=metric, op=op, threshold=threshold)


def resolve(spec: SystemSpec, smap: SourceMap, spec_file: str = "mlstack.yaml",
            project_dir: Path | None = None) -> tuple[ir.SystemIR | None, list[Diagnostic]]:
    """Resolve references and fill in defaults and derived settings. -> (IR | None, diags).
    `project_dir`: the spec's folder, where the Python files it names are read."""
    from mlstack.frontend.ir.compute import resolve_compute
    from mlstack.frontend.ir.derive import (
        derive_serving,
        derive_target,
        materialize_interval,
        training_device,
    )

    r = _Resolver(spec, smap, project_dir)
    sources = r.sources()
    r.entities()
    views = r.feature_views()
    request_sources = r.request_sources()
    transforms = r.transforms()
    model, label = r.model()
    if any(d.severity is Severity.ERROR for d in r.diagnostics) or model is None:
        return None, r.diagnostics
    entities = []
    for name, (i, e) in sorted(r.entity_by_name.items()):
        key = e.join_keys[0]
        entities.append(ir.EntityNode(
            name=name, join_keys=(ir.ColumnNode(name=key,
                                                dtype=r.entity_key_dtype.get(name, "int64")),),
            at=pointer(("entities", i)), description=e.description))
    t = spec.training
    ev = spec.evaluation
    slos = spec.slos
    slo = ir.SloNode(
        p50_ms=slos.latency.p50_ms, p95_ms=slos.latency.p95_ms, p99_ms=slos.latency.p99_ms,
        throughput_rps=slos.throughput_rps, availability=slos.availability,
        error_rate=slos.error_rate,
        quality=tuple(_gate(k, v) for k, v in sorted(slos.quality.items())),
        feature_freshness_seconds=(duration_seconds(slos.feature_freshness)
                                   if slos.feature_freshness else None))
    target = derive_target(spec, slo, r.derive).model_copy(
        update={"orchestrator": spec.target.orchestrator})
    compute = resolve_compute(spec, model, sum(1 for v in views if v.online), pointer)
    if compute is not None:
        target = target.model_copy(update={"compute": compute})
        for step in compute.steps:
            r.derive(f"target.compute.steps.{step.step}", step.runs_on, step.reason)
    r.derive("target.training.device", *training_device(
        model.framework, target.training.gpu, target.training.gpu_preferred))
    serving = derive_serving(spec, slo, model, target, bool(transforms), r.derive)
    mon = spec.monitoring
    drift_cols = []
    if mon.drift is not None:
        wanted = mon.drift.features
        by_ref = {f.ref: f.column for f in model.features}
        if wanted is None:
            drift_cols = [f.column for f in model.features]
        else:
            for i, ref in enumerate(wanted):
                if ref not in by_ref:
                    r.error("MLS204", f"drift feature '{ref}' is not a model feature",
                            ("monitoring", "drift", "features", i), hint_for(ref, by_ref))
                else:
                    drift_cols.append(by_ref[ref])
    if any(d.severity is Severity.ERROR for d in r.diagnostics):
        return None, r.diagnostics
    system = ir.SystemIR(
        api_version=spec.api_version, name=spec.metadata.name,
        python_name=spec.metadata.name.replace("-", "_"), owner=spec.metadata.owner,
        description=spec.metadata.description, spec_file=spec_file, spec_hash=spec_hash(spec),
        sources=sources, entities=tuple(entities), feature_views=views, transforms=transforms,
        label=label, model=model,
        training=ir.TrainingNode(schedule=t.schedule,
                                 materialize_interval_seconds=materialize_interval(spec, r.derive),
                                 split_by=t.split.by,
                                 test_fraction=t.split.test_fraction, retries=t.retries,
                                 retry_delay_seconds=t.retry_delay_seconds,
                                 timeout_seconds=t.timeout_minutes * 60, seed=t.seed,
                                 on_new_model=on_new_model(t.on_new_model, target.kind,
                                                           r.derive)),
        evaluation=ir.EvaluationNode(metrics=tuple(ev.metrics), gates=tuple(
            _gate(k, v) for k, v in sorted(ev.gates.items()))),
        serving=serving, slos=slo,
        monitoring=ir.MonitoringNode(
            drift_method=mon.drift.method if mon.drift else None,
            drift_threshold=mon.drift.threshold if mon.drift else None,
            drift_features=tuple(sorted(drift_cols)),
            model_staleness_seconds=(duration_seconds(mon.model_staleness)
                                     if mon.model_staleness else None),
            alerts=alert_nodes(mon.alerts),
            prediction_log=prediction_log(mon.prediction_log, target.kind, r.derive)),
        target=target,
        derivations=tuple(sorted(r.derivations, key=lambda d: d.setting)),
        tags=tuple(sorted(spec.metadata.tags.items())),
        user_files=tuple(r.user_files[p] for p in sorted(r.user_files)),
        request_sources=request_sources)
    return system, r.diagnostics


SECRET_DEFAULTS = {"slack": "/etc/alertmanager/secrets/slack-api-url",
                   "pagerduty": "/etc/alertmanager/secrets/pagerduty-routing-key"}


def alert_nodes(alerts: Iterable[Alert]) -> tuple[ir.AlertNode, ...]:
    """The alert receivers, sorted (their order in the spec means nothing), each with its
    secret file defaulted where the channel cannot work without one (slack, pagerduty)."""
    nodes = [ir.AlertNode(channel=a.channel, to=a.to, severity=tuple(sorted(set(a.severity))),
                          secret_file=a.secret_file or SECRET_DEFAULTS.get(a.channel),
                          smarthost=a.smarthost, sender=a.sender, username=a.username,
                          at=pointer(("monitoring", "alerts", i)))
             for i, a in enumerate(alerts)]
    return tuple(sorted(nodes, key=lambda n: (n.channel, n.to or "", n.severity, n.at)))


def prediction_log(written: PredictionLog, target: str,
                   derive: Callable[[str, object, str], None]) -> ir.PredictionLogNode:
    """The prediction log: on by default locally (the service's workers write parquet beside
    the project's state); off by default on kubernetes and aws, where a pod's disk is no
    place for it (lint refuses `enabled: true` there: not supported yet)."""
    enabled = written.enabled
    if enabled is None:
        enabled = target == "local"
        derive("monitoring.prediction_log.enabled", enabled,
               "local target: each worker logs every answer to parquet partitions (by version "
               "and hour) under the project's state, and POST /feedback joins outcomes to them"
               if enabled else f"{target} target: no shared log store is generated yet, so "
               "nothing is logged")
    hours = max(1, -(-duration_seconds(written.retention) // 3600))
    return ir.PredictionLogNode(enabled=enabled, retention_hours=hours, queue=written.queue)


def on_new_model(written: str | None, target: str,
                 derive: Callable[[str, object, str], None]) -> str:
    """What a scheduled retrain does with a model that passes the gates. Locally the default is
    `rollout`, deploy's own stages unattended. On kubernetes and aws the generated stack has no
    rollout engine yet (Argo Rollouts or Flagger), so there a retrain can only `register`
    (lint refuses `rollout`): its training flow registers and promotes the model, and the
    BentoML deployment serves it from its next start, as `mlstack deploy` brings it."""
    if written is not None:
        return written
    if target == "local":
        derive("training.on_new_model", "rollout", "local target: a scheduled retrain walks "
               "deploy's stages unattended (gates, profile, skew check, SLO verification, the "
               "canary with the rollout's abort rules, then promote or roll back)")
        return "rollout"
    derive("training.on_new_model", "register", f"{target} target: the generated stack has "
           "no rollout engine yet, so a scheduled retrain registers and promotes the model "
           "and the BentoML deployment serves it from its next start (mlstack deploy, or a "
           "restart of its pods); no canary judges it")
    return "register"
