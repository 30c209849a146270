"""The pipelines: Prefect flows (training, materialization, monitoring) and their deployments.

`pipelines/flows.py` holds the spec's facts (sources and their data checks, the estimator,
split, metrics, gates, retries, monitoring thresholds) and thin `@task`/`@flow` functions that
call mlstack.runtime for everything that is the same in every system. `pipelines/prefect.yaml` declares one deployment per flow with its
schedule and the work pool of the target (a `process` pool locally, a Kubernetes pool on
clusters).
"""

from __future__ import annotations

from mlstack.codegen.backends import CompileOptions
from mlstack.codegen.backends.shared import header, user_imports
from mlstack.codegen.contract import (
    ENV_PROGRESS_FILE,
    MODELS_FILE,
    MONITORING_FILE,
    MONITORING_HISTORY_FILE,
    MONITORING_TASKS,
    TELEMETRY_ENV,
    TRAINING_FILE,
    TRAINING_TASKS,
    package_name,
)
from mlstack.codegen.filetree import FileTree
from mlstack.codegen.jinja import IDENT_RE, identifier, render_template
from mlstack.frontend.ir.nodes import ChecksNode, SystemIR

# Prefect schedules are cron lines; the spec's aliases translate to these.
CRON_ALIASES = {"@hourly": "0 * * * *", "@daily": "0 0 * * *", "@weekly": "0 0 * * 0",
                "@monthly": "0 0 1 * *", "@yearly": "0 0 1 1 *"}
# The monitoring flow runs hourly, or with every materialization when that is more often.
MONITORING_INTERVAL_SECONDS = 3600
# Telemetry off in every flow run a worker starts (no network at run time).
RUN_ENV = TELEMETRY_ENV


def cron_schedule(schedule: str | None) -> str | None:
    return None if schedule is None else CRON_ALIASES.get(schedule, schedule)


def work_pool(system: SystemIR) -> dict:
    """The work pool the deployments run on: name, type and job variables."""
    if system.target.kind == "local":
        return {"name": f"{system.name}-local", "type": "process",
                "job_variables": {"env": RUN_ENV}}
    return {"name": f"{system.name}-kubernetes", "type": "kubernetes",
            "job_variables": {"env": RUN_ENV, "namespace": system.target.namespace}}


def _checks(checks: ChecksNode, ttls: dict[str, int]) -> dict:
    """The source's data checks that are set, as DataChecks keyword arguments (`ttls`: the
    ttl in seconds of each feature view reading the source, what freshness holds it to)."""
    everything = {"not_null": checks.not_null, "unique": checks.unique,
                  "ranges": {r.column: (r.low, r.high) for r in checks.ranges},
                  "allowed_values": {a.column: a.values for a in checks.allowed_values},
                  "min_rows": checks.min_rows, "max_null_fraction": checks.max_null_fraction,
                  "regex": {r.column: r.pattern for r in checks.regex},
                  "monotonic": checks.monotonic,
                  "freshness": dict(sorted(ttls.items())) if checks.freshness else {}}
    return {k: v for k, v in everything.items() if v not in (None, (), {})}


def _dotted(module: str) -> str:
    """A module path from the estimator catalog, checked to be dotted identifiers."""
    if not all(IDENT_RE.match(part) for part in module.split(".")):
        raise ValueError(f"not a module path: {module!r}")  # the catalog prevents this
    return module


def _estimator(system: SystemIR) -> dict:
    """How flows.py builds the estimator: a catalog class, or the project's factory (imported
    from the copy in the generated package under an alias of its own)."""
    factory = system.model.estimator.factory
    if factory is None:
        cls = system.model.estimator.cls
        return dict(estimator_module=_dotted(system.model.estimator.module),
                    estimator_class=cls, estimator_call=identifier(cls),
                    estimator_factory=None)
    (imported,) = user_imports(system, [factory.module])
    return dict(estimator_module=None, estimator_class="Estimator",
                estimator_call=f"{identifier(imported['alias'])}."
                               f"{identifier(factory.function)}",
                estimator_factory={**imported, "ref": factory.ref})


def _source_keys(system: SystemIR, source: str) -> tuple[str, ...]:
    """The keys that, with its event time, name a source's row: the join keys of the views
    reading it and, for the label source, the label's (sorted; ingest counts the rows changed
    since the last training by them)."""
    keys = {k.name for v in system.feature_views if v.source == source for k in v.join_keys}
    if system.label.source == source:
        keys |= {k.name for k in system.label.join_keys}
    return tuple(sorted(keys))


def flow_context(system: SystemIR) -> dict:
    """Everything flows.py.j2 needs, as plain data (rendered through the `py` filter)."""
    file_sources = [s for s in system.sources if s.family == "file"]
    feature_sources = sorted({v.source for v in system.feature_views})
    m, t, mon = system.model, system.training, system.monitoring
    return dict(
        sources=[{"name": s.name, "path": s.path, "format": s.kind,
                  "timestamp_field": s.timestamp_field,
                  "columns": {c.name: c.dtype for c in s.columns},
                  "checks": _checks(s.checks, {v.name: v.ttl_seconds for v in
                                               system.feature_views if v.source == s.name}),
                  "keys": _source_keys(system, s.name)}
                 for s in sorted(file_sources, key=lambda s: s.name)],
        unread_sources=tuple(sorted(s.name for s in system.sources if s.family != "file")),
        feature_sources=tuple(s for s in feature_sources if system.source(s).family == "file"),
        label_keys=tuple(k.name for k in system.label.join_keys),
        **_estimator(system),
        estimator_params=dict(m.estimator.params), group_fit=m.estimator.group_fit,
        framework=m.framework, training_gpus=system.target.training.gpu,
        gpu_preferred=system.target.training.gpu_preferred,
        serving_runtime=system.serving.runtime,
        metrics=tuple(system.evaluation.metrics),
        gates=[{"metric": g.metric, "op": g.op, "threshold": g.threshold}
               for g in system.evaluation.gates],
        drift_method=mon.drift_method, drift_threshold=mon.drift_threshold,
        drift_features=mon.drift_features,
        feature_freshness_seconds=system.slos.feature_freshness_seconds,
        model_staleness_seconds=mon.model_staleness_seconds,
        live_quality=mon.prediction_log.enabled,
        quality_gates=tuple((g.metric, g.op, g.threshold) for g in system.slos.quality),
        live_window_seconds=float(mon.prediction_log.retention_hours * 3600),
        split_by=t.split_by, test_fraction=t.test_fraction, seed=t.seed, retries=t.retries,
        retry_delay_seconds=t.retry_delay_seconds, timeout_seconds=t.timeout_seconds,
        task={name: name for name in (*TRAINING_TASKS, *MONITORING_TASKS)},
        models_file=MODELS_FILE, training_file=TRAINING_FILE, monitoring_file=MONITORING_FILE,
        monitoring_history_file=MONITORING_HISTORY_FILE,
        progress_env=ENV_PROGRESS_FILE, compute=system.target.compute)


def deployments_context(system: SystemIR) -> dict:
    t = system.training
    return dict(
        pool=work_pool(system),
        training_cron=cron_schedule(t.schedule),
        materialize_interval=t.materialize_interval_seconds,
        monitoring_interval=min(MONITORING_INTERVAL_SECONDS, t.materialize_interval_seconds),
        deployment_prefix=system.name)


class PrefectBackend:
    name = "prefect"
    templates = ("prefect/flows.py.j2", "prefect/monitoring.py.j2", "prefect/pipeline.py.j2",
                 "prefect/prefect.yaml.j2")

    def applies(self, system: SystemIR) -> bool:
        return True

    def render(self, system: SystemIR, options: CompileOptions) -> FileTree:
        tree = FileTree()
        common = dict(system=system, package=package_name(system))
        context = flow_context(system)
        # the pipeline settings, shared by the Kubeflow steps when another orchestrator runs
        tree.add(f"{common['package']}/pipeline.py", render_template(
            "prefect/pipeline.py.j2", header=header(system), **common, **context))
        if system.target.orchestrator != "prefect":
            return tree
        tree.add("pipelines/flows.py", render_template(
            "prefect/flows.py.j2", header=header(system), **common, **context))
        tree.add("pipelines/monitoring.py", render_template(
            "prefect/monitoring.py.j2", header=header(system), **common, **context))
        tree.add("pipelines/prefect.yaml", render_template(
            "prefect/prefect.yaml.j2", header=header(system), **common,
            **deployments_context(system)))
        return tree
