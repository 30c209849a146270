"""The resolved IR: what the system *is* after references, defaults and derivations.

Frozen, fully resolved, JSON round-trippable (`SystemIR.model_dump_json` /
`SystemIR.model_validate_json`). Backends and lint checks read only this, never raw YAML.
Every node that came from the spec keeps its JSON pointer (`at`) so checks can locate it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, SerializerFunctionWrapHandler, model_serializer

# What runs the pipelines (target.orchestrator).
Orchestrator = Literal["prefect", "airflow", "kubeflow"]


class Node(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Derivation(Node):
    """A setting the spec left to mlstack, the value chosen, and why."""

    setting: str
    value: str
    reason: str


class ColumnNode(Node):
    name: str
    dtype: str


class RangeCheck(Node):
    column: str
    low: float
    high: float


class AllowedValuesCheck(Node):
    column: str
    values: tuple[str | int | float | bool, ...]


class RegexCheck(Node):
    column: str
    pattern: str


class ChecksNode(Node):
    not_null: tuple[str, ...] = ()
    unique: tuple[str, ...] = ()
    ranges: tuple[RangeCheck, ...] = ()
    allowed_values: tuple[AllowedValuesCheck, ...] = ()
    min_rows: int | None = None
    max_null_fraction: float | None = None
    regex: tuple[RegexCheck, ...] = ()
    monotonic: tuple[str, ...] = ()  # key columns; event time non-decreasing per key
    freshness: bool = False  # the newest row within the ttl of every view reading the source


class SourceNode(Node):
    name: str
    kind: str
    family: Literal["file", "warehouse", "stream"]
    path: str | None = None  # relative to the project folder (the spec's folder)
    table: str | None = None
    query: str | None = None
    topic: str | None = None
    bootstrap_servers: str | None = None
    batch_source: str | None = None
    timestamp_field: str
    created_timestamp_field: str | None = None
    columns: tuple[ColumnNode, ...]
    checks: ChecksNode
    at: str = ""
    description: str | None = None

    def column(self, name: str) -> ColumnNode | None:
        return next((c for c in self.columns if c.name == name), None)


class EntityNode(Node):
    name: str
    join_keys: tuple[ColumnNode, ...]
    at: str = ""
    description: str | None = None


class FeatureViewNode(Node):
    name: str
    entities: tuple[str, ...]
    source: str
    join_keys: tuple[ColumnNode, ...]
    ttl_seconds: int
    fields: tuple[ColumnNode, ...]
    online: bool
    offline: bool
    at: str = ""
    description: str | None = None


class UserFileNode(Node):
    """A Python file of the project that the spec names (an estimator factory, a python
    transform). Its text is copied into the generated package, so a compile needs no file and
    a deployed version carries its own copy; its hash puts a change of the file in the plan."""

    path: str  # relative to the project folder, POSIX, e.g. 'src/features.py'
    module: str  # its dotted module name relative to the project, e.g. 'src.features'
    sha256: str  # of the file's bytes
    text: str


class UserFunctionNode(Node):
    """A function defined at the top level of a user file (checked by parsing, not imported)."""

    ref: str  # as written: 'models.py:build_model'
    path: str  # the UserFileNode's path
    module: str  # the UserFileNode's module
    function: str
    line: int  # of its def in the file


class RequestSourceNode(Node):
    """Values each request carries (Feast RequestSource); in training, label source columns."""

    name: str
    fields: tuple[ColumnNode, ...]
    at: str = ""
    description: str | None = None


class TransformInput(Node):
    ref: str  # as written in the expression (or inputs): 'field', 'view.field', a transform
    view: str | None = None  # the feature view, or the request source (kind 'request')
    field: str | None = None
    column: str  # the column of the training/serving frame it reads (view__field; a request
    # field's own name; a transform's name)
    transform: str | None = None  # the transform it reads (kind 'transform': python only)
    kind: Literal["view", "request", "transform"] = "view"


class TransformNode(Node):
    name: str
    expr: str  # canonical text, re-printed from the parsed tree ('' for a python transform)
    dtype: str
    inputs: tuple[TransformInput, ...]  # python transforms: in call order; else by column
    python: str  # vectorised Python over `columns` (column -> numpy array), from the parsed tree
    at: str = ""
    description: str | None = None
    function: UserFunctionNode | None = None  # a python transform's function


class ModelFeature(Node):
    """One input column of the model, in model order."""

    ref: str  # as written: 'view.field', 'request_source.field' or a transform name
    column: str  # column name in the training and serving frames
    kind: Literal["view", "transform", "request"]
    view: str | None = None
    field: str | None = None
    dtype: str


class LabelNode(Node):
    source: str
    field: str
    dtype: str
    timestamp_field: str
    join_keys: tuple[ColumnNode, ...]  # entity keys carried by the label source


class EstimatorNode(Node):
    """The estimator the training flow instantiates."""

    module: str  # e.g. sklearn.ensemble ('' with a factory)
    cls: str  # e.g. GradientBoostingClassifier ('' with a factory)
    params: tuple[tuple[str, bool | int | float | str | None | tuple[int, ...]], ...]
    group_fit: str | None = None  # rankers over query groups: fit's keyword (qid, group)
    factory: UserFunctionNode | None = None  # model.estimator: called with params as keywords

    @property
    def display(self) -> str:
        """What builds the estimator, for people: 'sklearn.ensemble.X' or 'models.py:f'."""
        return self.factory.ref if self.factory else f"{self.module}.{self.cls}"


class ModelNode(Node):
    task: str
    framework: str
    algorithm: str
    estimator: EstimatorNode
    features: tuple[ModelFeature, ...]
    fetch: tuple[ModelFeature, ...]  # every view feature read online/offline (model + transforms)
    entities: tuple[str, ...]  # entities whose keys a prediction request carries
    request_keys: tuple[ColumnNode, ...]  # the request schema: entity join keys, sorted
    feature_views: tuple[str, ...]  # views the model reads, sorted
    group_by: str | None = None
    # request fields the model reads (itself or through transforms), sorted by name: keys of
    # every request row beside request_keys; in training, label source columns
    request_fields: tuple[ColumnNode, ...] = ()


class GateNode(Node):
    metric: str
    op: str
    threshold: float


class TrainingNode(Node):
    schedule: str | None
    materialize_interval_seconds: int  # how often online features are refreshed
    split_by: str
    test_fraction: float
    retries: int
    retry_delay_seconds: int
    timeout_seconds: int
    seed: int
    # what a scheduled retrain does with a model past the gates: rollout | register
    on_new_model: str = "rollout"


class EvaluationNode(Node):
    metrics: tuple[str, ...]
    gates: tuple[GateNode, ...]


class BatchingNode(Node):
    enabled: bool
    max_batch_size: int
    max_latency_ms: int
    derived: bool


class ShadowNode(Node):
    """strategy shadow: the mirrored candidate is promoted when its agreement passes."""

    min_agreement: GateNode
    tolerance: float
    min_requests: int


class FeedbackTestNode(Node):
    """A test on the outcomes sent to POST /feedback that the keeper decides
    (runtime.experiment_stats): what an A/B experiment and a canary's guard share."""

    metric: str  # conversion | mean
    higher_is_better: bool
    baseline: float
    minimum_lift: float
    tau: float  # minimum_lift x baseline, fixed before any data
    alpha: float
    min_samples: int
    max_samples: int
    max_duration_seconds: int


class AbNode(FeedbackTestNode):
    """strategy ab: the experiment the keeper decides (runtime.experiment_stats)."""

    key: str  # the request field the sticky assignment hashes
    split: int  # percent of entities on the candidate


class FeedbackGuardNode(FeedbackTestNode):
    """rollout.feedback (strategy canary): the held step's test the keeper decides
    (as an A/B experiment's; its own end rule, ops.local.experiment)."""

    weight: int  # the canary's last step below 100: the percent of requests held there


class RolloutNode(Node):
    strategy: str
    steps: tuple[int, ...]
    step_seconds: int
    abort_latency_p99: GateNode | None = None
    abort_error_rate: GateNode | None = None
    shadow: ShadowNode | None = None
    ab: AbNode | None = None
    # a canary's feedback guard (rollout.feedback); left out of the IR's JSON when there is
    # none, so a spec without one keeps its manifest's bytes (and its spec hash)
    feedback: FeedbackGuardNode | None = None

    @model_serializer(mode="wrap")
    def _no_guard_unwritten(self, handler: SerializerFunctionWrapHandler) -> Any:
        data = handler(self)
        if isinstance(data, dict) and data.get("feedback") is None:
            data.pop("feedback", None)
        return data


class RouterLimitsNode(Node):
    """The local router's admission control, derived from what the service can hold
    (derive.router_limits; the reasons are derivations)."""

    max_in_flight: int  # requests forwarded to the versions at once
    max_queue: int  # requests waiting for a slot
    queue_timeout_s: float  # the longest wait for a slot
    backend_timeout_s: float  # connect, and each read of a version's answer


class ServingNode(Node):
    protocol: str
    batching: BatchingNode
    rollout: RolloutNode
    timeout_ms: int
    runtime: str = "auto"  # auto | onnx | native (mlstack.runtime.scoring)
    max_request_rows: int = 256
    router: RouterLimitsNode | None = None  # None: an IR from before it was derived


class SloNode(Node):
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    throughput_rps: float | None = None
    availability: float | None = None
    error_rate: float | None = None
    quality: tuple[GateNode, ...] = ()
    feature_freshness_seconds: int | None = None


class AlertNode(Node):
    """One alert receiver; `secret_file` already defaulted per channel (None: no secret)."""

    channel: str
    to: str | None
    severity: tuple[str, ...]  # sorted: page, ticket
    secret_file: str | None
    smarthost: str | None
    sender: str | None
    username: str | None
    at: str = ""


class PredictionLogNode(Node):
    """The prediction log as resolved: on (local default) or off, kept retention_hours."""

    enabled: bool
    retention_hours: int
    queue: int
    flush_seconds: float = 2.0


class MonitoringNode(Node):
    drift_method: str | None
    drift_threshold: float | None
    drift_features: tuple[str, ...]  # model feature columns watched for drift
    model_staleness_seconds: int | None
    alerts: tuple[AlertNode, ...]  # in spec order: receivers are named by position
    prediction_log: PredictionLogNode = PredictionLogNode(enabled=False, retention_hours=168,
                                                          queue=10000)


class ResourcesNode(Node):
    cpu: float
    memory_mib: int
    gpu: int
    gpu_type: str | None
    spot: bool = False
    gpu_preferred: bool = False  # gpu: preferred (one GPU when present, else the CPU)


class ComputeStepNode(Node):
    """Where one offline step runs on the compute engine, and why (plan --explain)."""

    step: str  # ingest | validate | materialize | training_set | train | evaluate
    runs_on: str  # ray_tasks | ray_data | ray_train | ray_task | flow
    reason: str


class ComputeNode(Node):
    """target.compute, resolved: the Ray cluster the offline steps run on."""

    engine: Literal["ray"]
    address: str  # "local" (the local target starts it) or "ray://host:port" (joined)
    workers: int
    worker: ResourcesNode  # one worker node (gpu 0)
    train_engine: Literal["ray_train", "ray_task"]  # data-parallel, or one task on a worker
    steps: tuple[ComputeStepNode, ...]
    at: str


class TargetNode(Node):
    kind: str
    region: str | None
    namespace: str
    online_store: Literal["sqlite", "redis", "dynamodb"]
    serving: ResourcesNode
    training: ResourcesNode
    replicas_min: int
    replicas_max: int
    autoscale_target_rps_per_replica: float | None
    compute: ComputeNode | None = None
    # what runs the pipelines (target.orchestrator); left out of the IR's JSON when it is the
    # default, so a compile that does not choose one keeps its manifest's bytes
    orchestrator: Orchestrator = "prefect"

    @model_serializer(mode="wrap")
    def _default_orchestrator_unwritten(self, handler: SerializerFunctionWrapHandler) -> Any:
        data = handler(self)
        if isinstance(data, dict) and data.get("orchestrator") == "prefect":
            del data["orchestrator"]
        return data


class SystemIR(Node):
    """The whole system, resolved. `spec_hash` fingerprints the spec as validated."""

    api_version: str
    name: str  # as written (may contain '-')
    python_name: str  # name usable as a Python identifier / Feast project ('-' -> '_')
    owner: str | None
    description: str | None
    spec_file: str  # spec file name (no folder)
    spec_hash: str
    sources: tuple[SourceNode, ...]
    entities: tuple[EntityNode, ...]
    feature_views: tuple[FeatureViewNode, ...]
    transforms: tuple[TransformNode, ...]
    label: LabelNode
    model: ModelNode
    training: TrainingNode
    evaluation: EvaluationNode
    serving: ServingNode
    slos: SloNode
    monitoring: MonitoringNode
    target: TargetNode
    derivations: tuple[Derivation, ...]
    tags: tuple[tuple[str, str], ...] = ()  # metadata.tags, sorted (name, value)
    user_files: tuple[UserFileNode, ...] = ()  # the project's Python files named, by path
    request_sources: tuple[RequestSourceNode, ...] = ()

    def source(self, name: str) -> SourceNode:
        return next(s for s in self.sources if s.name == name)

    def view(self, name: str) -> FeatureViewNode:
        return next(v for v in self.feature_views if v.name == name)
