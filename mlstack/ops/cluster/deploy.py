"""`mlstack deploy` on kubernetes/aws targets: the compiled infra app is synthesized in its
isolated environment, then terraform (or OpenTofu) runs `init` and `plan -out` in the stack
folder (mlstack.ops.cluster.terraform), and the saved plan is applied only when approved: by
`auto_approve`, or by the `confirm` callback the CLI passes when it can ask someone.

Terraform input variables come from ClusterOptions.variables (`--var NAME=VALUE`), JSON
variable files (`--var-file`) and TF_VAR_<name> in the environment (terraform's own); the
stack's variables without a default must all be given, else nothing is planned. The state
lives in <project>/.mlstack/terraform/<stack>.tfstate (the local backend), not in build/.
Progress goes to the `progress` object; nothing is printed here.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from mlstack.codegen.backends.infra_costs import CostEstimate, estimate_monthly_cost
from mlstack.diagnostics.diagnostic import Diagnostic
from mlstack.diagnostics.errors import StageError, UsageError
from mlstack.frontend.ir.nodes import SystemIR
from mlstack.ops.cluster.terraform import (
    PLAN_FILE,
    InfraDeployError,
    TerraformPlan,
    deploy_infra,
    find_terraform,
    run_tool,
)
from mlstack.ops.paths import ProjectPaths
from mlstack.ops.report import StageRecord, StageStatus
from mlstack.workspace.plan import cost_as_dict

Confirm = Callable[[TerraformPlan], bool]


@dataclass(frozen=True)
class ClusterOptions:
    dry_run: bool = False  # stop after the plan
    auto_approve: bool = False  # apply the plan without asking
    variables: tuple[tuple[str, str], ...] = ()  # (name, value as written) from --var
    var_files: tuple[Path, ...] = ()  # JSON objects {name: value}
    tf_override: Path | None = None  # Terraform JSON merged into the stack as an override

    @property
    def given(self) -> bool:
        return bool(self.dry_run or self.auto_approve or self.variables or self.var_files
                    or self.tf_override)


@dataclass
class ClusterDeployResult:
    system: str
    target: str
    stack: str
    stack_dir: Path
    synth_path: Path
    tool: str
    plan: TerraformPlan
    dry_run: bool
    applied: bool
    approved: bool | None  # None: not up for approval (dry run, or nothing to change)
    state_path: Path
    cost: CostEstimate
    asked: bool = False  # the confirm callback was asked (and approved is its answer)
    stages: list[StageRecord] = field(default_factory=list)
    warnings: list[Diagnostic] = field(default_factory=list)  # lint's, of the spec deployed

    @property
    def ok(self) -> bool:
        """Done what was asked: planned (dry run), applied, or nothing to change."""
        return self.dry_run or self.applied or not self.plan.changed

    def as_dict(self) -> dict:
        plan = self.plan
        return {"system": self.system, "target": self.target, "stack": self.stack,
                "stack_dir": str(self.stack_dir), "synth_path": str(self.synth_path),
                "tool": self.tool, "dry_run": self.dry_run, "applied": self.applied,
                "approved": self.approved, "asked": self.asked,
                "state_path": str(self.state_path),
                "plan": {"summary": plan.summary(), "create": list(plan.create),
                         "update": list(plan.update), "replace": list(plan.replace),
                         "delete": list(plan.delete)},
                "cost": cost_as_dict(self.cost), "stages": [vars(s) for s in self.stages],
                "warnings": [d.as_dict() for d in self.warnings]}


# -- Terraform input variables --------------------------------------------------------------
def required_variables(stack: Mapping) -> dict[str, dict]:
    """The synthesized stack's variables that have no default: {name: declaration}."""
    declared = stack.get("variable") or {}
    return {name: decl for name, decl in sorted(declared.items()) if "default" not in decl}


def stack_variables(stack: Mapping, options: ClusterOptions,
                    environ: Mapping[str, str] | None = None) -> dict[str, object]:
    """The -var values to pass: variable files, then --var (later wins). A list variable
    given as `a,b` (not JSON) becomes ["a", "b"]. Refuses undeclared names and lists every
    required variable that is given nowhere (TF_VAR_<name> in `environ` counts)."""
    environ = os.environ if environ is None else environ
    declared = stack.get("variable") or {}
    values: dict[str, object] = {}
    for path in options.var_files:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UsageError(f"cannot read the variable file {path}: {exc}") from None
        if not isinstance(data, dict):
            raise UsageError(f"the variable file {path} must hold a JSON object "
                             "{name: value}")
        values.update(data)
    for name, text in options.variables:
        is_list = str(declared.get(name, {}).get("type", "")).startswith(("list", "set"))
        values[name] = ([part.strip() for part in text.split(",") if part.strip()]
                        if is_list and not text.lstrip().startswith("[") else text)
    unknown = sorted(set(values) - set(declared))
    if unknown:
        raise UsageError(f"the stack declares no variable {', '.join(unknown)}",
                         "its variables: " + (", ".join(sorted(declared)) or "none"))
    missing = [name for name in required_variables(stack)
               if name not in values and f"TF_VAR_{name}" not in environ]
    if missing:
        details = "; ".join(f"{name} ({declared[name].get('type', 'string')}): "
                            f"{declared[name].get('description', '')}".rstrip(": ")
                            for name in missing)
        raise UsageError(f"the stack needs values for {len(missing)} variable(s): {details}",
                         "pass --var NAME=VALUE (a list as a,b), a JSON --var-file, or set "
                         "TF_VAR_NAME in the environment (better for secrets)")
    return values


def _override(path: Path | None) -> dict | None:
    if path is None:
        return None
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read the Terraform override {path}: {exc}") from None
    if not isinstance(data, dict):
        raise UsageError(f"the Terraform override {path} must hold a JSON object")
    return data


# -- the deploy -----------------------------------------------------------------------------
class _Progress:
    """Stage records to the caller's progress object, notes to its optional `note`."""

    def __init__(self, progress) -> None:
        self.progress = progress
        self.records: list[StageRecord] = []

    def note(self, message: str) -> None:
        note = getattr(self.progress, "note", None)
        if note is not None:
            note(message)

    def run(self, name: str, work: Callable[[], object], detail=lambda _r: ""):
        if self.progress is not None:
            self.progress.start(name)
        began = time.perf_counter()
        record = StageRecord(name, StageStatus.DONE, 0.0)
        try:
            result = work()
            record.detail = detail(result)
            return result
        except Exception as exc:
            record.status = StageStatus.FAILED
            record.detail = getattr(exc, "message", str(exc)).splitlines()[0]
            raise
        finally:
            record.seconds = round(time.perf_counter() - began, 3)
            self.records.append(record)
            if self.progress is not None:
                self.progress.finish(record)


def deploy_cluster(system: SystemIR, paths: ProjectPaths, options: ClusterOptions,
                   progress=None, confirm: Confirm | None = None) -> ClusterDeployResult:
    """Synth, init, plan; apply the saved plan when approved (see the module docstring).
    Raises InfraToolMissing (after synth) when neither terraform nor tofu is on PATH."""
    from mlstack.ops.cluster.infra_env import synth

    stages = _Progress(progress)
    synthesized = stages.run("synth", lambda: synth(paths.build_dir, progress=stages.note),
                             lambda s: f"stack {s.stack}")
    override = _override(options.tf_override)
    tool = find_terraform()
    variables: dict[str, object] = {}
    if tool is not None:  # without one, deploy_infra says so (after synth, as promised)
        stack = json.loads(synthesized.path.read_text(encoding="utf-8"))
        variables = stack_variables(stack, options)
    state_path = paths.state_dir / "terraform" / f"{synthesized.stack}.tfstate"
    state_path.parent.mkdir(parents=True, exist_ok=True)
    planned = stages.run(
        "terraform_plan",
        lambda: deploy_infra(paths.build_dir, dry_run=True, progress=stages.note,
                             variables=variables, state_path=state_path, override=override,
                             synthesized=synthesized),
        lambda r: r.plan.summary().removeprefix("Plan: "))
    result = ClusterDeployResult(
        system=system.name, target=system.target.kind, stack=planned.stack,
        stack_dir=planned.stack_dir, synth_path=planned.synth_path, tool=planned.tool,
        plan=planned.plan, dry_run=options.dry_run, applied=False, approved=None,
        state_path=state_path, cost=estimate_monthly_cost(system), stages=stages.records)
    if options.dry_run or not planned.plan.changed:
        return result
    if options.auto_approve:
        result.approved = True
    else:
        result.asked = confirm is not None
        result.approved = bool(confirm is not None and confirm(planned.plan))
    if not result.approved:
        return result
    assert tool is not None  # without one, deploy_infra raised InfraToolMissing
    env = dict(os.environ)
    env.setdefault("TF_IN_AUTOMATION", "1")
    env.setdefault("CHECKPOINT_DISABLE", "1")
    try:
        stages.run("terraform_apply", lambda: run_tool(
            [tool, "apply", "-input=false", "-no-color", PLAN_FILE], planned.stack_dir, env,
            f"{planned.tool} apply"), lambda _out: planned.plan.summary().removeprefix("Plan: "))
    except InfraDeployError as exc:
        raise StageError("terraform_apply", exc.message,
                         f"the saved plan and its state are in {planned.stack_dir} and "
                         f"{state_path}") from exc
    result.applied = True
    return result
