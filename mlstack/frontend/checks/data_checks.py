"""`mlstack lint --data`: the file sources' data against their declared columns, read from the
files' schemas only (a parquet footer; a CSV header and its first SAMPLE_ROWS rows), so CI
finds a type mismatch before anything trains.

The rule is ingest's own (mlstack.runtime.dtypes, pure Python), so lint and ingest cannot
disagree. pyarrow is imported here, lazily: only `--data` loads it. Each finding is MLS216 at
the declared column's line (a missing or unreadable file: at the source's `path`).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from itertools import islice
from pathlib import Path

from mlstack.diagnostics.diagnostic import Diagnostic
from mlstack.frontend.checks import CheckContext, node_path
from mlstack.frontend.ir.nodes import SourceNode, SystemIR
from mlstack.frontend.loader import SourceMap
from mlstack.runtime.dtypes import NO_NULLS, found_type, judge, text_type

CODE = "MLS216"
SAMPLE_ROWS = 1000  # CSV rows read for their types: the header and this many more


def check_data(system: SystemIR, smap: SourceMap, project_dir: Path) -> list[Diagnostic]:
    """MLS216 for every file source whose file is missing, unreadable, or holds a declared
    column missing or of a type its declaration refuses (or nulls in an int or bool column)."""
    ctx = CheckContext(system, smap)
    found: list[Diagnostic] = []
    for src in sorted(system.sources, key=node_path):
        if src.family == "file" and src.path is not None:
            found.extend(_check_source(ctx, src, Path(project_dir) / src.path))
    return found


def _check_source(ctx: CheckContext, src: SourceNode, path: Path) -> Iterator[Diagnostic]:
    at = node_path(src)
    where = f"source '{src.name}', file {src.path}"
    if not path.is_file():
        yield ctx.diag(CODE, f"{where} does not exist", at + ("path",),
                       "create the file, or correct the path")
        return
    try:
        schema = _parquet_schema(path) if src.kind == "parquet" else _csv_schema(path)
    except Exception as exc:  # a truncated or corrupt file: pyarrow's errors are bare
        yield ctx.diag(CODE, f"{where} cannot be read as {src.kind}: "
                       f"{str(exc) or type(exc).__name__}", at + ("path",))
        return
    for column in src.columns:
        spot = at + ("columns", column.name)
        if column.name not in schema:
            yield ctx.diag(CODE, f"{where}: column '{column.name}' is declared but the file "
                           "has no such column", spot, "remove the declaration, or add the "
                           "column to the data", key=True)
            continue
        kind, nulls, examples = schema[column.name]
        verdict = judge(column.dtype, kind, src.kind)
        if column.dtype in NO_NULLS and nulls and (verdict != "refuse" or kind == "null"):
            yield ctx.diag(CODE, f"{where}, column '{column.name}': declared {column.dtype}, "
                           f"found {nulls} nulls; a {column.dtype} column holds no nulls",
                           spot, "declare float64 to keep missing values, or fill them",
                           key=True)
        elif verdict == "refuse":
            if isinstance(examples, list):  # CSV text: the values that do not fit
                odd = [v for v in examples
                       if judge(column.dtype, text_type([v])[0], src.kind) == "refuse"]
                examples = "e.g. " + ", ".join(repr(v) for v in odd[:3]) if odd else ""
            shown = f", {examples}" if examples else ""
            yield ctx.diag(CODE, f"{where}, column '{column.name}': declared {column.dtype}, "
                           f"found {kind}{shown}", spot, "declare the column's type as the "
                           "data holds it, or convert the data", key=True)


def file_schema(kind: str, path: Path) -> dict[str, str]:
    """A data file's columns and their types (mlstack.runtime.dtypes names), from its schema
    only, as lint reads it: `kind` 'parquet' (the footer) or 'csv' (the header and a sample).
    A missing or unreadable file raises (OSError, or pyarrow's and csv's own errors)."""
    schema = _parquet_schema(path) if kind == "parquet" else _csv_schema(path)
    return {name: found[0] for name, found in schema.items()}


def _parquet_schema(path: Path) -> dict[str, tuple[str, int, str | list[str]]]:
    """column -> (found type, nulls by the footer's statistics, its values' min and max)."""
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(path).metadata
    schema = meta.schema.to_arrow_schema()
    out: dict[str, tuple[str, int, str | list[str]]] = {}
    for index, field in enumerate(schema):
        nulls, low, high = 0, None, None
        for group in range(meta.num_row_groups):
            stats = meta.row_group(group).column(index).statistics
            if stats is None:
                continue
            nulls += stats.null_count or 0
            if stats.has_min_max:
                low = stats.min if low is None else min(low, stats.min)
                high = stats.max if high is None else max(high, stats.max)
        examples = f"values from {low} to {high}" if low is not None else ""
        out[field.name] = (found_type(str(field.type)), nulls, examples)
    return out


def _csv_schema(path: Path) -> dict[str, tuple[str, int, list[str]]]:
    """column -> (found type of the sample's text, nulls in the sample, its distinct values)."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(islice(csv.reader(handle), SAMPLE_ROWS + 1))
    if not rows:
        return {}
    header, body = rows[0], rows[1:]
    out = {}
    for index, name in enumerate(header):
        values = [row[index] if index < len(row) else "" for row in body]
        kind, nulls = text_type(values)
        out[name] = (kind, nulls, list(dict.fromkeys(v for v in values if v.strip())))
    return out
