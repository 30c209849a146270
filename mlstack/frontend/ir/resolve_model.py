"""Resolving the model: its features, the estimator (the catalog's or the project's
factory), the label and the checks between them. A part of the resolver
(mlstack.frontend.ir.resolve._Resolver), which provides the state (sources, views, transforms,
request sources) and the reporting (error) these methods use."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from mlstack.diagnostics.diagnostic import Severity, hint_for
from mlstack.frontend.ir import catalog
from mlstack.frontend.ir import nodes as ir
from mlstack.frontend.usercode import accepts_keyword, keyword_fit

if TYPE_CHECKING:
    import ast
    from collections.abc import Callable

    from mlstack.frontend.loader import Path_
    from mlstack.frontend.spec.models import (
        FileSource,
        Model,
        StreamSource,
        SystemSpec,
        Transform,
        WarehouseSource,
    )
    from mlstack.frontend.usercode import UserFile

# a field a reference resolved to, and what holds it
FieldOwner = tuple[ir.FeatureViewNode | ir.RequestSourceNode, ir.ColumnNode]

# ModelNode.algorithm of a model built by a factory in the project's code (model.estimator)
CUSTOM_ALGORITHM = "custom"


class ModelResolution:
    """The model's part of the resolver (mixed into _Resolver)."""

    # the resolver's state, set by _Resolver's passes (annotations only)
    spec: SystemSpec
    source_by_name: dict[str, tuple[int, FileSource | WarehouseSource | StreamSource]]
    source_nodes: dict[str, ir.SourceNode]
    view_nodes: dict[str, ir.FeatureViewNode]
    request_nodes: dict[str, ir.RequestSourceNode]
    transform_by_name: dict[str, tuple[int, Transform]]
    transform_nodes: dict[str, ir.TransformNode]
    function_defs: dict[str, ast.FunctionDef]

    if TYPE_CHECKING:  # the resolver's reporting and lookups, defined by _Resolver
        def error(self, code: str, message: str, path: Path_, hint: str | None = None, *,
                  key: bool = False, severity: Severity = Severity.ERROR) -> None: ...

        def user_function(self, ref: str, path: Path_,
                          signature: Callable[[UserFile, ast.FunctionDef], None]
                          ) -> ir.UserFunctionNode | None: ...

        def _view_field(self, ref: str, path: Path_, what: str,
                        in_expr: bool = False) -> FieldOwner | None: ...

        def transform_fetch(self, t: ir.TransformNode) -> list[ir.TransformInput]: ...

    def model(self) -> tuple[ir.ModelNode, ir.LabelNode] | tuple[None, None]:
        """model: its features (what is fetched per request, what the request carries), the
        estimator, the label and the checks between them. -> (ModelNode, LabelNode) or
        (None, None)."""
        m = self.spec.model
        features, fetch, request = self.model_features()
        estimator = self.estimator()
        label = self.label()
        self.check_group_by(label)
        views = sorted({cast(str, f.view) for f in fetch.values()})  # view features only
        entities = sorted({e for v in views for e in self.view_nodes[v].entities})
        keys: dict[str, ir.ColumnNode] = {}
        for v in views:
            for k in self.view_nodes[v].join_keys:
                keys[k.name] = k
        if label is not None:
            label = self.label_with_keys(label, keys)
            self.check_request_fields(label, request)
        if estimator is None or label is None or len(features) != len(m.features):
            return None, None
        return ir.ModelNode(
            task=m.task, framework=m.framework, algorithm=m.algorithm or CUSTOM_ALGORITHM,
            estimator=estimator,
            features=tuple(features), fetch=tuple(fetch[c] for c in sorted(fetch)),
            entities=tuple(entities), request_keys=tuple(keys[k] for k in sorted(keys)),
            feature_views=tuple(views), group_by=m.group_by,
            request_fields=tuple(request[k][1] for k in sorted(request))), label

    def model_features(self) -> tuple[list[ir.ModelFeature], dict[str, ir.ModelFeature],
                                      dict[str, FieldOwner]]:
        """model.features resolved: (ModelFeatures in order, fetched view columns by column,
        request fields read by name -> (request source, column))."""
        m = self.spec.model
        base: Path_ = ("model",)
        features: list[ir.ModelFeature] = []
        fetch: dict[str, ir.ModelFeature] = {}
        request: dict[str, FieldOwner] = {}
        seen = set()
        for i, ref in enumerate(m.features):
            path = base + ("features", i)
            if ref in seen:
                self.error("MLS206", f"model feature '{ref}' is listed twice", path,
                           "remove the second one")
                continue
            seen.add(ref)
            if "." not in ref and ref in self.transform_by_name:
                t = self.transform_nodes.get(ref)
                if t is None:
                    continue
                features.append(ir.ModelFeature(ref=ref, column=ref, kind="transform",
                                                dtype=t.dtype))
                for inp in self.transform_fetch(t):
                    # a view's or a request source's field: both are set
                    in_view, in_field = cast(str, inp.view), cast(str, inp.field)
                    if inp.kind == "request":
                        req = self.request_nodes[in_view]
                        request[in_field] = (req, next(f for f in req.fields
                                                       if f.name == in_field))
                        continue
                    dtype = next(f.dtype for f in self.view_nodes[in_view].fields
                                 if f.name == in_field)
                    fetch[inp.column] = ir.ModelFeature(ref=f"{in_view}.{in_field}",
                                                        column=inp.column, kind="view",
                                                        view=in_view, field=in_field,
                                                        dtype=dtype)
                continue
            if "." not in ref and ref not in self.transform_by_name:
                known = list(self.transform_by_name) + [
                    f"{v}.{f.name}" for v, node in self.view_nodes.items() for f in node.fields]
                self.error("MLS204", f"model feature '{ref}' is neither a transform nor "
                           "'view.field'", path, hint_for(ref, known))
                continue
            found = self._view_field(ref, path, "model feature")
            if found is None:
                continue
            view, col = found
            if col.dtype in ("string", "timestamp"):
                self.error("MLS209", f"model feature '{ref}' has dtype {col.dtype}; the model "
                           "reads numbers (encode it in the source, or not supported yet)", path)
                continue
            if isinstance(view, ir.RequestSourceNode):
                features.append(ir.ModelFeature(ref=ref, column=col.name, kind="request",
                                                view=view.name, field=col.name,
                                                dtype=col.dtype))
                request[col.name] = (view, col)
                continue
            feat = ir.ModelFeature(ref=ref, column=f"{view.name}__{col.name}", kind="view",
                                   view=view.name, field=col.name, dtype=col.dtype)
            features.append(feat)
            fetch[feat.column] = feat
        return features, fetch, request

    def estimator(self) -> ir.EstimatorNode | None:
        """The catalog's estimator for (framework, task, algorithm) with its checked params,
        or the project's factory (model.estimator)."""
        m = self.spec.model
        base = ("model",)
        algorithms = catalog.ESTIMATORS.get((m.framework, m.task))
        estimator = None
        if m.framework not in catalog.SUPPORTED_FRAMEWORKS:
            self.error("MLS304", f"framework '{m.framework}' is not supported yet",
                       base + ("framework",),
                       "use one of: " + ", ".join(catalog.SUPPORTED_FRAMEWORKS))
        elif m.estimator is not None and m.framework != "sklearn":
            self.error("MLS304", f"framework '{m.framework}' with an estimator factory is not "
                       "supported yet", base + ("framework",), "leave framework out: a "
                       "factory returns a scikit-learn-API estimator (framework sklearn)")
        elif m.estimator is not None:
            estimator = self.estimator_factory(m)
        elif algorithms is None:
            tasks = sorted(t for f, t in catalog.ESTIMATORS if f == m.framework)
            self.error("MLS304", f"{m.task} with framework '{m.framework}' is not supported "
                       "yet", base + ("framework",),
                       f"{m.framework} supports: " + ", ".join(tasks))
        elif m.algorithm not in algorithms:
            self.error("MLS303", f"algorithm '{m.algorithm}' is not available for {m.task} "
                       f"with {m.framework}", base + ("algorithm",),
                       hint_for(m.algorithm, algorithms))
        else:
            module, cls, allowed = algorithms[m.algorithm]
            params = {k: tuple(v) if isinstance(v, list) else v for k, v in m.params.items()}
            for name in m.params:
                if name in catalog.DEVICE_PARAMS:
                    self.error("MLS305", f"parameter '{name}' is set by mlstack: the training "
                               "device comes from target.training.gpu",
                               base + ("params", name),
                               "remove it; set target.training.gpu (a count, or preferred)",
                               key=True)
                elif name not in allowed:
                    self.error("MLS305", f"parameter '{name}' is not accepted by {cls} here",
                               base + ("params", name), hint_for(name, allowed), key=True)
            if "random_state" not in params and cls in catalog.SEEDED:
                params["random_state"] = self.spec.training.seed
            for name, value in catalog.DEFAULT_PARAMS.get(cls, {}).items():
                params.setdefault(name, value)
            estimator = ir.EstimatorNode(module=module, cls=cls,
                                         params=tuple(sorted(params.items())),
                                         group_fit=catalog.GROUP_FIT.get(cls))
        return estimator

    def check_group_by(self, label: ir.LabelNode | None) -> None:
        m = self.spec.model
        base = ("model",)
        if m.task == "ranking":
            if m.group_by is None:
                self.error("MLS102", "a ranking model needs group_by (the query key)",
                           base + ("task",), "add 'group_by: query_id' to model")
            elif label is not None and m.group_by not in {
                    c.name for c in self.source_nodes[label.source].columns}:
                self.error("MLS203", f"group_by '{m.group_by}' is not a column of the label "
                           f"source '{label.source}'", base + ("group_by",))
        elif m.group_by is not None:
            self.error("MLS103", "group_by applies to ranking models only", base + ("group_by",))

    def label_with_keys(self, label: ir.LabelNode, keys: dict[str, ir.ColumnNode]
                        ) -> ir.LabelNode:
        """The label with the join keys the model's features need (each a column of the
        label source)."""
        label_cols = {c.name for c in self.source_nodes[label.source].columns}
        for k in sorted(keys):
            if k not in label_cols:
                self.error("MLS207", f"the label source '{label.source}' has no column "
                           f"'{k}', the join key the model's features need",
                           ("label", "source"), f"add '{k}' to the columns of source "
                           f"'{label.source}'")
        return label.model_copy(update={"join_keys": tuple(keys[k] for k in sorted(keys))})

    def check_request_fields(self, label: ir.LabelNode, request: dict[str, FieldOwner]
                             ) -> None:
        """Each request field the model reads is a label source column of its type: training
        reads its values there."""
        label_types = {c.name: c.dtype for c in self.source_nodes[label.source].columns}
        for name, (req, col) in sorted(request.items()):
            fpath = (*_path_of(req.at), "fields", name)
            if name not in label_types:
                self.error("MLS207", f"the label source '{label.source}' has no column "
                           f"'{name}', the request field the model reads: training "
                           "reads its values there", fpath, f"add '{name}' to the "
                           f"columns of source '{label.source}' (logged with each "
                           "request)", key=True)
            elif name in (label.field, label.timestamp_field):
                self.error("MLS209", f"request field '{name}' is the label source's "
                           "label or timestamp", fpath, "rename the request field",
                           key=True)
            elif _dtype_family(label_types[name]) != _dtype_family(col.dtype):
                self.error("MLS209", f"request field '{name}' is {col.dtype} but "
                           f"{label_types[name]} in the label source '{label.source}'",
                           fpath, "declare it with one type in both", key=True)

    def estimator_factory(self, m: Model) -> ir.EstimatorNode | None:
        """model.estimator: a function of the project's code, called with model.params as
        keyword arguments (and random_state=training.seed when it names random_state and
        params do not set it)."""
        ref = cast(str, m.estimator)  # called only when model.estimator is set
        factory = self.user_function(ref, ("model", "estimator"),
                                     lambda user, fn: keyword_fit(user, fn, list(m.params)))
        if factory is None:
            return None
        params = dict(m.params)
        if "random_state" not in params and accepts_keyword(self.function_defs[ref],
                                                            "random_state"):
            params["random_state"] = self.spec.training.seed
        return ir.EstimatorNode(module="", cls="", params=tuple(sorted(params.items())),
                                factory=factory)

    def label(self) -> ir.LabelNode | None:
        lbl = self.spec.label
        src = self.source_nodes.get(lbl.source)
        if src is None:
            self.error("MLS205", f"label reads unknown source '{lbl.source}'",
                       ("label", "source"), hint_for(lbl.source, self.source_by_name))
            return None
        col = src.column(lbl.field)
        if col is None:
            self.error("MLS205", f"label field '{lbl.field}' is not a column of source "
                       f"'{src.name}'", ("label", "field"),
                       hint_for(lbl.field, [c.name for c in src.columns]))
            return None
        return ir.LabelNode(source=src.name, field=col.name, dtype=col.dtype,
                            timestamp_field=src.timestamp_field, join_keys=())


def _path_of(at: str) -> Path_:
    """The spec path of a JSON pointer (an IR node's `at`)."""
    return tuple(int(p) if p.isdigit() else p for p in at.split("/") if p)


def _dtype_family(dtype: str) -> str:
    """Types a value keeps when read as the other: int32/int64, float32/float64."""
    return {"int32": "int", "int64": "int", "float32": "float", "float64": "float"}.get(
        dtype, dtype)
