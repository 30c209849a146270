"""Text of a kubernetes/aws deploy (the CLI's side; mlstack.ops.cluster.deploy returns data)."""

from __future__ import annotations

from mlstack.ops.cluster.deploy import ClusterDeployResult
from mlstack.ops.cluster.terraform import TerraformPlan


def render_plan_lines(plan: TerraformPlan) -> str:
    """One line per resource the plan touches, with terraform's symbols."""
    return "".join(f"  {symbol} {address}\n" for symbol, addresses in (
        ("+", plan.create), ("~", plan.update), ("-/+", plan.replace), ("-", plan.delete))
        for address in addresses)


def render_cluster(result: ClusterDeployResult) -> str:
    plan, cost = result.plan, result.cost
    text = (f"Synthesized {result.stack}: {result.synth_path}\n"
            f"{result.tool} plan (saved as {result.stack_dir / 'tfplan'}; "
            f"`{result.tool} show tfplan` there shows every attribute):\n"
            + render_plan_lines(plan) + plan.summary() + ".\n"
            f"Cost estimate: ${cost.monthly_min_usd:,.2f} - ${cost.monthly_max_usd:,.2f} a "
            f"month ({cost.label}, price table {cost.price_table}; `mlstack plan` itemizes "
            "it).\n")
    if result.applied:
        return text + f"Applied. State: {result.state_path}\n"
    if not plan.changed:
        return text + "Nothing to apply: the infrastructure matches the spec.\n"
    if result.dry_run:
        return text + ("Dry run: nothing applied. To apply, rerun without --dry-run (with the "
                       "same options) and confirm, or add --auto-approve.\n")
    if result.asked:
        return text + "Not applied: declined.\n"
    return text + ("Not applied: no terminal to confirm in; rerun with --auto-approve to apply "
                   "it.\n")
