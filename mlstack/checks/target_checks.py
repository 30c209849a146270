"""Target checks: what the chosen target can run, and what mlstack does not support yet."""

from __future__ import annotations

from mlstack.checks import CheckContext
from mlstack.diagnostics import Severity

ONLINE_STORES = {"local": ("sqlite",), "kubernetes": ("redis",), "aws": ("dynamodb", "redis"),
                 "gcp": ("redis",)}


def check_target(ctx: CheckContext):
    s = ctx.system
    t = s.target
    if t.kind == "local":
        for part in ("serving", "training"):
            if getattr(t, part).gpu:
                yield ctx.diag("MLS501", f"target.{part}.gpu: the local target has no GPU",
                               ("target", part, "gpu"), "set gpu: 0, or deploy to aws/kubernetes")
        if t.training.spot:
            yield ctx.diag("MLS503", "spot capacity has no meaning on the local target",
                           ("target", "training", "spot"), "remove it or change target.kind",
                           severity=Severity.WARNING)
        if ctx.written(("target", "region")):
            yield ctx.diag("MLS503", "region has no meaning on the local target",
                           ("target", "region"), severity=Severity.WARNING)
        for src in _sources_in_spec_order(ctx):
            if src.family != "file":
                yield ctx.diag("MLS504", f"source '{src.name}' ({src.kind}) cannot run on the "
                               "local target", _at(src) + ("kind",),
                               "use a parquet or csv source locally")
    if t.replicas_min > t.replicas_max:
        yield ctx.diag("MLS502", f"replicas.min ({t.replicas_min}) is above replicas.max "
                       f"({t.replicas_max})", ("target", "serving", "replicas"))
    if t.online_store not in ONLINE_STORES[t.kind]:
        yield ctx.diag("MLS505", f"online store '{t.online_store}' is not available on a "
                       f"{t.kind} target", ("target", "online_store"),
                       "expected one of: " + ", ".join(ONLINE_STORES[t.kind]))
    if t.kind == "aws" and t.region is None:
        yield ctx.diag("MLS506", "an aws target needs a region", ("target",),
                       "add 'region: us-east-1' (or your region) to target")
    for part in ("serving", "training"):
        res = getattr(t, part)
        if res.gpu_type and not res.gpu:
            yield ctx.diag("MLS503", f"target.{part}.gpu_type is set but gpu is 0",
                           ("target", part, "gpu_type"), "set gpu: 1 or remove gpu_type",
                           severity=Severity.WARNING)


def _at(node) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in node.at.split("/") if p)


def _sources_in_spec_order(ctx: CheckContext):
    return sorted(ctx.system.sources, key=lambda s: s.at)


def check_supported(ctx: CheckContext):
    """Options the spec accepts that mlstack cannot carry out yet: refused, with location."""
    s = ctx.system
    if s.serving.protocol == "grpc":
        yield ctx.diag("MLS901", "serving.protocol grpc is not supported yet",
                       ("serving", "protocol"), "use protocol: rest")
    if s.monitoring.alerts:
        yield ctx.diag("MLS901", "alert delivery (monitoring.alerts) is not supported yet",
                       ("monitoring", "alerts"), "remove alerts; SLO alerts arrive with the "
                       "monitoring backend")
    if s.target.kind == "gcp":
        yield ctx.diag("MLS901", "the gcp target is not supported yet", ("target", "kind"),
                       "use local, kubernetes or aws")
    elif s.target.kind in ("kubernetes", "aws"):
        yield ctx.diag("MLS902", f"for a {s.target.kind} target mlstack generates the feature, "
                       "pipeline and service layers; infrastructure code and deploy are not "
                       "supported yet", ("target", "kind"), severity=Severity.WARNING)
    for src in s.sources:
        if src.family == "stream":
            yield ctx.diag("MLS901", f"stream source '{src.name}' ({src.kind}) is not supported "
                           "yet", _at(src) + ("kind",), "declare its history as a file or "
                           "warehouse source")
