"""mlstack deploy [SPEC]: compile, then bring the system up on its target and verify it."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from mlstack.cli.arguments import (
    add_format,
    add_spec,
    add_verb,
    count,
    port_number,
    positive_number,
    spec_of,
)

if TYPE_CHECKING:  # rich is imported when a deploy shows its progress
    from rich.status import Status

HELP = ("compile and bring the system up on its target (local: train, serve, verify SLOs; "
        "kubernetes/aws: synth the infrastructure, terraform plan, apply when approved)")
STAGE_TITLES = {
    "compile": "compile and write", "ingest": "ingest sources", "validate": "data checks",
    "feast_apply": "feast apply", "materialize": "materialize online features",
    "training_set": "point-in-time training set", "train": "train", "evaluate": "quality gates",
    "register": "register model (+ ONNX export)",
    "profile": "profile the served path (batching)", "start_service": "start service",
    "skew_check": "skew check (online vs offline)", "verify": "SLO verification (load test)",
    "sidecars": "start the schedules and alerting (sidecars)",
    "rollout": "rollout", "promote": "promote", "unchanged": "no change",
    "reconcile": "reconcile with the record",
    "synth": "synth infrastructure (cdktn)", "terraform_plan": "terraform init + plan",
    "terraform_apply": "terraform apply",
}


def register(sub) -> None:
    p = add_verb(sub, "deploy", HELP, HELP + ". Exit 0 when deployed and every SLO is met, 1 "
                 "when a stage fails or an SLO is missed: a missed latency, throughput, error "
                 "rate or quality SLO, a canary rule, or a shadow's rule (strategy shadow), "
                 "stops the deploy and the previous version keeps serving; with strategy ab "
                 "the deploy ends with the A/B experiment running (the keeper promotes or "
                 "aborts by its readout); a missed feature_freshness SLO (the data's age, the "
                 "same for every version) is reported and the new version serves. The SLO "
                 "table is printed either way; a percentile is judged only from enough "
                 "requests (p99: 100), the load test runs longer to get them (--max-verify-"
                 "seconds), and the machine's load is shown beside the figures. "
                 "Interrupted (even by SIGKILL), a deploy leaves a record the next deploy, "
                 "rollback or down reconciles. "
                 "2 on usage errors and when a local target lacks the runtime extra (pip "
                 "install 'mlstack[runtime]'). On kubernetes/aws targets (no extra needed): exit "
                 "0 when planned (--dry-run), applied or nothing changes; 1 when terraform/tofu "
                 "is missing (stops after synth), a step fails or the plan is not approved. "
                 "Terraform state: <project>/.mlstack/terraform/. Lint's warnings are shown "
                 "too (on stderr; in the JSON with --format json).")
    add_spec(p)
    p.add_argument("--port", type=port_number, default=3000, help="local endpoint port (default 3000)")
    p.add_argument("--no-verify", dest="verify", action="store_false",
                   help="skip the SLO load test")
    p.add_argument("--duration", type=positive_number, default=5.0,
                   help="seconds of load for the SLO verification (default 5)")
    p.add_argument("--rate", type=positive_number, default=None,
                   help="requests per second of the load test (default: the spec's "
                        "throughput SLO, else 20)")
    p.add_argument("--concurrency", type=count, default=64,
                   help="most load-test requests in flight at once (default 64)")
    p.add_argument("--max-verify-seconds", type=positive_number, default=30.0,
                   help="the longest the SLO load test may run past --duration to measure "
                        "enough requests for each percentile (default 30)")
    p.add_argument("--max-step-seconds", type=positive_number, default=60.0,
                   help="the longest a canary step may run past the spec's step_seconds to "
                        "measure enough requests of the new version for its abort rules; "
                        "a rule still short of them is reported as not judged (default 60)")
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


def running_text(title: str, seconds: float) -> str:
    """The spinner line of a running stage: its title and how long it has run."""
    return f"{title}... {seconds:.0f} s"


class ConsoleProgress:
    """Stages as they run, on stderr (rich), so stdout stays for the summary."""

    def __init__(self) -> None:
        from rich.console import Console

        self.console = Console(stderr=True)
        self.status: Status | None = None
        self.began = time.perf_counter()
        self.stage_title, self.stage_began = "", self.began

        self.broken = False  # stderr went away (a closed pipe): the deploy goes on silently

    def _safely(self, action) -> None:
        """Progress is for a person; a closed stderr must never stop a deploy half-way."""
        if self.broken:
            return
        try:
            action()
        except (OSError, ValueError):
            self.broken = True
            self.status = None

    def start(self, stage: str) -> None:
        title = STAGE_TITLES.get(stage, stage)
        self.stage_title, self.stage_began = title, time.perf_counter()

        def show() -> None:
            if self.status is None:
                self.status = self.console.status(running_text(title, 0.0))
                self.status.start()
                self._tick()
            else:
                self.status.update(running_text(title, 0.0))

        self._safely(show)

    def _tick(self) -> None:
        """Once a second, the running stage's elapsed time on the spinner line."""
        import threading

        def update() -> None:
            status = self.status
            if status is None or self.broken:
                return
            seconds = time.perf_counter() - self.stage_began
            self._safely(lambda: status.update(running_text(self.stage_title, seconds)))
            self._tick()

        timer = threading.Timer(1.0, update)
        timer.daemon = True
        timer.start()

    def finish(self, record) -> None:
        mark = {"done": "[green]ok[/]", "skipped": "[yellow]--[/]", "failed": "[red]!![/]"}
        title = STAGE_TITLES.get(record.name, record.name)
        detail = f"  [dim]{record.detail}[/]" if record.detail else ""
        # soft_wrap: a piped log keeps one line per stage (rich wraps at 80 columns there)
        self._safely(lambda: self.console.print(
            f" {mark[record.status]} {title:34} {record.seconds:7.1f} s{detail}",
            markup=True, highlight=False, soft_wrap=True))

    def note(self, message: str) -> None:
        """A message from inside a stage (e.g. the infra environment being created)."""
        self._safely(lambda: self.console.print(f"    [dim]{message}[/]", markup=True,
                                                highlight=False))

    def close(self) -> None:
        if self.status is not None:
            status, self.status = self.status, None
            self._safely(status.stop)


def _interrupt_on_termination() -> dict:
    """SIGTERM and SIGHUP interrupt a deploy like Ctrl-C does, so it puts traffic back on
    the version serving before and records the failure (SIGKILL is left to the journal)."""
    import signal

    def interrupt(signum, _frame) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {}
    for sig in (signal.SIGTERM, signal.SIGHUP):
        try:
            previous[sig] = signal.signal(sig, interrupt)
        except ValueError:  # not the main thread
            pass
    return previous


def _restore(previous: dict) -> None:
    import signal

    for sig, handler in previous.items():
        signal.signal(sig, handler)


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
    from mlstack.diagnostics.errors import StageError
    from mlstack.ops.cluster.deploy import ClusterDeployResult, ClusterOptions
    from mlstack.ops.deploy import deploy
    from mlstack.ops.local.deploy import DeployOptions

    options = DeployOptions(port=args.port, verify=args.verify, duration=args.duration,
                            rate=args.rate, concurrency=args.concurrency, force=args.force,
                            retrain=args.retrain, verify_limit=args.max_verify_seconds,
                            step_limit=args.max_step_seconds)
    cluster = ClusterOptions(dry_run=args.dry_run, auto_approve=args.auto_approve,
                             variables=_variables(args.var or []),
                             var_files=tuple(Path(f) for f in args.var_file or ()),
                             tf_override=Path(args.tf_override) if args.tf_override else None)
    progress = ConsoleProgress()
    previous = _interrupt_on_termination()
    try:
        result = deploy(spec_of(args), options, progress, cluster=cluster,
                        confirm=_confirm(progress))
    except StageError as exc:
        progress.close()
        failed = getattr(exc, "result", None)
        if failed is not None and args.format != "json":  # json: in the error document
            sys.stdout.write(render_summary(failed))
        raise
    finally:
        progress.close()
        _restore(previous)
    if args.format == "json":
        write_json(result.as_dict())
    else:
        write_warnings(result.warnings)
        sys.stdout.write(render_cluster(result) if isinstance(result, ClusterDeployResult)
                         else render_summary(result))
    if isinstance(result, ClusterDeployResult):
        return 0 if result.ok else 1
    return 0 if result.slos_met else 1
