"""The contract between the compiler, the generated code and `mlstack deploy`: names that
more than one of them must agree on. Each fact has its one owner here; templates receive
these values from their backends, and deploy and graph import them.

Nothing here depends on a spec beyond its resolved name: a change to this module is a change
to the generated code's interface (goldens show it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlstack.frontend.ir.nodes import SystemIR

# The training flow's tasks, in the order the generated `training_flow` runs them. Each is a
# Prefect task name; the progress hook reports them by this name and deploy shows each as a
# stage. `promote` runs only when the flow is asked to promote (deploy promotes by itself,
# after its rollout, so its worker runs the flow with promote_model=False).
TRAINING_TASKS = ("ingest", "validate", "feast_apply", "materialize", "training_set", "train",
                  "evaluate", "register", "promote")
PROMOTE_TASK = "promote"
# The monitoring flow's tasks (after ingest).
MONITORING_TASKS = ("drift", "freshness", "staleness", "live_quality")
# The materialize flow's tasks, in order.
MATERIALIZE_TASKS = ("feast_apply", "materialize")

# Telemetry off in every process that runs generated code: no network at run time.
TELEMETRY_ENV = {
    "BENTOML_DO_NOT_TRACK": "true",
    "DO_NOT_TRACK": "1",
    "FEAST_USAGE": "False",
    # ONNX Runtime 1.2x sends usage telemetry from Linux too (and writes a device id under
    # ~/.cache/Microsoft) unless this is set
    "ORT_DISABLE_TELEMETRY": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
}

# Environment variables the generated code reads (deploy sets them).
ENV_PROJECT_DIR = "MLSTACK_PROJECT_DIR"  # the spec's folder: source data paths are relative
ENV_STATE_DIR = "MLSTACK_STATE_DIR"  # feast registry, online store, the state files below
ENV_MODEL_TAG = "MLSTACK_MODEL_TAG"  # the BentoML model the service loads
ENV_PROGRESS_FILE = "MLSTACK_PROGRESS_FILE"  # one JSON line per finished flow task
ENV_RAY_ADDRESS = "MLSTACK_RAY_ADDRESS"  # target.compute: the Ray cluster the flows join
# The Pushgateway the monitoring flow pushes its report's gauges to (the kubernetes stack sets
# it on the flows' jobs; mlstack.runtime.pushgateway's PUSHGATEWAY_ENV)
ENV_PUSHGATEWAY_URL = "MLSTACK_PUSHGATEWAY_URL"
# The serving version's name ('v3'), beside its model in ENV_MODEL_TAG: the monitoring flow
# judges that model (mlstack run sets both from the deploy journal)
ENV_SERVING_VERSION = "MLSTACK_SERVING_VERSION"
# The prediction log's folder under the state folder (ENV_STATE_DIR): the service's workers
# write it, feedback joins it, the monitoring flow and status read it
PREDICTION_LOG_DIR = "prediction_log"
# in it: each writer's counters and the feedback store (mlstack.runtime.prediction_log's
# STATS_DIR and mlstack.runtime.feedback's FEEDBACK_FILE: the runtime imports no compiler code)
PREDICTION_LOG_STATS_DIR = "stats"
FEEDBACK_FILE = "feedback.db"

# State files the generated flows write under $MLSTACK_STATE_DIR.
MODELS_FILE = "models.json"  # the promoted model and its history
TRAINING_FILE = "training.json"  # the latest training run's outcome
MONITORING_FILE = "monitoring.json"  # the latest monitoring report
MONITORING_HISTORY_FILE = "monitoring_history.jsonl"  # a line of live quality per run

# The mlstack.runtime API the generated code is written against: the generated package calls
# mlstack.runtime.require(RUNTIME_API_VERSION) at import (tests/runtime checks it equals
# mlstack.runtime.API_VERSION; the compiler itself never imports the runtime).
RUNTIME_API_VERSION = "2.6"
# What each minor added, and so the oldest runtime a project can ask for: a project asks for
# the oldest API that has everything it calls (a new minor keeps older projects' bytes).
#   2.2  target.compute on Ray: ray_cluster, ray_training, sources.data_fingerprint,
#        FeatureStoreAccess.online_views / materialize(views=) / variable_defaults
#   2.3  every project: http_contract (the service's API contract middleware), the
#        monitoring flow's serving_model / online_freshness, the dtype contract at ingest,
#        DataChecks' regex / monotonic / freshness (with the views' TTLs)
#   2.4  every project: SourceSpec.keys and runtime.changes (the rows changed since the last
#        training, in training.json), serving.json_body, online_read (the direct SQLite read)
#   2.5  every project: pushgateway.push_report (the monitoring flow's gauges to the
#        Pushgateway ENV_PUSHGATEWAY_URL names) and monitoring_gauges
#   2.6  every project: serving.shed_response (a request the batcher shed answered 503
#        without a logged traceback)
RUNTIME_API_WITHOUT_COMPUTE = "2.6"


def runtime_api_version(system: SystemIR) -> str:
    """The runtime API a project's generated code requires at import."""
    return RUNTIME_API_VERSION if system.target.compute is not None else \
        RUNTIME_API_WITHOUT_COMPUTE
# The compile's manifest in the output folder (the writer writes it); the generated code
# reads the spec hash for a model's lineage from it.
MANIFEST_FILE = "mlstack.lock.json"

# The serving profile `mlstack deploy` measures for a version before starting it (batching
# from the cost of a call per batch size, and why), relative to the version's generated tree;
# the service reads its batching from it at start (mlstack.runtime.serving.batching_settings).
SERVING_PROFILE_FILE = "serving_profile.json"

# Where the generated tree puts each layer (relative to the output folder).
FLOWS_MODULE = "pipelines.flows"
SERVICE_MODULE = "service.service"
FEATURE_REPO_DIR = "feature_repo"
# The project's own Python files the spec names (estimator factories, python transforms) are
# copied, byte for byte, under this subpackage of the shared package: 'src/features.py' ->
# <package>/user_code/src/features.py, imported as <package>.user_code.src.features. A deployed
# version's tree so carries its copy, and a rollback restores it.
USER_CODE_DIR = "user_code"


def package_name(system: SystemIR) -> str:
    """The generated shared package (settings, features, transforms, store)."""
    return f"{system.python_name}_system"


def service_class(system: SystemIR) -> str:
    """The BentoML service class: churn -> ChurnService, search_ranking -> SearchRankingService."""
    return "".join(part[:1].upper() + part[1:] for part in system.python_name.split("_")
                   if part) + "Service"


def user_code_paths(system: SystemIR) -> dict[str, str]:
    """Where each user file lands in the generated tree: tree path -> the file's project
    path. These files are copied as they are (never formatted or templated)."""
    pkg = package_name(system)
    return {f"{pkg}/{USER_CODE_DIR}/{f.path}": f.path for f in system.user_files}


def user_module(system: SystemIR, module: str) -> tuple[str, str]:
    """A user module ('src.features') as an import: ('<package>.user_code.src', 'features')."""
    parent, _, name = f"{package_name(system)}.{USER_CODE_DIR}.{module}".rpartition(".")
    return parent, name


def user_module_alias(module: str) -> str:
    """The name generated code binds a user module to: 'src.features' -> 'user_src__features'
    (module parts never hold '__', so two modules never share an alias)."""
    return "user_" + module.replace(".", "__")
