"""The Feast backend: a feature repo plus `<py>_system/store.py`.

Generates feature_repo/feature_store.yaml, feature_repo/repo.py (entities, file sources,
feature views, the model's feature service, one on-demand view calling the shared
transforms) and the store module every other layer uses to apply, materialize and read
features: a few lines building mlstack.runtime's FeatureStoreAccess from the settings. The local profile keeps the registry and a SQLite online store under
MLSTACK_STATE_DIR; cluster targets get a SQL registry and their Redis/DynamoDB online store,
configured from environment variables. The offline store is DuckDB over the file sources;
with target.compute, Feast's Ray offline store and Ray compute engine on the project's cluster.

Warehouse sources (postgres, bigquery, snowflake, redshift) need their own offline store and
come with the beyond-one-machine work: `applies` is False when a feature view reads one.
"""

from __future__ import annotations

from typing import cast

from mlstack.codegen.backends import CompileOptions
from mlstack.codegen.backends.shared import header, model_transforms
from mlstack.codegen.contract import package_name
from mlstack.codegen.filetree import FileTree
from mlstack.codegen.jinja import render_template
from mlstack.frontend.ir.nodes import SourceNode, SystemIR

# spec dtype -> (feast.types name, feast.ValueType member)
FEAST_TYPES = {
    "int64": ("Int64", "INT64"),
    "int32": ("Int32", "INT32"),
    "float64": ("Float64", "DOUBLE"),
    "float32": ("Float32", "FLOAT"),
    "string": ("String", "STRING"),
    "bool": ("Bool", "BOOL"),
    "timestamp": ("UnixTimestamp", "UNIX_TIMESTAMP"),
}


def transforms_view_name(system: SystemIR) -> str:
    return f"{system.python_name}_transforms"


def _view_sources(system: SystemIR):
    names = sorted({v.source for v in system.feature_views})
    return [system.source(n) for n in names]


def _csv_columns(source: SourceNode) -> dict[str, str]:
    """Declared columns of a CSV source with their dtypes; event/created times are timestamps."""
    times = cast(set[str], {source.timestamp_field, source.created_timestamp_field} - {None})
    return {**{t: "timestamp" for t in times}, **{c.name: c.dtype for c in source.columns}}


def _default_ray_address(system: SystemIR) -> str | None:
    """The Ray address feature_store.yaml falls back to when MLSTACK_RAY_ADDRESS is unset: the
    spec's ray://host:port; for a 'local' cluster (no address before it starts) '', Feast's
    local mode, so a process that reads only online features (the service) needs no cluster;
    the flows name MLSTACK_RAY_ADDRESS themselves when it is missing."""
    compute = system.target.compute
    if compute is None:
        return None
    return compute.address if compute.address.startswith("ray://") else ""


class FeastBackend:
    name = "feast"
    templates = ("feast/feature_store.yaml.j2", "feast/repo.py.j2", "feast/feastignore.j2",
                 "feast/store.py.j2")

    def applies(self, system: SystemIR) -> bool:
        return all(s.family == "file" for s in _view_sources(system))

    def render(self, system: SystemIR, options: CompileOptions) -> FileTree:
        pkg = package_name(system)
        fetch_by_view: dict[str, list[str]] = {}
        for f in system.model.fetch:
            # a fetched feature is a view's field: both are set
            fetch_by_view.setdefault(cast(str, f.view), []).append(cast(str, f.field))
        odfv = transforms_view_name(system)
        if system.transforms and any(v.name == odfv for v in system.feature_views):
            raise ValueError(f"feature view name {odfv!r} is reserved for the transforms")
        transforms = model_transforms(system)  # those the model reads (the ones computed)
        transform_views = sorted({i.view for t in transforms for i in t.inputs
                                  if i.kind == "view"})
        # request sources the transforms read: Feast RequestSources of the on-demand view
        read = {i.view for t in transforms for i in t.inputs if i.kind == "request"}
        request_sources = [r for r in system.request_sources if r.name in read]
        used_types = sorted({FEAST_TYPES[c.dtype][0] for v in system.feature_views
                             for c in (*v.join_keys, *v.fields)}
                            | {FEAST_TYPES[c.dtype][0] for r in request_sources
                               for c in r.fields}
                            | {FEAST_TYPES[t.dtype][0] for t in transforms})
        context = dict(
            system=system, header=header(system), package=pkg, types=FEAST_TYPES,
            compute=system.target.compute,
            default_ray_address=_default_ray_address(system),
            used_types=used_types,
            entities=sorted(system.entities, key=lambda e: e.name),
            sources=_view_sources(system),
            views=sorted(system.feature_views, key=lambda v: v.name),
            fetch_by_view={k: sorted(v) for k, v in sorted(fetch_by_view.items())},
            feature_service=f"{system.python_name}_model",
            transforms=sorted(transforms, key=lambda t: t.name),
            transforms_view=odfv, transform_views=transform_views,
            request_sources=request_sources,
            store_sources={s.name: {"format": s.kind, "path": s.path,
                                    "columns": _csv_columns(s) if s.kind == "csv" else {}}
                           for s in _view_sources(system)},
        )
        tree = FileTree()
        tree.add("feature_repo/feature_store.yaml",
                 render_template("feast/feature_store.yaml.j2", **context))
        tree.add("feature_repo/repo.py", render_template("feast/repo.py.j2", **context))
        tree.add("feature_repo/.feastignore", render_template("feast/feastignore.j2", **context))
        tree.add(f"{pkg}/store.py", render_template("feast/store.py.j2", **context))
        return tree
