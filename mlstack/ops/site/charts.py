"""Small inline-SVG latency plots for the report: the percentiles of every verified deploy
against their SLOs, and one version's percentiles as bars. Deterministic (coordinates rounded
to one decimal); every label escaped."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from mlstack.ops.site.html import Markup, text

PERCENTILES = ("p50_ms", "p95_ms", "p99_ms")
COLORS = {"p50_ms": "#1565c0", "p95_ms": "#ef8f00", "p99_ms": "#c62828"}


def _n(value: float) -> str:
    out = f"{round(value, 1):.1f}"
    return out[:-2] if out.endswith(".0") else out


def _ms(value: float) -> str:
    return f"{value:.3g} ms"


def nice_ticks(top: float, most: int = 5) -> list[float]:
    """0 and round steps (1, 2 or 5 x 10^k) up to at least `top`, at most `most` + 1 ticks."""
    if top <= 0:
        return [0.0, 1.0]
    rough = top / most
    power = 10 ** math.floor(math.log10(rough))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= rough)
    count = math.ceil(top / step - 1e-9)
    return [round(i * step, 10) for i in range(count + 1)]


def latency_history(points: Sequence[tuple[str, Mapping]], targets: Mapping[str, float | None],
                    *, width: int = 640, height: int = 230) -> Markup:
    """p50/p95/p99 of each version's verification (x: the versions in deploy order), the
    SLO targets as dashed lines. `points`: (version, load summary); a percentile that was not
    measured leaves a gap."""
    left, right, top, bottom = 52, 120, 14, 30
    values = [float(load[p]) for _, load in points for p in PERCENTILES
              if load.get(p) is not None]
    values += [float(t) for t in targets.values() if t is not None]
    ticks = nice_ticks(max(values, default=1.0) * 1.05)
    y_max = ticks[-1]
    plot_w, plot_h = width - left - right, height - top - bottom

    def y(value: float) -> float:
        return top + plot_h - value / y_max * plot_h

    def x(i: int) -> float:
        if len(points) == 1:
            return left + plot_w / 2
        return left + i * plot_w / (len(points) - 1)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart latency-history" '
             f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
             f'aria-label="latency percentiles of every verified deploy">',
             "<title>latency percentiles of every verified deploy</title>"]
    for tick in ticks:
        parts.append(f'<line class="grid" x1="{left}" x2="{left + plot_w}" y1="{_n(y(tick))}" '
                     f'y2="{_n(y(tick))}"/><text class="tick" x="{left - 6}" '
                     f'y="{_n(y(tick) + 4)}" text-anchor="end">{tick:g}</text>')
    parts.append(f'<text class="tick" x="12" y="{_n(top + plot_h / 2)}" text-anchor="middle" '
                 f'transform="rotate(-90 12 {_n(top + plot_h / 2)})">ms</text>')
    for i, (version, _load) in enumerate(points):
        parts.append(f'<text class="tick" x="{_n(x(i))}" y="{height - 10}" '
                     f'text-anchor="middle">{text(version)}</text>')
    legend_y = top + 4
    for p in PERCENTILES:
        color, name = COLORS[p], p[:3]
        target = targets.get(p)
        if target is not None:
            parts.append(f'<line class="target" x1="{left}" x2="{left + plot_w}" '
                         f'y1="{_n(y(target))}" y2="{_n(y(target))}" stroke="{color}">'
                         f"<title>{name} SLO: {_ms(target)}</title></line>")
        series = [(x(i), y(float(load[p])), version, float(load[p]))
                  for i, (version, load) in enumerate(points) if load.get(p) is not None]
        if len(series) > 1:
            parts.append(f'<polyline class="series" fill="none" stroke="{color}" points="'
                         + " ".join(f"{_n(px)},{_n(py)}" for px, py, _, _ in series) + '"/>')
        for px, py, version, value in series:
            parts.append(f'<circle class="point" cx="{_n(px)}" cy="{_n(py)}" r="3.5" '
                         f'fill="{color}"><title>{text(version)} {name}: {_ms(value)}</title>'
                         "</circle>")
        slo = f" (SLO {target:g})" if target is not None else ""
        parts.append(f'<line x1="{left + plot_w + 10}" x2="{left + plot_w + 24}" '
                     f'y1="{legend_y}" y2="{legend_y}" stroke="{color}" stroke-width="2"/>'
                     f'<text class="tick" x="{left + plot_w + 28}" y="{legend_y + 4}">'
                     f"{name}{slo}</text>")
        legend_y += 18
    parts.append("</svg>")
    return Markup("".join(parts))


def latency_bars(load: Mapping, targets: Mapping[str, float | None], *, width: int = 320
                 ) -> Markup:
    """One version's p50/p95/p99 as bars, each with its SLO target as a tick."""
    rows = [p for p in PERCENTILES if load.get(p) is not None]
    if not rows:
        return Markup("")
    label_w, value_w, bar_h, gap = 34, 76, 12, 6
    height = len(rows) * (bar_h + gap) + gap + 14  # and a caption line
    scale_to = max([float(load[p]) for p in rows]
                   + [float(t) for p in rows if (t := targets.get(p)) is not None]) * 1.05
    track = width - label_w - value_w
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart latency-bars" '
             f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
             f'aria-label="latency percentiles against their SLOs">']
    y = gap
    for p in rows:
        value, target = float(load[p]), targets.get(p)
        over = target is not None and value > target
        w = value / scale_to * track if scale_to else 0
        parts.append(f'<text class="tick" x="0" y="{y + bar_h - 2}">{p[:3]}</text>'
                     f'<rect class="bar{" over" if over else ""}" x="{label_w}" y="{y}" '
                     f'width="{_n(max(w, 1))}" height="{bar_h}" fill="{COLORS[p]}">'
                     f"<title>{p[:3]}: {_ms(value)}</title></rect>")
        if target is not None:
            tx = label_w + target / scale_to * track
            parts.append(f'<line class="target-tick" x1="{_n(tx)}" x2="{_n(tx)}" '
                         f'y1="{y - 3}" y2="{y + bar_h + 3}"><title>SLO {_ms(target)}</title>'
                         "</line>")
        parts.append(f'<text class="tick" x="{label_w + track + 6}" y="{y + bar_h - 2}">'
                     f"{_ms(value)}</text>")
        y += bar_h + gap
    parts.append(f'<text class="tick" x="{label_w}" y="{y + 8}">bar: measured; '
                 "tick: the SLO</text></svg>")
    return Markup("".join(parts))
