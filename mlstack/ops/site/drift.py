"""The monitoring page's drift section: the statistic per feature, each feature's histograms
overlaid (training against what served: the prediction log, or the online store) as inline
SVG, and each side's feature statistics per feature view. Reads the report's drift section
(mlstack.runtime.served_drift); an older report without histograms shows the table alone.
Deterministic (coordinates rounded to one decimal); every label escaped."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from mlstack.frontend.ir.nodes import SystemIR
from mlstack.ops.site.charts import _n, nice_ticks
from mlstack.ops.site.html import Markup, h, join, table, text
from mlstack.ops.site.layout import code, duration, number

TRAINING_COLOR = "#1565c0"
CURRENT_COLOR = "#ef8f00"
# What the compared side is, by the section's source.
SIDE_NAMES = {"prediction_log": "served", "online_store": "online store"}
STATISTICS = ("null_rate", "mean", "p5", "p25", "p50", "p75", "p95")


def _share(value: object) -> str:
    return "-" if not isinstance(value, int | float) else f"{value:.1%}"


def histogram_svg(feature: str, bins: Mapping, *, method: str | None,
                  statistic: float | None, threshold: float | None, drifted: bool | None,
                  current: str = "served", width: int = 420, height: int = 220) -> Markup:
    """One feature's two histograms on shared bins, overlaid: the training side and the
    `current` side (each bar the share of that side's non-null values in the bin; the
    bins drawn equally wide, the edges under them), a legend with each side's nulls, and
    the statistic against its threshold in the title."""
    edges = [float(e) for e in bins.get("edges") or []]
    sides = [("training", bins.get("training") or {}, TRAINING_COLOR),
             (current, bins.get("current") or {}, CURRENT_COLOR)]
    count = max(len(edges) - 1, 1)
    left, right, top, bottom = 44, 10, 34, 58
    plot_w, plot_h = width - left - right, height - top - bottom
    shares = [float(p) for _, side, _ in sides for p in side.get("proportions") or []
              if p is not None]
    ticks = nice_ticks(max(shares, default=0.0) * 1.05 or 0.1, most=4)
    y_max = ticks[-1]
    judged = (f"{method} {number(statistic)}" if statistic is not None else
              f"{method or 'statistic'} not judged")
    verdict = "" if threshold is None else (
        f" {'above' if drifted else 'within'} threshold {threshold:g}")
    title = f"{feature}: {judged}{verdict}"
    label = f"histograms of {feature}, training against {current}"
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart drift-histogram" '
             f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
             f'aria-label="{text(label)}">', f"<title>{text(title)}</title>",
             f'<text class="chart-title" x="4" y="14">{text(title)}</text>']
    for tick in ticks:
        y = top + plot_h - tick / y_max * plot_h
        parts.append(f'<line class="grid" x1="{left}" x2="{left + plot_w}" y1="{_n(y)}" '
                     f'y2="{_n(y)}"/><text class="tick" x="{left - 5}" y="{_n(y + 4)}" '
                     f'text-anchor="end">{tick:.0%}</text>')
    slot = plot_w / count
    for name, side, color in sides:
        for i, share in enumerate((side.get("proportions") or [])[:count]):
            if share is None:
                continue
            bar_h = float(share) / y_max * plot_h
            low = "-inf" if i == 0 else f"{edges[i]:.4g}"
            high = "+inf" if i == count - 1 else f"{edges[i + 1]:.4g}"
            parts.append(f'<rect class="bar" x="{_n(left + i * slot + 1)}" '
                         f'y="{_n(top + plot_h - bar_h)}" width="{_n(max(slot - 2, 1))}" '
                         f'height="{_n(bar_h)}" fill="{color}" fill-opacity="0.5">'
                         f"<title>{text(name)} [{low}, {high}): {share:.1%}</title></rect>")
    for i, edge in enumerate(edges):
        if i in (0, len(edges) - 1) or i == len(edges) // 2:
            parts.append(f'<text class="tick" x="{_n(left + i * slot)}" '
                         f'y="{top + plot_h + 14}" text-anchor="middle">{edge:.4g}</text>')
    legend_y = height - 22
    x = left
    for name, side, color in sides:
        nulls = side.get("nulls")
        parts.append(f'<rect x="{x}" y="{legend_y - 9}" width="12" height="10" fill="{color}" '
                     f'fill-opacity="0.5"/><text class="tick" x="{x + 16}" y="{legend_y}">'
                     f"{text(name)} (nulls: {'-' if nulls is None else nulls})</text>")
        x += plot_w // 2
    parts.append(f'<text class="tick" x="{left}" y="{height - 6}">bins: the training '
                 "values' deciles, drawn equally wide</text></svg>")
    return Markup("".join(parts))


def _groups(columns: Sequence[str], system: SystemIR) -> list[tuple[Markup, list[str]]]:
    """The columns by feature view ('view__field'), then transforms, then request fields."""
    views = {v.name for v in system.feature_views}
    transforms = {t.name for t in system.transforms}
    groups: dict[tuple[int, str], list[str]] = {}
    for column in sorted(columns):
        view = column.split("__", 1)[0] if "__" in column else ""
        key = (0, view) if view in views else (1, "") if column in transforms else (2, "")
        groups.setdefault(key, []).append(column)
    titles = {1: Markup("transforms (on demand)"), 2: Markup("request fields")}
    return [(titles.get(rank) or join(["feature view ", code(view)]), members)
            for (rank, view), members in sorted(groups.items())]


def _result(drifted: bool | None) -> Markup:
    if drifted is None:
        return h("span", "not judged", class_="badge unknown")
    return h("span", "drifted" if drifted else "stable",
             class_="badge bad" if drifted else "badge ok")


def _statistics_table(columns: list[str], statistics: Mapping, current: str) -> Markup:
    rows = []
    for column in columns:
        found = statistics.get(column) or {}
        for name, side in (("training", found.get("training")),
                           (current, found.get("current"))):
            if not isinstance(side, Mapping):
                continue
            rows.append((code(column), name, side.get("rows"), _share(side.get("null_rate")),
                         *[number(side.get(s)) for s in STATISTICS[1:]]))
    return table(("feature", "side", "rows", "null rate", "mean", "p5", "p25", "p50", "p75",
                  "p95"), rows, class_="feature-statistics", empty="No statistics recorded.")


def _source_line(drift: Mapping, current: str) -> Markup | None:
    served = drift.get("served") or {}
    window = duration(served.get("window_seconds")) if served.get("window_seconds") else None
    over = f" in the last {window}" if window else ""
    if drift.get("source") == "prediction_log":
        return h("p", f"Judged on the prediction log: {served.get('rows')} rows served{over} "
                      f"(at least {served.get('min_rows')} needed).")
    if drift.get("source") == "online_store":
        why = (f" (the prediction log held {served.get('rows')} rows{over}, fewer than "
               f"{served.get('min_rows')})" if served else "")
        return h("p", f"Judged on the {current}'s values{why}.")
    return None


def drift_section(drift: Mapping, system: SystemIR) -> list[Markup | None]:
    """The monitoring page's drift part, from a monitoring report's drift section."""
    current = SIDE_NAMES.get(str(drift.get("source")), "current")
    features = drift.get("features") or {}
    method, threshold = drift.get("method"), drift.get("threshold")
    parts: list[Markup | None] = [h("h2", "Drift"), _source_line(drift, current), table(
        ("feature", method or "statistic", "rows", "result"),
        [(code(name), number(f.get("statistic")), f.get("rows"),
          _result(f.get("drifted")))
         for name, f in sorted(features.items()) if isinstance(f, dict)],
        empty="No drift check (the spec watches no feature)." if not method else
        "No feature judged.")]
    histograms = drift.get("histograms") or {}
    if histograms:
        parts += [h("h3", f"Distributions: training against {current}"), h("div", [
            histogram_svg(name, bins, method=method, threshold=threshold,
                          statistic=(features.get(name) or {}).get("statistic"),
                          drifted=(features.get(name) or {}).get("drifted"), current=current)
            for name, bins in sorted(histograms.items()) if isinstance(bins, Mapping)],
            class_="split")]
    statistics = drift.get("statistics") or {}
    if statistics:
        parts.append(h("h3", "Feature statistics"))
        for title, columns in _groups(list(statistics), system):
            parts += [h("h4", title), _statistics_table(columns, statistics, current)]
    return parts
