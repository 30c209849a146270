"""Reading the spec's file sources (ingest) and fingerprinting them.

The fingerprint is sha256 over the lines '<source name>:<sha256 of its file>\\n', sources
sorted by name: the same files give the same fingerprint on any machine.

`redate_files` moves sample data to the present (every timestamp shifted by one offset):
online reads null values older than their view's TTL, as the point-in-time join does, so a
fixed sample (a blueprint's data/) serves nothing once it is older than its TTLs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from mlstack.runtime.checks import DataChecks, conform_dtypes
from mlstack.runtime.dtypes import NO_ZONE, found_type, text_type
from mlstack.runtime.errors import DataCheckError
from mlstack.runtime.logs import Logger, logger_for

__all__ = ["SourceSpec", "data_fingerprint", "file_digest", "read_source", "read_sources",
           "redate_files"]

@dataclass(frozen=True)
class SourceSpec:
    """A file source of the spec: where it is (relative to the project folder), its format
    ('parquet' or 'csv'), its event-time column, its declared columns (column -> spec dtype;
    'timestamp' columns are read as UTC datetimes), its data checks and its keys (the entity
    keys its views and the label join on: with the event time, what names one of its rows when
    ingest counts the rows changed since the last training, mlstack.runtime.changes)."""

    name: str
    path: str
    format: str
    timestamp_field: str
    columns: Mapping[str, str] = field(default_factory=dict)
    checks: DataChecks = field(default_factory=DataChecks)
    keys: tuple[str, ...] = ()

    def file(self, project_dir: str | Path) -> Path:
        """The source's file, resolved against the project folder."""
        return Path(project_dir) / self.path

    def read(self, project_dir: str | Path) -> pd.DataFrame:
        """The source's rows (see read_source)."""
        return read_source(self, project_dir)


def read_source(source: SourceSpec, project_dir: str | Path) -> pd.DataFrame:
    """The source's rows, every declared column of its declared dtype (the contract of
    mlstack.runtime.dtypes: a lossless widening is cast, any other mismatch, or a null in an
    int or bool column, is a DataCheckError naming source, file, column, both dtypes and
    examples); its declared timestamp columns parsed as UTC datetimes of any precision (stored
    as nanoseconds, floored to microseconds: what the offline store keeps; a timestamp with no
    zone is read as UTC, with a warning). A file that cannot be read, or a timestamp that
    cannot be parsed, is a DataCheckError naming the source, the file and (for a value) the
    column and the row."""
    path = source.file(project_dir)
    try:
        frame, found = _read_typed(source, path)
    except FileNotFoundError:
        raise DataCheckError(f"source '{source.name}': file {source.path} does not exist") \
            from None
    except Exception as exc:  # a truncated or corrupt file: pyarrow's errors are bare
        reason = str(exc) or type(exc).__name__
        raise DataCheckError(f"source '{source.name}': cannot read {source.format} file "
                             f"{source.path}: {reason}") from exc
    frame = conform_dtypes(source, frame, found)
    for column, dtype in source.columns.items():
        if dtype == "timestamp" and column in frame.columns:
            if _no_zone(frame[column], found[column]):
                logger_for(None).warning(
                    "source %s, file %s, column %s: timestamps with no zone, read as UTC",
                    source.name, source.path, column)
            frame[column] = parse_timestamps(frame[column], source, column)
    return frame


def _read_typed(source: SourceSpec, path: Path) -> tuple[pd.DataFrame, dict[str, str]]:
    """The file's rows and each column's type in the file (mlstack.runtime.dtypes names): a
    parquet file's own schema; a CSV file's types as pandas reads its text (declared string
    columns read as text, so '007' stays '007')."""
    if source.format == "parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        return table.to_pandas(), {f.name: found_type(str(f.type)) for f in table.schema}
    text = {c: str for c, dtype in source.columns.items() if dtype == "string"}
    frame = pd.read_csv(path, dtype=text or None)
    return frame, {str(c): found_type(str(frame[c].dtype)) for c in frame.columns}


def _no_zone(values: pd.Series, found: str) -> bool:
    """Whether a timestamp column holds times with no zone (a CSV column: its first values)."""
    if found != "string":
        return found == NO_ZONE
    return text_type([str(v) for v in values.dropna().head(20)])[0] == NO_ZONE


def parse_timestamps(values: pd.Series, source: SourceSpec, column: str) -> pd.Series:
    """UTC datetimes (ns, floored to microseconds) from a column of any timestamp type."""
    try:
        parsed = pd.to_datetime(values, utc=True)
    except (ValueError, TypeError, OverflowError) as exc:
        coerced = pd.to_datetime(values, utc=True, errors="coerce", format="mixed")
        bad = values[coerced.isna() & values.notna()]
        row = int(bad.index[0]) if len(bad) else None
        where = f", row {row} ({values.iloc[row]!r})" if row is not None else ""
        raise DataCheckError(f"source '{source.name}', file {source.path}, column "
                             f"'{column}'{where}: not a timestamp ({exc})") from None
    return parsed.astype("datetime64[ns, UTC]").dt.floor("us")


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes (hex), read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_sources(
    sources: Iterable[SourceSpec],
    project_dir: str | Path,
    *,
    unread: Iterable[str] = (),
    logger: Logger | None = None,
) -> tuple[dict[str, pd.DataFrame], str]:
    """Read every file source (by name); returns ({name: frame}, data fingerprint). `unread`
    names the sources the pipeline cannot read (warehouse, stream): logged as a warning."""
    logger = logger_for(logger)
    frames: dict[str, pd.DataFrame] = {}
    digests: dict[str, str] = {}
    for source in sorted(sources, key=lambda s: s.name):
        frames[source.name] = read_source(source, project_dir)
        digests[source.name] = file_digest(source.file(project_dir))
        logger.info("read source %s: %d rows", source.name, len(frames[source.name]))
    for name in unread:
        logger.warning("source %s is not a file: not read or checked by this flow", name)
    return frames, data_fingerprint(digests)


def data_fingerprint(digests: Mapping[str, str]) -> str:
    """The data fingerprint of the sources' file digests (source name -> sha256): sha256 over
    'name:digest' lines in name order (what read_sources returns; flows that read each source
    in a task of its own combine their digests with this)."""
    fingerprint = hashlib.sha256()
    for name in sorted(digests):
        fingerprint.update(f"{name}:{digests[name]}\n".encode())
    return fingerprint.hexdigest()


def redate_files(paths: Sequence[str | Path], newest: pd.Timestamp | None = None,
                 anchor: Sequence[str | Path] | None = None) -> pd.Timedelta:
    """Shift every UTC timestamp column of these parquet files by one offset, so that the
    newest timestamp of the `anchor` files (default: all of them; say, the feature sources)
    becomes `newest` (default: now, to the second). Intervals between rows (a label's delay
    after its features, a TTL window) are kept. Rewrites the files; returns the offset."""
    newest = pd.Timestamp.now(tz="UTC").floor("s") if newest is None else newest
    frames = {Path(p): pd.read_parquet(p) for p in paths}
    anchors = {Path(p) for p in anchor} if anchor is not None else set(frames)

    def stamps(frame: pd.DataFrame) -> list[str]:
        return [c for c in frame.columns if isinstance(frame[c].dtype, pd.DatetimeTZDtype)]

    latest = max((frame[c].max() for path, frame in frames.items() if path in anchors
                  for c in stamps(frame)), default=None)
    if latest is None or pd.isna(latest):
        return pd.Timedelta(0)
    offset = newest - latest
    for path, frame in frames.items():
        for column in stamps(frame):
            frame[column] = frame[column] + offset
        tmp = path.with_suffix(path.suffix + ".tmp")
        frame.to_parquet(tmp, index=False)
        tmp.replace(path)
    return offset


def main(argv: Sequence[str] | None = None) -> int:
    """python -m mlstack.runtime.sources redate DATA_FOLDER [--anchor FILE ...]: move every
    parquet file of a folder to the present (redate_files; anchor: default all of them)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m mlstack.runtime.sources")
    parser.add_argument("command", choices=("redate",))
    parser.add_argument("folder", type=Path)
    parser.add_argument("--anchor", type=Path, action="append",
                        help="a file whose newest timestamp becomes now (default: all)")
    args = parser.parse_args(argv)
    redate_files(sorted(args.folder.glob("*.parquet")), anchor=args.anchor)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
