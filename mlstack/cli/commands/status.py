"""mlstack status [SPEC]: what runs, which version serves, health, the last SLO report."""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict

from mlstack.cli.arguments import add_format, add_spec, add_verb, spec_of

HELP = "show what a local deployment runs: versions, traffic, health, last SLO report"


def register(sub) -> None:
    p = add_verb(sub, "status", HELP, HELP + ". Exit 0 when the current version is healthy, "
                 "1 when not.")
    add_spec(p)
    add_format(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from mlstack.cli.output import write_json
    from mlstack.ops.local.lifecycle import status

    result = status(spec_of(args))
    if args.format == "json":
        write_json(asdict(result))
        return 0 if result.healthy else 1
    health = "healthy" if result.healthy else "NOT healthy"
    sys.stdout.write(f"{result.project}: {health}; serving {result.current or '-'} at "
                     f"{result.endpoint or '- (router stopped)'}\n")
    for v in result.versions[-8:]:
        ready = {True: "ready", False: "not ready", None: "-"}[v.ready]
        sys.stdout.write(f"  {v.version:5} {v.status:12} traffic {v.traffic:3}%  {ready:9} "
                         f"pid {v.pid or '-':<7} model {v.model_tag or '-'}\n")
    rows = result.last_slo_report.get("rows", [])
    if rows:
        sys.stdout.write("Last SLO report:\n")
        for row in rows:
            verdict = {True: "met", False: "MISSED", None: "not measured"}[row["ok"]]
            sys.stdout.write(f"  {row['slo']:18} {row['target']:14} {row['measured']:14} "
                             f"{verdict}\n")
    return 0 if result.healthy else 1
