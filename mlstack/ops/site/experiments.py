"""The report's readouts of the rollouts that compare versions: the A/B experiment (or a
canary's feedback guard) running or last ended (its arms, the effect with its always-valid interval, the p-value and the decision,
as the keeper last looked: mlstack.ops.local.experiment) and the shadow comparisons deploys
recorded (agreement, errors and latency of the mirrored candidate)."""

from __future__ import annotations

from mlstack.ops.local.experiment import interval_text, what
from mlstack.ops.site.html import Markup, definitions, h, join, table
from mlstack.ops.site.layout import code, number, when


def ab_readout(trial: dict) -> Markup:
    """The experiment's readout, or nothing when no experiment ever ran."""
    if not trial:
        return join([])
    readout = trial.get("readout") or {}
    settings = readout.get("settings") or {}
    status = trial.get("status", "?")
    decided = trial.get("outcome") if status != "running" else None
    split = (f"{trial.get('candidate')} on {trial.get('split')}% of {trial.get('key')} "
             f"(sticky), {trial.get('control')} on the rest" if trial.get("key") else
             f"{trial.get('candidate')} on {trial.get('split')}% of the requests (drawn at "
             f"random), {trial.get('control')} on the rest")
    title = what(trial)
    parts = [h("h2", f"{title[:1].upper()}{title[1:]} {trial.get('name', '')}"), definitions([
        ("status", status + (f": {decided}" if decided else "")),
        ("split", split),
        ("started", when(trial.get("started_at"))),
        ("ended", when(trial.get("ended_at")) if trial.get("ended_at") else None),
        ("method", readout.get("method")),
        ("metric", f"{settings.get('metric')} ("
                   f"{'higher' if settings.get('higher_is_better', True) else 'lower'} is better)"
         if settings else None),
        ("decision", readout.get("reason") or trial.get("reason") or "not looked at yet")])]
    if not readout:
        parts.append(h("p", "The keeper has not looked at it yet.", class_="empty"))
        return join(parts)
    arms = readout.get("arms") or {}
    parts.append(table(("arm", "role", "outcomes", settings.get("metric") or "mean"), [
        (code(arm), "control" if arm == settings.get("control") else "candidate",
         figures.get("n"), number(figures.get("mean"))) for arm, figures in arms.items()]))
    lift = readout.get("relative_lift")
    parts.append(definitions([
        ("effect (candidate - control)", f"{readout.get('effect', 0):+.4g} "
         f"{interval_text(readout.get('effect_low'), readout.get('effect_high'))} "
         f"({1 - readout.get('alpha', 0.05):.0%} always-valid interval)"),
        ("relative lift", None if lift is None else
         f"{lift:+.1%} {interval_text(readout.get('relative_low'), readout.get('relative_high'), '+.1%')}"),
        ("always-valid p-value", number(readout.get("p_value"))),
        ("looks", readout.get("looks")),
        ("outcomes left out", readout.get("invalid_outcomes") or None)]))
    return join(parts)


def shadow_readouts(history: list[dict]) -> Markup:
    """The shadow comparisons of the deploys in the history, newest first."""
    rows = []
    for entry in reversed(history):
        shadow = entry.get("shadow") if isinstance(entry, dict) else None
        if not isinstance(shadow, dict):
            continue
        p99 = shadow.get("p99_ms")
        rows.append((when(entry.get("at")), code(entry.get("version") or "-"),
                     code(shadow.get("against") or "-"), shadow.get("mirrored"),
                     number(shadow.get("agreement")), number(shadow.get("mean_abs_diff")),
                     shadow.get("errors"), "-" if p99 is None else f"{p99:.1f} ms",
                     shadow.get("verdict") or "-"))
    if not rows:
        return join([])
    return join([h("h2", "Shadow comparisons"), table(
        ("when", "candidate", "against", "mirrored", "agreement", "mean |diff|", "errors",
         "p99", "result"), rows)])
