"""Monthly cost estimate and infra resource list of a system, for `mlstack plan`.

Pure functions of the IR and the versioned price table (mlstack/data/prices-<version>.json):
instance types and node counts at the replica range's min and max, scheduled training runs,
storage and the managed services the stack creates. Always labelled an estimate.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlstack.codegen.backends.infra_model import (
    infra_resources,
    online_views,
    runs_ray_cluster,
    slo_alarms,
)
from mlstack.codegen.backends.infra_sizing import (
    PRICE_TABLE,
    price_table,
    ray_worker_nodes,
    serving_nodes,
    training_nodes,
)
from mlstack.frontend.ir.derive import schedule_interval_seconds
from mlstack.frontend.ir.nodes import SystemIR

__all__ = ["CostEstimate", "CostLine", "estimate_monthly_cost", "infra_resources"]
MONTH_SECONDS = 30 * 86400


@dataclass(frozen=True)
class CostLine:
    item: str
    detail: str
    monthly_min_usd: float
    monthly_max_usd: float


@dataclass(frozen=True)
class CostEstimate:
    target: str
    lines: tuple[CostLine, ...]
    price_table: str  # the table's version, e.g. "2026-11"
    currency: str = "USD"
    label: str = "estimate"
    notes: tuple[str, ...] = ()

    @property
    def monthly_min_usd(self) -> float:
        return round(sum(line.monthly_min_usd for line in self.lines), 2)

    @property
    def monthly_max_usd(self) -> float:
        return round(sum(line.monthly_max_usd for line in self.lines), 2)


def _line(item: str, detail: str, low: float, high: float | None = None) -> CostLine:
    return CostLine(item, detail, round(low, 2), round(low if high is None else high, 2))


def training_runs_per_month(system: SystemIR) -> float:
    interval = schedule_interval_seconds(system.training.schedule)
    return MONTH_SECONDS / interval if interval else 1.0


def _compute_lines(system: SystemIR, table: dict) -> list[CostLine]:
    hours = table["hours_per_month"]
    serving, training = serving_nodes(system), training_nodes(system)
    runs = training_runs_per_month(system)
    run_hours = table["assumptions"]["training_hours_per_run"]
    lines = [
        _line("serving nodes", f"{serving.min_nodes}-{serving.max_nodes} x "
              f"{serving.instance_type} on demand (one replica per node)",
              serving.hourly_usd * hours * serving.min_nodes,
              serving.hourly_usd * hours * serving.max_nodes),
        _line("training nodes", f"{training.instance_type}{' spot' if training.spot else ''}, "
              f"{runs:g} runs/month x {run_hours} h, scaled to zero between runs",
              training.hourly_usd * run_hours * runs)]
    if runs_ray_cluster(system):
        ray = ray_worker_nodes(system)
        # the autoscaler adds workers while a run has Ray work and removes them when idle:
        # from none (nothing asked) to every worker busy for the whole of each run
        lines.append(_line("ray worker nodes", f"0-{ray.max_nodes} x {ray.instance_type} on "
                           f"demand, {runs:g} runs/month x {run_hours} h, scaled to zero "
                           "between runs", 0.0,
                           ray.hourly_usd * run_hours * runs * ray.max_nodes))
    return lines


def estimate_monthly_cost(system: SystemIR) -> CostEstimate:
    table = price_table()
    kind = system.target.kind
    version = table["version"]
    if kind not in ("aws", "kubernetes"):
        return CostEstimate(target=kind, lines=(), price_table=version,
                            notes=(f"the {kind} target runs on this machine: no cloud cost",))
    lines = _compute_lines(system, table)
    notes = [f"prices from {PRICE_TABLE}: {table['source']}"]
    if kind == "kubernetes":
        notes.append(table["kubernetes"]["note"])
        return CostEstimate(target=kind, lines=tuple(lines), price_table=version,
                            notes=tuple(notes))
    aws, storage = table["aws"], table["assumptions"]["storage_gb"]
    hours = table["hours_per_month"]
    lines.append(_line("EKS control plane", "1 cluster", aws["eks_cluster_hourly_usd"] * hours))
    s3_gb = storage["offline_store"] + storage["artifacts"]
    lines.append(_line("S3", f"{s3_gb} GB (offline store + artifacts, assumed)",
                       s3_gb * aws["s3_gb_month_usd"]))
    lines.append(_line("ECR", f"{storage['images']} GB of images (assumed)",
                       storage["images"] * aws["ecr_gb_month_usd"]))
    if system.target.online_store == "dynamodb":
        views = len(online_views(system))
        rps = (system.slos.throughput_rps or 0) * table["assumptions"][
            "requests_per_second_utilisation"]
        reads = rps * MONTH_SECONDS * views / 1e6
        lines.append(_line("DynamoDB", f"{views} tables, {storage['online_store']} GB, "
                           f"{reads:,.0f} M reads/month at half the throughput SLO",
                           storage["online_store"] * aws["dynamodb_gb_month_usd"]
                           + reads * aws["dynamodb_read_million_usd"]))
        notes.append("DynamoDB writes (materialization) depend on data volume: not included")
    else:
        node = aws["elasticache_node"]
        lines.append(_line("ElastiCache Redis", f"2 x {node['type']} (primary + replica)",
                           2 * node["hourly_usd"] * hours))
    alarms = len(slo_alarms(system))
    lines.append(_line("CloudWatch alarms", f"{alarms} SLO alarms",
                       alarms * aws["cloudwatch_alarm_month_usd"]))
    lines.append(_line("KMS", "1 customer managed key", aws["kms_key_month_usd"]))
    notes.append("not included: data transfer, NAT, load balancers, CloudWatch logs volume")
    return CostEstimate(target=kind, lines=tuple(lines), price_table=version, notes=tuple(notes))
