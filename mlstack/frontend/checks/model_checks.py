"""Model and evaluation checks: metrics fit the task, gates are evaluated, label types fit."""

from __future__ import annotations

from collections.abc import Iterator

from mlstack.diagnostics.diagnostic import Diagnostic, Severity, choices_hint
from mlstack.frontend.checks import CheckContext
from mlstack.frontend.ir import catalog

LABEL_DTYPES = {
    "binary_classification": ("int64", "int32", "bool"),
    "multiclass_classification": ("int64", "int32", "string"),
    "regression": ("int64", "int32", "float64", "float32"),
    "ranking": ("int64", "int32", "float64", "float32"),
}


def check_model(ctx: CheckContext) -> Iterator[Diagnostic]:
    s = ctx.system
    task = s.model.task
    metrics = s.evaluation.metrics
    for i, metric in enumerate(metrics):
        if not catalog.metric_fits(task, metric):
            yield ctx.diag("MLS301", f"metric '{metric}' does not fit a {task} model",
                           ("evaluation", "metrics", i), choices_hint(catalog.METRICS[task]))
    for i, metric in enumerate(metrics):
        if metric in metrics[:i]:
            yield ctx.diag("MLS206", f"metric '{metric}' is listed twice",
                           ("evaluation", "metrics", i), "remove the second one")
    for gate in s.evaluation.gates:
        if gate.metric not in metrics:
            yield ctx.diag("MLS302", f"gate on '{gate.metric}', which is not in "
                           "evaluation.metrics", ("evaluation", "gates", gate.metric),
                           f"add '{gate.metric}' to evaluation.metrics", key=True)
    for gate in s.slos.quality:
        if gate.metric not in metrics:
            yield ctx.diag("MLS405", f"quality SLO on '{gate.metric}', which is not in "
                           "evaluation.metrics", ("slos", "quality", gate.metric),
                           f"add '{gate.metric}' to evaluation.metrics", key=True)
    if task == "ranking" and not any(m.startswith("ndcg@") for m in metrics):
        yield ctx.diag("MLS301", "a ranking model is evaluated with ndcg@k; none is listed",
                       ("evaluation", "metrics"), "add 'ndcg@10'", severity=Severity.WARNING)
    if s.label.dtype not in LABEL_DTYPES[task]:
        yield ctx.diag("MLS306", f"label '{s.label.field}' has dtype {s.label.dtype}, which "
                       f"does not fit a {task} model", ("label", "field"),
                       choices_hint(LABEL_DTYPES[task]))
