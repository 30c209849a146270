"""The system spec as users write it (apiVersion mlstack/v1).

These models mirror the YAML: every key users may write, nothing they may not (unknown
keys are errors). Types are strict: YAML already types its scalars, so `seed: true` or
`retries: "3"` are mistakes, not values to coerce. Cross-references are *not* resolved here;
`mlstack.frontend.ir.resolve` does that, and `mlstack.frontend.checks` reports what does not fit.

Every field has a description: the JSON Schema (editors) and docs/spec-reference.md are
generated from them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self, Union

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from mlstack.frontend.expr import ExprError, parse_expr
from mlstack.frontend.spec.types import (
    CodeRef,
    Column,
    DType,
    Duration,
    FeatureRef,
    Gate,
    GpuType,
    Memory,
    MetricName,
    Name,
    Namespace,
    Range,
    RayAddress,
    Regex,
    Region,
    RelativePath,
    Schedule,
    SystemName,
    TableName,
    TopicName,
)

API_VERSION = "mlstack/v1"
Description = Annotated[str | None, Field(None, max_length=2000,
                                          description="Free text for people; carried into the "
                                          "generated code as documentation.")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=False, frozen=True, strict=True,
                              allow_inf_nan=False)


class Metadata(Strict):
    """Who owns the system and what it is for."""

    name: SystemName = Field(description="System name: lower-case letters, digits and '-'. "
                             "Names the Feast project, the model and the generated package "
                             "(with '-' as '_').")
    owner: str | None = Field(None, min_length=1, max_length=100,
                              description="The owning team; recorded on generated resources.")
    description: Description
    tags: dict[Name, Annotated[str, Field(max_length=200)]] = Field(
        default_factory=dict, description="Free-form labels (name: value) put on the Feast "
        "project objects and cloud resources.")


class Checks(Strict):
    """Data-quality checks run on the source between ingest and training; a failed check
    fails the pipeline run."""

    not_null: list[Column] = Field(default_factory=list,
                                   description="Columns that must never be null.")
    unique: list[Column] = Field(default_factory=list,
                                 description="Columns that together are unique per row.")
    ranges: dict[Column, Range] = Field(
        default_factory=dict, description="Inclusive [min, max] per numeric column.")
    allowed_values: dict[Column, Annotated[list[str | int | float | bool], Field(
        min_length=1)]] = Field(default_factory=dict,
                                description="The only values a column may hold.")
    min_rows: int | None = Field(None, ge=0, description="Fewest rows the source must have.")
    max_null_fraction: float | None = Field(
        None, ge=0, le=1, description="Largest fraction of nulls allowed in any column.")
    regex: dict[Column, Regex] = Field(
        default_factory=dict, description="A pattern per string column that every value "
        "must match in full (nulls ignored), e.g. `{plan: '^(basic|pro)_v[0-9]+$'}`.")
    monotonic: list[Column] = Field(
        default_factory=list, description="Key columns: the rows of each key (combination) "
        "come in event time order, each row's timestamp_field no earlier than the row before "
        "it of the same key. Leave it out for files in no particular order.")
    freshness: bool = Field(
        False, description="Whether the newest row must be younger than the ttl of every "
        "feature view reading the source when ingest runs, so a stale file fails before "
        "training (its features would serve nothing online). Off by default: a file kept for "
        "history passes.")


class SourceBase(Strict):
    name: Name = Field(description="Source name, referenced by feature views and the label.")
    timestamp_field: Column = Field(description="The column holding each row's event time "
                                    "(dtype timestamp); point-in-time joins use it.")
    created_timestamp_field: Column | None = Field(
        None, description="A column holding when each row was written (dtype timestamp); "
        "breaks ties between rows with the same event time.")
    columns: dict[Column, DType] = Field(min_length=1,
                                         description="Declared columns and their types.")
    checks: Checks = Field(default_factory=Checks,
                           description="Data-quality checks run on this source.")
    description: Description


class FileSource(SourceBase):
    """A Parquet or CSV file in the project: runs on every target.

    Its declared column types are a contract, checked by `mlstack lint --data` (the file's
    schema) and at ingest (every row): a column of the declared dtype, or one that widens
    without loss (int32 to int64, any integer to float64, float32 to float64), is read as the
    declared dtype; a narrowing is read only when every value fits (int64 to int32; CSV
    numbers, which have no width, to float32); anything else (float to int, text to number,
    a number to text in a parquet file) is an error naming the file, the column, both types
    and example values. Nulls: an int64, int32 or bool column holds none, in every format
    (declare float64 to keep missing numbers). A timestamp with no zone is read as UTC, with
    a warning.
    """

    kind: Literal["parquet", "csv"] = Field(description="File format.")
    path: RelativePath = Field(description="Path relative to the spec's folder.")


class WarehouseSource(SourceBase):
    """A table (or query) in a SQL warehouse: for cluster and cloud targets."""

    kind: Literal["postgres", "bigquery", "snowflake", "redshift"] = Field(
        description="Warehouse type.")
    table: TableName | None = Field(None, description="Table to read (give table or query).")
    query: str | None = Field(None, min_length=1, max_length=20000,
                              description="SQL query to read (give table or query).")

    @model_validator(mode="after")
    def _table_or_query(self) -> Self:
        if self.table is None and self.query is None:
            raise PydanticCustomError("mls_missing", "a {kind} source needs 'table' or 'query'",
                                      {"kind": self.kind, "at": "kind"})
        if self.table is not None and self.query is not None:
            raise PydanticCustomError("mls_conflict", "a {kind} source takes 'table' or "
                                      "'query', not both", {"kind": self.kind, "at": "query"})
        return self


class StreamSource(SourceBase):
    """A stream (Kafka, Kinesis) whose history lives in a batch source."""

    kind: Literal["kafka", "kinesis"] = Field(description="Stream type.")
    topic: TopicName = Field(description="Topic (Kafka) or stream name (Kinesis).")
    bootstrap_servers: str | None = Field(None, min_length=1, max_length=1000,
                                          description="Kafka bootstrap servers, host:port,...")
    batch_source: Name | None = Field(None, description="A file/warehouse source holding the "
                                      "stream's history (for training).")


Source = Annotated[Union[FileSource, WarehouseSource, StreamSource], Field(discriminator="kind")]


class Entity(Strict):
    """A thing features describe (a customer, a query); requests carry its join key."""

    name: Name = Field(description="Entity name, referenced by feature views.")
    join_keys: list[Column] = Field(min_length=1, max_length=1,
                                    description="The key column; one per entity (as in Feast).")
    description: Description


class FeatureView(Strict):
    """A group of features read from one source, keyed by entities (a Feast FeatureView)."""

    name: Name = Field(description="View name; model features are written 'view.field'.")
    entity: Name | Annotated[list[Name], Field(min_length=1)] = Field(
        description="The entity (or entities) the view is keyed by.")
    source: Name = Field(description="The source the view reads.")
    ttl: Duration | None = Field(None, description="How long a value stays valid; derived from "
                                 "feature_freshness when left out.")
    fields: list[Column] = Field(min_length=1, description="Source columns served as features.")
    online: bool = Field(True, description="Materialized to the online store for serving. A "
                         "view the model reads must be online.")
    offline: bool = Field(True, description="Read from the offline store for training. Only "
                          "true is supported.")
    description: Description


class Transform(Strict):
    """An on-demand feature computed from view fields, the same way in training and serving:
    a safe expression (`expr`), or a function of the project's own Python code (`python`)
    called with its `inputs` as numpy arrays, positionally, in the order listed."""

    name: Name = Field(description="Transform name; list it in model.features.")
    expr: str | None = Field(None, description="A safe expression over view and request "
                             "fields: numbers, fields, + - * / // % **, comparisons, "
                             "and/or/not and the functions abs, sqrt, log, log1p, exp, floor, "
                             "ceil, min, max, clip, where. Give expr or python.")
    python: CodeRef | None = Field(
        None, description="A function in a Python file of the project, 'file.py:function'. "
        "It is called with one numpy array per input, positionally in the order of `inputs`, "
        "and returns one array (one value per row). mlstack parses the file (never imports "
        "it at lint time) and copies it into the generated package. Give expr or python.")
    inputs: list[FeatureRef] = Field(default_factory=list, description="With python: the "
                                     "function's arguments in order: 'view.field', a request "
                                     "field or the name of a transform listed earlier.")
    dtype: Literal["float64", "int64", "bool"] = Field("float64",
                                                       description="Type of the result.")
    description: Description

    @field_validator("expr")
    @classmethod
    def _parse(cls, value: str | None) -> str | None:
        if value is None:
            return value
        try:
            parse_expr(value)
        except ExprError as exc:
            raise PydanticCustomError(
                "mls_expr", "{message}", {"message": exc.message, "column": exc.column}
            ) from None
        return value

    @model_validator(mode="after")
    def _expr_or_python(self) -> Self:
        if self.expr is None and self.python is None:
            raise PydanticCustomError("mls_missing", "transform '{name}' needs 'expr' or "
                                      "'python'", {"name": self.name, "at": "name",
                                       "hint": "add 'expr: ...' or 'python: file.py:function'"})
        if self.expr is not None and self.python is not None:
            raise PydanticCustomError("mls_conflict", "transform '{name}' takes 'expr' or "
                                      "'python', not both", {"name": self.name, "at": "python",
                                                                 "hint": "remove one of them"})
        if self.python is not None and not self.inputs:
            raise PydanticCustomError("mls_missing", "a python transform needs 'inputs' (its "
                                      "arguments, in order)", {"at": "python",
                                                 "hint": "add 'inputs: [view.field, ...]'"})
        if self.expr is not None and self.inputs:
            raise PydanticCustomError("mls_conflict", "an expr transform takes no 'inputs' "
                                      "(they are the fields its expression names)",
                                      {"at": "inputs", "hint": "remove inputs"})
        return self


class RequestSource(Strict):
    """Values a prediction request carries itself (a Feast RequestSource): a transaction's
    amount, say. Read by transforms and the model as 'source.field' (or the bare field); in
    training their values come from the label source's columns of the same names."""

    name: Name = Field(description="Request source name; its fields are written "
                       "'source.field'.")
    fields: dict[Column, DType] = Field(
        min_length=1, description="Field name: dtype. Each is a key of every request row, "
        "and a column of the label source (what training reads).")
    description: Description


class Features(Strict):
    """Feature views, request-time values and on-demand transforms."""

    views: list[FeatureView] = Field(min_length=1, description="Feature views.")
    request_sources: list[RequestSource] = Field(
        default_factory=list, description="Values sent with each request (Feast "
        "RequestSource), usable by transforms and as model features.")
    transforms: list[Transform] = Field(default_factory=list,
                                        description="On-demand transforms.")


class Label(Strict):
    """What the model learns to predict: a column of a source keyed like the features."""

    source: Name = Field(description="The source holding the label (with the entity keys).")
    field: Column = Field(description="The label column.")


Task = Literal["binary_classification", "multiclass_classification", "regression", "ranking"]
Framework = Literal["sklearn", "xgboost", "lightgbm", "pytorch", "onnx"]
# a list of integers: layer sizes (the pytorch MLP's hidden_layers)
ParamValue = Union[bool, int, float, str, None, list[int]]


class Model(Strict):
    """The model: task, estimator and the features it reads, in order."""

    task: Task = Field(description="What the model predicts.")
    framework: Framework = Field("sklearn", description="The ML library: sklearn, xgboost, "
                                 "lightgbm or pytorch (each but sklearn an optional extra, "
                                 "e.g. pip install 'mlstack[xgboost]'); onnx is not "
                                 "supported yet.")
    algorithm: Name | None = Field(None, description="Estimator, e.g. gradient_boosting, "
                                   "random_forest, logistic_regression, "
                                   "hist_gradient_boosting, ridge (sklearn); "
                                   "gradient_boosting, lambdarank (xgboost, lightgbm); mlp "
                                   "(pytorch). Give algorithm or estimator.")
    estimator: CodeRef | None = Field(
        None, description="A custom estimator: a factory function in a Python file of the "
        "project, 'file.py:function', called with `params` as keyword arguments; it returns "
        "an unfitted scikit-learn-API estimator (fit, predict, and predict_proba for "
        "classifiers). framework stays sklearn (the API). Given a `random_state` parameter, "
        "it gets training.seed unless params set it. Give algorithm or estimator.")
    params: dict[Name, ParamValue] = Field(default_factory=dict,
                                           description="Estimator constructor parameters (or "
                                           "the estimator factory's keyword arguments).")
    features: list[FeatureRef] = Field(min_length=1, description="Model inputs in order: "
                                       "'view.field' or transform names.")
    group_by: Column | None = Field(None, description="Ranking only: the query/group key column "
                                    "of the label source.")

    @model_validator(mode="after")
    def _algorithm_or_estimator(self) -> Self:
        if self.algorithm is None and self.estimator is None:
            raise PydanticCustomError("mls_missing", "the model needs 'algorithm' or "
                                      "'estimator'", {"at": "task", "hint": "add 'algorithm: "
                                      "gradient_boosting' or 'estimator: models.py:build_model'"})
        if self.algorithm is not None and self.estimator is not None:
            raise PydanticCustomError("mls_conflict", "the model takes 'algorithm' or "
                                      "'estimator' (a factory in your code), not both",
                                      {"at": "estimator", "hint": "remove one of them"})
        return self


class Split(Strict):
    """How rows are split into training and test sets."""

    by: Literal["time", "random"] = Field("time", description="time: the latest rows are the "
                                          "test set; random: a seeded shuffle.")
    test_fraction: float = Field(0.2, gt=0, lt=1, description="Fraction of rows held out.")


class Training(Strict):
    """When and how the training pipeline runs."""

    schedule: Schedule | None = Field(None, description="When the training flow runs: a cron "
                                      "line or @daily; none means on demand only.")
    split: Split = Field(default_factory=Split, description="Train/test split.")
    retries: int = Field(2, ge=0, le=10, description="Retries of a failed pipeline task.")
    retry_delay_seconds: int = Field(10, ge=0, le=3600,
                                     description="Wait between retries.")
    timeout_minutes: int = Field(60, ge=1, le=24 * 60,
                                 description="Time limit of one pipeline task.")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Random seed for the split and the "
                      "estimator.")
    on_new_model: Literal["rollout", "register"] | None = Field(
        None, description="What a scheduled retrain does with a model that passes the gates "
        "(on data changed since the serving version trained; unchanged data makes no "
        "version): rollout (the local default): deploy's own stages, profile, skew check, "
        "SLO verification and the canary with the rollout's abort rules, then promote or roll "
        "back; register: the model is registered as a candidate that the next `mlstack "
        "deploy` rolls out without training again (on kubernetes and aws, the default and "
        "the only choice yet: no rollout engine is generated, so the service serves the "
        "promoted model from its next start).")


class Evaluation(Strict):
    """Metrics computed on the test set, and the gates a model must pass to be registered."""

    metrics: list[MetricName] = Field(min_length=1, description="Metrics to compute, e.g. auc, "
                                      "f1, rmse, ndcg@10.")
    gates: dict[MetricName, Gate] = Field(default_factory=dict, description="metric: "
                                          "comparison a model must pass, e.g. auc: '>= 0.80'.")


def _batching_shorthand(value: Any) -> Any:
    return {"mode": value} if isinstance(value, str) else value


class Batching(Strict):
    """Adaptive batching of prediction requests (BentoML)."""

    mode: Literal["auto", "fixed", "off"] = Field(
        "fixed", description="auto: derived from the p99 SLO; fixed: the sizes given here "
        "(a size left out is derived); off: no batching.")
    max_batch_size: int | None = Field(None, ge=1, le=4096,
                                       description="Largest batch the model is called with.")
    max_latency_ms: int | None = Field(None, ge=1, le=60000, description="Longest a request "
                                       "waits in the batcher (a hard budget).")

    @model_validator(mode="after")
    def _off_takes_no_sizes(self) -> Self:
        if self.mode == "off" and (self.max_batch_size or self.max_latency_ms):
            given = "max_batch_size" if self.max_batch_size else "max_latency_ms"
            raise PydanticCustomError("mls_conflict", "batching mode 'off' takes no {given}",
                                      {"given": given, "at": given})
        return self


class AbortRules(Strict):
    """When a canary step is judged failed and rolled back."""

    latency_p99_ms: Gate | None = Field(None, description="e.g. '> 50': abort when the new "
                                        "version's p99 latency (ms) exceeds it.")
    error_rate: Gate | None = Field(None, description="e.g. '> 0.01': abort when the new "
                                    "version's error rate exceeds it.")


class ShadowRules(Strict):
    """How a shadowed candidate is compared with the version serving: it gets a mirrored copy
    of every /predict and /rank request, its answers are logged but never returned."""

    min_agreement: Gate = Field(">= 0.95", description="Fraction of answers on which the "
                                "candidate agrees with the serving version (a score within "
                                "tolerance, the same label; for ranking the mean overlap of "
                                "the top 10) needed to promote it.")
    tolerance: float = Field(0.05, ge=0, description="Largest score difference counted as "
                             "agreeing.")
    min_requests: int = Field(100, ge=1, le=1_000_000, description="Mirrored requests the "
                              "comparison needs before it is judged.")


class FeedbackTest(Strict):
    """A test on the outcomes sent back to POST /feedback, valid however often it is looked
    at (mSPRT, docs/experiments.md): the fields an A/B experiment and a canary's feedback
    guard share."""

    baseline: float = Field(gt=0, description="The metric's expected value on the version "
                            "serving (e.g. a conversion rate of 0.1): with minimum_lift it sets "
                            "the test's mixing scale tau, fixed before any data.")
    metric: Literal["conversion", "mean"] = Field("conversion", description="conversion: "
                                                  "outcomes are 0/1 (or true/false); mean: "
                                                  "numeric outcomes.")
    higher_is_better: bool = Field(True, description="Which direction of the metric is "
                                   "better.")
    alpha: float = Field(0.05, gt=0, lt=0.5, description="The chance of a false decision "
                         "the test allows, at any number of looks.")
    minimum_lift: float = Field(0.1, gt=0, description="The smallest relative change worth "
                                "detecting (tau = minimum_lift x baseline).")
    min_samples: int = Field(200, ge=1, description="Outcomes per arm before any decision.")
    max_samples: int = Field(100_000, ge=1, description="Outcomes per arm after which an "
                             "undecided test ends.")
    max_duration: Duration = Field("14d", description="How long an undecided test runs "
                                   "before it ends.")


class AbTest(FeedbackTest):
    """An A/B experiment: entities split by a hash of their key (sticky), each arm judged on
    the outcomes sent back to POST /feedback, by a test that stays valid however often it is
    looked at (mSPRT, docs/experiments.md); the keeper promotes or aborts by its rule. Ended
    undecided (max_samples, max_duration), the serving version is kept."""

    split: int = Field(50, ge=1, le=99, description="Percent of entities sent to the "
                       "candidate.")
    key: str | None = Field(None, description="The request field the assignment hashes "
                            "(default: the model entity's first join key).")


class CanaryFeedback(FeedbackTest):
    """A canary judged on feedback too (the seed's click-through rate): its last step below
    100% is held while the keeper looks at each version's outcomes by the same always-valid
    test as an A/B experiment. Worse by the test: rolled back. Better: promoted. Ended
    undecided with min_samples in each arm (no harm found): promoted; with fewer: rolled
    back, too little feedback to judge."""

    max_duration: Duration = Field("1d", description="How long the held step waits for the "
                                   "test before it ends (the seed watches a canary 24 hours).")


class Rollout(Strict):
    """How a new model version takes traffic."""

    strategy: Literal["canary", "all_at_once", "shadow", "ab"] = Field(
        "canary", description="canary: traffic moves in steps; all_at_once: one switch; "
        "shadow: the candidate answers a mirrored copy of the traffic and is promoted when it "
        "agrees (shadow); ab: an A/B experiment decides (ab).")
    steps: list[Annotated[int, Field(ge=1, le=100)]] = Field(
        default_factory=lambda: [100], min_length=1,
        description="Percent of traffic at each step, increasing, ending at 100.")
    step_seconds: int = Field(5, ge=1, le=86400, description="How long each step is observed.")
    abort_if: AbortRules = Field(default_factory=AbortRules,
                                 description="Rules that roll a step back (canary) or drop a "
                                 "shadowed candidate (shadow).")
    shadow: ShadowRules | None = Field(None, description="The shadow comparison (strategy "
                                       "shadow; defaults when left out).")
    ab: AbTest | None = Field(None, description="The A/B experiment (strategy ab; required "
                              "there).")
    feedback: CanaryFeedback | None = Field(None, description="Judge the canary on outcomes "
                                            "sent to POST /feedback too: its last step below "
                                            "100% is held until the test decides (strategy "
                                            "canary).")


class Serving(Strict):
    """The prediction service."""

    protocol: Literal["rest", "grpc"] = Field("rest", description="Request protocol (rest "
                                              "supported).")
    batching: Annotated[Batching, BeforeValidator(_batching_shorthand,
                                                  json_schema_input_type=Union[
                                                      Literal["auto", "off"], Batching])] = (
        Field(default_factory=lambda: Batching(mode="auto"),
              description="auto, off, or a mapping with mode and sizes."))
    rollout: Rollout = Field(default_factory=Rollout, description="How new versions roll out.")
    timeout_ms: int = Field(1000, ge=1, le=600000,
                            description="Request timeout of the service.")
    runtime: Literal["auto", "onnx", "native"] = Field(
        "auto", description="How the model runs in the service. auto: compiled to ONNX and "
        "run by ONNX Runtime when the export matches the native model on the evaluation set "
        "(else the native model, and deploy says why); onnx: the same, but a failed export "
        "fails the training run; native: the scikit-learn model, never exported.")
    max_request_rows: int = Field(256, ge=1, le=100000, description="Most rows one "
                                  "prediction request may carry; more are refused with HTTP 413.")


class Latency(Strict):
    """Latency objectives of one prediction request, measured at the service."""

    p50_ms: float | None = Field(None, gt=0, description="Median latency (ms).")
    p95_ms: float | None = Field(None, gt=0, description="95th percentile latency (ms).")
    p99_ms: float | None = Field(None, gt=0, description="99th percentile latency (ms); "
                                 "batching is derived from it.")


class Slos(Strict):
    """Service-level objectives; lint checks them for consistency and deploy verifies them."""

    latency: Latency = Field(default_factory=Latency, description="Latency percentiles.")
    throughput_rps: float | None = Field(None, gt=0, description="Requests per second the "
                                         "service must sustain; replicas are derived from it.")
    availability: float | None = Field(None, gt=0, lt=100, description="Percent of successful "
                                       "requests, e.g. 99.9.")
    error_rate: float | None = Field(None, ge=0, le=1,
                                     description="Largest fraction of failed requests.")
    quality: dict[MetricName, Gate] = Field(default_factory=dict, description="Model quality "
                                            "objectives on evaluated metrics, e.g. auc: '>= 0.8'.")
    feature_freshness: Duration | None = Field(None, description="Oldest a served feature value "
                                               "may be; sets the materialization interval.")


class Drift(Strict):
    """Feature drift detection between training data and recent data."""

    method: Literal["psi", "ks"] = Field("psi", description="psi: population stability index; "
                                         "ks: Kolmogorov-Smirnov statistic.")
    threshold: float = Field(0.2, gt=0, description="Drift above this raises an alert.")
    features: list[FeatureRef] | None = Field(None, description="Model features to watch "
                                              "(default: all).")


class Alert(Strict):
    """Where alerts are delivered: one Alertmanager receiver (monitoring/alertmanager.yml).
    Secrets (Slack webhook URL, PagerDuty routing key, SMTP password, webhook bearer token)
    never sit in the spec: they are read at run time from `secret_file`."""

    channel: Literal["slack", "email", "pagerduty", "webhook"] = Field(
        description="Delivery channel.")
    to: str | None = Field(None, min_length=1, max_length=500, description="slack: the "
                           "'#channel' or '@user'; email: the address; webhook: the http(s) "
                           "URL. pagerduty takes none (its routing key is in secret_file).")
    severity: list[Literal["page", "ticket"]] = Field(
        default_factory=lambda: ["page", "ticket"],  # type: ignore[arg-type]  # list[str]
        min_length=1, description="Which alerts "
        "this receiver gets, by the generated rules' severity label: page (fast error-budget "
        "burn, stale features) or ticket (slow burn, drift, model age).")
    secret_file: str | None = Field(None, min_length=2, max_length=300, description="Absolute "
                                    "path, on the Alertmanager host, of the file holding the "
                                    "secret: slack's incoming-webhook URL (default "
                                    "/etc/alertmanager/secrets/slack-api-url), pagerduty's "
                                    "Events v2 routing key (default /etc/alertmanager/secrets/"
                                    "pagerduty-routing-key), email's SMTP password (with "
                                    "username), webhook's bearer token (optional).")
    smarthost: str | None = Field(None, min_length=3, max_length=300, description="email only: "
                                  "the SMTP server as host:port.")
    sender: str | None = Field(None, min_length=3, max_length=300, description="email only: "
                               "the From address.")
    username: str | None = Field(None, min_length=1, max_length=200, description="email only: "
                                 "the SMTP login; its password is read from secret_file.")


class PredictionLog(Strict):
    """The log of what the service answered: every /predict and /rank answer with its request
    id, time, version, keys, request fields, the features as served and the output; POST
    /feedback joins outcomes to it."""

    enabled: bool | None = Field(None, description="Log every answer (never blocking or "
                                 "failing a request: a full queue drops and counts). Default: "
                                 "on for the local target; not supported yet on kubernetes "
                                 "and aws.")
    retention: Duration = Field("7d", description="How long an hour's log is kept.")
    queue: int = Field(10000, ge=100, le=1_000_000, description="Requests one worker holds "
                       "for its writer; beyond it a request's log is dropped and counted.")


class Monitoring(Strict):
    """What is watched after deploy."""

    drift: Drift | None = Field(None, description="Feature drift detection.")
    model_staleness: Duration | None = Field(None, description="Oldest the served model may "
                                             "be before an alert.")
    alerts: list[Alert] = Field(default_factory=list, description="Alert delivery.")
    prediction_log: PredictionLog = Field(default_factory=PredictionLog,
                                          description="The log of every answer, and feedback.")


class Replicas(Strict):
    """Serving replica bounds (autoscaling between them on cluster targets)."""

    min: int = Field(1, ge=0, le=1000, description="Fewest replicas.")
    max: int = Field(1, ge=1, le=1000, description="Most replicas.")

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.min > self.max:
            raise PydanticCustomError("mls_replicas", "replicas.min ({low}) is above "
                                      "replicas.max ({high})",
                                      {"low": self.min, "high": self.max, "at": "min"})
        return self


class ServingResources(Strict):
    """Resources of one serving replica."""

    cpu: float = Field(1, gt=0, le=256, description="CPU cores.")
    memory: Memory = Field("2Gi", description="Memory, e.g. '2Gi'.")
    gpu: int = Field(0, ge=0, le=16, description="GPUs.")
    gpu_type: GpuType | None = Field(None, description="GPU type, e.g. nvidia-l4.")
    replicas: Replicas = Field(default_factory=Replicas, description="Replica bounds.")


class TrainingResources(Strict):
    """Resources of the training job."""

    cpu: float = Field(2, gt=0, le=512, description="CPU cores.")
    memory: Memory = Field("4Gi", description="Memory, e.g. '4Gi'.")
    gpu: Annotated[int, Field(ge=0, le=16)] | Literal["preferred"] = Field(
        0, description="GPUs the training job needs: xgboost, lightgbm (its OpenCL GPU "
        "build: an OpenCL driver must be installed) and pytorch train on a CUDA device, and "
        "the flow stops before training when none is visible; 'preferred': one GPU when "
        "present, else the CPU (the flow says so). sklearn trains on the CPU.")
    gpu_type: GpuType | None = Field(None, description="GPU type, e.g. nvidia-l4.")
    spot: bool = Field(False, description="Run on spot/preemptible capacity.")


class ComputeWorker(Strict):
    """Resources of one worker node of the compute cluster."""

    cpu: float = Field(1, gt=0, le=512, description="CPU cores of one worker node.")
    memory: Memory = Field("2Gi", description="Memory of one worker node, e.g. '8Gi'. The "
                           "local target holds each worker process to it.")


class Compute(Strict):
    """Where the offline steps run: features, the training set and training. Without this
    section every step runs in the flow's own process."""

    engine: Literal["ray"] = Field(description="ray: Feast's Ray offline store and compute "
                                   "engine, Prefect's RayTaskRunner and Ray Train.")
    address: RayAddress = Field("local", description="local: the local target starts a Ray "
                                "head and the workers on this machine (cluster targets run a "
                                "KubeRay cluster); ray://host:port joins a running cluster.")
    workers: int = Field(2, ge=1, le=256, description="Worker nodes (the most a cluster "
                         "target autoscales to; Ray Train's data-parallel workers).")
    worker: ComputeWorker = Field(default_factory=ComputeWorker,
                                  description="Resources of one worker node.")


class Target(Strict):
    """Where the system runs."""

    kind: Literal["local", "kubernetes", "aws", "gcp"] = Field(
        "local", description="local: this machine, no servers; kubernetes/aws/gcp: clusters.")
    region: Region | None = Field(None, description="Cloud region (aws, gcp).")
    namespace: Namespace | None = Field(None, description="Kubernetes namespace (default: the "
                                        "system name).")
    online_store: Literal["auto", "sqlite", "redis", "dynamodb"] = Field(
        "auto", description="Online feature store; auto picks the target's default.")
    serving: ServingResources = Field(default_factory=ServingResources,
                                      description="Serving resources.")
    training: TrainingResources = Field(default_factory=TrainingResources,
                                        description="Training resources.")
    compute: Compute | None = Field(None, description="A distributed engine for the offline "
                                    "steps; none: one process.")
    orchestrator: Literal["prefect", "airflow", "kubeflow"] = Field(
        "prefect", description="What runs the pipelines: prefect (flows and deployments), "
        "kubeflow (a Kubeflow Pipelines pipeline; kubernetes target), airflow (TaskFlow "
        "DAGs; locally deploy runs them under the project's own Airflow, on kubernetes the "
        "stack deploys Airflow's official Helm chart).")


class SystemSpec(Strict):
    """An mlstack system: everything from data sources to SLOs and the deployment target."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False,
                              title="mlstack system spec")

    api_version: Literal["mlstack/v1"] = Field(alias="apiVersion",
                                               description="Spec language version.")
    kind: Literal["System"] = Field(description="Always System.")
    metadata: Metadata = Field(description="Name, owner, description.")
    sources: list[Source] = Field(min_length=1, description="Where raw data lives.")
    entities: list[Entity] = Field(min_length=1, description="Things features describe.")
    features: Features = Field(description="Feature views and transforms.")
    label: Label = Field(description="What the model predicts.")
    model: Model = Field(description="The model.")
    training: Training = Field(default_factory=Training, description="Training pipeline.")
    evaluation: Evaluation = Field(description="Metrics and quality gates.")
    serving: Serving = Field(default_factory=Serving, description="Prediction service.")
    slos: Slos = Field(default_factory=Slos, description="Service-level objectives.")
    monitoring: Monitoring = Field(default_factory=Monitoring, description="Monitoring.")
    target: Target = Field(default_factory=Target, description="Deployment target.")
