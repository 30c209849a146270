"""mlstack deploy [SPEC]: compile, then bring the system up on its target and verify it."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from mlstack.cli.arguments import add_format, add_spec, add_verb, spec_of

HELP = ("compile and bring the system up on its target (local: train, serve, verify SLOs; "
        "kubernetes/aws: synth the infrastructure, terraform plan, apply when approved)")
STAGE_TITLES = {
    "compile": "compile and write", "ingest": "ingest sources", "validate": "data checks",
    "feast_apply": "feast apply", "materialize": "materialize online features",
    "training_set": "point-in-time training set", "train": "train", "evaluate": "quality gates",
    "register": "register model (BentoML store)", "start_service": "start service",
    "skew_check": "skew check (online vs offline)", "verify": "SLO verification (load test)",
    "rollout": "rollout", "promote": "promote", "unchanged": "no change",
    "synth": "synth infrastructure (cdktn)", "terraform_plan": "terraform init + plan",
    "terraform_apply": "terraform apply",
}


def register(sub) -> None:
    p = add_verb(sub, "deploy", HELP, HELP + ". Exit 0 when deployed and every SLO is met, 1 "
                 "when a stage fails or an SLO is missed (the previous version keeps serving), "
                 "2 on usage errors and when a local target lacks the runtime extra (pip "
                 "install 'mlstack[runtime]'). On kubernetes/aws targets (no extra needed): exit "
                 "0 when planned (--dry-run), applied or nothing changes; 1 when terraform/tofu "
                 "is missing (stops after synth), a step fails or the plan is not approved. "
                 "Terraform state: <project>/.mlstack/terraform/. Lint's warnings are shown "
                 "too (on stderr; in the JSON with --format json).")
    add_spec(p)
    p.add_argument("--port", type=int, default=3000, help="local endpoint port (default 3000)")
    p.add_argument("--no-verify", dest="verify", action="store_false",
                   help="skip the SLO load test")
    p.add_argument("--duration", type=float, default=5.0,
                   help="seconds of load for the SLO verification (default 5)")
    p.add_argument("--rate", type=float, default=None,
                   help="requests per second of the load test (default: the spec's "
                        "throughput SLO, else 20)")
    p.add_argument("--concurrency", type=int, default=64,
                   help="most load-test requests in flight at once (default 64)")
    p.add_argument("--retrain", action="store_true",
                   help="train even when nothing the model depends on changed")
    p.add_argument("--force", action="store_true",
                   help="overwrite generated files that were edited by hand")
    add_format(p, help="output format of the summary (default: text); json: one JSON "
                       "document on stdout, errors included (progress stays on stderr)")
    infra = p.add_argument_group("kubernetes and aws targets")
    infra.add_argument("--dry-run", action="store_true",
                       help="synth, terraform init and plan, print the plan; apply nothing")
    infra.add_argument("--auto-approve", action="store_true",
                       help="apply the plan without asking (otherwise asked in a terminal, "
                            "and not applied without one)")
    infra.add_argument("--var", action="append", metavar="NAME=VALUE",
                       help="a Terraform input variable of the stack, e.g. "
                            "subnet_ids=subnet-a,subnet-b (repeatable; TF_VAR_NAME in the "
                            "environment works too and suits secrets)")
    infra.add_argument("--var-file", action="append", metavar="FILE",
                       help="a JSON file of Terraform input variables {name: value} "
                            "(repeatable; --var wins)")
    infra.add_argument("--tf-override", metavar="FILE",
                       help="Terraform JSON merged into the synthesized stack as an override "
                            "file (e.g. provider endpoints or settings)")
    p.set_defaults(run=run)


class ConsoleProgress:
    """Stages as they run, on stderr (rich), so stdout stays for the summary."""

    def __init__(self) -> None:
        from rich.console import Console

        self.console = Console(stderr=True)
        self.status = None
        self.began = time.perf_counter()

    def start(self, stage: str) -> None:
        title = STAGE_TITLES.get(stage, stage)
        if self.status is None:
            self.status = self.console.status(f"{title}...")
            self.status.start()
        else:
            self.status.update(f"{title}...")

    def finish(self, record) -> None:
        mark = {"done": "[green]ok[/]", "skipped": "[yellow]--[/]", "failed": "[red]!![/]"}
        title = STAGE_TITLES.get(record.name, record.name)
        detail = f"  [dim]{record.detail}[/]" if record.detail else ""
        self.console.print(f" {mark[record.status]} {title:34} {record.seconds:7.1f} s{detail}",
                           markup=True, highlight=False)

    def note(self, message: str) -> None:
        """A message from inside a stage (e.g. the infra environment being created)."""
        self.console.print(f"    [dim]{message}[/]", markup=True, highlight=False)

    def close(self) -> None:
        if self.status is not None:
            self.status.stop()
            self.status = None


def _variables(pairs: list[str]) -> tuple[tuple[str, str], ...]:
    from mlstack.diagnostics.errors import UsageError

    out = []
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"--var {pair!r} is not NAME=VALUE")
        out.append((name.strip(), value))
    return tuple(out)


def _confirm(progress: ConsoleProgress):
    """Ask on the terminal before applying; None (never apply) without one."""
    from mlstack.cli.cluster_output import render_plan_lines

    if not sys.stdin.isatty():
        return None

    def confirm(plan) -> bool:
        progress.close()
        sys.stderr.write(render_plan_lines(plan) + f"{plan.summary()}.\n"
                         "Apply this plan? Only 'yes' applies it: ")
        sys.stderr.flush()
        try:
            return input().strip() == "yes"
        except EOFError:
            return False

    return confirm


def run(args: argparse.Namespace) -> int:
    from mlstack.cli.cluster_output import render_cluster
    from mlstack.cli.deploy_output import render_summary
    from mlstack.cli.output import write_json, write_warnings
    from mlstack.ops.cluster.deploy import ClusterDeployResult, ClusterOptions
    from mlstack.ops.deploy import deploy
    from mlstack.ops.local.deploy import DeployOptions

    options = DeployOptions(port=args.port, verify=args.verify, duration=args.duration,
                            rate=args.rate, concurrency=args.concurrency, force=args.force,
                            retrain=args.retrain)
    cluster = ClusterOptions(dry_run=args.dry_run, auto_approve=args.auto_approve,
                             variables=_variables(args.var or []),
                             var_files=tuple(Path(f) for f in args.var_file or ()),
                             tf_override=Path(args.tf_override) if args.tf_override else None)
    progress = ConsoleProgress()
    try:
        result = deploy(spec_of(args), options, progress, cluster=cluster,
                        confirm=_confirm(progress))
    finally:
        progress.close()
    if args.format == "json":
        write_json(result.as_dict())
    else:
        write_warnings(result.warnings)
        sys.stdout.write(render_cluster(result) if isinstance(result, ClusterDeployResult)
                         else render_summary(result))
    if isinstance(result, ClusterDeployResult):
        return 0 if result.ok else 1
    return 0 if result.slos_met else 1
