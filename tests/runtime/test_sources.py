"""Reading sources (parquet, CSV with timestamps) and the data fingerprint."""

from __future__ import annotations

import hashlib
import logging

import pandas as pd
import pytest

from mlstack.runtime.errors import DataCheckError
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


def _labels(tmp_path, frame, fmt="parquet"):
    path = tmp_path / f"labels.{fmt}"
    frame.to_parquet(path) if fmt == "parquet" else frame.to_csv(path, index=False)
    return SourceSpec(name="labels", path=path.name, format=fmt, timestamp_field="ts",
                      columns={"id": "int64", "ts": "timestamp"})


def test_a_truncated_parquet_file_names_the_source_and_the_file(tmp_path):
    source = _labels(tmp_path, pd.DataFrame({"id": [1, 2], "ts": pd.to_datetime(
        ["2026-01-01", "2026-01-02"], utc=True)}))
    data = (tmp_path / "labels.parquet").read_bytes()
    (tmp_path / "labels.parquet").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataCheckError) as error:
        read_source(source, tmp_path)
    assert str(error.value).startswith(
        "source 'labels': cannot read parquet file labels.parquet: ")


def test_a_missing_file_is_named(tmp_path):
    source = SourceSpec(name="labels", path="data/none.parquet", format="parquet",
                        timestamp_field="ts")
    with pytest.raises(DataCheckError, match="source 'labels': file data/none.parquet does "
                                             "not exist"):
        read_source(source, tmp_path)


def test_a_bad_timestamp_names_file_column_and_row(tmp_path):
    source = _labels(tmp_path, pd.DataFrame({"id": [1, 2, 3],
                                             "ts": ["2026-01-01", "2026-01-02", "not a date"]}),
                     fmt="csv")
    with pytest.raises(DataCheckError) as error:
        read_source(source, tmp_path)
    assert str(error.value).startswith(
        "source 'labels', file labels.csv, column 'ts', row 2 ('not a date'): not a timestamp")


def test_timestamps_of_any_precision_become_utc_microseconds(tmp_path):
    nanos = pd.Series(pd.to_datetime(["2026-01-01 00:00:00.123456789",
                                      "2026-01-02 00:00:00.000000001"]))
    source = _labels(tmp_path, pd.DataFrame({"id": [1, 2], "ts": nanos.astype(
        "datetime64[ns]")}))
    frame = read_source(source, tmp_path)
    assert str(frame["ts"].dtype) == "datetime64[ns, UTC]"
    assert list(frame["ts"]) == [pd.Timestamp("2026-01-01 00:00:00.123456", tz="UTC"),
                                 pd.Timestamp("2026-01-02", tz="UTC")]
    seconds = _labels(tmp_path, pd.DataFrame({"id": [1], "ts": pd.to_datetime(
        ["2026-03-01"]).astype("datetime64[s]")}))
    assert read_source(seconds, tmp_path)["ts"].iloc[0] == pd.Timestamp("2026-03-01", tz="UTC")
