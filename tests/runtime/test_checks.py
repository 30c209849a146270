"""Data checks: one message per failed check, naming source, column and counts."""

from __future__ import annotations

import pandas as pd
import pytest

from mlstack.runtime.checks import DataChecks, check_failures, validate_sources
from mlstack.runtime.errors import DataCheckError
from mlstack.runtime.sources import SourceSpec

COLUMNS = {"id": "int64", "event_timestamp": "timestamp", "amount": "float64", "kind": "int64"}


def _source(**checks) -> SourceSpec:
    return SourceSpec(name="orders", path="data/orders.parquet", format="parquet",
                      timestamp_field="event_timestamp", columns=COLUMNS,
                      checks=DataChecks(**checks))


def _frame(**overrides) -> pd.DataFrame:
    data = {"id": [1, 2, 3, 4], "event_timestamp": pd.to_datetime(["2026-01-01"] * 4, utc=True),
            "amount": [1.5, 2.0, 3.0, 4.0], "kind": [0, 1, 1, 0]}
    data.update(overrides)
    return pd.DataFrame(data)


def test_clean_data_passes_every_check():
    source = _source(not_null=("id", "amount"), unique=("id",), ranges={"amount": (0.0, 10.0)},
                     allowed_values={"kind": (0, 1)}, min_rows=4, max_null_fraction=0.0)
    assert check_failures(source, _frame()) == []


def test_schema_missing_column():
    assert check_failures(_source(), _frame().drop(columns=["kind"])) == [
        "data check failed: source 'orders', column 'kind', schema: column is missing from "
        "the data"]


def test_min_rows():
    assert check_failures(_source(min_rows=10), _frame()) == [
        "data check failed: source 'orders', min_rows 10: 4 rows"]


def test_not_null():
    frame = _frame(amount=[1.0, None, None, 2.0])
    assert check_failures(_source(not_null=("amount",)), frame) == [
        "data check failed: source 'orders', column 'amount', not_null: 2 of 4 rows are null"]


def test_unique_over_several_columns():
    frame = _frame(id=[1, 1, 1, 2], kind=[0, 0, 1, 1])
    assert check_failures(_source(unique=("id", "kind")), frame) == [
        "data check failed: source 'orders', columns 'id', 'kind', unique: 1 of 4 rows repeat "
        "a value"]


def test_ranges_with_nulls_ignored():
    frame = _frame(amount=[-1.0, None, 50.5, 3.0])
    assert check_failures(_source(ranges={"amount": (0.0, 10.0)}), frame) == [
        "data check failed: source 'orders', column 'amount', ranges [0, 10]: 2 of 4 rows "
        "outside (min -1, max 50.5)"]


def test_allowed_values_lists_up_to_five_examples():
    frame = pd.DataFrame({"id": range(8), "event_timestamp": pd.Timestamp("2026-01-01", tz="UTC"),
                          "amount": 1.0, "kind": [0, 1, 2, 3, 4, 5, 6, 7]})
    assert check_failures(_source(allowed_values={"kind": (0, 1)}), frame) == [
        "data check failed: source 'orders', column 'kind', allowed_values [0, 1]: 6 of 8 rows "
        "have other values, e.g. 2, 3, 4, 5, 6"]


def test_max_null_fraction_over_every_declared_column():
    frame = _frame(amount=[None, None, 1.0, 2.0], kind=[None, 1, 1, 0])
    assert check_failures(_source(max_null_fraction=0.3), frame) == [
        "data check failed: source 'orders', column 'amount', max_null_fraction 0.3: 2 of 4 rows "
        "are null"]


def test_checks_skip_columns_the_data_does_not_have():
    frame = _frame().drop(columns=["amount"])
    failures = check_failures(_source(not_null=("amount",), ranges={"amount": (0.0, 1.0)}), frame)
    assert failures == ["data check failed: source 'orders', column 'amount', schema: column is "
                        "missing from the data"]


def test_validate_joins_every_failure_sorted_by_source_and_counts_rows():
    other = SourceSpec(name="accounts", path="a.parquet", format="parquet",
                       timestamp_field="event_timestamp", columns={"id": "int64"},
                       checks=DataChecks(min_rows=5))
    orders = _source(min_rows=5)
    frames = {"orders": _frame(), "accounts": pd.DataFrame({"id": [1]})}
    with pytest.raises(DataCheckError) as error:
        validate_sources([orders, other], frames)
    assert str(error.value) == (
        "data check failed: source 'accounts', min_rows 5: 1 rows; "
        "data check failed: source 'orders', min_rows 5: 4 rows")
    assert validate_sources([_source(), other.__class__(name="accounts", path="a", format="parquet",
                                                 timestamp_field="t")], frames) == {
        "accounts": 1, "orders": 4}
