"""mlstack run FLOW [SPEC]: one run, now, of a generated flow on the deployed project."""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict

from mlstack.cli.arguments import add_format, add_spec, add_verb, spec_of
from mlstack.cli.commands import run_feed  # mlstack run feed (its options, its run)

HELP = ("run a generated flow (materialize, monitoring, training) once, now, on the deployed "
        "project")


def register(sub) -> None:
    p = add_verb(sub, "run", HELP, HELP + ". While the project's scheduler runs (its "
                 "Prefect server, started by deploy), the run is created from the flow's "
                 "deployment on that server and run by the project's runner like a scheduled "
                 "run: it shows in the Prefect UI, and each state change and each task as it "
                 "finishes is shown (on stderr). Without the server, materialize and "
                 "monitoring run directly, on the serving version's build, in the deploy's "
                 "isolated environment (Prefect starts a temporary local API). training is "
                 "the scheduled retrain (deploy's rollout: a model that passes the gates goes "
                 "out through the canary) and needs the server; without it, retrain with "
                 "mlstack deploy --retrain. monitoring judges the serving version's model and "
                 "reads feature freshness from the online store; its report shows in mlstack "
                 "status and mlstack docs. Exit 0 when the run completes, 1 when it fails "
                 "(the failed task and its error named; the log or the run's page in the "
                 "hint), 2 on usage errors and when the project has not been deployed.")
    p.add_argument("flow", metavar="FLOW", choices=("materialize", "monitoring", "training",
                                                     "feed"),
                   help="the flow to run: materialize, monitoring or training (training "
                        "needs the project's scheduler)")
    add_spec(p)
    add_format(p, help="output format of the summary (default: text); json: one JSON "
                       "document on stdout, errors included (progress stays on stderr)")
    run_feed.add_options(p)
    p.set_defaults(run=run)


def _task_line(line: dict) -> None:
    seconds = line.get("seconds")
    took = f" in {seconds:.1f} s" if isinstance(seconds, (int, float)) else ""
    state = "done" if line.get("state") == "COMPLETED" else str(line.get("state", "?")).lower()
    # the error's first line: a library's query dump or traceback stays in the log
    first = next((x.strip() for x in str(line.get("error") or "").splitlines() if x.strip()), "")
    error = f": {first}" if first else ""
    sys.stderr.write(f"  {line.get('task', '?'):12} {state}{took}{error}\n")
    sys.stderr.flush()


def _state_line(state: str) -> None:
    sys.stderr.write(f"  run {str(state).lower()}\n")
    sys.stderr.flush()


def run(args: argparse.Namespace) -> int:
    if run_feed.wanted(args):
        return run_feed.run(args)
    from mlstack.cli.output import write_json
    from mlstack.ops.local.flow_run import run_flow

    sys.stderr.write(f"Running the {args.flow} flow on the deployed project...\n")
    sys.stderr.flush()
    result = run_flow(spec_of(args), args.flow, on_task=_task_line, on_state=_state_line)
    if args.format == "json":
        write_json(asdict(result))
        return 0
    sys.stdout.write(f"{result.flow} completed in {result.seconds:.1f} s (serving "
                     f"{result.version}, model {result.model_tag or '-'})\n")
    if result.url:
        sys.stdout.write(f"  the run in the {'Airflow' if '/dags/' in result.url else 'Prefect'}"
                         f" UI: {result.url}\n")
    if result.flow == "monitoring":
        sys.stdout.write(render_monitoring(result.result))
    return 0


def render_monitoring(report: dict) -> str:
    """The monitoring report in a few lines: freshness per source, the model, the alerts."""
    from mlstack.ops.report import format_age

    lines = []
    fresh = report.get("freshness") or {}
    for name, source in sorted((fresh.get("sources") or {}).items()):
        age = source.get("age_seconds")
        verdict = {True: "fresh", False: "STALE", None: "not judged"}[source.get("fresh")]
        seen = f"newest row {format_age(age)} old" if age is not None else "no row"
        lines.append(f"  freshness {name}: {seen} in the {fresh.get('read_from', 'store')} "
                     f"({verdict})")
    model = report.get("staleness") or {}
    age = model.get("age_seconds")
    verdict = {True: "STALE", False: "fresh", None: "not judged"}[model.get("stale")]
    lines.append(f"  model {model.get('model_tag') or '-'}: "
                 f"{format_age(age) + ' old' if age is not None else 'not found'} ({verdict})")
    drifted = (report.get("drift") or {}).get("drifted") or []
    lines.append(f"  drift: {', '.join(drifted) if drifted else 'none'}")
    lines += [f"  alert: {a}" for a in report.get("alerts") or []]
    return "\n".join(lines) + "\n"
