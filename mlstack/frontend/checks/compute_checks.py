"""target.compute checks: what the Ray path can carry out, and what it cannot yet."""

from __future__ import annotations

from collections.abc import Iterator

from mlstack.diagnostics.diagnostic import Diagnostic
from mlstack.frontend.checks import CheckContext, node_path

# Each process of a local worker node is held to worker.memory (RLIMIT_DATA): a raylet takes
# about 280 MiB, a Ray worker that imported pandas, pyarrow and xgboost about 440 MiB
# (measured, mlstack.ops.local.ray_supervisor.LIMITED_ENV) before its task holds any data.
MIN_WORKER_MIB = 1024


def check_compute(ctx: CheckContext) -> Iterator[Diagnostic]:
    s = ctx.system
    c = s.target.compute
    if c is None:
        return
    at = ("target", "compute")
    if c.worker.memory_mib < MIN_WORKER_MIB:
        yield ctx.diag("MLS508", f"a compute worker with {c.worker.memory_mib} MiB is too small "
                       "for a Ray worker (about 440 MiB before its task holds any data)",
                       (*at, "worker", "memory"), f"give each worker at least {MIN_WORKER_MIB}Mi")
    for src in s.sources:
        if src.family == "file" and src.kind != "parquet":
            yield ctx.diag("MLS901", f"source '{src.name}' ({src.kind}) with target.compute is "
                           "not supported yet: Feast's Ray offline store reads parquet files",
                           (*node_path(src), "kind"), "convert the file to parquet")
    training = s.target.training
    if training.gpu or training.gpu_preferred:
        where = ("target", "training", "gpu")
        yield ctx.diag("MLS901", "a training GPU with target.compute is not supported yet: the "
                       "Ray workers mlstack starts and sizes have no GPUs", where,
                       "set target.training.gpu to 0, or remove target.compute")
