"""The rows of each source that changed since the last successful training, counted.

A row is known by its identity (the source's keys and its event time) and its values (every
other declared column). Ingest fingerprints each row as two 64-bit hashes (pandas'
hash_pandas_object, stable across processes and machines) and compares them with the
fingerprints the last successful training left in the state folder:

    added     identities there now and not then
    removed   identities there then and not now
    changed   identities there both times whose values differ
    share     (added + removed + changed) / the identities in either: 0.0 for the same rows,
              1.0 for a file replaced by other rows

A repeated identity (a source whose keys and time do not name one row) is told apart by its
values, so reordering such rows changes nothing. The fingerprints are a parquet file per
source under '<state>/row_prints/' (16 bytes a row), written atomically when a training run
completes: a failed run leaves the last successful one's to compare against.

    found = changes.since_last_training(SOURCES, frames, STATE)   # at validate
    found.report    # {source: {"rows", "previous_rows", "added", "removed", "changed",
                    #           "share"}}, in training.json as "changes"
    found.record()  # once the run succeeded
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from mlstack.runtime.logs import Logger, logger_for

if TYPE_CHECKING:
    import pandas as pd

    from mlstack.runtime.sources import SourceSpec
    from mlstack.runtime.state import StateFiles

__all__ = ["PRINTS_FOLDER", "RowChanges", "RowPrintStore", "SourceChanges", "count_changes",
           "row_prints", "since_last_training"]

# The state folder's subfolder holding each source's row fingerprints.
PRINTS_FOLDER = "row_prints"


@dataclass(frozen=True)
class RowChanges:
    """One source's rows now against the last successful training's (previous_rows None: no
    training succeeded before, nothing to compare; the counts are then 0)."""

    rows: int
    previous_rows: int | None = None
    added: int = 0
    removed: int = 0
    changed: int = 0

    @property
    def share(self) -> float | None:
        """The share of rows that differ: (added + removed + changed) over the identities in
        either version (None with nothing to compare)."""
        if self.previous_rows is None:
            return None
        either = self.previous_rows + self.added
        return round((self.added + self.removed + self.changed) / either, 6) if either else 0.0

    def as_record(self) -> dict[str, Any]:
        return {"rows": self.rows, "previous_rows": self.previous_rows, "added": self.added,
                "removed": self.removed, "changed": self.changed, "share": self.share}

    def describe(self) -> str:
        """'3000 rows: 12 added, 0 removed, 3 changed (0.50%) since the last training'."""
        if self.previous_rows is None:
            return f"{self.rows} rows: no earlier training to compare with"
        return (f"{self.rows} rows: {self.added} added, {self.removed} removed, {self.changed} "
                f"changed ({self.share:.2%}) since the last training")


def _identity_columns(source: SourceSpec, frame: pd.DataFrame) -> list[str]:
    wanted = [*source.keys, source.timestamp_field]
    return [c for c in dict.fromkeys(wanted) if c in frame.columns]


def row_prints(source: SourceSpec, frame: pd.DataFrame) -> pd.DataFrame:
    """Each row's fingerprint: 'key' (its identity: keys and event time, a repeat told apart
    by its values) and 'row' (its other declared columns, by name, so the file's column order
    does not matter), both uint64; sorted by key."""
    import numpy as np
    import pandas as pd

    identity = _identity_columns(source, frame)
    values = sorted(c for c in source.columns if c in frame.columns and c not in identity)
    rows = len(frame)

    def hashed(columns: list[str]) -> np.ndarray:
        if not columns:
            return np.zeros(rows, dtype="uint64")
        part = frame[columns].reset_index(drop=True)
        # pandas is untyped here (no stubs for pandas 2): to_numpy gives the uint64 array
        return cast(np.ndarray,
                    pd.util.hash_pandas_object(part, index=False).to_numpy(dtype="uint64"))

    prints = pd.DataFrame({"key": hashed(identity), "row": hashed(values)})
    prints = prints.sort_values(["key", "row"], kind="stable", ignore_index=True)
    repeat = prints.groupby("key", sort=False).cumcount().to_numpy(dtype="uint64")
    if repeat.any():  # the n-th row of an identity, by its values' hash
        prints["key"] = pd.util.hash_pandas_object(
            pd.DataFrame({"key": prints["key"], "n": repeat}), index=False).to_numpy("uint64")
        prints = prints.sort_values("key", kind="stable", ignore_index=True)
    return prints


def count_changes(previous: pd.DataFrame | None, current: pd.DataFrame) -> RowChanges:
    """Rows added, removed and changed from the `previous` fingerprints (row_prints; None:
    none recorded) to the `current` ones."""
    if previous is None:
        return RowChanges(rows=len(current))
    both = previous.merge(current, on="key", how="outer", suffixes=("_before", "_now"),
                          indicator=True)
    kind = both["_merge"]
    matched = both[kind == "both"]
    return RowChanges(rows=len(current), previous_rows=len(previous),
                      added=int((kind == "right_only").sum()),
                      removed=int((kind == "left_only").sum()),
                      changed=int((matched["row_before"] != matched["row_now"]).sum()))


@dataclass(frozen=True)
class RowPrintStore:
    """The row fingerprints of the last successful training: '<name>.parquet' per source in
    `dir`."""

    dir: Path

    def path(self, name: str) -> Path:
        return Path(self.dir) / f"{name}.parquet"

    def read(self, name: str) -> pd.DataFrame | None:
        """A source's recorded fingerprints, or None when there are none (or they cannot be
        read: a torn or foreign file is no reason to fail a training run)."""
        import pandas as pd

        path = self.path(name)
        if not path.is_file():
            return None
        try:
            prints = pd.read_parquet(path)
        except Exception:  # noqa: BLE001 - unreadable: treated as no earlier training
            return None
        return prints if {"key", "row"} <= set(prints.columns) else None

    def write(self, name: str, prints: pd.DataFrame) -> Path:
        """Record a source's fingerprints atomically (a sibling .tmp renamed over the file)."""
        path = self.path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        prints[["key", "row"]].to_parquet(tmp, index=False)
        os.replace(tmp, path)
        return path


@dataclass
class SourceChanges:
    """What validate found against the last successful training: `changes` per source, and
    the fingerprints that `record()` keeps once this run succeeds."""

    store: RowPrintStore
    changes: dict[str, RowChanges] = field(default_factory=dict)
    prints: dict[str, pd.DataFrame] = field(default_factory=dict)

    @property
    def report(self) -> dict[str, dict[str, Any]]:
        """{source: RowChanges.as_record()}, by name: the training report's "changes"."""
        return {name: self.changes[name].as_record() for name in sorted(self.changes)}

    def record(self) -> None:
        """Keep this run's fingerprints as the ones the next training compares with."""
        for name in sorted(self.prints):
            self.store.write(name, self.prints[name])

    @classmethod
    def combine(cls, parts: Iterable[SourceChanges]) -> SourceChanges:
        """One SourceChanges of several (the Ray flow validates each source in a task)."""
        parts = list(parts)
        if not parts:
            raise ValueError("nothing to combine")
        combined = cls(parts[0].store)
        for part in parts:
            combined.changes.update(part.changes)
            combined.prints.update(part.prints)
        return combined


def since_last_training(sources: Iterable[SourceSpec], frames: Mapping[str, pd.DataFrame],
                        state: StateFiles, *, logger: Logger | None = None) -> SourceChanges:
    """Each source in `frames` against the fingerprints the last successful training recorded
    under the state folder; every count is logged."""
    logger = logger_for(logger)
    store = RowPrintStore(state.path(PRINTS_FOLDER))
    found = SourceChanges(store)
    by_name = {source.name: source for source in sources}
    for name in sorted(frames):
        prints = row_prints(by_name[name], frames[name])
        found.prints[name] = prints
        found.changes[name] = count_changes(store.read(name), prints)
        logger.info("source %s: %s", name, found.changes[name].describe())
    return found
