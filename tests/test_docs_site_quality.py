"""The report's monitoring page shows live quality: the last run's gates judged per version
(value with its interval, outcomes, verdict) and every run's live metric over time per version
with the SLO's line, from the runtime's quality history (monitoring_history.jsonl)."""

from __future__ import annotations

import json
import re

import pytest

from mlstack.ops.site.build import build_site
from mlstack.ops.site.quality_charts import metric_names, quality_over_time
from tests.docs_site_support import HOSTILE, make_project
from tests.test_docs_site import _parse


def _point(hour: int, values: dict[str, float | None]) -> dict:
    return {"checked_at": f"2026-12-07T{hour:02d}:00:00+00:00", "serving": "v3",
            "versions": {v: {"n": 200, "metrics": {"auc": {
                "value": a, "low": None if a is None else a - 0.04,
                "high": None if a is None else a + 0.04}}} for v, a in values.items()},
            "judged": []}


HISTORY = [_point(8, {"v3": 0.86}), _point(9, {"v3": 0.84, "v4": 0.9}),
           _point(10, {"v3": 0.79, "v4": None}), _point(11, {"v3": 0.74})]
LIVE = {"enabled": True, "logged": 812, "from_feedback": 300, "from_labels": 41, "judged": [
    {"version": "v3", "metric": "auc", "op": ">=", "threshold": 0.8, "value": 0.74,
     "low": 0.69, "high": 0.78, "n": 341, "status": "missed"},
    {"version": HOSTILE, "metric": "auc", "op": ">=", "threshold": 0.8, "value": None,
     "low": None, "high": None, "n": 3, "status": "not_enough"}]}


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    project = make_project(tmp_path_factory.mktemp("docs-quality"))
    runtime = project / ".mlstack" / "runtime"
    report = json.loads((runtime / "monitoring.json").read_text())
    report["live_quality"] = LIVE
    (runtime / "monitoring.json").write_text(json.dumps(report))
    (runtime / "monitoring_history.jsonl").write_text(
        "".join(json.dumps(p) + "\n" for p in HISTORY) + "not json\n")
    return build_site(project)


@pytest.fixture(scope="module")
def monitoring_page(site) -> str:
    return site.files["monitoring.html"].decode()


def test_the_last_runs_gates_are_judged_per_version(monitoring_page):
    html = monitoring_page
    assert "Live quality (last run)" in html
    assert ("<td><code>v3</code></td><td>auc &gt;= 0.8</td><td>0.74 [0.69, 0.78]</td>"
            "<td>341</td><td><span class=\"badge bad\">missed</span></td>") in html
    assert "outcomes from POST /feedback 300, from the label source 41" in html
    assert "<script>" not in html and 'class="badge unknown">not enough' in html
    _parse(html)


def test_live_quality_over_time_draws_each_version_and_the_slo_line(site, monitoring_page):
    svg = re.search(r'<svg[^>]*class="chart quality-history".*?</svg>', monitoring_page,
                    re.S).group(0)
    assert svg.count("<polyline") == 1  # v3 over four runs; v4 measured once: a point
    assert svg.count('<circle class="point"') == 5
    assert "<title>SLO: auc &gt;= 0.8</title>" in svg and "SLO &gt;= 0.8" in svg
    assert "v3 auc 0.74 [0.7, 0.78], n 200" in svg
    assert "2026-12-07 08:00" in svg and "2026-12-07 11:00" in svg
    assert "4 monitoring runs" in monitoring_page
    assert ("monitoring_history.jsonl: 1 lines are not JSON objects (left out)"
            in site.files["index.html"].decode())  # the overview notes what it left out


def test_the_chart_is_the_same_for_the_same_history_and_says_when_there_is_none():
    assert quality_over_time(HISTORY, "auc", (">=", 0.8)) == \
        quality_over_time(HISTORY, "auc", (">=", 0.8))
    assert metric_names(HISTORY) == ["auc"] and metric_names([]) == []
    assert metric_names([_point(8, {"v3": None})]) == []
