"""mlstack graph [SPEC]: the system DAG and the training flow, as Mermaid, Graphviz DOT, SVG or
JSON."""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict

from mlstack.cli.arguments import add_format, add_spec, add_verb, spec_of

HELP = "print the system graph (sources -> features -> model -> service, flow tasks)"


def register(sub) -> None:
    p = add_verb(sub, "graph", HELP, HELP + ".")
    add_spec(p)
    add_format(p, ("text", "mermaid", "dot", "svg", "json"),
               help="output format (default: text, which is Mermaid); dot: Graphviz; svg: an "
                    "SVG drawing (laid out by mlstack, no Graphviz needed); json: the nodes "
                    "and edges as data")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from mlstack.cli.output import write_json
    from mlstack.codegen.graph import render_dot, render_mermaid, system_graph
    from mlstack.codegen.graph_svg import render_svg
    from mlstack.frontend.analysis import require_system

    system, _analysis = require_system(spec_of(args))
    graph = system_graph(system)
    if args.format == "json":
        write_json(asdict(graph))
    else:
        render = {"dot": render_dot, "svg": render_svg}.get(args.format, render_mermaid)
        sys.stdout.write(render(graph))
    return 0
