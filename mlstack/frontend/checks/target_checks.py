"""Target checks: what the chosen target can run, and what mlstack does not support yet."""

from __future__ import annotations

from collections.abc import Iterator

from mlstack.diagnostics.diagnostic import Diagnostic, Severity
from mlstack.frontend.checks import CheckContext, node_path
from mlstack.frontend.ir.catalog import GPU_FRAMEWORKS
from mlstack.frontend.ir.sizing import SIZED_TARGETS, sizing_problem

ONLINE_STORES = {"local": ("sqlite",), "kubernetes": ("redis",), "aws": ("dynamodb", "redis"),
                 "gcp": ("redis",)}


def _a(word: str) -> str:
    return ("an " if word[:1] in "aeiou" else "a ") + word


def check_target(ctx: CheckContext) -> Iterator[Diagnostic]:
    s = ctx.system
    t = s.target
    if t.kind == "local":
        yield from _local_limits(ctx)
    elif t.kind == "kubernetes" and ctx.written(("target", "region")):
        yield ctx.diag("MLS503", "region has no meaning on a kubernetes target (the cluster "
                       "is already somewhere)", ("target", "region"), "remove region",
                       severity=Severity.WARNING)
    if t.online_store not in ONLINE_STORES[t.kind]:
        yield ctx.diag("MLS505", f"online store '{t.online_store}' is not available on "
                       f"{_a(t.kind)} target", ("target", "online_store"),
                       "expected one of: " + ", ".join(ONLINE_STORES[t.kind]))
    if t.kind == "aws" and t.region is None:
        yield ctx.diag("MLS506", "an aws target needs a region", ("target", "kind"),
                       "add 'region: us-east-1' (or your region) to target")
    for part in ("serving", "training"):
        res = getattr(t, part)
        if res.gpu_type and not res.gpu:
            yield ctx.diag("MLS503", f"target.{part}.gpu_type is set but gpu is 0",
                           ("target", part, "gpu_type"), "set gpu: 1 or remove gpu_type",
                           severity=Severity.WARNING)
    if t.kind in SIZED_TARGETS:
        yield from _node_limits(ctx)
    raised = next((d for d in s.derivations if d.setting == "target.serving.replicas.max"), None)
    if raised is not None and ctx.written(("target", "serving", "replicas", "max")):
        yield ctx.diag("MLS502", f"the throughput SLO needs {raised.value} replicas, more than "
                       "replicas.max; mlstack raises the maximum to match",
                       ("target", "serving", "replicas", "max"),
                       f"set replicas.max to at least {raised.value}, or lower throughput_rps",
                       severity=Severity.WARNING)


def _node_limits(ctx: CheckContext) -> Iterator[Diagnostic]:
    """A serving, training or Ray worker pod must fit one node of the price table: codegen
    sizes the node groups with the same rule (`frontend/ir/sizing.py`)."""
    for part in ("serving", "training"):
        problem = sizing_problem(getattr(ctx.system.target, part))
        if problem is not None:
            yield ctx.diag("MLS507", f"target.{part}.{problem.field}: {problem.message}",
                           ("target", part, problem.field), problem.hint)
    compute = ctx.system.target.compute
    # a joined ray:// cluster is sized by whoever runs it; the target's own is sized here
    if compute is not None and compute.address == "local":
        problem = sizing_problem(compute.worker)
        if problem is not None:
            yield ctx.diag("MLS507", f"target.compute.worker.{problem.field}: "
                           f"{problem.message}", ("target", "compute", "worker", problem.field),
                           problem.hint)


def _local_limits(ctx: CheckContext) -> Iterator[Diagnostic]:
    t = ctx.system.target
    if t.serving.gpu:
        yield ctx.diag("MLS501", "target.serving.gpu: the local target serves on the CPU",
                       ("target", "serving", "gpu"), "set gpu: 0, or deploy to aws/kubernetes")
    framework = ctx.system.model.framework
    # a GPU framework trains on this machine's GPU when it has one (mlstack.runtime.devices)
    if t.training.gpu and framework not in GPU_FRAMEWORKS:
        yield ctx.diag("MLS501", f"target.training.gpu: {framework} trains on the CPU and "
                       "the local target reserves no GPU", ("target", "training", "gpu"),
                       "set gpu: 0, or use framework xgboost, lightgbm or pytorch")
    if t.training.spot:
        yield ctx.diag("MLS503", "spot capacity has no meaning on the local target",
                       ("target", "training", "spot"), "remove it or change target.kind",
                       severity=Severity.WARNING)
    for key in ("region", "namespace"):
        if ctx.written(("target", key)):
            yield ctx.diag("MLS503", f"{key} has no meaning on the local target",
                           ("target", key), f"remove {key} or change target.kind",
                           severity=Severity.WARNING)
    if ctx.written(("target", "serving", "replicas")):
        yield ctx.diag("MLS503", "the local target runs one service process; replicas have no "
                       "effect", ("target", "serving", "replicas"),
                       "remove replicas or change target.kind", severity=Severity.WARNING)
    for src in sorted(ctx.system.sources, key=node_path):
        if src.family != "file":
            yield ctx.diag("MLS504", f"source '{src.name}' ({src.kind}) cannot run on the "
                           "local target", node_path(src) + ("kind",),
                           "use a parquet or csv source locally")


def check_supported(ctx: CheckContext) -> Iterator[Diagnostic]:
    """Options the spec accepts that mlstack cannot carry out yet: refused, with location."""
    s = ctx.system
    if s.serving.protocol == "grpc":
        yield ctx.diag("MLS901", "serving.protocol grpc is not supported yet",
                       ("serving", "protocol"), "use protocol: rest")
    if s.target.kind == "gcp":
        yield ctx.diag("MLS901", "the gcp target is not supported yet", ("target", "kind"),
                       "use local, kubernetes or aws")
    if s.target.kind in ("kubernetes", "aws") and s.training.on_new_model == "rollout":
        yield ctx.diag("MLS901", f"training.on_new_model: rollout is not supported yet on the "
                       f"{s.target.kind} target: the generated stack has no rollout engine "
                       "(Argo Rollouts or Flagger), so a scheduled retrain there registers and "
                       "promotes the model, and the service serves it from its next start",
                       ("training", "on_new_model"), "use on_new_model: register (the default "
                       "there), and roll a new model out with mlstack deploy")
    if s.target.kind in ("kubernetes", "aws") and s.serving.rollout.strategy in ("shadow", "ab"):
        yield ctx.diag("MLS901", f"rollout strategy {s.serving.rollout.strategy} is not "
                       f"supported yet on the {s.target.kind} target: the mirror and the "
                       "sticky split are the local router's, and no mesh routing (Istio, "
                       "Argo Rollouts) is generated", ("serving", "rollout", "strategy"),
                       "use canary or all_at_once there, or deploy locally")
    if s.target.kind in ("kubernetes", "aws") and s.serving.rollout.feedback is not None:
        yield ctx.diag("MLS901", f"rollout.feedback is not supported yet on the "
                       f"{s.target.kind} target: the canary's hold and its look at the "
                       "outcomes are the local keeper's, and the stack has no prediction log",
                       ("serving", "rollout", "feedback"),
                       "remove rollout.feedback there (the canary is judged on latency and "
                       "errors), or deploy locally")
    if s.target.kind in ("kubernetes", "aws") and s.monitoring.prediction_log.enabled:
        yield ctx.diag("MLS901", f"monitoring.prediction_log is not supported yet on the "
                       f"{s.target.kind} target: the log would be written to each pod's own "
                       "disk, and no shared log store is generated",
                       ("monitoring", "prediction_log", "enabled"),
                       "leave prediction_log.enabled unset (off there) or deploy locally")
    for src in s.sources:
        if src.family == "warehouse" and s.target.kind != "local":  # local: MLS504
            yield ctx.diag("MLS901", f"warehouse source '{src.name}' ({src.kind}) is not "
                           "supported yet: the generated feature repo and pipelines read file "
                           "sources", node_path(src) + ("kind",), "export the table to parquet "
                           "and declare it as a file source")
        if src.family == "stream":
            yield ctx.diag("MLS901", f"stream source '{src.name}' ({src.kind}) is not supported "
                           "yet", node_path(src) + ("kind",), "declare its history as a file or "
                           "warehouse source")
    for view in s.feature_views:
        if not view.offline:
            yield ctx.diag("MLS901", f"offline: false (feature view '{view.name}') is not "
                           "supported yet: training reads every view offline",
                           node_path(view) + ("offline",), "remove offline: false")
    m = s.model
    if m.task == "ranking" and m.group_by is not None:
        # /rank's request is {group key, candidates, top_k} and its answer {group key,
        # ranked: [{candidate keys, score}]}: a key with one of those names cannot be told apart
        if m.group_by in ("candidates", "top_k", "ranked"):
            yield ctx.diag("MLS901", f"a ranking group key named '{m.group_by}' is not "
                           "supported yet: /rank's request uses that name itself",
                           ("model", "group_by"), "rename the column")
        for column in (*m.request_keys, *m.request_fields):
            if column.name == "score" and column.name != m.group_by:
                yield ctx.diag("MLS901", "a ranking candidate key or request field named "
                               "'score' is not supported yet: /rank answers each candidate's "
                               "score under that name", ("model", "group_by"),
                               "rename the column")
