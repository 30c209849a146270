"""mlstack.runtime: the library a compiled mlstack project runs on.

The compiler emits a thin program per spec (Prefect flows, the Feast store access, the BentoML
service) that holds the spec's values and calls this library for everything that is the same
in every project. It is installed with the `runtime` extra (`pip install mlstack[runtime]`)
and imports nothing else of mlstack.

Modules (each imports its heavy libraries itself; importing this package loads none):

    errors      DataCheckError, QualityGateError, MonitoringAlert
    sources     SourceSpec; read_source, read_sources (frames + data fingerprint), file_digest
    checks      DataChecks; check_failures, validate_sources (raises DataCheckError)
    changes     each source's rows added, removed and changed since the last successful
                training (row fingerprints in the state folder), for the training report
    store       SourceFile, FeatureStoreAccess (Feast: config, apply, materialize, online and
                point-in-time historical features, CSV staging)
    training    LabelSpec, Split; label_rows, training_set, split_frame, fit (rankers with
                query groups: qid= or group=), group_sizes
    devices     DevicePolicy, choose_device: the training device from target.training.gpu
                (a required GPU that is not visible stops the flow; preferred falls back)
    evaluation  Gate; compute_metrics, ndcg, check_gates, evaluate_model (QualityGateError)
    registry    ModelRegistry (BentoML model store, with lineage), git_sha, read_spec_hash
    state       StateFiles: the models/training/monitoring JSON files (atomic), promote
    monitoring  Monitoring; psi, ks, drift_report, freshness, staleness, alerts
    monitoring_gauges  report_samples: a monitoring report as the gauges the alert rules
                read (the local exporter serves them, the pusher pushes them)
    pushgateway push_report: those gauges to the Pushgateway $MLSTACK_PUSHGATEWAY_URL names
                (the kubernetes target's), a failed push only warns
    hooks       Prefect task options and hooks: task_options, retry_unless_final,
                progress_hook
    model_input InputSchema: the model's input from numpy arrays, the same in training
                and serving (transforms over a mapping of arrays)
    scoring     the native or ONNX model a service runs: ONNX export at registration with a
                parity check, load_served_model
    serving     the service's input path: ModelInput, predictions, feature_records, the
                request row limit, the batching a version starts with
    batching    Batcher: the service's adaptive batching (no learned state)
    prediction_log  PredictionLog: every answer, queued off the request path and written
                to parquet partitions by version and hour (UUIDv7 request ids, an index of
                them, retention, per-writer stats); read_log
    feedback    FeedbackStore: an outcome per request id (idempotent, first wins), joined
                to the log
    experiment_stats  sticky arm assignment; the mixture SPRT (always-valid p-values and
                confidence sequences) and the A/B decision rule
    logs        logger_for: the caller's logger, else Prefect's run logger, else logging's
    ray_cluster RayCompute (target.compute), the RayTaskRunner of a project's flows, its
                Ray runtime_env, connect, node ids (imports ray and prefect_ray on use)
    ray_training the training set through Feast's Ray offline store, the split, the fit
                (Ray Train data-parallel or one Ray task) and evaluation on the cluster

Generated code calls `require(API_VERSION it was compiled for)` once at import, so a project
compiled for another runtime API fails at start with a clear message instead of midway.
"""

from __future__ import annotations

__all__ = ["API_VERSION", "require"]

# The runtime's API version, MAJOR.MINOR. A new MINOR only adds (projects compiled for an
# older minor of the same major keep working); a new MAJOR breaks compiled projects.
API_VERSION = "2.6"


def _parse(version: str) -> tuple[int, int] | None:
    major, dot, minor = str(version).strip().partition(".")
    if not dot or not major.isdigit() or not minor.isdigit():
        return None
    return int(major), int(minor)


def compatible(required: str, provided: str = API_VERSION) -> bool:
    """Whether a project compiled for runtime API `required` runs on API `provided`: the same
    major version and a minor at least as new."""
    want, have = _parse(required), _parse(provided)
    return want is not None and have is not None and want[0] == have[0] and want[1] <= have[1]


def require(version: str) -> None:
    """Fail (RuntimeError) unless this runtime can run a project compiled for API `version`.

    Generated code calls this once at import, with the API version it was compiled for.
    """
    if not compatible(version, API_VERSION):
        raise RuntimeError(
            f"this project was compiled for mlstack runtime API {version}; the installed "
            f"mlstack provides {API_VERSION}: recompile with `mlstack compile` or install a "
            "matching mlstack"
        )
