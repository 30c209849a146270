"""The service's input path: request rows -> online features -> model input -> predictions.

The model input is computed by the project's generated transforms (`model_frame`), the code
training used, so serving and training cannot disagree. A row gets null (None) when its
entity has no online feature values (unknown key, or older than the view's TTL) or when its
model input is not finite (say, a transform divided by zero): one such row must not fail the
other requests that share its adaptive batch.

    inputs = ModelInput(online_features=store.online_features, fetch_dtypes={...},
                        model_columns=MODEL_COLUMNS, model_frame=model_frame)
    batch = inputs(rows)                                   # keys, found positions, frame
    predictions(batch, lambda X: model.predict_proba(X)[:, 1])   -> [float | None, ...]
    feature_records(batch, MODEL_COLUMNS)                  -> [{keys, model columns}, ...]
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

__all__ = ["Batch", "ModelInput", "check_model_columns", "feature_records", "predictions"]


def check_model_columns(tag: object, metadata: Mapping[str, Any], model_columns: Sequence[str]):
    """Refuse (RuntimeError) a model whose lineage says it was trained on other columns."""
    trained_on = metadata.get("model_columns")
    if trained_on is not None and list(trained_on) != list(model_columns):
        raise RuntimeError(
            f"model {tag} was trained on columns {list(trained_on)}, but this service "
            f"computes {list(model_columns)}: retrain for the current spec"
        )


class Batch(NamedTuple):
    """One call's rows: their request keys, the positions of the rows found online and the
    model input of those rows (in that order)."""

    keys: list[dict]
    found: np.ndarray
    frame: pd.DataFrame


def request_keys(rows: Sequence[Any]) -> list[dict]:
    """Request rows (pydantic models, dumped by alias, or mappings) as plain dicts."""
    return [
        row.model_dump(by_alias=True) if hasattr(row, "model_dump") else dict(row)
        for row in rows
    ]


class ModelInput:
    """Request rows -> Batch. `online_features` (the store's) is called under a lock: one
    lookup at a time per process. `fetch_dtypes` are the fetched columns' spec dtypes: found
    rows are cast to them, as the offline path reads them."""

    def __init__(
        self,
        *,
        online_features: Callable[[list[dict]], pd.DataFrame],
        fetch_dtypes: Mapping[str, str],
        model_columns: Sequence[str],
        model_frame: Callable[[pd.DataFrame], pd.DataFrame],
    ) -> None:
        self.online_features = online_features
        self.fetch_dtypes = dict(fetch_dtypes)
        self.fetch_columns = list(self.fetch_dtypes)
        self.model_columns = list(model_columns)
        self.model_frame = model_frame
        self._lock = threading.Lock()

    def warm_up(self, row: Mapping[str, Any]) -> None:
        """One lookup, so that the first request does not pay for loading the store."""
        with self._lock:
            self.online_features([dict(row)])

    def __call__(self, rows: Sequence[Any]) -> Batch:
        keys = request_keys(rows)
        if not keys:
            return Batch(keys, np.empty(0, dtype=np.intp), pd.DataFrame(columns=self.model_columns))
        with self._lock:
            fetched = self.online_features(keys).reset_index(drop=True)
        found = fetched[self.fetch_columns].notna().all(axis=1).to_numpy()
        present = fetched[found].astype(self.fetch_dtypes)
        return Batch(keys, np.flatnonzero(found), self.model_frame(present))


def predictions(batch: Batch, score: Callable[[pd.DataFrame], Any]) -> list[Any]:
    """`score` of each row's model input, in request order; None for a row not found online
    or whose input is not finite (those are not passed to `score`)."""
    out: list[Any] = [None] * len(batch.keys)
    if not len(batch.found):
        return out
    scorable = np.isfinite(batch.frame.to_numpy(dtype=float)).all(axis=1)
    if scorable.any():
        values = np.asarray(score(batch.frame[scorable])).tolist()
        for position, value in zip(batch.found[scorable].tolist(), values, strict=True):
            out[position] = value
    return out


def feature_records(batch: Batch, model_columns: Sequence[str]) -> list[dict[str, Any]]:
    """Each row's keys and model input (None for a missing or NaN value; every model column
    None for a row not found online), in request order."""
    frame = batch.frame
    records = frame.astype(object).where(frame.notna(), None).to_dict(orient="records")
    empty = dict.fromkeys(model_columns)
    by_position = dict(zip(batch.found.tolist(), records, strict=True))
    return [{**key, **by_position.get(i, empty)} for i, key in enumerate(batch.keys)]
