"""Live quality over time (the report's monitoring page): each monitoring run's live metric
per version (the runtime's quality history, one point per run: runtime.state.quality_point),
with its 95% interval as a bar and the SLO's gate as a dashed line. Pure functions returning
SVG text: no script, the same bytes for the same history."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mlstack.ops.site.charts import _n
from mlstack.ops.site.html import Markup, h, join, text

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")


def metric_names(history: Sequence[Mapping[str, Any]]) -> list[str]:
    """The metrics the history holds a value of, sorted."""
    return sorted({name for point in history for entry in (point.get("versions") or {}).values()
                   for name, m in (entry.get("metrics") or {}).items()
                   if isinstance(m, dict) and m.get("value") is not None})


def quality_over_time(history: Sequence[Mapping[str, Any]], metric: str,
                      gate: tuple[str, float] | None = None, *, width: int = 640,
                      height: int = 220) -> Markup:
    """One metric of every version over the monitoring runs (x: the runs in order, labelled
    by their time), its interval as a vertical bar, the gate (op, threshold) dashed."""
    left, right, top, bottom = 52, 130, 16, 34
    versions = sorted({v for point in history for v in (point.get("versions") or {})})
    series: dict[str, list[tuple[int, float, float | None, float | None, int | None]]] = {}
    for i, point in enumerate(history):
        for version, entry in (point.get("versions") or {}).items():
            m = (entry.get("metrics") or {}).get(metric)
            if isinstance(m, dict) and m.get("value") is not None:
                series.setdefault(version, []).append(
                    (i, float(m["value"]), m.get("low"), m.get("high"), entry.get("n")))
    values = [float(figure) for points in series.values() for _, value, lo, hi, _ in points
              for figure in (value, lo, hi) if figure is not None]
    if gate is not None:
        values.append(gate[1])
    low = min(values, default=0.0)
    high = max(values, default=1.0)
    if high - low < 1e-9:
        low, high = low - 0.5, high + 0.5
    pad = (high - low) * 0.08
    low, high = low - pad, high + pad
    plot_w, plot_h = width - left - right, height - top - bottom

    def y(value: float) -> float:
        return top + plot_h - (value - low) / (high - low) * plot_h

    def x(i: int) -> float:
        return left + plot_w / 2 if len(history) == 1 else left + i * plot_w / (len(history) - 1)

    label = f"live {metric} of every version over the monitoring runs"
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart quality-history" '
             f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
             f'aria-label="{text(label)}">', f"<title>{text(label)}</title>"]
    for k in range(5):
        tick = low + (high - low) * k / 4
        parts.append(f'<line class="grid" x1="{left}" x2="{left + plot_w}" y1="{_n(y(tick))}" '
                     f'y2="{_n(y(tick))}"/><text class="tick" x="{left - 6}" '
                     f'y="{_n(y(tick) + 4)}" text-anchor="end">{tick:.3g}</text>')
    for i in sorted({0, len(history) - 1}):
        stamp = str(history[i].get("checked_at") or "")[:16].replace("T", " ")
        parts.append(f'<text class="tick" x="{_n(x(i))}" y="{height - 12}" '
                     f'text-anchor="middle">{text(stamp)}</text>')
    if gate is not None:
        op, threshold = gate
        parts.append(f'<line class="target" x1="{left}" x2="{left + plot_w}" '
                     f'y1="{_n(y(threshold))}" y2="{_n(y(threshold))}" stroke="#555">'
                     f"<title>SLO: {text(metric)} {text(op)} {threshold:g}</title></line>")
    legend_y = top + 4
    for n, version in enumerate(versions):
        color = PALETTE[n % len(PALETTE)]
        points = series.get(version, [])
        if len(points) > 1:
            parts.append(f'<polyline class="series" fill="none" stroke="{color}" points="'
                         + " ".join(f"{_n(x(i))},{_n(y(v))}" for i, v, *_ in points) + '"/>')
        for i, value, lo, hi, count in points:
            if lo is not None and hi is not None:
                parts.append(f'<line class="interval" x1="{_n(x(i))}" x2="{_n(x(i))}" '
                             f'y1="{_n(y(float(lo)))}" y2="{_n(y(float(hi)))}" '
                             f'stroke="{color}"/>')
            parts.append(f'<circle class="point" cx="{_n(x(i))}" cy="{_n(y(value))}" r="3" '
                         f'fill="{color}"><title>{text(version)} {text(metric)} {value:.4g}'
                         + (f" [{float(lo):.4g}, {float(hi):.4g}]" if lo is not None
                            and hi is not None else "")
                         + (f", n {count}" if count is not None else "") + "</title></circle>")
        parts.append(f'<line x1="{left + plot_w + 10}" x2="{left + plot_w + 24}" '
                     f'y1="{legend_y}" y2="{legend_y}" stroke="{color}" stroke-width="2"/>'
                     f'<text class="tick" x="{left + plot_w + 28}" y="{legend_y + 4}">'
                     f"{text(version)}</text>")
        legend_y += 18
    if gate is not None:
        parts.append(f'<line x1="{left + plot_w + 10}" x2="{left + plot_w + 24}" '
                     f'y1="{legend_y}" y2="{legend_y}" stroke="#555" stroke-dasharray="4 3"/>'
                     f'<text class="tick" x="{left + plot_w + 28}" y="{legend_y + 4}">'
                     f"SLO {text(gate[0])} {gate[1]:g}</text>")
    parts.append("</svg>")
    return Markup("".join(parts))


def quality_section(history: Sequence[Mapping[str, Any]],
                    gates: Mapping[str, tuple[str, float]]) -> Markup:
    """The monitoring page's "Live quality over time": a chart per metric the runs measured
    (the slos.quality gate drawn where one names it), or why there is none."""
    parts: list[Any] = [h("h2", "Live quality over time")]
    names = metric_names(history)
    if not names:
        parts.append(h("p", "No live quality measured yet: each monitoring run adds a point "
                            "once a version has enough answers with outcomes (from POST "
                            "/feedback or the label source).", class_="empty"))
        return join(parts)
    parts.append(h("p", f"{len(history)} monitoring runs; each point is a version's live "
                        "metric over the run's window, its bar the 95% interval."))
    parts += [Markup(quality_over_time(history, name, gates.get(name))) for name in names]
    return join(parts)


STATUS_BADGES = {"met": "badge ok", "missed": "badge bad", "uncertain": "badge unknown",
                 "not_enough": "badge unknown", "unmeasured": "badge unknown"}


def live_quality_table(live: Mapping[str, Any] | None) -> Markup:
    """The last monitoring run's live quality: each gate on each version, its value with the
    interval, the samples and the verdict (met, missed on evidence, uncertain, not enough)."""
    from mlstack.ops.site.html import table

    parts: list[Any] = [h("h2", "Live quality (last run)")]
    if not live or not live.get("enabled", True):
        parts.append(h("p", "Off: the prediction log is off (monitoring.prediction_log).",
                       class_="empty"))
        return join(parts)
    parts.append(h("p", f"{live.get('logged', 0)} answers logged in the window; outcomes from "
                        f"POST /feedback {live.get('from_feedback', 0)}, from the label source "
                        f"{live.get('from_labels', 0)}."))
    rows = []
    for g in live.get("judged") or []:
        value = g.get("value")
        shown = "-" if value is None else (
            f"{value:.4g}" + (f" [{g['low']:.4g}, {g['high']:.4g}]"
                              if g.get("low") is not None and g.get("high") is not None
                              else ""))
        status = str(g.get("status"))
        rows.append((h("code", g.get("version")), f"{g.get('metric')} {g.get('op')} "
                     f"{g.get('threshold')}", shown, g.get("n"),
                     h("span", status.replace("_", " "),
                       class_=STATUS_BADGES.get(status, "badge unknown"))))
    parts.append(table(("version", "SLO", "live value [95% interval]", "outcomes", "result"),
                       rows, empty="No quality SLO to judge (slos.quality names none)."))
    return join(parts)
