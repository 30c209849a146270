"""Printing a Plan: text (terraform-like, with + ~ - symbols), JSON, and the derivations."""

from __future__ import annotations

import json

from mlstack.workspace.plan import InfraPlan, Plan
from mlstack.workspace.writer import CONFLICT_REASONS

SYMBOLS = {"create": "+", "update": "~", "delete": "-", "unchanged": " "}


def _value(value) -> str:
    return "(none)" if value is None else json.dumps(value, sort_keys=True)


def _property_change(old, new) -> str:
    """old -> new; for lists that gained or lost items, just those items."""
    if isinstance(old, list) and isinstance(new, list):
        try:
            added = [x for x in new if x not in old]
            removed = [x for x in old if x not in new]
        except TypeError:
            added = removed = []
        if added or removed:
            return "  ".join(part for part in (
                f"+ {_value(added)}" if added else "", f"- {_value(removed)}" if removed else "")
                if part)
    return f"{_value(old)} -> {_value(new)}"


def render_plan(plan: Plan) -> str:
    lines = [f"Plan for {plan.system} ({plan.spec_file}) -> {plan.out_dir}"]
    if plan.baseline == "none":
        lines.append("  no earlier compile there: every resource is new")
    elif plan.baseline == "unreadable":
        lines.append("  the last compile's IR is from an incompatible mlstack: resource "
                     "changes unknown, file changes below")
    if plan.interrupted_write:
        lines.append("  an earlier write was interrupted; the next compile finishes it")
    if plan.resources:
        lines.append("")
        lines.append("Resources:")
        width = max(len(f"{r.kind} {r.name}") for r in plan.resources)
        for r in plan.resources:
            lines.append(f"  {SYMBOLS[r.action]} {r.kind + ' ' + r.name:<{width}}  "
                         f"-> {r.consequence}")
            if r.action == "update":
                for p in r.properties:
                    lines.append(f"      {p.name}: {_property_change(p.old, p.new)}")
    if plan.infra.changes:
        lines.append("")
        lines += render_infra(plan.infra)
    if plan.cost is not None:
        lines.append("")
        lines += render_cost(plan)
    if plan.gaps:
        lines.append("")
        lines.append(f"Not on {plan.target} yet (the local target does each):")
        lines += [f"  - {gap}" for gap in plan.gaps]
    changed = plan.file_changes
    if changed:
        lines.append("")
        lines.append("Files:")
        for f in changed:
            note = f"   ! {CONFLICT_REASONS[f.conflict]}" if f.conflict else ""
            lines.append(f"  {SYMBOLS[f.action]} {f.path}{note}")
    lines.append("")
    lines.append(render_summary(plan))
    return "\n".join(lines) + "\n"


def render_summary(plan: Plan) -> str:
    if plan.serving_plan is not None:
        return (render_compile_summary(plan) + "\n"
                + serving_summary(plan.serving_plan, plan.rollout))
    return render_compile_summary(plan)


def render_compile_summary(plan: Plan) -> str:
    if not plan.has_changes or (plan.deploy_pending and not (
            plan.file_changes or plan.resources or plan.infra.changes
            or plan.interrupted_write)):
        return f"No changes: {plan.out_dir} matches the spec ({len(plan.files)} files)."
    counts = {a: sum(1 for f in plan.files if f.action == a)
              for a in ("create", "update", "delete", "unchanged")}
    text = (f"Plan: {counts['create']} to create, {counts['update']} to update, "
            f"{counts['delete']} to delete, {counts['unchanged']} unchanged.")
    if plan.consequences:
        text += " Consequences: " + ", ".join(plan.consequences) + "."
    if plan.deploy is not None and plan.resources and plan.serving_plan is None:
        text += f"\n{deploy_summary(plan.deploy, plan.rollout)}"
    if plan.infra.stack is not None:
        text += f"\n{infra_summary(plan.infra)}"
    if plan.conflicts:
        text += (f"\n{len(plan.conflicts)} file(s) marked ! would not be overwritten: "
                 "compile refuses unless --force.")
    return text


def deploy_summary(actions, rollout: str = "roll it out") -> str:
    """What `mlstack deploy` would do about the plan's changes (source data aside)."""
    if actions.nothing:
        return "Deploy: nothing to do; the serving version keeps serving."
    if not actions.new_version:
        return "Deploy: re-verify the SLOs of the serving version (no new version)."
    model = "retrain" if actions.train else "reuse the serving model"
    if "nothing is deployed yet" in actions.reasons:
        rollout = "serve it"  # the first version takes all traffic, whatever the strategy
    return f"Deploy: {model}, start a new service version, verify the SLOs, {rollout}."


def serving_summary(serving, rollout: str = "roll it out") -> str:
    """Deploy's own plan against the version that serves (a deployed local project): what
    `mlstack deploy` would do now, its reasons and its stages."""
    if not serving.new_version:
        head = (f"Deploy (against {serving.serving}, serving): "
                + deploy_summary(serving.actions, rollout).removeprefix("Deploy: "))
    else:
        against = (f"against {serving.serving}, serving" if serving.serving
                   else "nothing serves")
        model = ("roll out the candidate " + serving.candidate if serving.candidate
                 else "reuse the serving model" if serving.reuse else "retrain")
        head = (f"Deploy ({against}): {model}, start a new service version, verify the "
                f"SLOs, {rollout}.")
    lines = [head]
    lines += [f"  because {reason}" for reason in serving.reasons]
    if serving.new_version or not serving.actions.nothing:
        lines.append("  stages: " + " -> ".join(serving.stages))
    return "\n".join(lines)


def infra_summary(infra: InfraPlan) -> str:
    return (f"Infrastructure: {infra.count('create')} to add, {infra.count('update')} to "
            f"change, {infra.count('delete')} to destroy, {infra.unchanged} unchanged.")


def render_infra(infra: InfraPlan) -> list[str]:
    """The stack's Terraform resources that change, like `terraform plan` lists them."""
    lines = [f"Infrastructure (Terraform stack {infra.stack}):"]
    for change in infra.changes:
        lines.append(f"  {SYMBOLS[change.action]} {change.address}")
        for p in change.properties:
            lines.append(f"      {p.name}: {_property_change(p.old, p.new)}")
    return lines


def _usd(value: float) -> str:
    return f"${value:,.2f}"


def _usd_range(low: float, high: float) -> str:
    return _usd(low) if low == high else f"{_usd(low)} - {_usd(high)}"


def render_cost(plan: Plan) -> list[str]:
    """The monthly cost estimate: one line per item, the total at the replica range's min and
    max (and the last compile's, when it differs), then what the figures leave out."""
    cost = plan.cost
    assert cost is not None  # render_plan calls it for a plan with a cost
    lines = [f"Cost estimate ({cost.target}, monthly, {cost.currency}; an {cost.label} from "
             f"price table {cost.price_table}, not a quote):"]
    if not cost.lines:
        lines += [f"  {note}" for note in cost.notes]
        return lines
    width = max(len(line.item) for line in cost.lines)
    amounts = [_usd_range(line.monthly_min_usd, line.monthly_max_usd) for line in cost.lines]
    money = max(len(a) for a in amounts)
    for line, amount in zip(cost.lines, amounts, strict=True):
        lines.append(f"  {line.item:<{width}}  {amount:>{money}}  {line.detail}")
    total = _usd_range(cost.monthly_min_usd, cost.monthly_max_usd)
    before = plan.previous_cost
    was = ""
    if before is not None and (before.monthly_min_usd, before.monthly_max_usd) != (
            cost.monthly_min_usd, cost.monthly_max_usd):
        was = f"   (was {_usd_range(before.monthly_min_usd, before.monthly_max_usd)})"
    lines.append(f"  {'total':<{width}}  {total:>{money}}{was}")
    lines += [f"  note: {note}" for note in cost.notes]
    return lines


def render_explain(plan: Plan) -> str:
    """The settings the spec left to mlstack: value, (previous value) and why."""
    if not plan.derivations:
        return "Derived settings: none (the spec sets everything explicitly).\n"
    lines = ["Derived settings:"]
    for d in plan.derivations:
        was = f"   (was {d.previous})" if d.previous is not None else ""
        lines.append(f"  {d.setting} = {d.value}{was}")
        lines.append(f"      {d.reason}")
    return "\n".join(lines) + "\n"


def render_plan_json(plan: Plan, warnings=()) -> str:
    """The plan as JSON, with lint's warnings of the spec planned (Diagnostic objects)."""
    data = plan.as_dict()
    data["warnings"] = [d.as_dict() for d in warnings]
    return json.dumps(data, sort_keys=True, indent=2) + "\n"
