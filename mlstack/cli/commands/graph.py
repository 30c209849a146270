"""mlstack graph SPEC: the system DAG and the training flow, as Mermaid or Graphviz DOT."""

from __future__ import annotations

import argparse
import sys

HELP = "print the system graph (sources -> features -> model -> service, flow tasks)"


def register(sub) -> None:
    p = sub.add_parser("graph", help=HELP, description=HELP + ".")
    p.add_argument("spec", metavar="SPEC", help="spec file (or a folder holding mlstack.yaml)")
    p.add_argument("--format", choices=("mermaid", "dot"), default="mermaid",
                   help="output format (default: mermaid)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from mlstack.codegen.graph import render_dot, render_mermaid, system_graph
    from mlstack.frontend.analysis import require_system

    system, _analysis = require_system(args.spec)
    graph = system_graph(system)
    sys.stdout.write(render_dot(graph) if args.format == "dot" else render_mermaid(graph))
    return 0
