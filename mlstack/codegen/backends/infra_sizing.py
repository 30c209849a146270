"""Node sizing for cluster and cloud targets, from the versioned price table.

One serving pod per node (its requests must fit the node's allocatable CPU and memory after
the kubelet/system overhead), so the serving node group scales with the replica range. The
training node group runs one training job at a time and scales from zero.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from importlib import resources

from mlstack.frontend.ir.nodes import ResourcesNode, SystemIR

PRICE_TABLE = "prices-2026-11.json"


@functools.lru_cache(maxsize=1)
def price_table() -> dict:
    return json.loads(resources.files("mlstack.data").joinpath(PRICE_TABLE).read_text("utf-8"))


class SizingError(ValueError):
    """No instance type in the price table fits the requested resources."""


@dataclass(frozen=True)
class NodeGroupSize:
    instance_type: str
    vcpu: int
    memory_gib: int
    gpu: int
    gpu_type: str | None
    spot: bool
    min_nodes: int
    max_nodes: int
    hourly_usd: float


def pick_instance(res: ResourcesNode) -> str:
    """The cheapest instance type that fits one pod of `res` (GPU type must match if asked)."""
    table = price_table()
    assumptions = table["assumptions"]
    need_cpu = res.cpu + assumptions["node_overhead_vcpu"]
    need_mem = res.memory_mib / 1024 + assumptions["node_overhead_memory_gib"]
    fits = []
    for name, inst in sorted(table["aws"]["instances"].items()):
        if inst["vcpu"] < need_cpu or inst["memory_gib"] < need_mem:
            continue
        if res.gpu:
            if inst["gpu"] < res.gpu or (res.gpu_type and inst["gpu_type"] != res.gpu_type):
                continue
        elif inst["gpu"]:
            continue
        fits.append((inst["hourly_usd"], name))
    if not fits:
        gpu = f", {res.gpu} x {res.gpu_type or 'any GPU'}" if res.gpu else ""
        raise SizingError(f"no instance type in price table {PRICE_TABLE} fits "
                          f"{res.cpu:g} CPU, {res.memory_mib} MiB{gpu}")
    return min(fits)[1]


def _size(res: ResourcesNode, min_nodes: int, max_nodes: int, spot: bool) -> NodeGroupSize:
    name = pick_instance(res)
    inst = price_table()["aws"]["instances"][name]
    return NodeGroupSize(instance_type=name, vcpu=inst["vcpu"], memory_gib=inst["memory_gib"],
                         gpu=inst["gpu"], gpu_type=inst["gpu_type"], spot=spot,
                         min_nodes=min_nodes, max_nodes=max_nodes,
                         hourly_usd=inst["spot_hourly_usd" if spot else "hourly_usd"])


def serving_nodes(system: SystemIR) -> NodeGroupSize:
    t = system.target
    return _size(t.serving, max(1, t.replicas_min), max(1, t.replicas_max), spot=False)


def training_nodes(system: SystemIR) -> NodeGroupSize:
    t = system.target
    return _size(t.training, 0, 1, spot=t.training.spot)
