"""The model's input, computed the same way in training and serving: one code path.

A project's generated transforms module describes its model input with an `InputSchema`: the
fetched feature columns ('view__field') and their spec dtypes, the transforms (functions over
a mapping of numpy arrays, emitted from the parsed expressions or calling a function of the
project's own code) and the model's column order. Transforms run in the order given: each
sees the fetched arrays and the results of the transforms before it.

    SCHEMA = InputSchema(fetch_dtypes={...}, transforms={"ratio": (ratio, "float64")},
                         model_columns=(...))
    SCHEMA.columns(arrays)   -> {model column: array}, model order, each in its dtype
    SCHEMA.matrix(arrays)    -> 2-D float64 array (rows x model columns): what the model reads
    SCHEMA.stack(columns)    -> the same from the model input columns
    SCHEMA.arrays(frame)     -> the frame's fetched columns as those arrays
    SCHEMA.frame(frame)      -> the model input as a DataFrame (training, evaluation, drift)

Serving builds the arrays from the online store's answer (no pandas per request); training
converts its point-in-time frame to the same arrays first, so both run the same arithmetic
on the same dtypes. A row of a frame missing a fetched value gets NaN in every model column
(such a row is never served: it gets null).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import pandas as pd

__all__ = ["NUMPY_DTYPES", "InputSchema", "Transform"]

# numpy dtypes of the spec dtypes (strings and timestamps stay Python objects).
NUMPY_DTYPES: dict[str, type[Any]] = {
    "int64": np.int64,
    "int32": np.int32,
    "float64": np.float64,
    "float32": np.float32,
    "bool": np.bool_,
    "string": object,
    "timestamp": object,
}

Transform = Callable[[Mapping[str, np.ndarray]], object]


def _column(value: object, rows: int, dtype: type[Any]) -> np.ndarray:
    """A transform's result as a 1-D array of `rows` values in `dtype` (a constant result,
    say where(x > 0, 1, 0) of zero rows, is broadcast)."""
    array = np.asarray(value)
    if array.ndim == 0 or array.shape[0] != rows:
        array = np.broadcast_to(array, (rows,))
    return array.astype(dtype, copy=False)


@dataclass(frozen=True)
class InputSchema:
    """What the model reads. `fetch_dtypes`: fetched column -> spec dtype; `transforms`:
    name -> (function over the fetched arrays, spec dtype); `model_columns`: model order."""

    fetch_dtypes: Mapping[str, str]
    transforms: Mapping[str, tuple[Transform, str]]
    model_columns: Sequence[str]
    numpy_dtypes: dict[str, type[Any]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        dtypes = {c: NUMPY_DTYPES[d] for c, d in self.fetch_dtypes.items()}
        dtypes.update({name: NUMPY_DTYPES[d] for name, (_, d) in self.transforms.items()})
        object.__setattr__(self, "numpy_dtypes", dtypes)

    def columns(self, fetched: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The model's input columns, model order, each in its declared dtype. `fetched`
        holds every fetched column (same length, no missing values). x / 0 gives inf and
        0 / 0 NaN, as in pandas: such a row is not scored."""
        rows = len(next(iter(fetched.values()))) if fetched else 0
        out = dict(fetched)
        if self.transforms:
            with np.errstate(all="ignore"):
                for name, (transform, _) in self.transforms.items():
                    # in order: a transform may read the ones before it (python transforms)
                    out[name] = _column(transform(out), rows, self.numpy_dtypes[name])
        return {name: out[name] for name in self.model_columns}

    def stack(self, columns: Mapping[str, np.ndarray]) -> np.ndarray:
        """Model input columns (as `columns` returns them) as one C-ordered float64 array."""
        rows = len(next(iter(columns.values()))) if columns else 0
        out = np.empty((rows, len(self.model_columns)), dtype=np.float64)
        for i, name in enumerate(self.model_columns):
            out[:, i] = columns[name]
        return out

    def matrix(self, fetched: Mapping[str, np.ndarray]) -> np.ndarray:
        """The model's input as one C-ordered float64 array (rows x model columns)."""
        return self.stack(self.columns(fetched))

    def arrays(self, frame: pd.DataFrame) -> dict[str, np.ndarray]:
        """The frame's fetched columns as arrays in their declared dtypes (every row must
        have every value)."""
        return {c: frame[c].to_numpy(dtype=self.numpy_dtypes[c]) for c in self.fetch_dtypes}

    def complete(self, frame: pd.DataFrame) -> np.ndarray:
        """Which rows of the frame have every fetched value."""
        # pandas is untyped here (no stubs for pandas 2): to_numpy gives a bool array
        return cast(np.ndarray, frame[list(self.fetch_dtypes)].notna().all(axis=1).to_numpy())

    def frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The model input of a frame with the fetched columns, as a DataFrame with the
        frame's index: the arrays serving builds, then `columns`. Rows missing a fetched value
        get NaN in every model column."""
        complete = self.complete(frame)
        if complete.all():
            return pd.DataFrame(self.columns(self.arrays(frame)), index=frame.index)
        computed = self.columns(self.arrays(frame[complete]))
        out = {}
        for name, values in computed.items():
            column = np.full(len(frame), np.nan, dtype=np.float64)
            column[complete] = values
            out[name] = column
        return pd.DataFrame(out, index=frame.index)

    def transform_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Only the transform columns of `frame`, NaN where a fetched value is missing
        (Feast's on-demand view calls this: the same code as the model input)."""
        present = [c for c in self.fetch_dtypes if c in frame.columns]  # a view's fields
        complete = frame[present].notna().all(axis=1).to_numpy()
        arrays = {c: frame.loc[complete, c].to_numpy(dtype=self.numpy_dtypes[c])
                  for c in present}
        rows = int(complete.sum())
        out = {}
        with np.errstate(all="ignore"):
            for name, (transform, _) in self.transforms.items():
                column = np.full(len(frame), np.nan, dtype=np.float64)
                arrays[name] = _column(transform(arrays), rows, self.numpy_dtypes[name])
                column[complete] = arrays[name]
                out[name] = column
        return pd.DataFrame(out, index=frame.index)
