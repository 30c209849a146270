"""The spec's data checks on a source's rows, with messages naming source, column and counts.

The messages are an interface: `mlstack deploy` shows them as the validate stage's error and
tests compare them, so their wording stays as it is:

    data check failed: source 'customers', column 'tenure_months', ranges [0, 5]:
        12 of 3000 rows outside (min 0, max 72)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mlstack.runtime.errors import DataCheckError

if TYPE_CHECKING:
    import pandas as pd

    from mlstack.runtime.sources import SourceSpec

__all__ = ["DataChecks", "check_failures", "validate_sources"]


@dataclass(frozen=True)
class DataChecks:
    """The data checks of one source, as the spec declares them (empty: no check).

    not_null: columns with no null value; unique: columns whose combination does not repeat;
    ranges: column -> (low, high), inclusive, nulls ignored; allowed_values: column -> the
    values it may hold, nulls ignored; min_rows: fewest rows; max_null_fraction: the largest
    share of nulls any declared column may have.
    """

    not_null: tuple[str, ...] = ()
    unique: tuple[str, ...] = ()
    ranges: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    allowed_values: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    min_rows: int | None = None
    max_null_fraction: float | None = None


def check_failures(source: SourceSpec, frame: pd.DataFrame) -> list[str]:
    """Every failed data check of one source, as messages naming source, column and counts.

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
                examples = sorted(map(str, bad.unique()))[:5]
                fail(
                    [column],
                    f"allowed_values {list(allowed)}",
                    f"{len(bad)} of {rows} rows have other values, e.g. {', '.join(examples)}",
                )
    limit = checks.max_null_fraction
    if limit is not None and rows:
        for column in present:
            nulls = int(frame[column].isna().sum())
            if nulls / rows > limit:
                fail([column], f"max_null_fraction {limit:g}", f"{nulls} of {rows} rows are null")
    return failures


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
