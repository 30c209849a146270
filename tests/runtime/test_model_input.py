"""The model's input from numpy arrays: one code path for training (DataFrames) and serving
(arrays), declared dtypes, NaN rows for incomplete frames, the on-demand view's columns."""

from __future__ import annotations

import numpy as np
import pandas as pd

from mlstack.runtime.model_input import InputSchema


def halves(columns):
    return columns["v__n"] // 2


def share(columns):
    return columns["v__x"] / (columns["v__n"] + 1)


def flag(columns):
    return np.where(columns["v__x"] > 1.0, 1, 0)


SCHEMA = InputSchema(
    fetch_dtypes={"v__n": "int64", "v__x": "float64", "w__y": "float32"},
    transforms={"halves": (halves, "int64"), "share": (share, "float64"),
                "flag": (flag, "bool")},
    model_columns=("share", "v__n", "halves", "w__y", "flag"))


def test_columns_are_in_model_order_and_declared_dtypes():
    fetched = {"v__n": np.array([3, 4], dtype=np.int64), "v__x": np.array([2.0, 0.5]),
               "w__y": np.array([1.5, 2.5], dtype=np.float32)}
    columns = SCHEMA.columns(fetched)
    assert list(columns) == ["share", "v__n", "halves", "w__y", "flag"]
    assert columns["halves"].tolist() == [1, 2] and columns["halves"].dtype == np.int64
    assert columns["share"].tolist() == [0.5, 0.1]
    assert columns["flag"].dtype == np.bool_ and columns["flag"].tolist() == [True, False]
    matrix = SCHEMA.matrix(fetched)
    assert matrix.shape == (2, 5) and matrix.dtype == np.float64
    np.testing.assert_array_equal(matrix[:, 4], [1.0, 0.0])


def test_frame_is_the_same_arithmetic_as_arrays():
    frame = pd.DataFrame({"v__n": [3.0, 4.0], "v__x": [2.0, 0.5], "w__y": [1.5, 2.5],
                          "label": [0, 1]}, index=[7, 9])
    got = SCHEMA.frame(frame)
    assert list(got.index) == [7, 9]
    assert got["v__n"].dtype == np.int64  # the declared dtype, as serving reads it
    expected = SCHEMA.columns({"v__n": np.array([3, 4]), "v__x": np.array([2.0, 0.5]),
                               "w__y": np.array([1.5, 2.5], dtype=np.float32)})
    for name, values in expected.items():
        np.testing.assert_array_equal(got[name].to_numpy(), values)


def test_incomplete_rows_get_nan_in_every_model_column():
    frame = pd.DataFrame({"v__n": pd.array([3, None], dtype="Int64"), "v__x": [2.0, 1.0],
                          "w__y": [1.5, 2.5]})
    got = SCHEMA.frame(frame)
    assert got.iloc[1].isna().all()
    assert got.iloc[0]["share"] == 0.5


def test_division_by_zero_is_inf_without_a_warning(recwarn):
    fetched = {"v__n": np.array([-1]), "v__x": np.array([2.0]), "w__y": np.array([1.0])}
    assert SCHEMA.columns(fetched)["share"].tolist() == [np.inf]
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_transform_frame_reads_only_the_columns_present():
    schema = InputSchema(fetch_dtypes={"v__n": "int64", "v__x": "float64", "w__y": "float32"},
                         transforms={"share": (share, "float64")},
                         model_columns=("share", "w__y"))
    frame = pd.DataFrame({"v__n": [1, 3], "v__x": [1.0, None]})  # no w__y: another view
    got = schema.transform_frame(frame)
    assert list(got.columns) == ["share"]
    assert got["share"].iloc[0] == 0.5 and np.isnan(got["share"].iloc[1])
