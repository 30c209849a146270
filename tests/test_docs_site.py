"""`mlstack docs`: the static report of a system, checked on a compiled churn project with a
fabricated deploy state (tests/docs_site_support.py): every page is there and well formed,
shows what the state holds, escapes every recorded string, loads nothing from elsewhere and
is byte-for-byte the same for the same inputs."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from mlstack.cli.main import main
from mlstack.codegen.graph import GraphEdge, GraphNode, SystemGraph, system_graph
from mlstack.codegen.graph_svg import layout, render_svg
from mlstack.diagnostics.errors import UsageError
from mlstack.frontend.analysis import require_system
from mlstack.ops.site.build import MARKER, build_site, write_site
from mlstack.ops.site.charts import nice_ticks
from mlstack.ops.site.layout import PAGES
from tests.conftest import BLUEPRINTS
from tests.docs_site_support import HOSTILE, make_project

PAGE_FILES = [f for f, _ in PAGES]
SPECS = sorted(BLUEPRINTS.glob("*/mlstack.yaml"))


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return make_project(tmp_path_factory.mktemp("docs"))


@pytest.fixture(scope="module")
def site(project):
    return build_site(project)


def _page(site, name: str) -> str:
    return site.files[name].decode()


class _Checker(HTMLParser):
    """Tags balance (void elements aside); collects ids, links and text."""

    VOID = {"meta", "link", "br", "hr", "img", "col", "input"}
    # SVG elements written self-closed
    SELF_CLOSED = {"path", "rect", "line", "circle", "polygon", "polyline"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.ids: list[str] = []
        self.hrefs: list[str] = []
        self.srcs: list[str] = []
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.append(attrs["id"])
        if "href" in attrs:
            self.hrefs.append(attrs["href"])
        if "src" in attrs:
            self.srcs.append(attrs["src"])
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.tags.append(tag)
        if "id" in dict(attrs):
            self.ids.append(dict(attrs)["id"])

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-1:]}"
        self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def _parse(html: str) -> _Checker:
    checker = _Checker()
    checker.feed(html)
    checker.close()
    assert checker.stack == [], f"unclosed: {checker.stack}"
    return checker


def test_every_page_and_the_graph_are_written(site):
    assert sorted(site.files) == sorted([*PAGE_FILES, "graph.svg", MARKER])
    for name in PAGE_FILES:
        html = _page(site, name)
        assert html.startswith("<!DOCTYPE html>\n<html lang=\"en\">")
        parsed = _parse(html)
        assert [h for h in parsed.hrefs if h.endswith(".html")][:len(PAGE_FILES)] == PAGE_FILES
        assert 'aria-current="page"' in html


def test_nothing_is_loaded_from_elsewhere_and_no_script_runs(site):
    for name, content in site.files.items():
        text = content.decode()
        parsed = _parse(text) if name.endswith(".html") else None
        assert "<script" not in text.lower(), name
        assert not re.search(r"url\((?!#)", text), name  # only url(#marker) references
        assert "@import" not in text and "<link" not in text
        if parsed is not None:
            assert parsed.srcs == [], name
            assert all(not re.match(r"[a-z]+:", h) for h in parsed.hrefs), name
            assert "Content-Security-Policy" in text and "default-src &#x27;none&#x27;" in text
        # the only absolute URLs: the SVG namespace and the served endpoint, as text
        urls = set(re.findall(r"https?://[^\s\"'<]+", text))
        assert urls <= {"http://www.w3.org/2000/svg", "http://127.0.0.1:3000"}, (name, urls)


def test_the_same_inputs_give_the_same_bytes(project, site, tmp_path):
    again = build_site(project)
    assert again.files == site.files
    first = write_site(site, tmp_path / "one")
    second = write_site(again, tmp_path / "two")
    assert sorted(p.name for p in first.iterdir()) == sorted(site.files)
    for name, content in site.files.items():
        assert (first / name).read_bytes() == content == (second / name).read_bytes()
    assert str(project) not in "".join(c.decode() for c in site.files.values())


def test_recorded_strings_are_escaped(site):
    escaped = "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;"
    pages = {name: _page(site, name) for name in PAGE_FILES}
    assert all(HOSTILE not in html for html in pages.values())
    assert escaped in pages["model.html"]  # v2's failure
    assert escaped in pages["rollouts.html"]  # the failed deploy's error
    assert escaped in pages["monitoring.html"]  # an alert
    for html in pages.values():
        assert "<img" not in html


def test_overview_draws_every_node_of_the_system_graph(project, site):
    system = require_system(project / "mlstack.yaml")[0]
    graph = system_graph(system)
    html = _page(site, "index.html")
    ids = set(_parse(html).ids)
    assert {n.id for n in graph.nodes} <= ids
    for e in graph.edges:
        assert f'data-source="{e.source}" data-target="{e.target}"' in html
    assert "v3" in html and "http://127.0.0.1:3000" in html
    assert _page(site, "index.html").count("<svg") == 1
    assert site.files["graph.svg"].decode() == render_svg(graph)


def test_feature_catalog_lists_views_fields_dtypes_ttls_and_freshness(project, site):
    system = require_system(project / "mlstack.yaml")[0]
    html = _page(site, "features.html")
    assert "freshness SLO</dt><dd>1d</dd>" in html
    for view in system.feature_views:
        assert f'id="view-{view.name}"' in html
        for field in view.fields:
            assert f"<code>{field.name}</code></td><td>{field.dtype}</td>" in html
    assert "TTL</dt><dd>45d</dd>" in html
    for t in system.transforms:
        assert t.name in html


def test_model_card_has_every_version_with_metrics_and_gates(site):
    html = _page(site, "model.html")
    for version, auc, verdict in (("v1", "0.8736", "met"), ("v2", "0.7712", "MISSED"),
                                  ("v3", "0.8811", "met")):
        section = html[html.index(f'id="model-{version}"'):]
        section = section[:section.index("</section>")]
        assert f"<td>{auc}</td><td>auc &gt;= 0.8</td>" in section
        assert f">{verdict}</span>" in section
        assert "gradient_boosting" in section and "n_estimators=150" in section
    v2 = html[html.index('id="model-v2"'):]
    assert "the current spec (its snapshot is gone)" in v2[:v2.index("</section>")]
    assert "churn:cccc3333" in html and "training_set 2000 / train 1600 / test 400" in html
    assert "2026-09-21" in html or "UTC" in html


def test_slo_page_has_every_verification_and_latency_plots(site):
    html = _page(site, "slos.html")
    assert html.count('class="chart latency-history"') == 1
    assert html.count('class="chart latency-bars"') == 3
    history = html[html.index('class="chart latency-history"'):]
    history = history[:history.index("</svg>")]
    assert history.count("<polyline") == 3 and history.count("<circle") == 9
    assert history.count('class="target"') == 3
    assert "v2 p99: 131 ms" in history
    for version, state in (("v1", "all SLOs met"), ("v2", "2 SLO(s) missed"),
                           ("v3", "all SLOs met")):
        assert f"<h3>{version} (" in html and state in html
    v2 = html[html.index('id="slo-v2"'):]
    v2 = v2[:v2.index("</section>")]
    assert "<td>latency p99</td><td>&lt;= 100 ms</td><td>131.0 ms</td>" in v2
    assert ">MISSED</span>" in v2


def test_rollouts_page_has_the_strategy_traffic_and_history(site):
    html = _page(site, "rollouts.html")
    assert "5% -&gt; 25% -&gt; 100%" in html
    assert "<td>v3</td><td>100%</td>" in html
    events = re.findall(r'class="badge [a-z]+">([a-z-]+)</span>', html)
    assert events == ["stop", "deploy-succeeded", "deploy-started", "deploy-failed",
                      "deploy-started", "deploy-succeeded", "deploy-started"]
    assert "2026-09-21" in html  # T0 in UTC


def test_monitoring_page_shows_drift_freshness_and_staleness(site):
    html = _page(site, "monitoring.html")
    assert "<code>customer_profile__support_calls</code></td><td>0.31</td>" in html
    assert ">drifted</span>" in html and ">stable</span>" in html
    assert "<code>customers</code></td><td>2026-09-21T00:00:00+00:00</td><td>13h</td>" in html
    assert "limit</dt><dd>7d</dd>" in html


def test_plan_page_shows_the_plan_against_build(project, site, tmp_path):
    html = _page(site, "plan.html")
    assert "No file changes: build/ matches the spec." in html
    assert "No resource changes." in html
    spec = project / "mlstack.yaml"
    original = spec.read_text()
    try:
        spec.write_text(original.replace("p99_ms: 100", "p99_ms: 90"))
        changed = _page(build_site(project), "plan.html")
    finally:
        spec.write_text(original)
    assert "re-verify SLOs" in changed or "redeploy service" in changed
    assert "No resource changes." not in changed


def test_a_project_never_deployed_still_gets_its_report(tmp_path):
    project = make_project(tmp_path, deployed=False)
    site = build_site(project)
    assert "Not deployed yet" in _page(site, "model.html")
    assert "Not deployed yet" in _page(site, "slos.html")
    assert "No monitoring report yet" in _page(site, "monitoring.html")
    assert "No deploys yet." in _page(site, "rollouts.html")
    for name in PAGE_FILES:
        _parse(_page(site, name))


def test_write_replaces_its_own_folder_and_refuses_any_other(site, tmp_path):
    out = write_site(site, tmp_path / "docs")
    (out / "stale.html").write_text("old")
    write_site(site, out)
    assert not (out / "stale.html").exists() and (out / "index.html").is_file()
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep")
    with pytest.raises(UsageError, match="not written by mlstack docs"):
        write_site(site, other)
    assert (other / "notes.txt").read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docs", "mine"]  # no leftovers


def test_the_verb_writes_build_docs_by_default_and_out(project, tmp_path, capsys):
    assert main(["docs", "-C", str(project)]) == 0
    out = capsys.readouterr().out
    assert "Wrote the churn report to" in out
    assert (project / "build" / "docs" / "index.html").is_file()
    assert main(["docs", "-C", str(project), "--out", str(tmp_path / "x"), "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["pages"] == PAGE_FILES and doc["url"] is None
    assert (tmp_path / "x" / "graph.svg").is_file()
    # the report in build/ does not disturb compile or plan: every file of build/ is unchanged
    # (plan's exit code is about the deploy here: the fabricated state's versions do not run,
    # so a deploy would bring one up)
    assert main(["plan", "-C", str(project), "--format", "json"]) == 0
    files = json.loads(capsys.readouterr().out)["files"]
    assert files and {f["action"] for f in files} == {"unchanged"}


# --- the SVG graph -----------------------------------------------------------------------

@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.parent.name)
def test_graph_svg_places_every_node_without_overlap(spec):
    graph = system_graph(require_system(spec)[0])
    lay = layout(graph)
    boxes = [lay.boxes[n.id] for n in graph.nodes]
    for i, a in enumerate(boxes):
        assert 0 <= a.x and a.x + a.w <= lay.width and 0 <= a.y and a.y + a.h <= lay.height
        for b in boxes[i + 1:]:
            apart = (a.x + a.w <= b.x or b.x + b.w <= a.x or a.y + a.h <= b.y
                     or b.y + b.h <= a.y)
            assert apart, (a, b)
    by_kind = {}
    for n in graph.nodes:
        if n.group == "system":
            by_kind.setdefault(n.kind, []).append(lay.boxes[n.id].x)
    order = ["source", "feature_view", "model", "service"]
    assert [max(by_kind[k]) for k in order] == sorted(max(by_kind[k]) for k in order)
    svg = render_svg(graph)
    assert svg == render_svg(graph)
    parsed = _parse(svg)
    assert {n.id for n in graph.nodes} <= set(parsed.ids)


def test_graph_svg_escapes_labels():
    graph = SystemGraph('a<b>&"c"', (GraphNode("source_0", "<script>x</script>", "source"),
                                     GraphNode("model", 'm "&" <m>', "model")),
                        (GraphEdge("source_0", "model", "<lbl>"),))
    svg = render_svg(graph)
    assert "<script>" not in svg and "&lt;script&gt;x&lt;/script&gt;" in svg
    assert "&lt;lbl&gt;" in svg and "a&lt;b&gt;&amp;&quot;c&quot;" in svg
    _parse(svg)


def test_graph_verb_renders_svg(capsys):
    assert main(["graph", str(SPECS[0]), "--format", "svg"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("<svg") and out.rstrip().endswith("</svg>")


def test_nice_ticks():
    assert nice_ticks(131 * 1.05) == [0, 50, 100, 150]
    assert nice_ticks(0.0) == [0.0, 1.0]
    assert nice_ticks(19.4)[-1] >= 19.4


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.parent.name)
def test_every_blueprint_gets_a_report(spec, tmp_path):
    """Cluster targets too: the plan page shows their infrastructure and cost estimate."""
    site = build_site(spec)
    for name in PAGE_FILES:
        _parse(_page(site, name))
    plan_page = _page(site, "plan.html")
    if require_system(spec)[0].target.kind != "local":
        assert "Infrastructure (stack" in plan_page and "Cost estimate" in plan_page
    assert not (spec.parent / "build").exists()  # the report only reads


def test_the_readme_graph_picture_is_current():
    """docs/images/churn-graph.svg is `mlstack graph --format svg` of the churn blueprint
    (bash scripts/readme_images.sh regenerates it)."""
    picture = BLUEPRINTS.parent / "docs" / "images" / "churn-graph.svg"
    graph = system_graph(require_system(BLUEPRINTS / "churn" / "mlstack.yaml")[0])
    assert picture.read_text() == render_svg(graph)


def test_monitoring_page_shows_firing_alerts_and_the_schedules_runs(project, site):
    from dataclasses import replace

    from mlstack.ops.local.living import Living
    from mlstack.ops.site.build import render_site
    from mlstack.ops.site.collect import collect

    quiet = _page(site, "monitoring.html")  # nothing runs beside the fabricated state
    assert "Alerts now" in quiet and "Not evaluated:" in quiet
    assert "No schedules: Prefect&#x27;s server is not started." in quiet or \
        "No schedules: Prefect's server is not started." in quiet
    living = Living(
        alerts={"state": "up", "prometheus": "http://127.0.0.1:9", "alerts": [
            {"name": "ChurnErrorRate<b>", "severity": "page", "since": "T3",
             "summary": "5xx above budget"}]},
        schedules={"server": "ready", "deployments": [
            {"name": "churn-materialize", "schedules": ["every 60 s"],
             "last_run": {"state": "Completed", "start": "T1", "seconds": 12.4},
             "next_run": {"at": "T2"}}]})
    html = render_site(replace(collect(project), living=living)).files["monitoring.html"].decode()
    assert "ChurnErrorRate&lt;b&gt;" in html and "5xx above budget" in html
    assert "<code>churn-materialize</code></td><td>every 60 s</td><td>Completed at T1</td>" \
           "<td>12s</td><td>T2</td>" in html


def _drift_report(report: dict, drift: dict) -> dict:
    return {**report, "drift": drift}


def _bins(shares: list[float], nulls: int) -> dict:
    return {"counts": [round(s * 100) for s in shares], "proportions": shares, "nulls": nulls}


def _side(rows: int, nulls: int, median: float) -> dict:
    return {"rows": rows, "nulls": nulls, "null_rate": nulls / rows, "mean": median + 0.5,
            "p5": 0.0, "p25": median - 1, "p50": median, "p75": median + 1, "p95": 9.0}


SERVED_DRIFT = {
    "method": "psi", "threshold": 0.2, "source": "prediction_log",
    "served": {"rows": 1500, "min_rows": 100, "enough": True, "window_seconds": 604800.0},
    "drifted": ["customer_profile__support_calls"],
    "features": {
        "customer_profile__support_calls": {"statistic": 0.31, "drifted": True, "rows": 1450},
        "charges_per_tenure": {"statistic": 0.02, "drifted": False, "rows": 1500}},
    "histograms": {
        "customer_profile__support_calls": {
            "edges": [float(e) for e in range(11)],
            "training": _bins([0.1] * 10, 3), "current": _bins([0.02] * 5 + [0.18] * 5, 50)},
        "charges_per_tenure": {
            "edges": [e / 10 for e in range(11)],
            "training": _bins([0.1] * 10, 0), "current": _bins([0.1] * 10, 0)}},
    "statistics": {
        "customer_profile__support_calls": {"training": _side(2000, 30, 2.0),
                                            "current": _side(1500, 50, 4.0)},
        "charges_per_tenure": {"training": _side(2000, 0, 0.5),
                               "current": _side(1500, 0, 0.5)},
        HOSTILE: {"training": _side(10, 1, 1.0), "current": _side(10, 1, 1.0)}},
}


def test_monitoring_page_overlays_the_served_histograms_and_the_feature_statistics(project):
    from dataclasses import replace

    from mlstack.ops.site.build import render_site
    from mlstack.ops.site.collect import collect
    from mlstack.ops.site.drift import CURRENT_COLOR, TRAINING_COLOR

    data = collect(project)
    served = replace(data, monitoring=_drift_report(data.monitoring, SERVED_DRIFT))
    html = render_site(served).files["monitoring.html"].decode()
    _parse(html)
    assert html == render_site(served).files["monitoring.html"].decode()  # deterministic
    assert HOSTILE not in html
    assert "Judged on the prediction log: 1500 rows served in the last 7d (at least 100 " \
           "needed)." in html
    charts = re.findall(r'<svg[^>]*class="chart drift-histogram".*?</svg>', html)
    assert len(charts) == 2
    support = next(c for c in charts if "customer_profile__support_calls:" in c)
    # the title: the statistic against its threshold; the legend: both sides and their nulls
    assert "<title>customer_profile__support_calls: psi 0.31 above threshold 0.2</title>" \
           in support
    assert "training (nulls: 3)</text>" in support and "served (nulls: 50)</text>" in support
    # ten bars per side in two colours (and one legend swatch each), each bar's share told
    assert support.count(f'fill="{TRAINING_COLOR}"') == 11
    assert support.count(f'fill="{CURRENT_COLOR}"') == 11
    assert "<title>served [9, +inf): 18.0%</title>" in support
    assert "<title>training [-inf, 1): 10.0%</title>" in support
    stable = next(c for c in charts if "charges_per_tenure:" in c)
    assert "charges_per_tenure: psi 0.02 within threshold 0.2" in stable
    # the statistics per feature view: the view's fields, then the transforms
    view = html.index("<h4>feature view <code>customer_profile</code></h4>")
    transforms = html.index("<h4>transforms (on demand)</h4>")
    assert view < transforms < html.index("<h4>request fields</h4>")
    assert ("<tr><td><code>customer_profile__support_calls</code></td><td>training</td>"
            "<td>2000</td><td>1.5%</td><td>2.5</td><td>0</td><td>1</td><td>2</td><td>3</td>"
            "<td>9</td></tr><tr><td><code>customer_profile__support_calls</code></td>"
            "<td>served</td><td>1500</td><td>3.3%</td>") in html[view:transforms]
    assert "<code>charges_per_tenure</code></td><td>served</td>" in html[transforms:]

    few = {**{k: v for k, v in SERVED_DRIFT.items() if k != "statistics"},
           "source": "online_store",
           "served": {"rows": 12, "min_rows": 100, "enough": False, "window_seconds": 604800.0}}
    online = render_site(replace(data, monitoring=_drift_report(data.monitoring, few))
                         ).files["monitoring.html"].decode()
    assert "Judged on the online store&#x27;s values (the prediction log held 12 rows in the " \
           "last 7d, fewer than 100)." in online or \
           "Judged on the online store's values (the prediction log held 12 rows in the " \
           "last 7d, fewer than 100)." in online
    assert "online store (nulls: 50)</text>" in online and "Feature statistics" not in online
    # the fabricated project's report, from before histograms: the table alone
    assert "drift-histogram" not in render_site(data).files["monitoring.html"].decode()
