"""The system spec as users write it (apiVersion mlstack/v1).

These models mirror the YAML: every key users may write, nothing they may not (unknown
keys are errors). Cross-references are *not* resolved here; `mlstack.ir.resolve` does that,
and `mlstack.checks` reports what does not fit.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from mlstack.expr import ExprError, parse_expr
from mlstack.spec.types import (
    Column,
    DType,
    Duration,
    FeatureRef,
    Gate,
    Memory,
    Name,
    RelativePath,
    Schedule,
    SystemName,
)

API_VERSION = "mlstack/v1"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=False, frozen=True)


class Metadata(Strict):
    name: SystemName = Field(description="System name; used for resource and project names.")
    owner: str | None = Field(None, max_length=100, description="Owning team.")
    description: str | None = Field(None, max_length=2000)
    tags: dict[Name, Annotated[str, Field(max_length=200)]] = Field(default_factory=dict)


class Checks(Strict):
    """Data-quality checks run on the source between ingest and training."""

    not_null: list[Column] = Field(default_factory=list)
    unique: list[Column] = Field(default_factory=list, description="Columns (together) unique.")
    ranges: dict[Column, tuple[float, float]] = Field(
        default_factory=dict, description="Inclusive [min, max] per numeric column.")
    allowed_values: dict[Column, list[str | int | float | bool]] = Field(default_factory=dict)
    min_rows: int | None = Field(None, ge=0)
    max_null_fraction: float | None = Field(None, ge=0, le=1)


class SourceBase(Strict):
    name: Name
    timestamp_field: Column = Field(description="Event time of each row.")
    created_timestamp_field: Column | None = None
    columns: dict[Column, DType] = Field(description="Declared columns and their types.")
    checks: Checks = Field(default_factory=Checks)
    description: str | None = Field(None, max_length=2000)


class FileSource(SourceBase):
    kind: Literal["parquet", "csv"]
    path: RelativePath = Field(description="Path relative to the spec's folder.")


class WarehouseSource(SourceBase):
    kind: Literal["postgres", "bigquery", "snowflake", "redshift"]
    table: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_.]{0,200}$")
    query: str | None = Field(None, max_length=20000)


class StreamSource(SourceBase):
    kind: Literal["kafka", "kinesis"]
    topic: str = Field(pattern=r"^[A-Za-z0-9._-]{1,249}$")
    bootstrap_servers: str | None = Field(None, max_length=1000)
    batch_source: Name | None = Field(None, description="A file/warehouse source holding history.")


Source = Annotated[Union[FileSource, WarehouseSource, StreamSource], Field(discriminator="kind")]


class Entity(Strict):
    name: Name
    join_keys: list[Column] = Field(min_length=1, max_length=1,
                                    description="One join key per entity (as in Feast).")
    description: str | None = Field(None, max_length=2000)


class FeatureView(Strict):
    name: Name
    entity: Name | list[Name] = Field(description="The entity (or entities) the view is keyed by.")
    source: Name
    ttl: Duration | None = Field(None, description="How long a value stays valid; derived from "
                                 "feature_freshness and the schedule when left out.")
    fields: list[Column] = Field(min_length=1)
    online: bool = True
    offline: bool = True
    description: str | None = Field(None, max_length=2000)


class Transform(Strict):
    name: Name
    expr: str = Field(max_length=500, description="Safe expression over view fields.")
    dtype: Literal["float64", "int64", "bool"] = "float64"
    description: str | None = Field(None, max_length=2000)

    @field_validator("expr")
    @classmethod
    def _parse(cls, value: str) -> str:
        try:
            parse_expr(value)
        except ExprError as exc:
            raise PydanticCustomError(
                "mls_expr", "{message}", {"message": exc.message, "column": exc.column}
            ) from None
        return value


class Features(Strict):
    views: list[FeatureView] = Field(min_length=1)
    transforms: list[Transform] = Field(default_factory=list)


class Label(Strict):
    source: Name
    field: Column


Task = Literal["binary_classification", "multiclass_classification", "regression", "ranking"]
Framework = Literal["sklearn", "lightgbm", "xgboost", "onnx"]
ParamValue = Union[bool, int, float, str, None]


class Model(Strict):
    task: Task
    framework: Framework = "sklearn"
    algorithm: Name
    params: dict[Name, ParamValue] = Field(default_factory=dict)
    features: list[FeatureRef] = Field(min_length=1)
    group_by: Column | None = Field(None, description="Ranking only: the query/group key column "
                                    "of the label source.")


class Split(Strict):
    by: Literal["time", "random"] = "time"
    test_fraction: float = Field(0.2, gt=0, lt=1)


class Training(Strict):
    schedule: Schedule | None = None
    split: Split = Field(default_factory=Split)
    retries: int = Field(2, ge=0, le=10)
    retry_delay_seconds: int = Field(10, ge=0, le=3600)
    timeout_minutes: int = Field(60, ge=1, le=24 * 60)
    seed: int = Field(0, ge=0, le=2**31 - 1)


class Evaluation(Strict):
    metrics: list[Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*(@[1-9][0-9]{0,2})?$")]] = (
        Field(min_length=1))
    gates: dict[str, Gate] = Field(default_factory=dict)


def _batching_shorthand(value: Any) -> Any:
    return {"mode": value} if isinstance(value, str) else value


class Batching(Strict):
    mode: Literal["auto", "fixed", "off"] = "fixed"
    max_batch_size: int | None = Field(None, ge=1, le=4096)
    max_latency_ms: int | None = Field(None, ge=1, le=60000)


class AbortRules(Strict):
    latency_p99_ms: Gate | None = None
    error_rate: Gate | None = None


class Rollout(Strict):
    strategy: Literal["canary", "all_at_once"] = "canary"
    steps: list[Annotated[int, Field(ge=1, le=100)]] = Field(default_factory=lambda: [100])
    step_seconds: int = Field(5, ge=1, le=86400, description="How long each step is observed.")
    abort_if: AbortRules = Field(default_factory=AbortRules)


class Serving(Strict):
    protocol: Literal["rest", "grpc"] = "rest"
    batching: Annotated[Batching, BeforeValidator(_batching_shorthand,
                                                  json_schema_input_type=Union[
                                                      Literal["auto", "off"], Batching])] = (
        Field(default_factory=lambda: Batching(mode="auto")))
    rollout: Rollout = Field(default_factory=Rollout)
    timeout_ms: int = Field(1000, ge=1, le=600000)


class Latency(Strict):
    p50_ms: float | None = Field(None, gt=0)
    p95_ms: float | None = Field(None, gt=0)
    p99_ms: float | None = Field(None, gt=0)


class Slos(Strict):
    latency: Latency = Field(default_factory=Latency)
    throughput_rps: float | None = Field(None, gt=0)
    availability: float | None = Field(None, gt=0, lt=100, description="Percent, e.g. 99.9.")
    error_rate: float | None = Field(None, ge=0, le=1)
    quality: dict[str, Gate] = Field(default_factory=dict)
    feature_freshness: Duration | None = None


class Drift(Strict):
    method: Literal["psi", "ks"] = "psi"
    threshold: float = Field(0.2, gt=0)
    features: list[FeatureRef] | None = None


class Alert(Strict):
    channel: Literal["slack", "email", "pagerduty", "webhook"]
    to: str = Field(min_length=1, max_length=500)


class Monitoring(Strict):
    drift: Drift | None = None
    model_staleness: Duration | None = None
    alerts: list[Alert] = Field(default_factory=list)


class Replicas(Strict):
    min: int = Field(1, ge=0, le=1000)
    max: int = Field(1, ge=1, le=1000)


class ServingResources(Strict):
    cpu: float = Field(1, gt=0, le=256)
    memory: Memory = "2Gi"
    gpu: int = Field(0, ge=0, le=16)
    gpu_type: str | None = Field(None, pattern=r"^[a-z0-9][a-z0-9.-]{0,62}$")
    replicas: Replicas = Field(default_factory=Replicas)


class TrainingResources(Strict):
    cpu: float = Field(2, gt=0, le=512)
    memory: Memory = "4Gi"
    gpu: int = Field(0, ge=0, le=16)
    gpu_type: str | None = Field(None, pattern=r"^[a-z0-9][a-z0-9.-]{0,62}$")
    spot: bool = False


class Target(Strict):
    kind: Literal["local", "kubernetes", "aws", "gcp"] = "local"
    region: str | None = Field(None, pattern=r"^[a-z]{2}(-[a-z]+)+-[0-9]$")
    namespace: str | None = Field(None, pattern=r"^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")
    online_store: Literal["auto", "sqlite", "redis", "dynamodb"] = "auto"
    serving: ServingResources = Field(default_factory=ServingResources)
    training: TrainingResources = Field(default_factory=TrainingResources)


class SystemSpec(Strict):
    """An mlstack system: everything from data sources to SLOs and the deployment target."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="mlstack system spec")

    api_version: Literal["mlstack/v1"] = Field(alias="apiVersion")
    kind: Literal["System"]
    metadata: Metadata
    sources: list[Source] = Field(min_length=1)
    entities: list[Entity] = Field(min_length=1)
    features: Features
    label: Label
    model: Model
    training: Training = Field(default_factory=Training)
    evaluation: Evaluation
    serving: Serving = Field(default_factory=Serving)
    slos: Slos = Field(default_factory=Slos)
    monitoring: Monitoring = Field(default_factory=Monitoring)
    target: Target = Field(default_factory=Target)
