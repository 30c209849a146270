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


def test_regex_matches_whole_values_and_ignores_nulls():
    source = SourceSpec(name="orders", path="o.parquet", format="parquet",
                        timestamp_field="event_timestamp",
                        columns={**COLUMNS, "plan": "string"},
                        checks=DataChecks(regex={"plan": "[a-z]+_v[0-9]"}))
    frame = _frame(plan=["pro_v1", None, "pro_v1x", "Basic_v2"])
    assert check_failures(source, frame) == [
        "data check failed: source 'orders', column 'plan', regex '[a-z]+_v[0-9]': 2 of 4 rows "
        "do not match, e.g. 'pro_v1x', 'Basic_v2'"]
    assert check_failures(source, _frame(plan=["pro_v1", None, "a_v0", "b_v9"])) == []


def test_monotonic_event_time_per_key_in_file_order():
    stamps = pd.to_datetime(["2026-01-02", "2026-01-01", "2026-01-03", "2026-01-01"], utc=True)
    # id 1: Jan 2 then Jan 3 (in order); id 2: Jan 1 then Jan 1 (equal is in order)
    ordered = _frame(id=[1, 2, 1, 2], event_timestamp=stamps)
    assert check_failures(_source(monotonic=("id",)), ordered) == []
    # id 1: Jan 2 then Jan 1 (back in time); id 2 alone is fine
    back = _frame(id=[1, 1, 2, 2], event_timestamp=stamps[[0, 1, 3, 2]])
    assert check_failures(_source(monotonic=("id",)), back) == [
        "data check failed: source 'orders', column 'event_timestamp', monotonic per id: 1 of 4 "
        "rows are earlier than the row before them of the same key, e.g. id 1"]
    # the same rows keyed by kind (0, 1, 1, 0): kind 0 goes from Jan 2 back to Jan 1
    assert check_failures(_source(monotonic=("kind",)), ordered) == [
        "data check failed: source 'orders', column 'event_timestamp', monotonic per kind: 1 of "
        "4 rows are earlier than the row before them of the same key, e.g. kind 0"]


def test_freshness_names_the_view_the_age_and_the_ttl():
    now = pd.Timestamp("2026-01-20 06:00", tz="UTC")
    checks = {"freshness": {"profile": 30 * 86400, "recent": 7 * 86400}}
    assert check_failures(_source(**checks), _frame(), now=now) == [
        "data check failed: source 'orders', column 'event_timestamp', freshness (view "
        "'recent', ttl 7d): the newest of 4 rows (2026-01-01T00:00:00+00:00) is 19d 6h old"]
    assert check_failures(_source(**checks), _frame(), now=pd.Timestamp(
        "2026-01-07", tz="UTC")) == []
    assert check_failures(_source(), _frame(), now=now) == []  # not asked for: no check


def test_new_checks_fail_a_file_at_ingest(tmp_path):
    """read_source then validate_sources, as the generated flow's ingest and validate run."""
    (tmp_path / "orders.csv").write_text(
        "id,event_timestamp,amount,kind,plan\n"
        "1,2026-01-05T00:00:00Z,1.0,0,pro_v1\n"
        "1,2026-01-04T00:00:00Z,2.0,1,PRO\n"
        "2,2026-01-01T00:00:00Z,3.0,1,basic_v2\n")
    source = SourceSpec(name="orders", path="orders.csv", format="csv",
                        timestamp_field="event_timestamp", columns={**COLUMNS, "plan": "string"},
                        checks=DataChecks(regex={"plan": "[a-z]+_v[0-9]"}, monotonic=("id",),
                                          freshness={"profile": 86400}))
    frame = source.read(tmp_path)
    with pytest.raises(DataCheckError) as error:
        validate_sources([source], {"orders": frame})
    failures = str(error.value).split("; ")
    assert failures[:2] == [
        "data check failed: source 'orders', column 'plan', regex '[a-z]+_v[0-9]': 1 of 3 rows "
        "do not match, e.g. 'PRO'",
        "data check failed: source 'orders', column 'event_timestamp', monotonic per id: 1 of 3 "
        "rows are earlier than the row before them of the same key, e.g. id 1"]
    assert failures[2].startswith(
        "data check failed: source 'orders', column 'event_timestamp', freshness (view "
        "'profile', ttl 1d): the newest of 3 rows (2026-01-05T00:00:00+00:00) is ")
    assert len(failures) == 3


def test_the_generated_pipeline_carries_the_new_checks(tmp_path):
    """Spec -> IR -> the pipeline's DataChecks: freshness carries the ttl of each view reading
    the source (churn's customer_profile: 45d)."""
    import yaml

    from mlstack.codegen.backends.prefect import flow_context
    from mlstack.frontend.analysis import analyze_spec
    from tests.conftest import BLUEPRINTS

    doc = yaml.safe_load((BLUEPRINTS / "churn" / "mlstack.yaml").read_text())
    customers = doc["sources"][0]
    customers["columns"]["plan"] = "string"
    customers["checks"].update(regex={"plan": "[a-z]+"}, monotonic=["customer_id"],
                               freshness=True)
    (tmp_path / "mlstack.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    system = analyze_spec(tmp_path / "mlstack.yaml").system
    assert system is not None
    (source,) = [s for s in flow_context(system)["sources"] if s["name"] == "customers"]
    checks = DataChecks(**source["checks"])
    assert (checks.regex, checks.monotonic, checks.freshness) == (
        {"plan": "[a-z]+"}, ("customer_id",), {"customer_profile": 45 * 86400})
