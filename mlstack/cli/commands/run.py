"""mlstack run FLOW [SPEC]: one run, now, of a generated flow on the deployed project."""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict

from mlstack.cli.arguments import add_format, add_spec, add_verb, spec_of

HELP = "run a generated flow (materialize, monitoring) once, now, on the deployed project"


def register(sub) -> None:
    p = add_verb(sub, "run", HELP, HELP + ": the build folder and state of the current "
                 "deploy, in the deploy's isolated environment (Prefect starts a temporary "
                 "local API; no server is needed). Each task is shown as it finishes (on "
                 "stderr). monitoring judges the serving version's model and reads feature "
                 "freshness from the online store; its report shows in mlstack status and "
                 "mlstack docs. training is refused for now: a retrain goes through deploy's "
                 "rollout (mlstack deploy --retrain). Exit 0 when the run completes, 1 when it "
                 "fails (the failed task and its error named; the log in the hint), 2 on usage "
                 "errors and when the project has not been deployed.")
    p.add_argument("flow", metavar="FLOW", choices=("materialize", "monitoring", "training"),
                   help="the flow to run: materialize or monitoring (training: use mlstack "
                        "deploy --retrain)")
    add_spec(p)
    add_format(p, help="output format of the summary (default: text); json: one JSON "
                       "document on stdout, errors included (progress stays on stderr)")
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


def run(args: argparse.Namespace) -> int:
    from mlstack.cli.output import write_json
    from mlstack.ops.local.flow_run import run_flow

    sys.stderr.write(f"Running the {args.flow} flow on the deployed project...\n")
    sys.stderr.flush()
    result = run_flow(spec_of(args), args.flow, on_task=_task_line)
    if args.format == "json":
        write_json(asdict(result))
        return 0
    sys.stdout.write(f"{result.flow} completed in {result.seconds:.1f} s (serving "
                     f"{result.version}, model {result.model_tag or '-'})\n")
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
