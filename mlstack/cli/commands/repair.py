"""mlstack repair [SPEC]: rebuild an unusable deploy journal from what runs and what is kept."""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict

from mlstack.cli.arguments import add_format, add_spec, add_verb, spec_of

HELP = "rebuild a local deployment's journal (.mlstack/deployments.json) from what runs"


def register(sub) -> None:
    p = add_verb(sub, "repair", HELP, HELP + ", when it cannot be read (cut short, "
                 "overwritten, the wrong shape) or is missing while the project runs. It is "
                 "rebuilt on its previous good copy (deployments.json.prev), then from what "
                 "is observed: the versions kept under .mlstack/versions/, every process "
                 "carrying the project's owner marker (each version's supervisor, port and "
                 "model, the router and its weights, the Ray cluster) and the model store. "
                 "The broken file is kept beside it as deployments.json.broken-N. Nothing is "
                 "started or stopped; a sound journal is left alone. Exit 0.")
    add_spec(p)
    add_format(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from mlstack.cli.output import write_json
    from mlstack.ops.local.journal_repair import repair

    result = repair(spec_of(args))
    if args.format == "json":
        write_json(asdict(result))
        return 0
    if not result.repaired:
        sys.stdout.write(f"{result.journal}: {'; '.join(result.notes)}\n")
        return 0
    sys.stdout.write(f"Repaired {result.journal} ({result.problem})\n")
    if result.broken_copy:
        sys.stdout.write(f"  the broken file is kept as {result.broken_copy}\n")
    sys.stdout.write(f"  rebuilt on {result.base} and what runs\n")
    for v in result.versions:
        sys.stdout.write(f"  {v['version']:5} {v['status']:12} pid {v['pid'] or '-':<7} "
                         f"port {v['port'] or '-':<6} model {v['model_tag'] or '-'}\n")
    for note in result.notes:
        sys.stdout.write(f"  {note}\n")
    if result.models:
        sys.stdout.write(f"  models promoted in the store: {', '.join(map(str, result.models))}\n")
    return 0
