"""The service's input path: null rows, non-finite input, the same numbers as training, the
row limit and the batching a version starts with."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from mlstack.runtime.model_input import InputSchema
from mlstack.runtime.serving import (
    ModelInput,
    batching_settings,
    candidate_rows,
    check_model_columns,
    check_rows,
    feature_records,
    json_body,
    predictions,
    ranked,
)
from mlstack.runtime.store import OnlineRows

KEYS = ("id",)
FETCH_DTYPES = {"v__a": "int64", "v__b": "float64"}
MODEL_COLUMNS = ("v__b", "v__a", "ratio")
ONLINE = {1: (3, 1.5), 2: (0, 0.0), 3: (4, None)}  # 2: ratio is 0/0 -> nan; 3: b missing


def ratio(columns):
    return columns["v__b"] / columns["v__a"]


SCHEMA = InputSchema(fetch_dtypes=FETCH_DTYPES, transforms={"ratio": (ratio, "float64")},
                     model_columns=MODEL_COLUMNS)


def online_rows(keys: list[tuple]) -> OnlineRows:
    """The store's online_rows: found keys and their fetched arrays."""
    values = [ONLINE.get(key[0], (None, None)) for key in keys]
    found = np.array([None not in v for v in values], dtype=bool)
    kept = [v for v, ok in zip(values, found, strict=True) if ok]
    return OnlineRows(found, {"v__a": np.array([v[0] for v in kept], dtype=np.int64),
                              "v__b": np.array([v[1] for v in kept], dtype=np.float64)})


@pytest.fixture
def inputs() -> ModelInput:
    return ModelInput(online_rows=online_rows, schema=SCHEMA, request_keys=KEYS,
                      key_attributes=("key_0",))


class Row:
    def __init__(self, id):
        self.key_0 = id


def test_batch_has_found_rows_only_in_training_dtypes(inputs):
    batch = inputs([Row(9), Row(1), Row(3), Row(2), Row(1)])
    assert batch.keys == [(9,), (1,), (3,), (2,), (1,)]
    assert batch.found.tolist() == [1, 3, 4]
    # exactly the training path: the same rows, through the same schema
    offline = pd.DataFrame({"id": [1, 2, 1], "v__a": [3, 0, 3], "v__b": [1.5, 0.0, 1.5]})
    expected = SCHEMA.frame(offline)
    pd.testing.assert_frame_equal(pd.DataFrame(batch.columns), expected, check_exact=True)
    assert batch.columns["v__a"].dtype == np.int64
    np.testing.assert_array_equal(batch.matrix, expected.to_numpy(dtype=float))
    assert batch.matrix.dtype == np.float64 and batch.matrix.flags.c_contiguous


def test_predictions_null_for_missing_and_non_finite_rows(inputs):
    scored = []

    def score(matrix):
        scored.append(len(matrix))
        return matrix[:, 0] * 10

    assert predictions(inputs([{"id": 9}, {"id": 1}, {"id": 2}, {"id": 3}, {"id": 1}]),
                       score) == [None, 15.0, None, None, 15.0]
    assert scored == [2]  # the non-finite row (ratio nan) never reaches the model
    assert predictions(inputs([{"id": 9}]), score) == [None]
    assert predictions(inputs([]), score) == []
    assert predictions(inputs([{"id": 2}]), score) == [None]
    assert scored == [2]
    assert all(type(v) is float for v in predictions(inputs([{"id": 1}]), score))


def test_json_body_is_the_answer_as_json_with_null_for_non_finite_values():
    assert json.loads(json_body([0.25, None, 1.0])) == [0.25, None, 1.0]
    assert json.loads(json_body([1, "a", True])) == [1, "a", True]
    # pydantic writes a NaN or an infinity as null; a ready answer must stay valid JSON
    body = json_body([0.5, float("nan"), float("inf"), None])
    assert json.loads(body, parse_constant=lambda c: pytest.fail(f"{c} in {body!r}")) == [
        0.5, None, None, None]


def test_feature_records(inputs):
    records = feature_records(inputs([{"id": 1}, {"id": 9}, {"id": 2}]), KEYS)
    assert records[0] == {"id": 1, "v__b": 1.5, "v__a": 3, "ratio": 0.5}
    assert type(records[0]["v__a"]) is int
    assert records[1] == {"id": 9, "v__b": None, "v__a": None, "ratio": None}
    assert records[2] == {"id": 2, "v__b": 0.0, "v__a": 0, "ratio": None}  # nan -> null
    assert feature_records(inputs([]), KEYS) == []


def test_warm_up_makes_one_lookup():
    calls = []

    def rows(keys):
        calls.append(keys)
        return online_rows(keys)

    inputs = ModelInput(online_rows=rows, schema=SCHEMA, request_keys=KEYS)
    inputs.warm_up({"id": 0})
    assert calls == [[(0,)]]


def test_model_trained_on_other_columns_is_refused():
    check_model_columns("m:1", {"model_columns": list(MODEL_COLUMNS)}, MODEL_COLUMNS)
    check_model_columns("m:1", {}, MODEL_COLUMNS)  # no lineage: accepted
    with pytest.raises(RuntimeError) as error:
        check_model_columns("m:1", {"model_columns": ["x"]}, MODEL_COLUMNS)
    assert str(error.value) == (
        "model m:1 was trained on columns ['x'], but this service computes "
        "['v__b', 'v__a', 'ratio']: retrain for the current spec")


def test_row_limit_is_a_413():
    pytest.importorskip("bentoml")
    check_rows(3, 3)
    with pytest.raises(Exception) as error:
        check_rows(4, 3)
    assert error.value.error_code == 413
    assert "4 rows" in str(error.value) and "at most 3" in str(error.value)


def test_batching_settings_prefer_the_measured_profile(tmp_path):
    compiled = {"enabled": True, "max_batch_size": 16, "max_latency_ms": 54}
    profile = tmp_path / "serving_profile.json"
    assert batching_settings(profile, compiled) == {**compiled, "source": "compiled"}
    profile.write_text(json.dumps({"batching": {"enabled": False, "max_batch_size": 1,
                                                "max_latency_ms": 1}}))
    assert batching_settings(profile, compiled) == {
        "enabled": False, "max_batch_size": 1, "max_latency_ms": 1, "source": "measured"}
    profile.write_text(json.dumps({"batching": {"enabled": True, "max_batch_size": 64,
                                                "max_latency_ms": 80}}))
    assert batching_settings(profile, compiled)["max_batch_size"] == 64
    for broken in ("not json", json.dumps({"batching": {"enabled": True}}),
                   json.dumps({"batching": {"enabled": True, "max_batch_size": 1,
                                            "max_latency_ms": 5}})):
        profile.write_text(broken)
        assert batching_settings(profile, compiled)["source"] == "compiled"


def test_ranking_orders_by_score_ties_in_request_order_unscored_last():
    candidates = [{"doc": d} for d in (10, 11, 12, 13, 14, 15)]
    scores = [0.2, None, 0.9, 0.2, None, 0.5]
    assert ranked(candidates, scores) == [
        {"doc": 12, "score": 0.9}, {"doc": 15, "score": 0.5}, {"doc": 10, "score": 0.2},
        {"doc": 13, "score": 0.2}, {"doc": 11, "score": None}, {"doc": 14, "score": None}]
    assert [r["doc"] for r in ranked(candidates, scores, top_k=3)] == [12, 15, 10]
    assert len(ranked(candidates, scores, top_k=100)) == 6
    assert ranked([], []) == []
    with pytest.raises(ValueError):
        ranked(candidates, scores[:2])


def test_ranking_rows_carry_the_group_key_when_it_is_a_request_key(inputs):
    class Candidate:
        def __init__(self, doc):
            self.key_0 = doc

    rows, own = candidate_rows(("q", 7), [Candidate(1), Candidate(2)], ("doc",), ("key_0",))
    assert rows == [{"doc": 1, "q": 7}, {"doc": 2, "q": 7}]
    assert own == [{"doc": 1}, {"doc": 2}]
    rows, own = candidate_rows(None, [{"id": 3}, {"id": 1}], ("id",))
    assert rows == own == [{"id": 3}, {"id": 1}]
    # scored through the same input path as /predict: 2's input is 0/0, 9 is unknown
    scores = predictions(inputs(rows + [{"id": 2}, {"id": 9}]), lambda m: m[:, 0] * 10)
    assert ranked([*own, {"id": 2}, {"id": 9}], scores) == [
        {"id": 1, "score": 15.0}, {"id": 3, "score": None}, {"id": 2, "score": None},
        {"id": 9, "score": None}]


def test_request_fields_reach_the_transforms_beside_the_fetched_columns():
    schema = InputSchema(fetch_dtypes={**FETCH_DTYPES, "discount": "float64"},
                         transforms={"cut": (lambda c: c["v__b"] * (1 - c["discount"]),
                                             "float64")},
                         model_columns=("v__b", "discount", "cut"))

    class Row:
        def __init__(self, id, discount):
            self.key_0, self.field_0 = id, discount

    inputs = ModelInput(online_rows=online_rows, schema=schema, request_keys=KEYS,
                        key_attributes=("key_0",), request_fields={"discount": "float64"},
                        field_attributes=("field_0",))
    batch = inputs([Row(9, 0.5), Row(1, 0.5), {"id": 1, "discount": 0.25}])
    assert batch.found.tolist() == [1, 2]  # 9 is unknown: its request value is not read
    assert batch.columns["discount"].tolist() == [0.5, 0.25]
    assert batch.columns["cut"].tolist() == [0.75, 1.125]
    assert predictions(batch, lambda m: m[:, 2]) == [None, 0.75, 1.125]


def test_settle_heap_freezes_what_was_loaded_and_leaves_new_objects_collectable():
    """A worker's loaded objects go out of the collector's sight; what comes after is still
    collected (a cycle made after settling is freed by the next collection)."""
    import gc
    import weakref

    from mlstack.runtime import serving as serving_module

    class Node:
        pass

    try:
        loaded = [Node() for _ in range(1000)]
        frozen = serving_module.settle_heap()
        assert frozen >= len(loaded) and gc.get_freeze_count() == frozen
        cycle = Node()
        cycle.me = cycle
        alive = weakref.ref(cycle)
        del cycle
        gc.collect()
        assert alive() is None
    finally:
        gc.unfreeze()  # the test process's other tests expect a plain collector
