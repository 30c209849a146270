"""mlstack deploy SPEC: compile, then bring the system up on its target and verify it."""

from __future__ import annotations

import argparse
import json
import sys
import time

HELP = "compile and bring the system up on its target (local: train, serve, verify SLOs)"
STAGE_TITLES = {
    "compile": "compile and write", "ingest": "ingest sources", "validate": "data checks",
    "feast_apply": "feast apply", "materialize": "materialize online features",
    "training_set": "point-in-time training set", "train": "train", "evaluate": "quality gates",
    "register": "register model (BentoML store)", "start_service": "start service",
    "skew_check": "skew check (online vs offline)", "verify": "SLO verification (load test)",
    "rollout": "rollout", "promote": "promote", "unchanged": "no change",
}


def register(sub) -> None:
    p = sub.add_parser("deploy", help=HELP, description=HELP + ". Exit 0 when deployed and "
                       "every SLO is met, 1 when a stage fails or an SLO is missed (the "
                       "previous version keeps serving), 2 on usage errors.")
    p.add_argument("spec", metavar="SPEC", nargs="?", default="mlstack.yaml",
                   help="spec file or a folder holding mlstack.yaml (default: mlstack.yaml)")
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
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
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

    def close(self) -> None:
        if self.status is not None:
            self.status.stop()


def run(args: argparse.Namespace) -> int:
    from mlstack.deploy.api import deploy
    from mlstack.deploy.local import DeployOptions
    from mlstack.deploy.render import render_summary

    options = DeployOptions(port=args.port, verify=args.verify, duration=args.duration,
                            rate=args.rate, concurrency=args.concurrency, force=args.force,
                            retrain=args.retrain)
    progress = ConsoleProgress()
    try:
        result = deploy(args.spec, options, progress)
    finally:
        progress.close()
    if args.json:
        sys.stdout.write(json.dumps(result.as_dict(), indent=2, sort_keys=True) + "\n")
    else:
        sys.stdout.write(render_summary(result))
    return 0 if result.slos_met else 1
