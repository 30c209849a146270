"""Deploy the infra of a compiled tree: synth, then terraform (or OpenTofu) init + plan (+ apply).

`deploy_infra(out_dir, dry_run=..., auto_approve=..., progress=...)` synthesizes the
generated cdktn app (mlstack.ops.cluster.infra_env), runs `init` and `plan -out` in the stack folder and
applies that saved plan only when `auto_approve` is given and it is not a dry run. Without a
terraform/tofu binary it stops after synth with InfraToolMissing, naming the JSON to use.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mlstack.diagnostics.errors import MlstackError
from mlstack.ops.cluster.infra_env import SynthResult, synth

Progress = Callable[[str], None]
PLAN_FILE = "tfplan"
OVERRIDE_FILE = "mlstack_override.tf.json"
TIMEOUT_SECONDS = 3600


class InfraDeployError(MlstackError):
    exit_code = 1
    code = "infra_deploy_failed"


class InfraToolMissing(InfraDeployError):
    """Neither terraform nor tofu is on PATH: synth was done, nothing else."""


@dataclass(frozen=True)
class TerraformPlan:
    create: tuple[str, ...] = ()
    update: tuple[str, ...] = ()
    replace: tuple[str, ...] = ()
    delete: tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        return bool(self.create or self.update or self.replace or self.delete)

    def summary(self) -> str:
        return (f"Plan: {len(self.create) + len(self.replace)} to add, {len(self.update)} to "
                f"change, {len(self.delete) + len(self.replace)} to destroy")


@dataclass
class InfraDeployResult:
    stack: str
    stack_dir: Path
    synth_path: Path
    tool: str
    plan: TerraformPlan
    applied: bool
    seconds: dict[str, float] = field(default_factory=dict)


def find_terraform() -> str | None:
    return shutil.which("terraform") or shutil.which("tofu")


def mirror_cli_config(mirror_dir: Path, path: Path) -> Path:
    """A terraform CLI config installing providers only from a local filesystem mirror."""
    path.write_text(
        "provider_installation {\n"
        f"  filesystem_mirror {{\n    path    = {json.dumps(str(mirror_dir))}\n"
        '    include = ["registry.terraform.io/*/*"]\n  }\n'
        '  direct {\n    exclude = ["registry.terraform.io/*/*"]\n  }\n}\n',
        encoding="utf-8")
    return path


def run_tool(cmd: list[str], cwd: Path, env: dict[str, str] | None, what: str) -> str:
    try:
        done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired as exc:
        raise InfraDeployError(f"{what} timed out after {TIMEOUT_SECONDS} s") from exc
    if done.returncode != 0:
        tail = "\n".join((done.stderr + done.stdout).strip().splitlines()[-30:])
        raise InfraDeployError(f"{what} failed (exit {done.returncode}) in {cwd}:\n{tail}")
    return done.stdout


def read_plan(tool: str, stack_dir: Path, env: dict[str, str] | None) -> TerraformPlan:
    shown = json.loads(run_tool([tool, "show", "-json", PLAN_FILE], stack_dir, env,
                                f"{tool} show"))
    buckets: dict[str, list[str]] = {"create": [], "update": [], "replace": [], "delete": []}
    for change in shown.get("resource_changes", []):
        actions = change["change"]["actions"]
        kind = ("replace" if set(actions) == {"create", "delete"} else
                actions[0] if actions[0] in buckets else None)
        if kind:
            buckets[kind].append(change["address"])
    return TerraformPlan(**{k: tuple(sorted(v)) for k, v in buckets.items()})


def plan_counts(plan: TerraformPlan) -> Counter:
    return Counter(address.rsplit(".", 1)[0] for address in plan.create)


def _tf_var_args(variables: dict | None) -> list[str]:
    args = []
    for name, value in sorted((variables or {}).items()):
        text = value if isinstance(value, str) else json.dumps(value)
        args += ["-var", f"{name}={text}"]
    return args


def deploy_infra(out_dir: Path, *, dry_run: bool = True, auto_approve: bool = False,
                 progress: Progress | None = None, variables: dict | None = None,
                 env: dict[str, str] | None = None, state_path: Path | None = None,
                 override: dict | None = None,
                 synthesized: SynthResult | None = None) -> InfraDeployResult:
    """Synth, init, plan; apply the saved plan only with auto_approve and not dry_run.

    variables: Terraform input variables (-var); env: the environment of the terraform
    process (default: this one); state_path: where the local backend keeps state (default:
    the app's infra/ folder); override: Terraform JSON merged as an override file (e.g.
    provider settings for an offline plan); synthesized: a synth of this tree already done.
    """
    say = progress or (lambda _message: None)
    seconds: dict[str, float] = {}
    started = time.monotonic()
    synthesized = synthesized or synth(Path(out_dir), progress=progress)
    seconds["synth"] = time.monotonic() - started
    stack_dir = synthesized.path.parent
    tool = find_terraform()
    if tool is None:
        raise InfraToolMissing(
            f"synthesized {synthesized.path}, but neither terraform nor tofu is on PATH",
            hint=f"install Terraform or OpenTofu, then run init, plan and apply in {stack_dir}")
    name = Path(tool).name
    env = dict(env if env is not None else os.environ)
    env.setdefault("TF_IN_AUTOMATION", "1")
    env.setdefault("CHECKPOINT_DISABLE", "1")
    if override:
        (stack_dir / OVERRIDE_FILE).write_text(json.dumps(override, indent=2, sort_keys=True),
                                               encoding="utf-8")
    init = [tool, "init", "-input=false", "-no-color"]
    if state_path is not None:
        init.append(f"-backend-config=path={Path(state_path).resolve()}")
    for step, cmd in (("init", init),
                      ("plan", [tool, "plan", "-input=false", "-no-color", "-out", PLAN_FILE]
                       + _tf_var_args(variables))):
        say(f"{name} {step}")
        t0 = time.monotonic()
        run_tool(cmd, stack_dir, env, f"{name} {step}")
        seconds[step] = time.monotonic() - t0
    plan = read_plan(tool, stack_dir, env)
    say(plan.summary())
    applied = False
    if auto_approve and not dry_run and plan.changed:
        say(f"{name} apply")
        t0 = time.monotonic()
        run_tool([tool, "apply", "-input=false", "-no-color", PLAN_FILE], stack_dir, env,
                 f"{name} apply")
        seconds["apply"] = time.monotonic() - t0
        applied = True
    return InfraDeployResult(stack=synthesized.stack, stack_dir=stack_dir,
                             synth_path=synthesized.path, tool=name, plan=plan,
                             applied=applied, seconds=seconds)
