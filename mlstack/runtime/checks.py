"""The spec's data checks on a source's rows, with messages naming source, column and counts.

The messages are an interface: `mlstack deploy` shows them as the validate stage's error and
tests compare them, so their wording stays as it is:

    data check failed: source 'customers', column 'tenure_months', ranges [0, 5]:
        12 of 3000 rows outside (min 0, max 72)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from mlstack.runtime.dtypes import NO_NULLS, judge
from mlstack.runtime.errors import DataCheckError

if TYPE_CHECKING:
    import pandas as pd

    from mlstack.runtime.sources import SourceSpec

__all__ = ["DataChecks", "check_failures", "conform_dtypes", "dtype_failures", "validate_sources"]

NUMERIC = ("int64", "int32", "float64", "float32", "bool")  # spec dtypes cast by numpy name
# The range of each dtype a value must fit in when ingest narrows a column to it ('fit').
FIT_RANGES = {"int32": (-(2**31), 2**31 - 1), "float32": (-3.4028234663852886e38,
                                                         3.4028234663852886e38)}


@dataclass(frozen=True)
class DataChecks:
    """The data checks of one source, as the spec declares them (empty: no check).

    not_null: columns with no null value; unique: columns whose combination does not repeat;
    ranges: column -> (low, high), inclusive, nulls ignored; allowed_values: column -> the
    values it may hold, nulls ignored; min_rows: fewest rows; max_null_fraction: the largest
    share of nulls any declared column may have; regex: column -> a pattern every value
    matches in full, nulls ignored; monotonic: key columns, the event time (the source's
    timestamp_field) never earlier than the row before it of the same key, in file order;
    freshness: feature view -> its ttl in seconds, the newest row's event time no older than
    any of them when the check runs.
    """

    not_null: tuple[str, ...] = ()
    unique: tuple[str, ...] = ()
    ranges: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    allowed_values: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    min_rows: int | None = None
    max_null_fraction: float | None = None
    regex: Mapping[str, str] = field(default_factory=dict)
    monotonic: tuple[str, ...] = ()
    freshness: Mapping[str, float] = field(default_factory=dict)


def check_failures(source: SourceSpec, frame: pd.DataFrame,
                   now: datetime | None = None) -> list[str]:
    """Every failed data check of one source, as messages naming source, column and counts
    (`now`: when freshness is judged, the current time by default).

    A declared column missing from the data fails the schema check; the other checks skip
    columns the data does not have.
    """
    checks, name, rows, failures = source.checks, source.name, len(frame), []

    def fail(columns: list[str], check: str, detail: str) -> None:
        where = f"source '{name}'"
        if columns:
            names = ", ".join(f"'{c}'" for c in columns)
            where += f", column{'s' if len(columns) > 1 else ''} {names}"
        failures.append(f"data check failed: {where}, {check}: {detail}")

    for column in source.columns:
        if column not in frame.columns:
            fail([column], "schema", "column is missing from the data")
    present = [c for c in frame.columns if c in source.columns]
    if checks.min_rows is not None and rows < checks.min_rows:
        fail([], f"min_rows {checks.min_rows}", f"{rows} rows")
    for column in checks.not_null:
        if column in present and (nulls := int(frame[column].isna().sum())):
            fail([column], "not_null", f"{nulls} of {rows} rows are null")
    unique = list(checks.unique)
    complete = unique and all(c in present for c in unique)
    if complete and (dupes := int(frame.duplicated(subset=unique).sum())):
        fail(unique, "unique", f"{dupes} of {rows} rows repeat a value")
    for column, (low, high) in checks.ranges.items():
        if column in present:
            values = frame[column].dropna()
            outside = values[(values < low) | (values > high)]
            if len(outside):
                fail(
                    [column],
                    f"ranges [{low:g}, {high:g}]",
                    f"{len(outside)} of {rows} rows outside (min {values.min():g}, "
                    f"max {values.max():g})",
                )
    for column, allowed in checks.allowed_values.items():
        if column in present:
            values = frame[column].dropna()
            bad = values[~values.isin(allowed)]
            if len(bad):
                others = sorted(map(str, bad.unique()))[:5]
                fail(
                    [column],
                    f"allowed_values {list(allowed)}",
                    f"{len(bad)} of {rows} rows have other values, e.g. {', '.join(others)}",
                )
    limit = checks.max_null_fraction
    if limit is not None and rows:
        for column in present:
            nulls = int(frame[column].isna().sum())
            if nulls / rows > limit:
                fail([column], f"max_null_fraction {limit:g}", f"{nulls} of {rows} rows are null")
    for column, pattern in checks.regex.items():
        if column in present:
            values = frame[column].dropna().astype(str)
            bad = values[~values.str.fullmatch(pattern)]
            if len(bad):
                examples = ", ".join(repr(v) for v in list(dict.fromkeys(bad.tolist()))[:3])
                fail([column], f"regex {pattern!r}",
                     f"{len(bad)} of {rows} rows do not match, e.g. {examples}")
    stamp = source.timestamp_field
    keys = list(checks.monotonic)
    if keys and stamp in present and all(k in present for k in keys):
        before = frame.groupby(keys, sort=False, dropna=False)[stamp].shift()
        earlier = frame[stamp] < before  # a key's first row has none before it (NaT): False
        if back := int(earlier.sum()):
            first = frame.loc[earlier, keys].drop_duplicates().head(3)
            examples = "; ".join(", ".join(f"{k} {row[k]}" for k in keys)
                                 for row in first.to_dict("records"))
            fail([stamp], f"monotonic per {', '.join(keys)}",
                 f"{back} of {rows} rows are earlier than the row before them of the same "
                 f"key, e.g. {examples}")
    if checks.freshness and stamp in present and rows:
        newest = frame[stamp].max()
        if newest == newest:  # NaT: every event time null, which not_null reports
            age = ((now or datetime.now(UTC)) - newest).total_seconds()
            for view, ttl in sorted(checks.freshness.items()):
                if age > ttl:
                    fail([stamp], f"freshness (view '{view}', ttl {_duration(ttl)})",
                         f"the newest of {rows} rows ({newest.isoformat()}) is "
                         f"{_duration(age)} old")
    return failures


def _duration(seconds: float) -> str:
    """A number of seconds the way the spec writes durations: '189d 3h', '45m', '12s'."""
    left = int(seconds)
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if left >= size or (unit == "s" and not parts):
            parts.append(f"{left // size}{unit}")
            left %= size
        if len(parts) == 2:
            break
    return " ".join(parts)


def validate_sources(
    sources: Iterable[SourceSpec], frames: Mapping[str, pd.DataFrame]
) -> dict[str, int]:
    """Run the data checks of every source in `frames` (sorted by name); any failure raises
    DataCheckError with all failures joined by '; '. Returns {source: row count}."""
    by_name = {source.name: source for source in sources}
    failures = [m for name in sorted(frames) for m in check_failures(by_name[name], frames[name])]
    if failures:
        raise DataCheckError("; ".join(failures))
    return {name: len(frame) for name, frame in sorted(frames.items())}


def _examples(values: pd.Series) -> str:
    """Up to 3 distinct values of a column, as a message quotes them."""
    return ", ".join(repr(v) if isinstance(v, str) else str(v)
                     for v in list(dict.fromkeys(values.tolist()))[:3])


def dtype_failures(source: SourceSpec, frame: pd.DataFrame,
                   found: Mapping[str, str]) -> tuple[list[str], dict[str, str]]:
    """The dtype contract (mlstack.runtime.dtypes) on a source's rows: (failures, {column:
    dtype to cast it to}). `found` names each column's type in the file (found_type names).
    A failure names source, file, column, declared and found dtype and up to 3 examples."""
    failures: list[str] = []
    casts: dict[str, str] = {}
    where = f"data check failed: source '{source.name}', file {source.path}"
    for column, declared in source.columns.items():
        if column not in frame.columns or column not in found:
            continue
        values, kind = frame[column], found[column]
        nulls = values.isna()
        verdict = judge(declared, kind, source.format)
        if declared in NO_NULLS and nulls.any() and (
                verdict != "refuse" or _whole(values[~nulls], declared)):
            rows = ", ".join(str(r) for r in list(nulls[nulls].index[:3]))
            failures.append(f"{where}, column '{column}', dtype: declared {declared}, found "
                            f"{int(nulls.sum())} nulls in {len(values)} rows (e.g. rows "
                            f"{rows}); a {declared} column holds no nulls: declare float64 "
                            "to keep missing values, or fill them")
        elif verdict == "refuse":
            odd = values[~nulls]
            if declared in ("int64", "int32") and kind.startswith("float"):
                odd = odd[odd != odd.round()]  # the values an int cannot hold
            elif declared in NUMERIC and kind == "string":
                odd = odd[~odd.map(_is_number)]  # the text that is no number
            failures.append(f"{where}, column '{column}', dtype: declared {declared}, found "
                            f"{kind}, e.g. {_examples(odd)}")
        elif verdict == "fit":
            low, high = FIT_RANGES[declared]
            present = values[~nulls]
            outside = present[(present < low) | (present > high)]
            if len(outside):
                failures.append(f"{where}, column '{column}', dtype: declared {declared}, "
                                f"found {kind}, {len(outside)} of {len(values)} values do "
                                f"not fit {declared}, e.g. {_examples(outside)}")
            else:
                casts[column] = declared
        elif declared in NUMERIC and (verdict == "widen" or kind == "null"):
            casts[column] = declared
    return failures, casts


def _is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def _whole(values: pd.Series, declared: str) -> bool:
    """Whether non-null values are what a `declared` column holds once its nulls are gone
    (CSV and pandas read an int or bool column with nulls as float64 or object)."""
    if declared == "bool":
        return bool(values.map(lambda v: isinstance(v, bool)).all())
    try:
        return bool((values == values.astype("float64").round()).all())
    except (TypeError, ValueError):
        return False


def conform_dtypes(source: SourceSpec, frame: pd.DataFrame,
                   found: Mapping[str, str]) -> pd.DataFrame:
    """The rows with every declared column of the dtype the spec declares (a lossless widening
    or a narrowing whose values fit is cast); any other mismatch raises DataCheckError with
    every failure of the source joined by '; '."""
    failures, casts = dtype_failures(source, frame, found)
    if failures:
        raise DataCheckError("; ".join(failures))
    return frame.astype(casts) if casts else frame
