"""The service's input path: null rows, non-finite input, and the same numbers as training."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlstack.runtime.serving import (
    ModelInput,
    check_model_columns,
    feature_records,
    predictions,
)

KEYS = ("id",)
FETCH_DTYPES = {"v__a": "int64", "v__b": "float64"}
MODEL_COLUMNS = ("v__b", "v__a", "ratio")
ONLINE = {1: (3, 1.5), 2: (0, 0.0), 3: (4, None)}  # 2: ratio is 0/0 -> nan; 3: b missing


def model_frame(df: pd.DataFrame) -> pd.DataFrame:
    """What a generated transforms.model_frame does: transforms added, model column order."""
    out = df.copy()
    out["ratio"] = pd.Series(df["v__b"] / df["v__a"], index=df.index).astype("float64")
    return out[list(MODEL_COLUMNS)]


def online_features(rows: list[dict]) -> pd.DataFrame:
    """The store's online_features: request rows + fetched columns, None when unknown."""
    values = [ONLINE.get(row["id"], (None, None)) for row in rows]
    return pd.DataFrame(rows, columns=None if rows else list(KEYS)).assign(
        v__a=[v[0] for v in values], v__b=[v[1] for v in values])


@pytest.fixture
def inputs() -> ModelInput:
    return ModelInput(online_features=online_features, fetch_dtypes=FETCH_DTYPES,
                      model_columns=MODEL_COLUMNS, model_frame=model_frame)


class Row:
    def __init__(self, id):
        self.id = id

    def model_dump(self, by_alias):
        assert by_alias
        return {"id": self.id}


def test_batch_has_found_rows_only_in_training_dtypes(inputs):
    batch = inputs([Row(9), Row(1), Row(3), Row(2), Row(1)])
    assert batch.keys == [{"id": 9}, {"id": 1}, {"id": 3}, {"id": 2}, {"id": 1}]
    assert batch.found.tolist() == [1, 3, 4]
    # exactly the training path: the same rows, cast to the declared dtypes, through model_frame
    offline = pd.DataFrame({"id": [1, 2, 1], "v__a": [3, 0, 3], "v__b": [1.5, 0.0, 1.5]})
    pd.testing.assert_frame_equal(batch.frame.reset_index(drop=True),
                                  model_frame(offline.astype(FETCH_DTYPES)), check_exact=True)
    assert batch.frame["v__a"].dtype == np.int64


def test_predictions_null_for_missing_and_non_finite_rows(inputs):
    scored = []

    def score(frame):
        scored.append(len(frame))
        return frame["v__b"].to_numpy() * 10

    assert predictions(inputs([{"id": 9}, {"id": 1}, {"id": 2}, {"id": 3}, {"id": 1}]),
                       score) == [None, 15.0, None, None, 15.0]
    assert scored == [2]  # the non-finite row (ratio nan) never reaches the model
    assert predictions(inputs([{"id": 9}]), score) == [None]
    assert predictions(inputs([]), score) == []
    assert scored == [2]


def test_feature_records(inputs):
    records = feature_records(inputs([{"id": 1}, {"id": 9}, {"id": 2}]), MODEL_COLUMNS)
    assert records[0] == {"id": 1, "v__b": 1.5, "v__a": 3, "ratio": 0.5}
    assert records[1] == {"id": 9, "v__b": None, "v__a": None, "ratio": None}
    assert records[2] == {"id": 2, "v__b": 0.0, "v__a": 0, "ratio": None}  # nan -> null
    assert feature_records(inputs([]), MODEL_COLUMNS) == []


def test_warm_up_makes_one_lookup():
    calls = []
    inputs = ModelInput(online_features=lambda rows: calls.append(rows),
                        fetch_dtypes=FETCH_DTYPES, model_columns=MODEL_COLUMNS,
                        model_frame=model_frame)
    inputs.warm_up({"id": 0})
    assert calls == [[{"id": 0}]]


def test_model_trained_on_other_columns_is_refused():
    check_model_columns("m:1", {"model_columns": list(MODEL_COLUMNS)}, MODEL_COLUMNS)
    check_model_columns("m:1", {}, MODEL_COLUMNS)  # no lineage: accepted
    with pytest.raises(RuntimeError) as error:
        check_model_columns("m:1", {"model_columns": ["x"]}, MODEL_COLUMNS)
    assert str(error.value) == (
        "model m:1 was trained on columns ['x'], but this service computes "
        "['v__b', 'v__a', 'ratio']: retrain for the current spec")
