"""The system as a graph: data flow (sources -> feature views -> transforms -> model ->
service) and the training flow's tasks, as data; Mermaid and Graphviz DOT renderings.

Node ids are generated (`source_0`, `view_1`, ...), never user text; names appear only in
quoted, escaped labels.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import cast

from mlstack.codegen.contract import TRAINING_TASKS
from mlstack.frontend.ir.nodes import SystemIR

FLOW_TASKS = TRAINING_TASKS  # the generated training flow's tasks, in the order they run


@dataclass(frozen=True)
class GraphNode:
    id: str
    label: str
    kind: str  # source | feature_view | transform | model | service | task
    group: str = "system"  # 'system' (data flow) or 'flow' (training flow tasks)


@dataclass(frozen=True)
class GraphEdge:
    source: str
    target: str
    label: str = ""


@dataclass(frozen=True)
class SystemGraph:
    name: str
    nodes: tuple[GraphNode, ...]
    edges: tuple[GraphEdge, ...]

    def node(self, node_id: str) -> GraphNode:
        return next(n for n in self.nodes if n.id == node_id)

    def labelled_edges(self) -> set[tuple[str, str]]:
        """Edges as (source label, target label): handy for tests and tools."""
        label = {n.id: n.label for n in self.nodes}
        return {(label[e.source], label[e.target]) for e in self.edges}


def system_graph(system: SystemIR) -> SystemGraph:
    nodes: list[GraphNode] = []
    edges: list[GraphEdge] = []
    source_id = {s.name: f"source_{i}" for i, s in enumerate(system.sources)}
    view_id = {v.name: f"view_{i}" for i, v in enumerate(system.feature_views)}
    transform_id = {t.name: f"transform_{i}" for i, t in enumerate(system.transforms)}
    for s in system.sources:
        nodes.append(GraphNode(source_id[s.name], f"{s.name} ({s.kind})", "source"))
    for v in system.feature_views:
        nodes.append(GraphNode(view_id[v.name], v.name, "feature_view"))
        edges.append(GraphEdge(source_id[v.source], view_id[v.name]))
    # request sources: values the request carries, drawn as sources
    request_id = {r.name: f"request_{i}" for i, r in enumerate(system.request_sources)}
    for r in system.request_sources:
        nodes.append(GraphNode(request_id[r.name], f"{r.name} (request)", "source"))
    input_id = {**view_id, **request_id}
    for t in system.transforms:
        nodes.append(GraphNode(transform_id[t.name], t.name, "transform"))
        # a view's or a request source's input names it; a transform's input names it
        for view in sorted({cast(str, i.view) for i in t.inputs
                            if i.kind in ("view", "request")}):
            edges.append(GraphEdge(input_id[view], transform_id[t.name]))
        for read in sorted({cast(str, i.transform) for i in t.inputs if i.kind == "transform"}):
            edges.append(GraphEdge(transform_id[read], transform_id[t.name]))
    m = system.model
    nodes.append(GraphNode("model", f"model: {m.algorithm} ({m.task})", "model"))
    inputs = {input_id[cast(str, f.view)] for f in m.features if f.kind in ("view", "request")}
    inputs |= {transform_id[f.ref] for f in m.features if f.kind == "transform"}
    edges.extend(GraphEdge(i, "model") for i in sorted(inputs))
    edges.append(GraphEdge(source_id[system.label.source], "model", "label"))
    nodes.append(GraphNode("service", f"service: {system.serving.protocol}", "service"))
    edges.append(GraphEdge("model", "service"))
    for task in FLOW_TASKS:
        nodes.append(GraphNode(f"task_{task}", task, "task", group="flow"))
    edges.extend(GraphEdge(f"task_{a}", f"task_{b}")
                 for a, b in itertools.pairwise(FLOW_TASKS))
    edges.append(GraphEdge("task_promote", "service", "deploys"))
    return SystemGraph(system.name, tuple(nodes), tuple(edges))


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


MERMAID_SHAPES = {"source": ("[(", ")]"), "feature_view": ("[", "]"),
                  "transform": ("{{", "}}"), "model": ("[[", "]]"), "service": ("([", "])"),
                  "task": ("(", ")")}


def render_mermaid(graph: SystemGraph) -> str:
    def node(n: GraphNode) -> str:
        label = n.label.replace('"', "#quot;")
        left, right = MERMAID_SHAPES[n.kind]
        return f'{n.id}{left}"{label}"{right}'

    lines = ["flowchart LR"]
    lines.append(f'  subgraph system_graph["{graph.name}"]')
    lines += [f"    {node(n)}" for n in graph.nodes if n.group == "system"]
    lines.append("  end")
    lines.append('  subgraph training_flow["training flow"]')
    lines += [f"    {node(n)}" for n in graph.nodes if n.group == "flow"]
    lines.append("  end")
    for e in graph.edges:
        arrow = f"-->|{e.label}|" if e.label else "-->"
        lines.append(f"  {e.source} {arrow} {e.target}")
    return "\n".join(lines) + "\n"


DOT_SHAPES = {"source": "cylinder", "feature_view": "box", "transform": "hexagon",
              "model": "box3d", "service": "oval", "task": "box"}


def render_dot(graph: SystemGraph) -> str:
    def node(n: GraphNode) -> str:
        return f"{n.id} [label={_quoted(n.label)}, shape={DOT_SHAPES[n.kind]}];"

    lines = [f"digraph {_quoted(graph.name)} {{", "  rankdir=LR;"]
    lines += [f"  {node(n)}" for n in graph.nodes if n.group == "system"]
    lines.append("  subgraph cluster_flow {")
    lines.append('    label="training flow";')
    lines += [f"    {node(n)}" for n in graph.nodes if n.group == "flow"]
    lines.append("  }")
    for e in graph.edges:
        attrs = f" [label={_quoted(e.label)}]" if e.label else ""
        lines.append(f"  {e.source} -> {e.target}{attrs};")
    lines.append("}")
    return "\n".join(lines) + "\n"
