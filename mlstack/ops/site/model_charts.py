"""The model card's held-out evaluation of a version: its ROC and PR curves (inline SVG), its
confusion matrix (a table of counts and row-normalised rates) and its feature importance (an
SVG bar chart), drawn from the `evaluation` entry of the training record the flow wrote
(mlstack.runtime.evaluation.evaluation_details). Pure functions of the record: no script,
coordinates rounded to one decimal, every label escaped; an entry the record lacks, or one it
holds as {"reason": ...}, is said in words instead."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mlstack.ops.site.charts import _n
from mlstack.ops.site.html import Markup, h, join, table, text

CURVE_COLOR = "#1565c0"
BAR_COLOR = "#1565c0"
MOST_BARS = 20  # features drawn; the rest are counted under the chart
_FRAME = 'stroke="#9aa5b1" fill="none"'


def _g(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, int | float) else "-"


def _unit_curve(xs: Sequence[Any], ys: Sequence[Any], *, title: str, x_label: str,
                y_label: str, name: str, diagonal: bool, size: int = 240) -> Markup:
    """A curve on the unit square (x and y from 0 to 1), axes ticked at 0, 0.5 and 1; with
    `diagonal`, the chance line from (0, 0) to (1, 1) dashed."""
    left, top, bottom, right = 44, 24, 36, 12
    plot = size - left - right
    width, height = size, top + plot + bottom

    def x(v: float) -> float:
        return left + v * plot

    def y(v: float) -> float:
        return top + plot - v * plot

    points = [(float(a), float(b)) for a, b in zip(xs, ys, strict=True)
              if isinstance(a, int | float) and isinstance(b, int | float)]
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart {name}" width="{width}" '
             f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
             f'aria-label="{text(title)}"><title>{text(title)}</title>',
             f'<text x="{left}" y="14">{text(title)}</text>',
             f'<rect x="{left}" y="{top}" width="{plot}" height="{plot}" {_FRAME}/>']
    for tick in (0.0, 0.5, 1.0):
        parts.append(f'<line class="grid" x1="{_n(x(tick))}" x2="{_n(x(tick))}" y1="{top}" '
                     f'y2="{top + plot}"/><line class="grid" x1="{left}" x2="{left + plot}" '
                     f'y1="{_n(y(tick))}" y2="{_n(y(tick))}"/>'
                     f'<text x="{_n(x(tick))}" y="{top + plot + 14}" text-anchor="middle">'
                     f'{tick:g}</text><text x="{left - 5}" y="{_n(y(tick) + 4)}" '
                     f'text-anchor="end">{tick:g}</text>')
    parts.append(f'<text x="{_n(left + plot / 2)}" y="{height - 6}" text-anchor="middle">'
                 f'{text(x_label)}</text><text x="12" y="{_n(top + plot / 2)}" '
                 f'text-anchor="middle" transform="rotate(-90 12 {_n(top + plot / 2)})">'
                 f'{text(y_label)}</text>')
    if diagonal:
        parts.append(f'<line class="chance" x1="{_n(x(0))}" y1="{_n(y(0))}" x2="{_n(x(1))}" '
                     f'y2="{_n(y(1))}" stroke="#9aa5b1" stroke-dasharray="4 4">'
                     "<title>chance</title></line>")
    if points:
        parts.append(f'<polyline class="curve" fill="none" stroke="{CURVE_COLOR}" '
                     'stroke-width="2" points="'
                     + " ".join(f"{_n(x(a))},{_n(y(b))}" for a, b in points) + '"/>')
    parts.append("</svg>")
    return Markup("".join(parts))


def roc_svg(roc: Mapping[str, Any]) -> Markup:
    """The ROC curve (true against false positive rate) with the chance diagonal."""
    return _unit_curve(roc["fpr"], roc["tpr"], title=f"ROC curve, AUC {_g(roc.get('auc'))}",
                       x_label="false positive rate", y_label="true positive rate",
                       name="roc-curve", diagonal=True)


def pr_svg(pr: Mapping[str, Any]) -> Markup:
    """The precision-recall curve, titled with its average precision."""
    title = f"PR curve, average precision {_g(pr.get('average_precision'))}"
    return _unit_curve(pr["recall"], pr["precision"], title=title, x_label="recall",
                       y_label="precision", name="pr-curve", diagonal=False)


def confusion_table(matrix: Mapping[str, Any]) -> Markup:
    """Rows: the actual class; columns: the predicted one; each cell its count and, in
    parentheses, its share of the row (the row's total is its actual rows)."""
    labels, counts = list(matrix["labels"]), [list(row) for row in matrix["counts"]]
    if len(counts) != len(labels) or any(len(row) != len(labels) for row in counts):
        raise ValueError("the counts are not a labels x labels matrix")
    rows = []
    for label, row in zip(labels, counts, strict=True):
        total = sum(int(c) for c in row)
        cells = [f"{int(c)} ({int(c) / total:.2f})" if total else f"{int(c)} (-)" for c in row]
        rows.append((f"actual {label}", *cells, total))
    headers = ("", *[f"predicted {label}" for label in labels], "rows")
    threshold = matrix.get("threshold")
    rule = (f"the positive class ({labels[-1]}) is predicted at probability >= "
            f"{threshold:g}, as the service's output is judged" if threshold is not None
            else "the model's predicted class")
    return join([table(headers, rows, class_="confusion"),
                 h("p", f"Each cell: rows of the actual class predicted as the column's "
                        f"class (the share of the actual class's rows); {rule}.",
                   class_="note")])


def importance_svg(importance: Mapping[str, Any], *, width: int = 520) -> Markup:
    """Horizontal bars of the model's feature importance, the largest first (at most
    MOST_BARS; the rest are counted below the chart)."""
    names, values = list(importance["features"]), list(importance["values"])
    if len(names) != len(values):
        raise ValueError("features and values differ in length")
    shown = [(str(n), float(v)) for n, v in zip(names, values, strict=True)
             if isinstance(v, int | float)][:MOST_BARS]
    label_w = min(220, 12 + 7 * max((len(n) for n, _ in shown), default=4))
    value_w, bar_h, gap = 64, 14, 5
    track = width - label_w - value_w
    top_value = max((v for _, v in shown), default=0.0)
    height = len(shown) * (bar_h + gap) + gap + 16
    method = str(importance.get("method") or "importance")
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart feature-importance" '
             f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
             f'aria-label="feature importance"><title>feature importance: {text(method)}'
             "</title>"]
    y = gap
    for name, value in shown:
        w = value / top_value * track if top_value > 0 else 0.0
        parts.append(f'<text x="{label_w - 6}" y="{y + bar_h - 3}" text-anchor="end">'
                     f'{text(name)}</text><rect class="bar" x="{label_w}" y="{y}" '
                     f'width="{_n(max(w, 1.0))}" height="{bar_h}" fill="{BAR_COLOR}">'
                     f"<title>{text(name)}: {value:.4g}</title></rect>"
                     f'<text x="{_n(label_w + w + 5)}" y="{y + bar_h - 3}">{value:.4g}</text>')
        y += bar_h + gap
    parts.append(f'<text x="{label_w}" y="{y + 10}">{text(method)}</text></svg>')
    more = len(names) - len(shown)
    return join([Markup("".join(parts)),
                 h("p", f"and {more} more features, smaller", class_="note") if more > 0
                 else None])


def _missing(model_tag: str | None, training: Mapping[str, Any] | None) -> str | None:
    """Why the training record holds no evaluation of `model_tag`, or None when it does."""
    if training is None:
        return "No training record (.mlstack/runtime/training.json): no curves to draw."
    if training.get("status") != "completed":
        return "The latest training run did not complete: no curves to draw."
    if not model_tag or training.get("model_tag") != model_tag:
        return (f"The latest training record is of model {training.get('model_tag')}, not "
                f"this version's: its curves are not recorded here.")
    if not isinstance(training.get("evaluation"), Mapping):
        return ("This training record has no curves, confusion matrix or feature importance: "
                "it was written before mlstack recorded them (the next training records "
                "them).")
    return None


def _entry(evaluation: Mapping[str, Any], key: str, what: str, draw) -> Markup | None:
    """One chart of the record: drawn, its recorded reason, or why it could not be drawn;
    None when the record has no such entry."""
    entry = evaluation.get(key)
    if entry is None:
        return None
    if isinstance(entry, Mapping) and "reason" in entry:
        return h("p", f"{what}: {entry['reason']}", class_="note")
    try:
        drawn: Markup = draw(entry)
    except (KeyError, TypeError, ValueError) as exc:
        return h("p", f"{what}: the record's entry cannot be drawn ({type(exc).__name__}: "
                      f"{exc})", class_="note")
    return drawn


def held_out_evaluation(model_tag: str | None, training: Mapping[str, Any] | None) -> Markup:
    """The section of a version's card that draws its held-out evaluation, from the training
    record when that record is of the version's model; else a line saying why not."""
    heading = h("h4", "Held-out evaluation")
    reason = _missing(model_tag, training)
    if reason is not None:
        return join([heading, h("p", reason, class_="empty")])
    assert training is not None  # _missing said so
    evaluation = training["evaluation"]
    curves = [_entry(evaluation, "roc_curve", "ROC curve", roc_svg),
              _entry(evaluation, "pr_curve", "PR curve", pr_svg)]
    matrix = _entry(evaluation, "confusion_matrix", "Confusion matrix", confusion_table)
    importance = _entry(evaluation, "feature_importance", "Feature importance",
                        importance_svg)
    not_classifier = (None if any(c is not None for c in (*curves, matrix)) else
                      h("p", "No ROC or PR curve or confusion matrix: the model is not a "
                             "classifier.", class_="note"))
    return join([heading, h("div", curves, class_="split") if any(curves) else None,
                 not_classifier, h("h4", "Confusion matrix") if matrix else None, matrix,
                 h("h4", "Feature importance") if importance else None, importance])
