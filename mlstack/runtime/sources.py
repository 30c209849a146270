"""Reading the spec's file sources (ingest) and fingerprinting them.

The fingerprint is sha256 over the lines '<source name>:<sha256 of its file>\\n', sources
sorted by name: the same files give the same fingerprint on any machine.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from mlstack.runtime.checks import DataChecks
from mlstack.runtime.logs import Logger, logger_for

__all__ = ["SourceSpec", "file_digest", "read_source", "read_sources"]

@dataclass(frozen=True)
class SourceSpec:
    """A file source of the spec: where it is (relative to the project folder), its format
    ('parquet' or 'csv'), its event-time column, its declared columns (column -> spec dtype;
    'timestamp' columns are read as UTC datetimes) and its data checks."""

    name: str
    path: str
    format: str
    timestamp_field: str
    columns: Mapping[str, str] = field(default_factory=dict)
    checks: DataChecks = field(default_factory=DataChecks)

    def file(self, project_dir: str | Path) -> Path:
        """The source's file, resolved against the project folder."""
        return Path(project_dir) / self.path

    def read(self, project_dir: str | Path) -> pd.DataFrame:
        """The source's rows (see read_source)."""
        return read_source(self, project_dir)


def read_source(source: SourceSpec, project_dir: str | Path) -> pd.DataFrame:
    """The source's rows; its declared timestamp columns parsed as UTC datetimes."""
    path = source.file(project_dir)
    frame = pd.read_parquet(path) if source.format == "parquet" else pd.read_csv(path)
    for column, dtype in source.columns.items():
        if dtype == "timestamp" and column in frame.columns:
            frame[column] = pd.to_datetime(frame[column], utc=True)
    return frame


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
    fingerprint = hashlib.sha256()
    for source in sorted(sources, key=lambda s: s.name):
        frames[source.name] = read_source(source, project_dir)
        digest = file_digest(source.file(project_dir))
        fingerprint.update(f"{source.name}:{digest}\n".encode())
        logger.info("read source %s: %d rows", source.name, len(frames[source.name]))
    for name in unread:
        logger.warning("source %s is not a file: not read or checked by this flow", name)
    return frames, fingerprint.hexdigest()
