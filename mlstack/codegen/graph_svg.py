"""The system graph as a standalone SVG: a simple layered layout computed here, so neither
Graphviz nor a JavaScript library is needed to draw it (`mlstack graph --format svg`, and the
report `mlstack docs` writes).

The data flow is laid out left to right in layers (a node's layer is the longest path to it
from a source: sources -> feature views -> transforms -> model -> service), the nodes of a
layer ordered by the mean position of their predecessors; the training flow's tasks run in a
lane below it. Deterministic: the same graph gives the same bytes. Every label is escaped;
node ids are the graph's generated ids (`source_0`, `view_1`, ...), never user text.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

from mlstack.codegen.graph import GraphEdge, SystemGraph

CHAR_WIDTH = 7.0  # estimated width of a character of the 12px label font
NODE_HEIGHT = 36
PAD_X = 12  # label padding inside a node
LAYER_GAP = 64  # between columns of the data flow
ROW_GAP = 18  # between nodes of a column
TASK_GAP = 26  # between the flow's tasks
MARGIN = 16
FRAME_PAD = 16  # inside a group's frame
TITLE = 22  # a group frame's title line
GROUPS_GAP = 40  # between the data flow's frame and the training flow's
BEND_HEIGHT = 8  # the room an edge that skips a layer takes in that layer's column

STYLE = """
.mls-graph text{font:12px sans-serif;fill:#1f2933}
.mls-graph .frame{fill:#f8fafc;stroke:#cbd2d9;stroke-dasharray:4 3}
.mls-graph .frame-title{font-weight:bold;fill:#52606d}
.mls-graph .edge{fill:none;stroke:#7b8794;stroke-width:1.4}
.mls-graph .edge-label{font-size:11px;fill:#52606d}
.mls-graph .shape{stroke-width:1.4}
.mls-graph .node-source .shape{fill:#e0f2f1;stroke:#00796b}
.mls-graph .node-feature_view .shape{fill:#e3f2fd;stroke:#1565c0}
.mls-graph .node-transform .shape{fill:#fff8e1;stroke:#ef8f00}
.mls-graph .node-model .shape{fill:#f3e5f5;stroke:#7b1fa2}
.mls-graph .node-service .shape{fill:#e8f5e9;stroke:#2e7d32}
.mls-graph .node-task .shape{fill:#ffffff;stroke:#616e7c}
""".strip()


@dataclass(frozen=True)
class Box:
    """A node's place: top-left corner and size."""

    x: float
    y: float
    w: float
    h: float = NODE_HEIGHT

    @property
    def cx(self) -> float:
        return self.x + self.w / 2

    @property
    def cy(self) -> float:
        return self.y + self.h / 2


@dataclass(frozen=True)
class Layout:
    width: float
    height: float
    boxes: dict[str, Box]  # the nodes', and the bends of edges that skip a layer
    routes: dict[tuple[str, str], tuple[str, ...]]  # an edge -> the bends it passes
    frames: tuple[tuple[str, Box], ...]  # (title, box) of the system and the training flow
    lane: frozenset[str] = frozenset()  # the training flow's nodes


def _width(label: str) -> float:
    return round(len(label) * CHAR_WIDTH + 2 * PAD_X)


@dataclass(frozen=True)
class Layers:
    columns: tuple[tuple[str, ...], ...]  # node ids (and bend ids, '~...') by layer, ordered
    routes: dict[tuple[str, str], tuple[str, ...]]


def layers(graph: SystemGraph) -> Layers:
    """The data flow's nodes by layer (the longest path from a node without predecessors).
    An edge that skips layers gets a bend in each layer between (the classic layered
    drawing), so it runs between the nodes rather than through them. Each column is ordered
    by the mean row of its neighbours: sweeps forward, back and forward again (ties: the
    graph's order)."""
    system = [n.id for n in graph.nodes if n.group == "system"]
    edges = [(e.source, e.target) for e in graph.edges
             if e.source in system and e.target in system]
    preds: dict[str, list[str]] = {n: [] for n in system}
    for a, b in edges:
        preds[b].append(a)
    layer = dict.fromkeys(system, 0)
    for _ in system:  # relaxed until it holds (a cycle, never in the IR, stays finite)
        layer = {n: max((layer[p] + 1 for p in preds[n]), default=0) for n in system}
    order = {node: i for i, node in enumerate(system)}
    links: list[tuple[str, str]] = []
    routes: dict[tuple[str, str], tuple[str, ...]] = {}
    for i, (a, b) in enumerate(edges):
        bends = tuple(f"~{i}.{k}" for k in range(layer[a] + 1, layer[b]))
        for k, bend in enumerate(bends):
            layer[bend], order[bend] = layer[a] + 1 + k, len(order)
        chain = (a, *bends, b)
        links += list(zip(chain, chain[1:], strict=False))
        if bends:
            routes[(a, b)] = bends
    columns: list[list[str]] = [[] for _ in range(max(layer.values(), default=-1) + 1)]
    for node in sorted(layer, key=order.__getitem__):
        columns[layer[node]].append(node)
    before = {n: [a for a, b in links if b == n] for n in layer}
    after = {n: [b for a, b in links if a == n] for n in layer}
    for neighbours, sweep in ((before, columns[1:]), (after, columns[-2::-1]),
                              (before, columns[1:])):
        for column in sweep:
            row = {n: i for c in columns for i, n in enumerate(c)}

            def mean_row(node: str, neighbours=neighbours, row=row) -> tuple[float, int]:
                placed = [row[m] for m in neighbours[node]]
                return (sum(placed) / len(placed) if placed else row[node], order[node])

            column.sort(key=mean_row)
    return Layers(tuple(tuple(c) for c in columns), routes)


def _height(node: str) -> float:
    return BEND_HEIGHT if node.startswith("~") else NODE_HEIGHT


def layout(graph: SystemGraph) -> Layout:
    label = {n.id: n.label for n in graph.nodes}
    found = layers(graph)
    columns = found.columns
    widths = [max((_width(label[n]) for n in c if n in label), default=0) for c in columns]
    heights = [sum(_height(n) for n in c) + max(len(c) - 1, 0) * ROW_GAP for c in columns]
    tallest = max(heights, default=0)
    boxes: dict[str, Box] = {}
    left = MARGIN + FRAME_PAD
    top = MARGIN + TITLE
    x: float = left
    for column, width, height in zip(columns, widths, heights, strict=True):
        y = top + (tallest - height) / 2
        for n in column:
            boxes[n] = Box(x, y, width, _height(n))
            y += _height(n) + ROW_GAP
        x += width + LAYER_GAP
    system_right = x - LAYER_GAP if columns else left
    tasks = [n for n in graph.nodes if n.group == "flow"]
    flow_top = top + tallest + FRAME_PAD + GROUPS_GAP + TITLE
    x = left
    for task in tasks:
        boxes[task.id] = Box(x, flow_top, _width(task.label))
        x += boxes[task.id].w + TASK_GAP
    flow_right = x - TASK_GAP if tasks else left
    right = max(system_right, flow_right, left + _width(graph.name))
    frame_w = right - MARGIN + FRAME_PAD
    frames = [(graph.name, Box(MARGIN, MARGIN, frame_w, TITLE + tallest + FRAME_PAD))]
    height = MARGIN + TITLE + tallest + FRAME_PAD
    if tasks:
        frames.append(("training flow", Box(MARGIN, flow_top - TITLE, frame_w,
                                            TITLE + NODE_HEIGHT + FRAME_PAD)))
        height = flow_top + NODE_HEIGHT + FRAME_PAD
    return Layout(right + FRAME_PAD + MARGIN, height + MARGIN, boxes, found.routes,
                  tuple(frames), frozenset(n.id for n in tasks))


def _n(value: float) -> str:
    """A coordinate: at most one decimal, no trailing zeros."""
    text = f"{round(value, 1):.1f}"
    return text[:-2] if text.endswith(".0") else text


def _shape(kind: str, b: Box) -> str:
    x, y, w, h = b.x, b.y, b.w, b.h
    if kind == "source":  # a cylinder
        ry = 5
        return (f'<path class="shape" d="M{_n(x)},{_n(y + ry)} '
                f'a{_n(w / 2)},{ry} 0 0,1 {_n(w)},0 v{_n(h - 2 * ry)} '
                f'a{_n(w / 2)},{ry} 0 0,1 {_n(-w)},0 z"/>'
                f'<path class="shape" fill="none" d="M{_n(x)},{_n(y + ry)} '
                f'a{_n(w / 2)},{ry} 0 0,0 {_n(w)},0"/>')
    if kind == "transform":  # a hexagon
        d = 10
        points = [(x + d, y), (x + w - d, y), (x + w, y + h / 2), (x + w - d, y + h),
                  (x + d, y + h), (x, y + h / 2)]
        return ('<polygon class="shape" points="'
                + " ".join(f"{_n(px)},{_n(py)}" for px, py in points) + '"/>')
    if kind == "model":  # a box with a double border
        return (f'<rect class="shape" x="{_n(x)}" y="{_n(y)}" width="{_n(w)}" height="{h}"/>'
                f'<rect class="shape" fill="none" x="{_n(x + 3)}" y="{_n(y + 3)}" '
                f'width="{_n(w - 6)}" height="{h - 6}"/>')
    rx = {"service": h / 2, "task": 8}.get(kind, 3)
    return (f'<rect class="shape" x="{_n(x)}" y="{_n(y)}" width="{_n(w)}" height="{h}" '
            f'rx="{_n(rx)}"/>')


def _curve(p0: tuple[float, float], p3: tuple[float, float]) -> tuple[tuple, tuple]:
    """The control points of a left-to-right S curve from p0 to p3."""
    bend = max((p3[0] - p0[0]) / 2, 10)
    return (p0[0] + bend, p0[1]), (p3[0] - bend, p3[1])


def _point(p: tuple[float, float]) -> str:
    return f"{_n(p[0])},{_n(p[1])}"


def _edge(e: GraphEdge, lay: Layout) -> str:
    boxes = lay.boxes
    a, b = boxes[e.source], boxes[e.target]
    if (e.source in lay.lane) == (e.target in lay.lane):  # left to right, through the
        # bends of the layers it skips
        stops = [(a.x + a.w, a.cy)]
        for bend in lay.routes.get((e.source, e.target), ()):
            stops += [(boxes[bend].x, boxes[bend].cy), (boxes[bend].x + boxes[bend].w,
                                                        boxes[bend].cy)]
        stops.append((b.x, b.cy))
        d = f"M{_point(stops[0])}"
        for i in range(0, len(stops) - 1, 2):
            p1, p2 = _curve(stops[i], stops[i + 1])
            d += f" C{_point(p1)} {_point(p2)} {_point(stops[i + 1])}"
            if i + 2 < len(stops):
                d += f" L{_point(stops[i + 2])}"
        p0, p3 = stops[0], stops[1]
        p1, p2 = _curve(p0, p3)
    else:  # from the flow lane up into the data flow: top to bottom
        p0, p3 = (a.cx, a.y), (b.cx, b.y + b.h)
        rise = (p0[1] - p3[1]) / 2
        p1, p2 = (p0[0], p0[1] - rise), (p3[0], p3[1] + rise)
        d = f"M{_point(p0)} C{_point(p1)} {_point(p2)} {_point(p3)}"
    out = (f'<path class="edge" data-source="{e.source}" data-target="{e.target}" d="{d}" '
           f'marker-end="url(#mls-graph-arrow)"/>')
    if e.label:  # at the middle of the (first) curve
        mx = (p0[0] + 3 * p1[0] + 3 * p2[0] + p3[0]) / 8
        my = (p0[1] + 3 * p1[1] + 3 * p2[1] + p3[1]) / 8
        out += (f'<text class="edge-label" x="{_n(mx + 4)}" y="{_n(my - 4)}">'
                f"{escape(e.label)}</text>")
    return out


def render_svg(graph: SystemGraph) -> str:
    """The graph as one SVG document (its own style, no external reference)."""
    lay = layout(graph)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="mls-graph" '
             f'width="{_n(lay.width)}" height="{_n(lay.height)}" '
             f'viewBox="0 0 {_n(lay.width)} {_n(lay.height)}" role="img" '
             f'aria-label="{escape(graph.name)}: system graph">',
             f"<title>{escape(graph.name)}: system graph</title>",
             f"<style>{STYLE}</style>",
             '<defs><marker id="mls-graph-arrow" viewBox="0 0 10 10" refX="10" refY="5" '
             'markerWidth="7" markerHeight="7" orient="auto-start-reverse">'
             '<path d="M0,0 L10,5 L0,10 z" fill="#7b8794"/></marker></defs>']
    for title, b in lay.frames:
        parts.append(f'<rect class="frame" x="{_n(b.x)}" y="{_n(b.y)}" width="{_n(b.w)}" '
                     f'height="{_n(b.h)}" rx="6"/>'
                     f'<text class="frame-title" x="{_n(b.x + 8)}" y="{_n(b.y + 16)}">'
                     f"{escape(title)}</text>")
    parts += [_edge(e, lay) for e in graph.edges]
    for n in graph.nodes:
        b = lay.boxes[n.id]
        parts.append(f'<g class="node node-{n.kind}" id="{n.id}" data-kind="{n.kind}">'
                     f"<title>{escape(n.label)}</title>{_shape(n.kind, b)}"
                     f'<text x="{_n(b.cx)}" y="{_n(b.cy + 4)}" text-anchor="middle">'
                     f"{escape(n.label)}</text></g>")
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
