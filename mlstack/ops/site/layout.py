"""The report's frame: the page list, one page's HTML around its body (inline CSS, a content
security policy that allows nothing from outside the page, no script), and how values are
written (durations, times in UTC, numbers)."""

from __future__ import annotations

import math
from datetime import UTC, datetime

from mlstack.ops.site.html import Markup, h, join, text

# (file, title) of every page, in the navigation's order.
PAGES = (("index.html", "Overview"), ("features.html", "Feature catalog"),
         ("model.html", "Model card"), ("slos.html", "SLO verification"),
         ("rollouts.html", "Rollouts"), ("monitoring.html", "Monitoring"),
         ("plan.html", "Plan"))
# Nothing is loaded from anywhere, and no script runs: styles inline, images from the folder.
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:"

CSS = """
:root{--fg:#1f2933;--muted:#52606d;--line:#d9e2ec;--bg:#f5f7fa;--ok:#2e7d32;--bad:#c62828}
*{box-sizing:border-box}
body{margin:0;font:14px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);
background:#fff}
header{background:#102a43;color:#fff;padding:10px 24px;display:flex;flex-wrap:wrap;
align-items:center;gap:8px 20px}
header .brand{font-weight:600;color:#9fb3c8}
header .system{font-size:16px;font-weight:700}
nav a{color:#d9e2ec;text-decoration:none;margin-right:14px}
nav a[aria-current=page]{color:#fff;border-bottom:2px solid #fff}
main{padding:8px 24px 32px;max-width:1280px}
h1{font-size:22px;margin:16px 0 8px}
h2{font-size:17px;margin:24px 0 8px;border-bottom:1px solid var(--line);padding-bottom:4px}
h3{font-size:15px;margin:18px 0 6px}
p.lead{color:var(--muted);margin-top:0}
table{border-collapse:collapse;margin:6px 0 12px;font-size:13px}
th,td{border:1px solid var(--line);padding:4px 9px;text-align:left;vertical-align:top}
th{background:var(--bg);font-weight:600}
td code,dd code,li code{font-size:12px}
code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;background:var(--bg);
padding:0 3px;border-radius:3px}
dl{display:grid;grid-template-columns:max-content auto;gap:3px 16px;margin:6px 0 12px}
dt{color:var(--muted)}dd{margin:0}
.badge{display:inline-block;padding:0 7px;border-radius:9px;font-size:12px;font-weight:600;
white-space:nowrap}
.badge.ok{background:#e8f5e9;color:var(--ok)}.badge.bad{background:#ffebee;color:var(--bad)}
.badge.unknown{background:var(--bg);color:var(--muted)}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin:10px 0}
.card{border:1px solid var(--line);border-radius:6px;padding:8px 14px;min-width:150px}
.card .value{font-size:20px;font-weight:700}.card .label{color:var(--muted);font-size:12px}
.graph{overflow-x:auto;border:1px solid var(--line);border-radius:6px;padding:6px}
.graph svg{max-width:100%;height:auto;display:block}
.empty,.note{color:var(--muted);font-style:italic}
.warn{border-left:4px solid #ef8f00;background:#fff8e1;padding:6px 12px;margin:8px 0}
.version{border:1px solid var(--line);border-radius:6px;padding:4px 14px;margin:12px 0}
.split{display:flex;flex-wrap:wrap;gap:8px 32px;align-items:flex-start}
.chart text{font:11px sans-serif;fill:var(--muted)}
.chart .grid{stroke:#e4e7eb}.chart .target{stroke-dasharray:5 4;stroke-width:1.2}
.chart .series{stroke-width:1.8}.chart .target-tick{stroke:#1f2933;stroke-width:2}
footer{color:var(--muted);font-size:12px;padding:12px 24px;border-top:1px solid var(--line)}
""".strip()


def page(system: str, current: str, body: Markup, footer: str) -> str:
    """One page of the report: `current` is its file name (from PAGES)."""
    title = dict(PAGES)[current]
    nav = h("nav", [h("a", t, href=f, aria_current="page" if f == current else None)
                    for f, t in PAGES])
    head = h("head", h("meta", charset="utf-8"),
             h("meta", http_equiv="Content-Security-Policy", content=CSP),
             h("meta", name="viewport", content="width=device-width, initial-scale=1"),
             h("title", f"{system}: {title} (mlstack docs)"), h("style", Markup(CSS)))
    body = h("body", h("header", h("span", "mlstack docs", class_="brand"),
                       h("span", system, class_="system"), nav),
             h("main", h("h1", title), body), h("footer", footer))
    return "<!DOCTYPE html>\n" + h("html", head, body, lang="en") + "\n"


def duration(seconds: float | None) -> str:
    """90 -> '90s', 3600 -> '1h', 172800 -> '2d', 5400 -> '90min'."""
    if seconds is None:
        return "-"
    if seconds and float(seconds).is_integer():
        for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
            if seconds % size == 0:
                return f"{int(seconds // size)}{unit}"
        return f"{int(seconds)}s"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if abs(seconds) >= size:
            return f"{seconds / size:.3g}{unit}"
    return f"{seconds:.3g}s"


def when(timestamp: float | None) -> str:
    """A Unix time in UTC, to the second."""
    if not isinstance(timestamp, (int, float)) or isinstance(timestamp, bool):
        return "-"
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def number(value: object) -> str:
    """A metric or a measurement: floats to 4 decimals, the rest as written."""
    if isinstance(value, bool) or value is None:
        return "-" if value is None else str(value).lower()
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        return f"{round(value, 4):g}" if abs(value) < 1e6 else f"{value:.4g}"
    return str(value)


def short(digest: str | None) -> str:
    return (digest or "-")[:12]


def code(value: object) -> Markup:
    return h("code", value)


def cards(items: list[tuple[str, object]]) -> Markup:
    """Big numbers with a caption."""
    return h("div", [h("div", h("div", value, class_="value"), h("div", label, class_="label"),
                       class_="card") for label, value in items], class_="cards")


def notes(lines: list[str] | tuple[str, ...]) -> Markup:
    return join(h("p", line, class_="warn") for line in lines)


def details(mapping: dict, skip: tuple[str, ...] = ()) -> str:
    """A record's other fields as 'key: value; ...' (sorted keys, lists joined)."""
    parts = []
    for key in sorted(mapping):
        if key in skip:
            continue
        value = mapping[key]
        if isinstance(value, list):
            value = ", ".join(str(v) for v in value)
        elif isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in sorted(value.items()))
        parts.append(f"{key}: {number(value) if isinstance(value, float) else value}")
    return "; ".join(parts)


__all__ = ["CSP", "PAGES", "cards", "code", "details", "duration", "notes", "number", "page",
           "short", "text", "when"]
