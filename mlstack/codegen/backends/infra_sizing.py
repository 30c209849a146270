"""Node sizing for cluster and cloud targets, from the versioned price table.

One serving pod per node (its requests must fit the node's allocatable CPU and memory after
the kubelet/system overhead), so the serving node group scales with the replica range. The
training node group runs one training job at a time and scales from zero. The Ray worker node
group (target.compute on aws) holds one Ray worker pod per node and scales from zero to the
spec's workers, as the RayCluster's autoscaler asks. The price table and
the rule that fits a pod to an instance type are the front end's (`frontend/ir/sizing.py`), so
lint reports a pod no node can hold (MLS507) before anything is sized.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlstack.frontend.ir.nodes import ResourcesNode, SystemIR
from mlstack.frontend.ir.sizing import PRICE_TABLE, SizingError, pick_instance, price_table

__all__ = ["PRICE_TABLE", "NodeGroupSize", "SizingError", "pick_instance", "price_table",
           "ray_worker_nodes", "serving_nodes", "training_nodes"]


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


def ray_worker_nodes(system: SystemIR) -> NodeGroupSize:
    c = system.target.compute
    if c is None:
        raise ValueError(f"system {system.name} has no target.compute")
    return _size(c.worker, 0, c.workers, spot=False)
