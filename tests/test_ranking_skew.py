"""Deploy's ranking checks, on data: /rank bodies from sampled rows, the served order judged
against the offline scores group by group, and the load a ranking version is verified with."""

from __future__ import annotations

import sys
import types

import numpy as np
import pandas as pd

from mlstack.frontend.analysis import analyze_spec
from mlstack.ops.local import worker
from mlstack.ops.local.deploy import example_rows, load_requests
from mlstack.ops.local.worker import rank_requests, ranking_mismatches
from tests.conftest import BLUEPRINTS

ROWS = [{"q": 1, "d": 10}, {"q": 2, "d": 20}, {"q": 1, "d": 11}, {"q": 1, "d": 12}]
NAMES = ["d"]


def test_rank_requests_group_rows_in_first_seen_order():
    assert rank_requests(ROWS, "q") == [
        ([0, 2, 3], {"q": 1, "candidates": [{"d": 10}, {"d": 11}, {"d": 12}]}),
        ([1], {"q": 2, "candidates": [{"d": 20}]})]


def _answer(group, ranked):
    return {"q": group, "ranked": [{"d": d, "score": s} for d, s in ranked]}


def test_served_order_must_be_the_offline_order_up_to_ties():
    (positions, body), _ = rank_requests(ROWS, "q")
    offline = np.array([0.2, 0.0, 0.9, np.nan])  # by row position; row 3 has no features
    good = _answer(1, [(11, 0.9), (10, 0.2), (12, None)])
    assert ranking_mismatches([(positions, body, good)], offline, 1e-6, NAMES) == []
    swapped = _answer(1, [(10, 0.2), (11, 0.9), (12, None)])
    assert "served order puts offline score 0.2 before 0.9" in ranking_mismatches(
        [(positions, body, swapped)], offline, 1e-6, NAMES)[0]
    tie = np.array([0.5, 0.0, 0.5 + 1e-9, np.nan])  # within the tolerance: either order
    assert ranking_mismatches([(positions, body, good)], tie, 1e-6, NAMES) == []
    scored_null = _answer(1, [(11, 0.9), (10, 0.2), (12, 0.1)])
    assert "without a score differ" in ranking_mismatches(
        [(positions, body, scored_null)], offline, 1e-6, NAMES)[0]
    short = _answer(1, [(11, 0.9)])
    assert "answered 1 candidates for 3" in ranking_mismatches(
        [(positions, body, short)], offline, 1e-6, NAMES)[0]


def test_a_ranking_version_is_loaded_on_rank_with_whole_groups():
    ranking = analyze_spec(BLUEPRINTS / "search-ranking" / "mlstack.yaml").system
    rows = [{"query_id": 1, "doc_id": 10}, {"query_id": 1, "doc_id": 11},
            {"query_id": 2, "doc_id": 12}]
    assert load_requests(ranking, rows) == ("rank", [
        {"query_id": 1, "candidates": [{"doc_id": 10}, {"doc_id": 11}]},
        {"query_id": 2, "candidates": [{"doc_id": 12}]}])
    assert example_rows(ranking, rows) == rows[:2]  # the first group
    churn = analyze_spec(BLUEPRINTS / "churn" / "mlstack.yaml").system
    rows = [{"customer_id": 1}, {"customer_id": 2}]
    assert load_requests(churn, rows) == ("predict", [{"rows": [r]} for r in rows])
    assert load_requests(churn, rows, one_request=True) == ("predict", [{"rows": rows}])
    assert example_rows(churn, rows) == rows[:1]
    assert load_requests(churn, [], one_request=True) == ("predict", [])


def test_sampled_groups_are_whole_and_carry_their_group_key(monkeypatch):
    features = types.ModuleType("_rank_pkg.features")
    features.LABEL_SOURCE, features.GROUP_BY = "labels", "q"
    features.REQUEST_KEYS, features.REQUEST_FIELDS = ("d",), {"price": "float64"}
    monkeypatch.setitem(sys.modules, "_rank_pkg.features", features)
    labels = pd.DataFrame({"q": [1, 1, 2, 2, 2, 3], "d": [5, 6, 5, 7, 7, 8],
                           "price": [1.0, 2.0, 3.0, 4.0, 4.0, 5.0], "y": [0, 1, 2, 0, 0, 1]})
    monkeypatch.setattr(worker, "_source", lambda package, name: (None, labels))
    rows = worker._sample_groups("_rank_pkg", size=3, seed=0)
    groups = {r["q"] for r in rows}
    assert sum(len(labels[labels["q"] == g].drop_duplicates(["q", "d"])) for g in groups
               ) == len(rows) >= 3  # whole groups, a repeated (q, d) once
    assert all(set(r) == {"q", "d", "price"} for r in rows)
    assert [r["q"] for r in rows] == sorted(r["q"] for r in rows)
