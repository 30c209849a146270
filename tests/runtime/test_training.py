"""Label rows, the training set, the split (time, random with seed, group-aware) and fit."""

from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd
import pytest

from mlstack.runtime.training import (
    LabelSpec,
    Split,
    fit,
    group_sizes,
    label_rows,
    split_frame,
    training_set,
)

LABEL = LabelSpec(source="labels", column="y", timestamp="ts", keys=("id",))


def _frame(n: int = 10) -> pd.DataFrame:
    times = pd.date_range("2026-01-01", periods=n, freq="h", tz="UTC")
    # shuffled, with a tie in time broken by the key
    rows = pd.DataFrame({"id": np.arange(n)[::-1], "ts": times, "y": np.arange(n) % 2,
                         "f": np.linspace(0, 1, n)})
    rows.loc[0, "ts"] = rows.loc[1, "ts"]
    return rows.sample(frac=1, random_state=3).reset_index(drop=True)


def test_label_rows_keeps_keys_group_time_label_and_drops_unlabelled():
    frames = {"labels": pd.DataFrame({"id": [1, 2, 3], "q": [7, 7, 8], "ts": [1, 2, 3],
                                      "y": [1.0, None, 0.0], "other": [0, 0, 0]})}
    rows = label_rows(frames, LabelSpec(source="labels", column="y", timestamp="ts",
                                        keys=("id",), group_by="q"))
    assert list(rows.columns) == ["id", "q", "ts", "y"]
    assert rows["id"].tolist() == [1, 3] and list(rows.index) == [0, 1]
    grouped_by_key = LabelSpec(source="labels", column="y", timestamp="ts", keys=("q", "id"),
                               group_by="q")
    assert list(label_rows(frames, grouped_by_key).columns) == ["q", "id", "ts", "y"]
    # request fields: their values as logged with each labelled request
    logged = LabelSpec(source="labels", column="y", timestamp="ts", keys=("id",),
                       request=("other",))
    assert list(label_rows(frames, logged).columns) == ["id", "other", "ts", "y"]


def test_training_set_sorts_and_drops_rows_without_features(caplog):
    rows = _frame(6)

    def historical(entity):
        return entity.assign(feat=[None if i == 2 else float(i) for i in entity["id"]])

    with caplog.at_level(logging.WARNING, logger="mlstack.runtime"):
        frame = training_set(rows, historical, LABEL, ["feat"])
    assert 2 not in frame["id"].tolist() and len(frame) == 5
    expected = rows[rows["id"] != 2].sort_values(["ts", "id"], kind="stable")["id"].tolist()
    assert frame["id"].tolist() == expected and list(frame.index) == list(range(5))
    assert "1 of 6 label rows have no feature values in their TTL window" in caplog.text
    with pytest.raises(ValueError, match="the training set is empty"):
        training_set(rows, lambda e: e.assign(feat=None), LABEL, ["feat"])


def test_time_split_holds_out_the_latest_rows():
    frame = _frame(10)
    train, test = split_frame(frame, LABEL, Split(by="time", test_fraction=0.2, seed=7))
    ordered = frame.sort_values(["ts", "id"], kind="stable")
    assert test["id"].tolist() == ordered["id"].tolist()[-2:]
    assert train["id"].tolist() == ordered["id"].tolist()[:-2]
    # rounds up, at least one row
    _, test = split_frame(frame, LABEL, Split(by="time", test_fraction=0.01))
    assert len(test) == 1
    _, test = split_frame(frame, LABEL, Split(by="time", test_fraction=0.25))
    assert len(test) == math.ceil(10 * 0.25)


def test_random_split_is_drawn_with_the_seed():
    frame = _frame(20)
    train, test = split_frame(frame, LABEL, Split(by="random", test_fraction=0.2, seed=11))
    ordered = frame.sort_values(["ts", "id"], kind="stable").reset_index(drop=True)
    positions = np.random.default_rng(11).permutation(np.arange(20))[-4:]
    assert sorted(test["id"].tolist()) == sorted(ordered.loc[positions, "id"].tolist())
    assert len(train) == 16 and set(train["id"]).isdisjoint(test["id"])
    again = split_frame(frame, LABEL, Split(by="random", test_fraction=0.2, seed=11))[1]
    assert again["id"].tolist() == test["id"].tolist()
    other = split_frame(frame, LABEL, Split(by="random", test_fraction=0.2, seed=12))[1]
    assert sorted(other["id"].tolist()) != sorted(test["id"].tolist())


def test_ranking_split_keeps_groups_whole():
    label = LabelSpec(source="l", column="y", timestamp="ts", keys=("doc", "q"), group_by="q")
    times = pd.date_range("2026-01-01", periods=9, freq="h", tz="UTC")
    # groups of 3, 2 and 4 rows, in the time order of their first row
    frame = pd.DataFrame({"q": [1, 1, 1, 2, 2, 3, 3, 3, 3], "doc": range(9), "ts": times,
                          "y": [0, 1, 2] * 3})
    _, test = split_frame(frame, label, Split(by="time", test_fraction=0.2))
    assert set(test["q"]) == {3}  # 2 rows wanted: the last group (4 rows)
    _, test = split_frame(frame, label, Split(by="time", test_fraction=0.5))
    assert set(test["q"]) == {2, 3}  # 5 wanted: 4 + 2
    train, test = split_frame(frame, label, Split(by="time", test_fraction=0.99))
    assert set(train["q"]) == {1} and set(test["q"]) == {2, 3}  # one group left to train
    train, test = split_frame(frame, label, Split(by="random", test_fraction=0.2, seed=1))
    assert set(train["q"]).isdisjoint(test["q"]) and len(train) + len(test) == 9


def test_fit_uses_the_model_frame_and_the_label():
    from sklearn.linear_model import LogisticRegression

    frame = pd.DataFrame({"f": [0.0, 0.1, 0.9, 1.0] * 5, "y": [0, 0, 1, 1] * 5})
    seen = []

    def model_frame(df):
        seen.append(list(df.columns))
        return df[["f"]].assign(g=df["f"] * 2)

    model = fit(LogisticRegression(), frame, LabelSpec("s", "y", "ts", ("id",)), model_frame)
    assert seen == [["f", "y"]] and list(model.feature_names_in_) == ["f", "g"]


class _Recorder:
    """A ranker that keeps what fit got."""

    def fit(self, X, y, **groups):
        self.X, self.y, self.groups = X, y, groups
        return self


def _interleaved() -> pd.DataFrame:
    # groups 7, 3 and 5 interleaved, as a time-ordered training part is
    return pd.DataFrame({"q": [7, 3, 7, 5, 3, 7, 5], "f": np.arange(7.0),
                         "y": [0, 1, 2, 3, 0, 1, 2]})


def test_fit_gives_a_ranker_contiguous_groups_as_qid_or_sizes():
    label = LabelSpec("s", "y", "ts", ("doc",), group_by="q")
    by_qid = fit(_Recorder(), _interleaved(), label, lambda df: df[["f"]], group_fit="qid")
    assert list(by_qid.groups["qid"]) == [3, 3, 5, 5, 7, 7, 7]
    assert list(by_qid.X["f"]) == [1.0, 4.0, 3.0, 6.0, 0.0, 2.0, 5.0]  # stable within a group
    assert list(by_qid.y) == [1, 0, 3, 2, 0, 2, 1]
    by_size = fit(_Recorder(), _interleaved(), label, lambda df: df[["f"]], group_fit="group")
    assert list(by_size.groups["group"]) == [2, 2, 3]
    with pytest.raises(ValueError, match="unknown group fit keyword"):
        fit(_Recorder(), _interleaved(), label, lambda df: df[["f"]], group_fit="groups")
    with pytest.raises(ValueError, match="group_by"):
        fit(_Recorder(), _interleaved(), LABEL, lambda df: df[["f"]], group_fit="qid")


def test_group_sizes_are_runs_and_refuse_a_split_group():
    assert list(group_sizes(np.array([4, 4, 1, 9, 9, 9]))) == [2, 1, 3]
    assert list(group_sizes(np.array([], dtype=np.int64))) == []
    with pytest.raises(ValueError, match="not contiguous"):
        group_sizes(np.array([1, 2, 1]))


@pytest.mark.parametrize(("library", "cls", "keyword"),
                         [("xgboost", "XGBRanker", "qid"), ("lightgbm", "LGBMRanker", "group")])
def test_real_rankers_learn_over_query_groups(library, cls, keyword):
    module = pytest.importorskip(library)
    rng = np.random.default_rng(0)
    n = 600
    frame = pd.DataFrame({"q": rng.integers(0, 60, n), "f": rng.normal(size=n)})
    frame["y"] = np.clip(np.round(frame["f"] + rng.normal(0, 0.3, n) + 1.5), 0, 3).astype(int)
    extra = {"verbose": -1} if library == "lightgbm" else {}
    label = LabelSpec("s", "y", "ts", ("doc",), group_by="q")
    model = fit(getattr(module, cls)(n_estimators=20, random_state=0, **extra), frame, label,
                lambda df: df[["f"]], group_fit=keyword)
    scores = model.predict(frame[["f"]])
    assert np.corrcoef(scores, frame["f"])[0, 1] > 0.9
