"""`mlstack graph`: the system DAG as data, Mermaid and DOT (checked structurally: graphviz
is not needed)."""

import itertools
import re

import pytest

from mlstack.cli.main import main
from mlstack.codegen.graph import FLOW_TASKS, render_dot, render_mermaid, system_graph
from mlstack.frontend.analysis import require_system
from tests.conftest import BLUEPRINTS

SPECS = sorted(BLUEPRINTS.glob("*/mlstack.yaml"))


def expected_edges(system) -> set[tuple[str, str]]:
    """The data flow, from the IR, by node label."""
    source_label = {s.name: f"{s.name} ({s.kind})" for s in system.sources}
    model = f"model: {system.model.algorithm} ({system.model.task})"
    service = f"service: {system.serving.protocol}"
    edges = {(source_label[v.source], v.name) for v in system.feature_views}
    edges |= {(i.view, t.name) for t in system.transforms for i in t.inputs}
    edges |= {(f.view if f.kind == "view" else f.ref, model) for f in system.model.features}
    edges |= {(source_label[system.label.source], model), (model, service)}
    edges |= set(itertools.pairwise(FLOW_TASKS))
    edges.add(("promote", service))
    return edges


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.parent.name)
def test_graph_has_the_system_edges(spec):
    system = require_system(spec)[0]
    graph = system_graph(system)
    assert graph.labelled_edges() == expected_edges(system)
    ids = [n.id for n in graph.nodes]
    assert len(ids) == len(set(ids))
    assert all(re.fullmatch(r"[a-z_0-9]+", i) for i in ids)


def parse_dot(text: str) -> tuple[dict[str, str], set[tuple[str, str]]]:
    """A small structural DOT reader: balanced braces, statements end with ';', node
    statements `id [label="..."]`, edge statements `a -> b`. Returns (labels, edges)."""
    assert text.startswith("digraph ") and text.rstrip().endswith("}")
    assert text.count("{") == text.count("}")
    labels: dict[str, str] = {}
    edges: set[tuple[str, str]] = set()
    for line in text.splitlines()[1:-1]:
        line = line.strip()
        if line.endswith("{") or line == "}":
            continue
        assert line.endswith(";"), line
        if m := re.fullmatch(r'(\w+) -> (\w+)( \[label="[^"]*"\])?;', line):
            edges.add((m[1], m[2]))
        elif m := re.fullmatch(r'(\w+) \[label="((?:[^"\\]|\\.)*)", shape=\w+\];', line):
            labels[m[1]] = m[2]
        else:
            assert re.fullmatch(r'(rankdir=LR|label="[^"]*");', line), line
    return labels, edges


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.parent.name)
def test_dot_is_well_formed_and_has_the_edges(spec):
    system = require_system(spec)[0]
    labels, edges = parse_dot(render_dot(system_graph(system)))
    assert {a for a, _ in edges} | {b for _, b in edges} <= set(labels)
    assert {(labels[a], labels[b]) for a, b in edges} == expected_edges(system)


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.parent.name)
def test_mermaid_declares_every_node_and_edge(spec):
    system = require_system(spec)[0]
    graph = system_graph(system)
    text = render_mermaid(graph)
    lines = [line.strip() for line in text.splitlines()]
    assert lines[0] == "flowchart LR"
    assert lines.count("end") == 2
    for n in graph.nodes:
        assert any(line.startswith(n.id) and f'"{n.label}"' in line for line in lines), n
    for e in graph.edges:
        arrow = f"-->|{e.label}|" if e.label else "-->"
        assert f"{e.source} {arrow} {e.target}" in lines


def test_cli_graph(capsys):
    assert main(["graph", str(SPECS[0])]) == 0
    assert capsys.readouterr().out.startswith("flowchart LR")
    assert main(["graph", str(SPECS[0]), "--format", "dot"]) == 0
    assert capsys.readouterr().out.startswith("digraph ")
