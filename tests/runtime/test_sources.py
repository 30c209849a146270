"""Reading sources (parquet, CSV with timestamps) and the data fingerprint."""

from __future__ import annotations

import hashlib
import logging

import pandas as pd

from mlstack.runtime.sources import SourceSpec, file_digest, read_source, read_sources


def _write(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    pd.DataFrame({"id": [1, 2], "event_timestamp": ["2026-01-01T00:00:00", "2026-01-02T00:00:00"],
                  "x": [0.5, 1.5]}).to_csv(data / "a.csv", index=False)
    pd.DataFrame({"id": [3], "event_timestamp": pd.to_datetime(["2026-02-01"]),
                  "y": [7]}).to_parquet(data / "b.parquet")
    a = SourceSpec(name="a", path="data/a.csv", format="csv", timestamp_field="event_timestamp",
                   columns={"id": "int64", "event_timestamp": "timestamp", "x": "float64"})
    b = SourceSpec(name="b", path="data/b.parquet", format="parquet",
                   timestamp_field="event_timestamp",
                   columns={"id": "int64", "event_timestamp": "timestamp", "y": "int64"})
    return a, b


def test_read_source_parses_timestamps_as_utc(tmp_path):
    a, b = _write(tmp_path)
    frame = read_source(a, tmp_path)
    pd.testing.assert_frame_equal(a.read(tmp_path), frame)
    assert str(frame["event_timestamp"].dtype).endswith("UTC]")
    assert frame["event_timestamp"].iloc[1] == pd.Timestamp("2026-01-02", tz="UTC")
    assert read_source(b, tmp_path)["event_timestamp"].iloc[0] == pd.Timestamp("2026-02-01",
                                                                               tz="UTC")


def test_ingest_reads_by_name_and_fingerprints_the_files(tmp_path, caplog):
    a, b = _write(tmp_path)
    with caplog.at_level(logging.INFO, logger="mlstack.runtime"):
        frames, fingerprint = read_sources([b, a], tmp_path, unread=("warehouse",))
    assert list(frames) == ["a", "b"]
    lines = "".join(f"{n}:{hashlib.sha256((tmp_path / p).read_bytes()).hexdigest()}\n"
                    for n, p in [("a", "data/a.csv"), ("b", "data/b.parquet")])
    assert fingerprint == hashlib.sha256(lines.encode()).hexdigest()
    assert file_digest(tmp_path / "data/a.csv") == hashlib.sha256(
        (tmp_path / "data/a.csv").read_bytes()).hexdigest()
    assert "read source a: 2 rows" in caplog.text
    assert "source warehouse is not a file" in caplog.text
