"""mlstack down [SPEC]: stop everything a local deployment started, by PID."""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict

from mlstack.cli.arguments import add_format, add_spec, add_verb, spec_of

HELP = "stop every process the project's deploys started (services, router, workers)"


def register(sub) -> None:
    p = add_verb(sub, "down", HELP, HELP + ": every process carrying the project's "
                 "owner marker, so nothing a killed deploy left behind keeps running. A "
                 "scheduled retrain at work is stopped too, not waited for (its deploy is "
                 "closed in the journal as interrupted). The journal is not needed: with an unusable one, everything is stopped all the "
                 "same and a warning names 'mlstack repair'. Exit 1 if one would not stop.")
    add_spec(p)
    add_format(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from mlstack.cli.output import write_json
    from mlstack.ops.local.lifecycle import down

    result = down(spec_of(args))
    if args.format == "json":
        write_json(asdict(result))
        return 1 if result.still_alive else 0
    if result.journal_problem:
        sys.stderr.write(f"warning: {result.journal_problem}\n")
    stopped = ", ".join(result.stopped) or "nothing was running"
    count = f" ({result.processes} processes)" if result.processes else ""
    sys.stdout.write(f"Stopped: {stopped}{count}\n")
    for note in result.reconciled:
        if not note.startswith("stopped "):
            sys.stdout.write(f"  {note}\n")
    if result.still_alive:
        sys.stderr.write(f"error: still running: pids {result.still_alive}\n")
        return 1
    return 0
