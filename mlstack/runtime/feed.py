"""Fresh events for a project's file sources: `mlstack run feed` calls one tick at a time.

A tick appends a batch of rows to every fed source, all stamped with one event time: now (to
the second), or a second after a source's newest row when that is later and a check orders
that source's event times (a monotonic check, or a unique one with the event time); the
latest of these for every source, so a label row is never stamped before the feature rows
the same tick gave its entity (stamped apart, a tick that crossed a second, or a feature
source bumped past now, put the label first and the point-in-time join missed the pair).
The rows are the source's own recent rows, sampled:

- **Together.** The label source leads: its sampled rows pick the entities, and every other
  source sharing a key column with it gets each picked entity's latest row, so a new label
  row finds its features at the same time in the point-in-time join. A source sharing no key
  with the label source is sampled on its own.
- **Fresh where the checks ask.** A `unique` check without the event time (say, a label per
  (query_id, doc_id), or one row per transaction_id) cannot take a repeated value: one of its
  columns (the key in the fewest sources; an int counts on from the largest value, a string
  gets a suffix) takes fresh values, the same in every source of the tick.
- **Drifted.** Each numeric feature column moves by `drift` standard deviations (of the
  column, over the file), rounded for an int column, kept within its declared range and at 0
  or above when it holds no negative value. Keys, labels, flags (10 values or fewer) and
  columns with allowed values do not move. Ticks sample the newest rows, fed ones included,
  so the drift accumulates tick after tick.

Nothing is written unless every fed source still passes its data checks (those that passed
before the tick) and its dtype contract; each file is then replaced in one rename (a reader
sees the old file or the new one, never a part), with the file's own column types (a
parquet file's schema, a CSV file's text form).

    python -m mlstack.runtime.feed PLAN.json --rows 20 --drift 0.05 --result OUT.json

PLAN.json: {"project_dir", "label_source", "sources": [{name, path, format, timestamp_field,
columns, checks (DataChecks keywords), keys, features, labels}]}.
OUT.json: {"at": now, "sources": [{name, path, at, rows, total, drifted}]}, or {"error"}.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlstack.runtime.checks import DataChecks, check_failures
from mlstack.runtime.errors import DataCheckError
from mlstack.runtime.sources import SourceSpec, read_source

__all__ = ["Appended", "FeedError", "FeedSource", "Tick", "feed_tick", "load_plan"]

NUMBERS = ("int64", "int32", "float64", "float32")
FLAG_VALUES = 10  # a numeric column with this many distinct values or fewer is a code: kept
POOL = 50  # the newest rows a tick samples from, per row asked (at least 1000)


class FeedError(Exception):
    """A source the feed cannot append to (no rows, a check the appended rows would break)."""


@dataclass(frozen=True)
class FeedSource:
    """A file source as the feed sees it: the source, its entity key columns, the numeric
    feature columns a drift may move, and its label columns (never moved)."""

    source: SourceSpec
    keys: tuple[str, ...] = ()
    features: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()


@dataclass(frozen=True)
class Appended:
    """What a tick appended to one source: the rows' event time, rows added, rows now,
    columns drifted (by how much, in the column's units)."""

    name: str
    path: str
    at: str
    rows: int
    total: int
    drifted: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Tick:
    at: str
    sources: tuple[Appended, ...]


def load_plan(plan: Mapping[str, Any]) -> tuple[list[FeedSource], str | None]:
    """The fed sources and the label source's name from a plan document (see the module)."""
    fed = []
    for s in plan["sources"]:
        checks = dict(s.get("checks") or {})
        for name in ("not_null", "unique", "monotonic"):
            if name in checks:
                checks[name] = tuple(checks[name])
        if "ranges" in checks:
            checks["ranges"] = {c: tuple(r) for c, r in checks["ranges"].items()}
        if "allowed_values" in checks:
            checks["allowed_values"] = {c: tuple(v) for c, v in checks["allowed_values"].items()}
        spec = SourceSpec(name=s["name"], path=s["path"], format=s["format"],
                          timestamp_field=s["timestamp_field"], columns=dict(s["columns"]),
                          checks=DataChecks(**checks))
        fed.append(FeedSource(spec, tuple(s.get("keys") or ()), tuple(s.get("features") or ()),
                              tuple(s.get("labels") or ())))
    return fed, plan.get("label_source")


def feed_tick(sources: Sequence[FeedSource], project_dir: str | Path, *, rows: int,
              drift: float, label_source: str | None = None,
              now: pd.Timestamp | None = None, seed: int | None = None) -> Tick:
    """Append about `rows` fresh rows to every source (see the module); returns what was
    appended. Raises FeedError (nothing written) when a source cannot be fed, DataCheckError
    when a source cannot be read."""
    rng = np.random.default_rng(seed)
    frames = {s.source.name: read_source(s.source, project_dir) for s in sources}
    for s in sources:
        if frames[s.source.name].empty:
            raise FeedError(f"source '{s.source.name}': {s.source.path} has no rows to sample "
                            "fresh ones from")
    now = (pd.Timestamp.now(tz="UTC") if now is None else pd.Timestamp(now)).floor("s")
    picked = _pick(sources, frames, rows, label_source, rng)
    _renew_unique(sources, frames, picked)
    appended, combined = [], {}
    at = max(_event_time(s.source, frames[s.source.name], now) for s in sources)
    for s in sources:
        name = s.source.name
        new, drifted = _restamp_and_drift(s, frames[name], picked[name], at, drift)
        combined[name] = pd.concat([frames[name], new], ignore_index=True)
        _check(s, frames[name], combined[name], now)
        appended.append(Appended(name, s.source.path, at.isoformat(), len(new),
                                 len(combined[name]), drifted))
    for s in sources:
        _write(s.source, project_dir, len(frames[s.source.name]), combined[s.source.name])
    return Tick(now.isoformat(), tuple(appended))


def _event_time(source: SourceSpec, frame: pd.DataFrame, now: pd.Timestamp) -> pd.Timestamp:
    """Now; a second after the source's newest event time instead when that is not earlier
    and a check orders event times (monotonic, or unique with the event time)."""
    ordered = bool(source.checks.monotonic) or source.timestamp_field in source.checks.unique
    newest = frame[source.timestamp_field].max()
    if ordered and pd.notna(newest) and newest >= now:
        return newest.floor("s") + pd.Timedelta(seconds=1)
    return now


def _newest(frame: pd.DataFrame, stamp: str, size: int) -> pd.DataFrame:
    return frame.sort_values(stamp, kind="stable").tail(size)


def _pick(sources: Sequence[FeedSource], frames: Mapping[str, pd.DataFrame], rows: int,
          label_source: str | None, rng: np.random.Generator) -> dict[str, pd.DataFrame]:
    """The rows each source's new rows start from (copies of existing rows)."""
    by_name = {s.source.name: s for s in sources}
    pool = max(POOL * rows, 1000)
    picked: dict[str, pd.DataFrame] = {}
    lead = by_name.get(label_source or "")
    if lead is not None:
        frame = _newest(frames[lead.source.name], lead.source.timestamp_field, pool)
        picked[lead.source.name] = _sample(frame, rows, rng)
    for s in sources:
        name = s.source.name
        if name in picked:
            continue
        shared = [k for k in s.keys if lead is not None and k in lead.keys]
        frame = frames[name]
        if shared and lead is not None:  # shared keys come from the lead
            wanted = picked[lead.source.name][shared].drop_duplicates()
            latest = frame.sort_values(s.source.timestamp_field, kind="stable") \
                .drop_duplicates(shared, keep="last")
            picked[name] = wanted.merge(latest, on=shared, how="inner")[list(frame.columns)]
        else:
            picked[name] = _sample(_newest(frame, s.source.timestamp_field, pool), rows, rng)
    return picked


def _sample(frame: pd.DataFrame, rows: int, rng: np.random.Generator) -> pd.DataFrame:
    chosen = rng.choice(len(frame), size=min(rows, len(frame)), replace=False)
    return frame.iloc[np.sort(chosen)].reset_index(drop=True)


def _renew_unique(sources: Sequence[FeedSource], frames: Mapping[str, pd.DataFrame],
                  picked: dict[str, pd.DataFrame]) -> None:
    """Fresh values for one column of every `unique` check without the event time, the same
    old -> new mapping in every source holding that column."""
    holders: dict[str, int] = {}
    for s in sources:
        for key in s.keys:
            holders[key] = holders.get(key, 0) + 1
    renewed: set[str] = set()
    for s in sources:
        unique = s.source.checks.unique
        if not unique or s.source.timestamp_field in unique:
            continue
        if renewed & set(unique):
            continue
        column = min(unique, key=lambda c: (c not in s.keys, holders.get(c, 0), unique.index(c)))
        mapping = _fresh_values(s, column, frames, picked)
        for other in sources:
            frame = picked[other.source.name]
            if column in frame.columns:
                frame[column] = frame[column].replace(mapping).astype(frame[column].dtype)
        renewed.add(column)


def _fresh_values(s: FeedSource, column: str, frames: Mapping[str, pd.DataFrame],
                  picked: Mapping[str, pd.DataFrame]) -> dict[Any, Any]:
    old = list(dict.fromkeys(picked[s.source.name][column].dropna().tolist()))
    dtype = s.source.columns.get(column)
    if dtype in ("int64", "int32"):
        top = max(int(f[column].max()) for f in frames.values() if column in f.columns
                  and f[column].notna().any())
        return {value: top + 1 + i for i, value in enumerate(old)}
    if dtype == "string":
        taken = {str(v) for f in frames.values() if column in f.columns for v in f[column]}
        fresh, n = {}, 0
        for value in old:
            n += 1
            while f"{value}-{n}" in taken:
                n += 1
            fresh[value] = f"{value}-{n}"
        return fresh
    raise FeedError(f"source '{s.source.name}': unique {list(s.source.checks.unique)} needs "
                    f"fresh values of '{column}' ({dtype}), and only int and string columns "
                    "can be given new values")


def _restamp_and_drift(s: FeedSource, frame: pd.DataFrame, rows: pd.DataFrame,
                       at: pd.Timestamp, drift: float) -> tuple[pd.DataFrame, dict[str, float]]:
    src = s.source
    new = rows.copy().reset_index(drop=True)
    stamp = src.timestamp_field
    unique = src.checks.unique
    if stamp in unique:
        new = new.drop_duplicates([c for c in unique if c != stamp], keep="last")
    offset = at - new[stamp]
    for column, dtype in src.columns.items():
        if dtype == "timestamp" and column in new.columns:
            new[column] = new[column] + offset  # the event time becomes `at`, intervals kept
    drifted: dict[str, float] = {}
    skip = set(s.keys) | set(s.labels) | set(src.checks.allowed_values) | set(unique)
    for column in s.features:
        if column in skip or src.columns.get(column) not in NUMBERS or drift == 0:
            continue
        values = frame[column].dropna()
        if values.nunique() <= FLAG_VALUES:
            continue
        shift = float(drift * values.std())
        moved = new[column] + shift
        low, high = src.checks.ranges.get(column, (-np.inf, np.inf))
        if values.min() >= 0:
            low = max(low, 0.0)
        moved = moved.clip(lower=low, upper=high)
        if src.columns[column] in ("int64", "int32"):
            moved = moved.round()
        new[column] = moved.astype(frame[column].dtype)
        drifted[column] = round(shift, 6)
    return new.reset_index(drop=True), drifted


def _check(s: FeedSource, before: pd.DataFrame, after: pd.DataFrame, at: pd.Timestamp) -> None:
    """Refuse rows that would make a data check fail that passed before the tick."""
    old = {m.split(":", 2)[1] for m in check_failures(s.source, before, now=at.to_pydatetime())}
    new = [m for m in check_failures(s.source, after, now=at.to_pydatetime())
           if m.split(":", 2)[1] not in old]
    if new:
        raise FeedError(f"source '{s.source.name}': the fed rows would break its data checks "
                        f"({'; '.join(new)}); nothing was written")


def _write(src: SourceSpec, project_dir: str | Path, kept: int, frame: pd.DataFrame) -> None:
    """The file with the rows after its first `kept` appended, in the file's own column types,
    replaced in one rename."""
    path = src.file(project_dir)
    new = frame.iloc[kept:]
    if src.format == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        if table.num_rows != kept:
            raise FeedError(f"source '{src.name}': {src.path} changed while the feed read it "
                            "(another writer?); nothing was written")
        added = pa.Table.from_pandas(new[table.schema.names], schema=table.schema,
                                     preserve_index=False)
        content = pa.concat_tables([table, added])
        _replace(path, lambda tmp: pq.write_table(content, tmp))
        return
    text = path.read_bytes()
    if text and not text.endswith(b"\n"):
        text += b"\n"
    header = pd.read_csv(path, nrows=0).columns.tolist()
    rows = new[header].to_csv(header=False, index=False, lineterminator="\n").encode()
    _replace(path, lambda tmp: Path(tmp).write_bytes(text + rows))


def _replace(path: Path, write: Callable[[str], object]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".feed.tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, path.stat().st_mode & 0o777)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: Sequence[str] | None = None) -> int:
    """python -m mlstack.runtime.feed PLAN --rows N --drift D [--seed S] --result FILE: one
    tick; the result (or {"error": message}) goes to FILE. Exit 0, or 1 when not fed."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m mlstack.runtime.feed")
    parser.add_argument("plan", type=Path)
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--drift", type=float, required=True)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--result", type=Path, required=True)
    args = parser.parse_args(argv)
    plan = json.loads(args.plan.read_text())
    sources, label = load_plan(plan)
    try:
        tick = feed_tick(sources, plan["project_dir"], rows=args.rows, drift=args.drift,
                         label_source=label, seed=args.seed)
    except (FeedError, DataCheckError) as exc:
        args.result.write_text(json.dumps({"error": str(exc)}))
        return 1
    args.result.write_text(json.dumps(asdict(tick)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
