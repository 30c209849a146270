"""mlstack status [SPEC]: what runs, which version serves, health, the last SLO report."""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict

from mlstack.cli.arguments import add_format, add_spec, add_verb, spec_of

HELP = ("show what a local deployment runs: versions, traffic, health, last SLO "
        "report")


def register(sub) -> None:
    p = add_verb(sub, "status", HELP, HELP + ". Health is observed, not read from the record: "
                 "one real prediction through the router, each version's process tree under "
                 "its supervisor (found by owner marker), the weights the router applies "
                 "against the recorded ones, and an interrupted deploy. Also the living "
                 "system (the keeper, the sidecars, the schedules' runs, firing alerts, "
                 "the prediction log's counts) and an A/B experiment's readout (arms, "
                 "effect with its always-valid interval, p-value, decision; the whole "
                 "readout in --format json). Exit 0 when the current version is healthy, "
                 "1 when not.")
    add_spec(p)
    add_format(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from mlstack.cli.deploy_output import render_contention
    from mlstack.cli.living_output import render_experiment, render_last_retrain, render_living
    from mlstack.cli.output import write_json
    from mlstack.ops.local.lifecycle import status
    from mlstack.ops.local.profile import deployed_profile, explain_lines
    from mlstack.ops.report import SloRow

    result = status(spec_of(args))
    profile = deployed_profile(spec_of(args))
    if args.format == "json":
        write_json({**asdict(result), "serving_profile": profile[1] if profile else None})
        return 0 if result.healthy else 1
    health = "healthy" if result.healthy else "NOT healthy"
    sys.stdout.write(f"{result.project}: {health}; {render_serving(result)}\n")
    for note in result.reconciled:
        sys.stdout.write(f"  reconciled: {note}\n")
    p = result.prediction
    if p is not None:
        if p.ok:
            assert p.seconds is not None  # an answer is timed
            verdict = f"ok in {p.seconds * 1000:.0f} ms from {p.version}"
        else:
            verdict = f"FAILED ({p.status or '-'} {p.detail})".rstrip()
        sys.stdout.write(f"  prediction through the router: {verdict}\n")
    if result.deploy:
        doing = "at work" if result.deploy.get("running") else "INTERRUPTED"
        sys.stdout.write(f"  deploy of {result.deploy.get('version')}: {doing} "
                         f"(stage {result.deploy.get('stage')}, pid {result.deploy.get('pid')})\n")
    if result.live_routes is not None and result.live_routes != result.routes:
        sys.stdout.write(f"  router applies {result.live_routes}; recorded {result.routes}\n")
    for v in result.versions[-8:]:
        ready = {True: "ready", False: "not ready", None: "-"}[v.ready]
        tree = f"{len(v.processes)} procs" if v.processes else "no procs"
        restarts = (f"  restarts {v.restarts}+{v.worker_restarts}w"
                    if v.restarts or v.worker_restarts else "")
        sys.stdout.write(f"  {v.version:5} {v.status:12} traffic {v.traffic:3}%  {ready:9} "
                         f"pid {v.pid or '-':<7} {tree:9} model {v.model_tag or '-'}"
                         f"{restarts}\n")
    c = result.cluster
    if c is not None and c.joined:
        sys.stdout.write(f"  ray cluster: joined at {c.address}\n")
    elif c is not None:
        sys.stdout.write(f"  ray cluster: {c.status} at {c.address} (supervisor pid "
                         f"{c.pid or '-'}, {c.processes} procs)\n")
        for node in c.nodes:
            restarts = f"  restarts {node['restarts']}" if node["restarts"] else ""
            sys.stdout.write(f"    {node['name']:9} {node['state']:9} pid {node['pid'] or '-':<7} "
                             f"{'alive' if node['alive'] else 'NOT running'}{restarts}\n")
    for problem in result.problems:
        sys.stdout.write(f"  problem: {problem}\n")
    if result.monitoring is not None:
        sys.stdout.write(render_monitoring_line(result.monitoring))
    sys.stdout.write(render_living(result.living))
    sys.stdout.write("".join(f"{line}\n" for line in render_experiment(result.experiment)))
    sys.stdout.write("".join(f"{line}\n" for line in render_last_retrain(result.history)))
    rows = result.last_slo_report.get("rows", [])
    if rows:
        sys.stdout.write("Last SLO report:\n")
        for row in rows:
            verdict = SloRow(**row).verdict
            sys.stdout.write(f"  {row['slo']:26} {row['target']:14} {row['measured']:14} "
                             f"{verdict}\n")
        contention = result.last_slo_report.get("load", {}).get("contention")
        if contention:
            sys.stdout.write(f"  machine: {render_contention(contention)}\n")
    if profile is not None:
        sys.stdout.write("\n".join(explain_lines(profile[1], profile[0])) + "\n")
    return 0 if result.healthy else 1


def render_serving(result) -> str:
    """What serves, as observed: the version behind the running router, or why nothing does
    (the version deployed last and its state)."""
    if result.serving:
        return f"serving {result.serving} at {result.endpoint}"
    row = next((v for v in result.versions if v.version == result.current), None)
    if row is None:
        return "nothing serves"
    if not result.router_alive and row.status not in ("stopped", "failed", "rolled_back"):
        return f"nothing serves: the router is not running ({row.version} is {row.status})"
    return f"nothing serves ({row.version} deployed last, {row.status})"


def render_monitoring_line(report: dict) -> str:
    """The monitoring flow's last report in one line (and its alerts), for status."""
    if "unreadable" in report:
        return f"  monitoring: report unreadable ({report['unreadable']})\n"
    alerts = report.get("alerts") or []
    serving = report.get("serving") or {}
    model = serving.get("model_tag") or (report.get("staleness") or {}).get("model_tag")
    verdict = f"{len(alerts)} alert{'s' if len(alerts) != 1 else ''}" if alerts else "no alerts"
    text = (f"  monitoring: {verdict} at {report.get('checked_at', '-')} (model "
            f"{model or '-'}; mlstack run monitoring runs it now)\n")
    return text + "".join(f"    alert: {a}\n" for a in alerts)
