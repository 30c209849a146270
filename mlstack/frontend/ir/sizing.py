"""What one node can hold: the instance types of the versioned price table, and the one rule
that fits a pod's resources to them.

The front end owns the limits so lint reports a pod no node can hold (MLS507, with its
location) and codegen sizes node groups with the same rule (`codegen/backends/infra_sizing`):
a spec that lints clean always sizes.

One serving pod per node: its requests must fit the node's allocatable CPU and memory after
the kubelet/system overhead. A pod without GPUs runs on a node without GPUs; a pod with GPUs
on a node with at least that many of the asked type (any type when none is named).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

from mlstack.frontend.ir.nodes import ResourcesNode

PRICE_TABLE = "prices-2026-11.json"
SIZED_TARGETS = ("aws", "kubernetes")  # the targets whose pods are fitted to instance types


@functools.lru_cache(maxsize=1)
def price_table() -> dict[str, Any]:
    table: dict[str, Any] = json.loads(
        resources.files("mlstack.data").joinpath(PRICE_TABLE).read_text("utf-8"))
    return table


class SizingError(ValueError):
    """No instance type in the price table fits the requested resources (lint reports this
    as MLS507 first, so it reaches codegen only for an IR that was not linted)."""


@dataclass(frozen=True)
class SizingProblem:
    field: str  # the resources key the problem is reported at: cpu, memory, gpu or gpu_type
    message: str  # completes "target.<part>: ..."
    hint: str


def _overhead() -> tuple[float, float]:
    assumptions = price_table()["assumptions"]
    return assumptions["node_overhead_vcpu"], assumptions["node_overhead_memory_gib"]


def _gpu_matches(res: ResourcesNode, inst: dict[str, Any]) -> bool:
    if not res.gpu:
        return not inst["gpu"]
    return inst["gpu"] >= res.gpu and (not res.gpu_type or inst["gpu_type"] == res.gpu_type)


def _fits(res: ResourcesNode, inst: dict[str, Any]) -> bool:
    cpu, mem = _overhead()
    return (_gpu_matches(res, inst) and inst["vcpu"] >= res.cpu + cpu
            and inst["memory_gib"] >= res.memory_mib / 1024 + mem)


def pick_instance(res: ResourcesNode) -> str:
    """The cheapest instance type that fits one pod of `res` (GPU type must match if asked)."""
    fits: list[tuple[float, str]] = [(inst["hourly_usd"], name)
            for name, inst in sorted(price_table()["aws"]["instances"].items())
            if _fits(res, inst)]
    if not fits:
        gpu = f", {res.gpu} x {res.gpu_type or 'any GPU'}" if res.gpu else ""
        raise SizingError(f"no instance type in price table {PRICE_TABLE} fits "
                          f"{res.cpu:g} CPU, {res.memory_mib} MiB{gpu}")
    return min(fits)[1]


def _gib(mib: float) -> str:
    """Memory as the spec writes it: 512Mi, 4Gi, 4Ti."""
    if mib >= 1024 * 1024:
        return f"{mib / (1024 * 1024):g}Ti"
    return f"{mib / 1024:g}Gi" if mib >= 1024 else f"{mib:g}Mi"


def sizing_problem(res: ResourcesNode) -> SizingProblem | None:
    """Why no instance type fits one pod of `res`, said at the key to change; None if one
    does (exactly when `pick_instance` succeeds)."""
    instances = price_table()["aws"]["instances"]
    if any(_fits(res, inst) for inst in instances.values()):
        return None
    cpu_overhead, mem_overhead = _overhead()
    where = f"price table {PRICE_TABLE}"
    if res.gpu:
        types = sorted({i["gpu_type"] for i in instances.values() if i["gpu"]})
        if res.gpu_type and res.gpu_type not in types:
            return SizingProblem("gpu_type", f"no instance type in {where} has "
                                 f"'{res.gpu_type}' GPUs", "expected one of: " + ", ".join(types))
        most = max(i["gpu"] for i in instances.values()
                   if i["gpu"] and (not res.gpu_type or i["gpu_type"] == res.gpu_type))
        if res.gpu > most:
            kind = f"{res.gpu_type} " if res.gpu_type else ""
            return SizingProblem("gpu", f"{res.gpu} {kind}GPUs do not fit one node: the "
                                 f"largest instance type in {where} has {most}",
                                 f"ask for at most {most} GPUs per pod")
    candidates = [i for i in instances.values() if _gpu_matches(res, i)]
    max_cpu = max(i["vcpu"] for i in candidates) - cpu_overhead
    max_mib = (max(i["memory_gib"] for i in candidates) - mem_overhead) * 1024
    node = "GPU node" if res.gpu else "node without GPUs"
    if res.cpu > max_cpu:
        return SizingProblem("cpu", f"{res.cpu:g} CPU do not fit one node: the largest {node} "
                             f"in {where} leaves {max_cpu:g} CPU for a pod",
                             f"ask for at most {max_cpu:g} CPU")
    if res.memory_mib > max_mib:
        return SizingProblem("memory", f"{_gib(res.memory_mib)} of memory does not fit one "
                             f"node: the largest {node} in {where} leaves {_gib(max_mib)} for "
                             "a pod", f"ask for at most {_gib(max_mib)}")
    return SizingProblem("memory", f"{res.cpu:g} CPU with {_gib(res.memory_mib)} of memory fit "
                         f"no single {node} in {where}",
                         "lower cpu or memory (each fits some node, not both together)")
