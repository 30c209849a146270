"""The dtype contract at ingest: every spec dtype against every physical type, in parquet and
CSV, with and without nulls: accepted (as it is, or cast to the declared dtype) or refused with
a message naming source, file, column, both dtypes and examples."""

from __future__ import annotations

import logging

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mlstack.runtime.dtypes import judge, text_type
from mlstack.runtime.errors import DataCheckError
from mlstack.runtime.sources import SourceSpec, read_source

STAMPS = [pd.Timestamp(f"2026-01-0{d}") for d in (1, 2, 3)]
PARQUET = {  # physical type -> its column
    "int8": pa.array([1, 2, 3], pa.int8()),
    "int32": pa.array([1, 2, 3], pa.int32()),
    "int64": pa.array([1, 2, 3], pa.int64()),
    "uint64": pa.array([1, 2, 3], pa.uint64()),
    "float32": pa.array([1.5, 2.5, 3.5], pa.float32()),
    "float64": pa.array([1.5, 2.5, 3.5], pa.float64()),
    "bool": pa.array([True, False, True]),
    "string": pa.array(["a", "b", "c"]),
    "timestamp": pa.array(STAMPS, pa.timestamp("ns", tz="UTC")),
    "naive": pa.array(STAMPS, pa.timestamp("us")),
    "date": pa.array([s.date() for s in STAMPS], pa.date32()),
}
CSV = {  # the text of a CSV column
    "int64": ["1", "2", "3"],
    "float64": ["1.5", "2.5", "3.5"],
    "bool": ["True", "False", "True"],
    "string": ["a", "b", "c"],
    "timestamp": ["2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z", "2026-01-03T00:00:00Z"],
    "naive": ["2026-01-01T00:00:00", "2026-01-02T00:00:00", "2026-01-03T00:00:00"],
}
STAMP = "datetime64[ns, UTC]"
# (declared, physical) -> the dtype read, or 'found <type>' (refused with that found type)
PARQUET_EXPECTED = {
    "int64": {"int8": "int64", "int32": "int64", "int64": "int64", "uint64": "found uint64",
              "float32": "found float32", "float64": "found float64", "bool": "found bool",
              "string": "found string", "timestamp": "found timestamp",
              "naive": "found timestamp (no zone)", "date": "found date"},
    "int32": {"int8": "int32", "int32": "int32", "int64": "int32", "uint64": "int32",
              "float32": "found float32", "float64": "found float64", "bool": "found bool",
              "string": "found string", "timestamp": "found timestamp",
              "naive": "found timestamp (no zone)", "date": "found date"},
    "float64": {"int8": "float64", "int32": "float64", "int64": "float64", "uint64": "float64",
                "float32": "float64", "float64": "float64", "bool": "found bool",
                "string": "found string", "timestamp": "found timestamp",
                "naive": "found timestamp (no zone)", "date": "found date"},
    "float32": {"int8": "float32", "int32": "found int32", "int64": "found int64",
                "uint64": "found uint64", "float32": "float32", "float64": "found float64",
                "bool": "found bool", "string": "found string", "timestamp": "found timestamp",
                "naive": "found timestamp (no zone)", "date": "found date"},
    "string": {"int8": "found int8", "int32": "found int32", "int64": "found int64",
               "uint64": "found uint64", "float32": "found float32",
               "float64": "found float64", "bool": "found bool", "string": "object",
               "timestamp": "found timestamp", "naive": "found timestamp (no zone)",
               "date": "found date"},
    "bool": {"int8": "found int8", "int32": "found int32", "int64": "found int64",
             "uint64": "found uint64", "float32": "found float32", "float64": "found float64",
             "bool": "bool", "string": "found string", "timestamp": "found timestamp",
             "naive": "found timestamp (no zone)", "date": "found date"},
    "timestamp": {"int8": "found int8", "int32": "found int32", "int64": "found int64",
                  "uint64": "found uint64", "float32": "found float32",
                  "float64": "found float64", "bool": "found bool",
                  "string": "not a timestamp", "timestamp": STAMP, "naive": STAMP,
                  "date": "found date"},
}
CSV_EXPECTED = {
    "int64": {"int64": "int64", "float64": "found float64", "bool": "found bool",
              "string": "found string", "timestamp": "found string", "naive": "found string"},
    "int32": {"int64": "int32", "float64": "found float64", "bool": "found bool",
              "string": "found string", "timestamp": "found string", "naive": "found string"},
    "float64": {"int64": "float64", "float64": "float64", "bool": "found bool",
                "string": "found string", "timestamp": "found string", "naive": "found string"},
    "float32": {"int64": "float32", "float64": "float32", "bool": "found bool",
                "string": "found string", "timestamp": "found string", "naive": "found string"},
    "string": {kind: "object" for kind in CSV},
    "bool": {"int64": "found int64", "float64": "found float64", "bool": "bool",
             "string": "found string", "timestamp": "found string", "naive": "found string"},
    "timestamp": {"int64": "found int64", "float64": "found float64", "bool": "found bool",
                  "string": "not a timestamp", "timestamp": STAMP, "naive": STAMP},
}


def _source(tmp_path, fmt: str, declared: str, column, name="x") -> SourceSpec:
    path = tmp_path / f"data.{fmt}"
    if fmt == "parquet":
        pq.write_table(pa.table({"id": pa.array(range(len(column))), name: column}), path)
    else:
        path.write_text("id,x\n" + "".join(f"{i},{v}\n" for i, v in enumerate(column)))
    return SourceSpec(name="orders", path=path.name, format=fmt, timestamp_field="id",
                      columns={"id": "int64", name: declared})


def _outcome(source: SourceSpec, tmp_path) -> str:
    try:
        return str(read_source(source, tmp_path)["x"].dtype)
    except DataCheckError as error:
        return str(error)


@pytest.mark.parametrize("declared,physical", [(d, p) for d in PARQUET_EXPECTED
                                               for p in PARQUET])
def test_parquet_matrix(tmp_path, declared, physical):
    expected = PARQUET_EXPECTED[declared][physical]
    outcome = _outcome(_source(tmp_path, "parquet", declared, PARQUET[physical]), tmp_path)
    if expected.startswith("found "):
        assert outcome.startswith(
            "data check failed: source 'orders', file data.parquet, column 'x', dtype: "
            f"declared {declared}, {expected}, e.g. "), outcome
    elif expected == "not a timestamp":
        assert "column 'x', row 0 ('a'): not a timestamp" in outcome
    else:
        assert outcome == expected


@pytest.mark.parametrize("declared,physical", [(d, p) for d in CSV_EXPECTED for p in CSV])
def test_csv_matrix(tmp_path, declared, physical):
    expected = CSV_EXPECTED[declared][physical]
    outcome = _outcome(_source(tmp_path, "csv", declared, CSV[physical]), tmp_path)
    if expected.startswith("found "):
        assert outcome.startswith(
            "data check failed: source 'orders', file data.csv, column 'x', dtype: "
            f"declared {declared}, {expected}, e.g. "), outcome
    elif expected == "not a timestamp":
        assert "column 'x', row 0 ('a'): not a timestamp" in outcome
    else:
        assert outcome == expected


def test_a_refusal_quotes_up_to_three_values_an_int_cannot_hold(tmp_path):
    column = pa.array([1.0, 29.85, 2.0, 56.95, 53.85, 7.5])
    source = _source(tmp_path, "parquet", "int64", column, name="x")
    assert _outcome(source, tmp_path) == (
        "data check failed: source 'orders', file data.parquet, column 'x', dtype: declared "
        "int64, found float64, e.g. 29.85, 56.95, 53.85")
    text = _source(tmp_path, "csv", "float64", ["1.5", "abc", "x", "y", "z"])
    assert _outcome(text, tmp_path).endswith("declared float64, found string, e.g. 'abc', "
                                             "'x', 'y'")


def test_every_mismatch_of_a_source_is_named_at_once(tmp_path):
    path = tmp_path / "data.parquet"
    pq.write_table(pa.table({"id": pa.array([1.5]), "x": pa.array(["a"])}), path)
    source = SourceSpec(name="orders", path=path.name, format="parquet", timestamp_field="id",
                        columns={"id": "int64", "x": "bool"})
    assert _outcome(source, tmp_path).split("; ") == [
        "data check failed: source 'orders', file data.parquet, column 'id', dtype: declared "
        "int64, found float64, e.g. 1.5",
        "data check failed: source 'orders', file data.parquet, column 'x', dtype: declared "
        "bool, found string, e.g. 'a'"]


def test_a_narrowing_refuses_values_that_do_not_fit(tmp_path):
    column = pa.array([1, 3_000_000_000, -3_000_000_000, 5_000_000_000, 2], pa.int64())
    assert _outcome(_source(tmp_path, "parquet", "int32", column), tmp_path) == (
        "data check failed: source 'orders', file data.parquet, column 'x', dtype: declared "
        "int32, found int64, 3 of 5 values do not fit int32, e.g. 3000000000, -3000000000, "
        "5000000000")
    big = pa.array([1, 2**63], pa.uint64())  # int64 from uint64: refused whatever the values
    assert _outcome(_source(tmp_path, "parquet", "int64", big), tmp_path).endswith(
        "declared int64, found uint64, e.g. 1, 9223372036854775808")


# The null rule: an int64, int32 or bool column holds no nulls, whatever the file format.
NULL_RULE = "a {d} column holds no nulls: declare float64 to keep missing values, or fill them"


@pytest.mark.parametrize("declared", ["int64", "int32"])
@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_an_integer_column_with_nulls_is_refused_in_every_format(tmp_path, declared, fmt):
    column = pa.array([1, None, 3, None], pa.int64()) if fmt == "parquet" else \
        ["1", "", "3", ""]
    outcome = _outcome(_source(tmp_path, fmt, declared, column), tmp_path)
    assert outcome == (f"data check failed: source 'orders', file data.{fmt}, column 'x', "
                       f"dtype: declared {declared}, found 2 nulls in 4 rows (e.g. rows 1, 3); "
                       + NULL_RULE.format(d=declared))


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_a_bool_column_with_nulls_is_refused(tmp_path, fmt):
    column = pa.array([True, None, False]) if fmt == "parquet" else ["True", "", "False"]
    assert _outcome(_source(tmp_path, fmt, "bool", column), tmp_path).endswith(
        "found 1 nulls in 3 rows (e.g. rows 1); " + NULL_RULE.format(d="bool"))


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_nulls_stay_in_float_and_string_columns(tmp_path, fmt):
    ints = pa.array([1, None, 3], pa.int64()) if fmt == "parquet" else ["1", "", "3"]
    frame = read_source(_source(tmp_path, fmt, "float64", ints), tmp_path)
    assert str(frame["x"].dtype) == "float64" and frame["x"].isna().tolist() == [
        False, True, False]
    text = pa.array(["a", None, "007"]) if fmt == "parquet" else ["a", "", "007"]
    frame = read_source(_source(tmp_path, fmt, "string", text), tmp_path)
    assert frame["x"].tolist()[::2] == ["a", "007"] and frame["x"].isna().sum() == 1


def test_a_float_column_with_nulls_and_fractions_is_a_type_mismatch_not_a_null_one(tmp_path):
    outcome = _outcome(_source(tmp_path, "csv", "int64", ["1.5", "", "2"]), tmp_path)
    assert outcome.endswith("declared int64, found float64, e.g. 1.5")


def test_timestamps_with_no_zone_are_read_as_utc_and_said_so(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="mlstack.runtime"):
        for fmt, column in (("parquet", PARQUET["naive"]), ("csv", CSV["naive"])):
            frame = read_source(_source(tmp_path, fmt, "timestamp", column), tmp_path)
            assert frame["x"].iloc[0] == pd.Timestamp("2026-01-01", tz="UTC")
    assert caplog.text.count("column x: timestamps with no zone, read as UTC") == 2
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mlstack.runtime"):
        read_source(_source(tmp_path, "csv", "timestamp", CSV["timestamp"]), tmp_path)
    assert "no zone" not in caplog.text


def test_the_csv_text_reading_of_lint_agrees_with_ingest():
    """lint --data types a CSV sample with text_type: the same types pandas gives ingest."""
    assert {kind: text_type(values) for kind, values in CSV.items()} == {
        "int64": ("int64", 0), "float64": ("float64", 0), "bool": ("bool", 0),
        "string": ("string", 0), "timestamp": ("timestamp", 0),
        "naive": ("timestamp (no zone)", 0)}
    assert text_type(["1", "", "3"]) == ("int64", 1)
    assert text_type(["", ""]) == ("null", 2)
    # lint judges a CSV timestamp column by its text; ingest parses that text
    assert judge("timestamp", "timestamp (no zone)", "csv") == "parse"
    assert judge("timestamp", "string", "csv") == "parse"
