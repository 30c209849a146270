"""The model card draws the latest version's held-out evaluation from its training record
(mlstack.ops.site.model_charts): the ROC curve with the chance diagonal, the PR curve, the
confusion matrix as counts and row shares, feature importance as bars, every label escaped;
a record without them (written before they were recorded, of another model, or one entry
only as a reason) renders without them, saying why."""

from __future__ import annotations

import json

import pytest

from mlstack.codegen.contract import TRAINING_FILE
from mlstack.ops.site.build import build_site
from mlstack.ops.site.model_charts import (
    MOST_BARS,
    confusion_table,
    held_out_evaluation,
    importance_svg,
    pr_svg,
    roc_svg,
)
from tests.docs_site_support import HOSTILE, make_project
from tests.test_docs_site import _parse

EVALUATION = {
    "roc_curve": {"fpr": [0.0, 0.0, 0.25, 1.0], "tpr": [0.0, 0.5, 1.0, 1.0], "auc": 0.9375},
    "pr_curve": {"recall": [0.0, 0.5, 1.0, 1.0], "precision": [1.0, 1.0, 0.8, 0.5],
                 "average_precision": 0.9},
    "confusion_matrix": {"labels": [0, 1], "threshold": 0.5, "counts": [[50, 10], [5, 35]]},
    "feature_importance": {"method": "feature_importances_",
                           "features": ["customer_profile__tenure_months", HOSTILE, "zero"],
                           "values": [0.6, 0.4, 0.0]},
}


def _section(html: str, version: str) -> str:
    section = html[html.index(f'id="model-{version}"'):]
    return section[:section.index("</section>")]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return make_project(tmp_path_factory.mktemp("docs-model-charts"))


def _model_page(project, evaluation=None) -> str:
    path = project / ".mlstack" / "runtime" / TRAINING_FILE
    record = json.loads(path.read_text())
    record.pop("evaluation", None)
    if evaluation is not None:
        record["evaluation"] = evaluation
    path.write_text(json.dumps(record, sort_keys=True))
    return build_site(project).files["model.html"].decode()


def test_the_latest_version_card_draws_its_curves_matrix_and_importance(project):
    html = _model_page(project, EVALUATION)
    _parse(html)
    latest, older = _section(html, "v3"), _section(html, "v1") + _section(html, "v2")
    for drawn in ('class="chart roc-curve"', 'class="chart pr-curve"', 'class="chance"',
                  'class="confusion"', 'class="chart feature-importance"'):
        assert drawn in latest and drawn not in older
    assert "ROC curve, AUC 0.9375" in latest and "average precision 0.9<" in latest
    # the ROC polyline through its recorded points (plot 184 px square from x 44, y 24)
    assert 'points="44,208 44,116 90,24 228,24"' in latest
    assert ("<td>actual 0</td><td>50 (0.83)</td><td>10 (0.17)</td><td>60</td>" in latest)
    assert ("<td>actual 1</td><td>5 (0.12)</td><td>35 (0.88)</td><td>40</td>" in latest)
    assert "probability &gt;= 0.5" in latest
    # bars in the recorded order, the largest full width; a hostile name is escaped
    assert latest.index("customer_profile__tenure_months") < latest.index("&lt;script&gt;")
    assert "<script>" not in html
    assert "Held-out evaluation" not in older  # older versions' charts are not drawn
    assert _model_page(project, EVALUATION) == html  # deterministic


def test_a_record_from_before_curves_renders_without_them_saying_why(project):
    html = _model_page(project, evaluation=None)
    _parse(html)
    latest = _section(html, "v3")
    assert "written before mlstack recorded them" in latest
    assert "<svg" not in latest and 'class="confusion"' not in latest
    assert "<td>0.8811</td>" in latest  # the rest of the card as before


def test_a_record_of_another_model_or_none_is_not_drawn_for_this_version():
    record = {"status": "completed", "model_tag": "churn:other", "evaluation": EVALUATION}
    other = held_out_evaluation("churn:cccc3333", record)
    assert "model churn:other, not this version" in other and "<svg" not in other
    assert "No training record" in held_out_evaluation("churn:cccc3333", None)
    failed = held_out_evaluation("churn:cccc3333", {"status": "failed", "error": "boom"})
    assert "did not complete" in failed and "<svg" not in failed


def test_entries_recorded_as_reasons_say_them_and_a_regressor_has_no_curves():
    mlp = {"feature_importance": {"reason": "not available: MLPClassifier has no "
                                            "feature_importances_ or coef_"},
           "roc_curve": {"reason": "the held-out rows hold one class only"},
           "pr_curve": {"reason": "the held-out rows hold one class only"},
           "confusion_matrix": EVALUATION["confusion_matrix"]}
    html = held_out_evaluation("m:1", {"status": "completed", "model_tag": "m:1",
                                       "evaluation": mlp})
    assert "Feature importance: not available: MLPClassifier" in html
    assert "ROC curve: the held-out rows hold one class only" in html
    assert "feature-importance" not in html and "roc-curve" not in html
    regressor = {"feature_importance": EVALUATION["feature_importance"]}
    html = held_out_evaluation("m:1", {"status": "completed", "model_tag": "m:1",
                                       "evaluation": regressor})
    assert "the model is not a classifier" in html and "feature-importance" in html
    broken = {"roc_curve": {"fpr": [0.0, 1.0], "tpr": [0.0]}}
    html = held_out_evaluation("m:1", {"status": "completed", "model_tag": "m:1",
                                       "evaluation": broken})
    assert "ROC curve: the record&#x27;s entry cannot be drawn (ValueError" in html


def test_curve_charts_are_pure_and_draw_the_diagonal_only_for_roc():
    perfect = {"fpr": [0.0, 0.0, 1.0], "tpr": [0.0, 1.0, 1.0], "auc": 1.0}
    svg = roc_svg(perfect)
    assert svg == roc_svg(dict(perfect))
    assert 'points="44,208 44,24 228,24"' in svg and "AUC 1<" in svg
    assert 'class="chance" x1="44" y1="208" x2="228" y2="24"' in svg
    pr = pr_svg({"recall": [0.0, 1.0], "precision": [1.0, 0.6], "average_precision": 0.6})
    assert 'class="chance"' not in pr and 'points="44,24 228,97.6"' in pr


def test_confusion_table_shares_by_row_and_importance_bars_scale_to_the_largest():
    three = confusion_table({"labels": ["a", "b", "c"], "threshold": None,
                             "counts": [[3, 1, 0], [0, 0, 0], [1, 1, 2]]})
    assert "<td>actual b</td><td>0 (-)</td><td>0 (-)</td><td>0 (-)</td><td>0</td>" in three
    assert "<td>3 (0.75)</td>" in three and "the model&#x27;s predicted class" in three
    with pytest.raises(ValueError):
        confusion_table({"labels": [0, 1], "counts": [[1, 2]]})
    bars = importance_svg({"method": "|coef_|", "features": ["a", "b"], "values": [2.0, 1.0]})
    full, half = (float(bar.split('width="')[1].split('"')[0])
                  for bar in bars.split('class="bar" ')[1:])
    assert full == 2 * half and "|coef_|" in bars
    many = importance_svg({"features": [f"f{i}" for i in range(MOST_BARS + 5)],
                           "values": [float(MOST_BARS + 5 - i) for i in range(MOST_BARS + 5)]})
    assert many.count('class="bar"') == MOST_BARS and "and 5 more features" in many
