"""mlstack plan [SPEC]: what compiling would change (files, resources, infrastructure and its
cost estimate), nothing written."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

from mlstack.cli.arguments import add_format, add_spec, add_verb, spec_of

HELP = "show what compiling would change, in files and in ML terms; nothing is written"


def register(sub) -> None:
    p = add_verb(sub, "plan", HELP, HELP + ". Resources are diffed against the IR recorded "
                 "by the last compile in the output folder; for a deployed local project, "
                 "what `mlstack deploy` would do is planned against the version that serves "
                 "(its IR, the data it trained on and its service files), with its stages. For kubernetes/aws targets it also "
                 "lists the Terraform resources to add, change or destroy and a monthly cost "
                 "estimate (from a versioned price table; an estimate, not a quote). Lint's "
                 "warnings are shown too (on stderr; in the JSON with --format json).")
    add_spec(p)
    p.add_argument("-o", "--output", metavar="DIR",
                   help="output folder to compare with (default: <spec folder>/build)")
    add_format(p)
    p.add_argument("--explain", action="store_true",
                   help="also show the derived settings: value, previous value and why")
    p.add_argument("--detailed-exitcode", action="store_true",
                   help="exit 0 when nothing changes, 2 when something does, 1 on errors")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from mlstack.cli.output import write_warnings
    from mlstack.cli.plan_output import render_explain, render_plan, render_plan_json
    from mlstack.workspace.build import compile_tree
    from mlstack.workspace.plan import plan

    compiled = compile_tree(spec_of(args), args.output)
    result = plan(compiled.system, compiled.tree, compiled.paths.out_dir)
    if compiled.system.target.kind == "local":
        from mlstack.ops.local.stages.plan import deployed_plan

        serving = deployed_plan(compiled.paths.spec, compiled.system, compiled.tree)
        if serving is not None:
            result = replace(result, serving_plan=serving)
    if args.format == "json":
        sys.stdout.write(render_plan_json(result, compiled.warnings))
    else:
        write_warnings(compiled.warnings)
        sys.stdout.write(render_plan(result))
        if args.explain:
            sys.stdout.write("\n" + render_explain(result))
            _explain_deployed(compiled.system, spec_of(args))
    return 2 if args.detailed_exitcode and result.has_changes else 0


def _explain_deployed(system, spec) -> None:
    """After a local deploy: what the serving version measured (batching, model runtime)."""
    if system.target.kind != "local":
        return
    from mlstack.ops.local.profile import deployed_profile, explain_lines

    found = deployed_profile(spec)
    if found is not None:
        version, profile = found
        sys.stdout.write("\n" + "\n".join(explain_lines(profile, version)) + "\n")
