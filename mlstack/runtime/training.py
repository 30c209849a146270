"""The training set and the model: label rows, point-in-time join, split, fit.

    rows = label_rows(frames, label)                         keys, [group], time, label
    frame = training_set(rows, historical_features, label, fetch_columns)
    train, test = split_frame(frame, label, split)
    model = fit(estimator, train, label, model_frame)       # rankers: group_fit="qid"|"group"
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from mlstack.runtime.logs import Logger, logger_for

__all__ = ["LabelSpec", "Split", "fit", "group_sizes", "label_rows", "split_frame",
           "training_set"]

@dataclass(frozen=True)
class LabelSpec:
    """Where the label is: its source, column and time column, the entity keys the label
    source carries and, for ranking, the column grouping rows into queries."""

    source: str
    column: str
    timestamp: str
    keys: tuple[str, ...]
    group_by: str | None = None
    # request fields the model reads: label source columns of the same names (the values
    # logged with each request), carried into the training set
    request: tuple[str, ...] = ()


@dataclass(frozen=True)
class Split:
    """The train/test split: by 'time' (the latest `test_fraction` of rows by label time) or
    'random' (drawn with `seed`)."""

    by: str = "time"
    test_fraction: float = 0.2
    seed: int = 0


def label_rows(frames: Mapping[str, pd.DataFrame], label: LabelSpec) -> pd.DataFrame:
    """The entity rows of the training set: keys, group column, request fields, label time
    and label; rows without a label are dropped."""
    labels = frames[label.source]
    group = label.group_by
    extra = [group] if group and group not in label.keys else []
    extra += [c for c in label.request if c not in (*label.keys, *extra)]
    columns = [*label.keys, *extra, label.timestamp, label.column]
    return labels[columns].dropna(subset=[label.column]).reset_index(drop=True)


def training_set(
    rows: pd.DataFrame,
    historical_features: Callable[[pd.DataFrame], pd.DataFrame],
    label: LabelSpec,
    fetch_columns: Sequence[str],
    *,
    logger: Logger | None = None,
) -> pd.DataFrame:
    """Point-in-time join of the label rows with the features (`historical_features`, the
    store's), sorted by (label time, keys); rows missing any fetched feature (none inside the
    view's TTL) are left out with a warning. An empty result raises ValueError."""
    frame = historical_features(rows)
    frame = frame.sort_values([label.timestamp, *label.keys], kind="stable")
    missing = frame[list(fetch_columns)].isna().any(axis=1)
    if missing.any():
        logger_for(logger).warning(
            "%d of %d label rows have no feature values in their TTL window; left out of training",
            int(missing.sum()),
            len(frame),
        )
    frame = frame[~missing].reset_index(drop=True)
    if frame.empty:
        raise ValueError("the training set is empty: no label row has feature values")
    return frame


def split_frame(
    frame: pd.DataFrame, label: LabelSpec, split: Split
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train/test split: the latest `test_fraction` of rows by label time (ties by group and
    key), or a random `test_fraction` of rows drawn with `seed`. Ranking (label.group_by)
    splits whole groups, ordered by the time of each group's first row; the test part takes
    whole units from the end until it holds at least ceil(rows * test_fraction) rows (at
    least one) and leaves at least one unit for training."""
    group = label.group_by
    order = [label.timestamp, *dict.fromkeys([*([group] if group else []), *label.keys])]
    frame = frame.sort_values(order, kind="stable").reset_index(drop=True)
    units = frame[group] if group else pd.Series(np.arange(len(frame)))
    unit_order = pd.unique(units)  # by the time of each unit's first row
    if split.by != "time":
        unit_order = np.random.default_rng(split.seed).permutation(unit_order)
    sizes = units.value_counts().reindex(unit_order).to_numpy()
    wanted = max(1, math.ceil(len(frame) * split.test_fraction))
    test_units = int(np.searchsorted(np.cumsum(sizes[::-1]), wanted)) + 1
    test_units = min(test_units, len(unit_order) - 1)
    is_test = units.isin(unit_order[len(unit_order) - test_units :]).to_numpy()
    return frame[~is_test], frame[is_test]


def fit(
    estimator: Any,
    frame: pd.DataFrame,
    label: LabelSpec,
    model_frame: Callable[[pd.DataFrame], pd.DataFrame],
    *,
    group_fit: str | None = None,
) -> Any:
    """Fit an already-constructed estimator on the model input (`model_frame`, the generated
    transforms) and the label of `frame`; returns the fitted estimator. A ranker that learns
    over query groups gets them by its fit keyword `group_fit`: 'qid' (XGBRanker: the group
    key of every row) or 'group' (LGBMRanker: the size of each group); either way the rows are
    first ordered by group (stably), since both need the rows of a group contiguous."""
    if group_fit is None:
        estimator.fit(model_frame(frame), frame[label.column])
        return estimator
    if label.group_by is None:
        raise ValueError(f"fitting with {group_fit}= needs the label's group_by column")
    frame = frame.sort_values(label.group_by, kind="stable")
    keys = frame[label.group_by].to_numpy()
    if group_fit == "qid":
        groups = {"qid": keys}
    elif group_fit == "group":
        groups = {"group": group_sizes(keys)}
    else:
        raise ValueError(f"unknown group fit keyword {group_fit!r}; expected 'qid' or 'group'")
    estimator.fit(model_frame(frame), frame[label.column], **groups)
    return estimator


def group_sizes(keys: np.ndarray) -> np.ndarray:
    """The length of each run of equal keys, in order (LightGBM's `group`); the keys of a
    group must be contiguous, so a key that comes back after another raises ValueError."""
    keys = np.asarray(keys)
    if len(keys) == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    if len(pd.unique(keys)) != len(starts):
        raise ValueError("the rows of a query group are not contiguous")
    sizes: np.ndarray = np.diff(np.r_[starts, len(keys)]).astype(np.int64)  # np.r_ is untyped
    return sizes
