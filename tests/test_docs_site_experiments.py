"""The report's rollouts page shows the comparisons between versions: the A/B experiment's
readout (arms, effect with its always-valid interval, p-value, decision) and the shadow
comparisons deploys recorded, escaped like every recorded string."""

from __future__ import annotations

import pytest

from mlstack.ops.local.state import DeploymentState
from mlstack.ops.site.build import build_site
from tests.docs_site_support import HOSTILE, T0, make_project
from tests.test_docs_site import _parse

TRIAL = {
    "name": "churn-v4-vs-v3", "status": "ended", "outcome": "promote", "control": "v3",
    "candidate": "v4", "key": "customer_id", "split": 50, "started_at": T0 + 8000,
    "ended_at": T0 + 9000, "reason": "promote: always-valid p=0.0021 < alpha=0.05",
    "readout": {
        "method": "mSPRT (normal mixture, always-valid p-value; Johari, Pekelis, Walsh 2017)",
        "alpha": 0.05, "arms": {"v3": {"n": 310, "mean": 0.25}, "v4": {"n": 322, "mean": 0.41}},
        "effect": 0.16, "effect_low": 0.05, "effect_high": 0.27, "relative_lift": 0.64,
        "relative_low": 0.2, "relative_high": 1.08, "p_value": 0.0021, "looks": 9,
        "decision": "promote", "reason": f"promote: always-valid p=0.0021 {HOSTILE}",
        "invalid_outcomes": 2,
        "settings": {"control": "v3", "candidate": "v4", "metric": "conversion",
                     "higher_is_better": True}}}
SHADOW = {"event": "shadow-compared", "at": T0 + 7250, "version": "v3", "shadow": {
    "against": "v1", "mirrored": 412, "dropped": 0, "errors": 1, "agreement": 0.9927,
    "mean_abs_diff": 0.0031, "max_abs_diff": 0.08, "p99_ms": 23.46, "verdict": "promoted"}}


@pytest.fixture(scope="module")
def rollouts(tmp_path_factory) -> str:
    project = make_project(tmp_path_factory.mktemp("docs-experiments"))
    path = project / ".mlstack" / "deployments.json"
    state = DeploymentState.load(path)
    state.experiment = TRIAL
    state.history.insert(-2, SHADOW)
    state.save(path)
    return build_site(project).files["rollouts.html"].decode()


def test_the_ab_readout_shows_arms_effect_interval_p_value_and_decision(rollouts):
    html = rollouts
    assert "A/B experiment churn-v4-vs-v3" in html
    assert "ended: promote" in html and "v4 on 50% of customer_id (sticky)" in html
    assert "<td><code>v3</code></td><td>control</td><td>310</td><td>0.25</td>" in html
    assert "<td><code>v4</code></td><td>candidate</td><td>322</td><td>0.41</td>" in html
    assert "+0.16 [+0.05, +0.27] (95% always-valid interval)" in html
    assert "+64.0% [+20.0%, +108.0%]" in html and "0.0021" in html
    assert "<script>" not in html and "&lt;script&gt;" in html  # the reason, escaped
    _parse(html)


def test_the_shadow_comparison_is_listed_with_its_figures(rollouts):
    assert "Shadow comparisons" in rollouts
    row = ("<td><code>v3</code></td><td><code>v1</code></td><td>412</td><td>0.9927</td>"
           "<td>0.0031</td><td>1</td><td>23.5 ms</td><td>promoted</td>")
    assert row in rollouts


def test_a_project_without_experiments_shows_neither(tmp_path):
    html = build_site(make_project(tmp_path)).files["rollouts.html"].decode()
    assert "A/B experiment" not in html and "Shadow comparisons" not in html
