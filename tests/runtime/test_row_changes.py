"""Rows added, removed and changed since the last successful training, per source."""

from __future__ import annotations

import pandas as pd

from mlstack.runtime.changes import (
    RowChanges,
    RowPrintStore,
    SourceChanges,
    count_changes,
    row_prints,
    since_last_training,
)
from mlstack.runtime.sources import SourceSpec
from mlstack.runtime.state import StateFiles

COLUMNS = {"customer_id": "int64", "event_timestamp": "timestamp", "monthly_charges": "float64",
           "plan": "string"}


def _source(keys=("customer_id",)) -> SourceSpec:
    return SourceSpec(name="customers", path="data/customers.parquet", format="parquet",
                      timestamp_field="event_timestamp", columns=COLUMNS, keys=keys)


def _frame(n: int = 10) -> pd.DataFrame:
    return pd.DataFrame({
        "customer_id": list(range(n)),
        "event_timestamp": pd.date_range("2026-01-01", periods=n, freq="h", tz="UTC"),
        "monthly_charges": [10.0 + i for i in range(n)],
        "plan": ["basic" if i % 2 else "pro" for i in range(n)],
    })


def _changes(before: pd.DataFrame | None, now: pd.DataFrame, source=None) -> RowChanges:
    source = source or _source()
    previous = None if before is None else row_prints(source, before)
    return count_changes(previous, row_prints(source, now))


def test_the_same_rows_in_another_order_and_column_order_change_nothing():
    frame = _frame()
    shuffled = frame.sample(frac=1, random_state=3)[["plan", "monthly_charges",
                                                     "event_timestamp", "customer_id"]]
    found = _changes(frame, shuffled)
    assert found == RowChanges(rows=10, previous_rows=10, added=0, removed=0, changed=0)
    assert found.share == 0.0


def test_added_removed_and_changed_rows_are_counted_apart():
    before = _frame(10)
    now = before.drop(index=[0, 1]).copy()  # 2 removed
    now.loc[5, "monthly_charges"] = 999.0  # 1 changed value
    now.loc[6, "plan"] = "gold"  # 1 changed value
    new = _frame(13).iloc[10:]  # 3 added
    now = pd.concat([now, new], ignore_index=True)
    found = _changes(before, now)
    assert found == RowChanges(rows=11, previous_rows=10, added=3, removed=2, changed=2)
    assert found.share == round(7 / 13, 6)  # of the 13 identities in either
    assert found.as_record() == {"rows": 11, "previous_rows": 10, "added": 3, "removed": 2,
                                 "changed": 2, "share": round(7 / 13, 6)}
    assert found.describe() == ("11 rows: 3 added, 2 removed, 2 changed (53.85%) since the "
                                "last training")


def test_a_new_event_time_for_a_key_is_a_row_added_not_a_change():
    before = _frame(4)
    later = before.iloc[[0]].assign(event_timestamp=pd.Timestamp("2026-02-01", tz="UTC"),
                                    monthly_charges=50.0)
    found = _changes(before, pd.concat([before, later], ignore_index=True))
    assert (found.added, found.removed, found.changed) == (1, 0, 0)


def test_a_moved_event_time_is_a_row_removed_and_one_added():
    before = _frame(4)
    now = before.copy()
    now.loc[2, "event_timestamp"] = pd.Timestamp("2027-01-01", tz="UTC")
    found = _changes(before, now)
    assert (found.added, found.removed, found.changed) == (1, 1, 0)
    assert found.share == 0.4  # 2 of the 5 identities in either


def test_repeated_identities_are_told_apart_by_their_values():
    source = _source(keys=())  # identity: the event time alone, every row the same time
    before = _frame(6).assign(event_timestamp=pd.Timestamp("2026-01-01", tz="UTC"))
    assert _changes(before, before.iloc[::-1], source).share == 0.0
    now = before.copy()
    now.loc[3, "monthly_charges"] = -1.0
    found = _changes(before, now, source)
    assert found.rows == 6 and found.added + found.removed + found.changed > 0


def test_a_whole_file_replaced_is_a_share_of_one():
    before, now = _frame(5), _frame(10).iloc[5:]
    found = _changes(before, now)
    assert (found.added, found.removed, found.changed, found.share) == (5, 5, 0, 1.0)


def test_nothing_to_compare_before_the_first_training():
    found = _changes(None, _frame(3))
    assert found == RowChanges(rows=3)
    assert found.share is None
    assert found.as_record()["previous_rows"] is None
    assert "no earlier training" in found.describe()


def test_since_last_training_compares_with_what_the_last_recorded_run_saw(tmp_path):
    state = StateFiles(tmp_path / "state")
    source = _source()
    first = since_last_training([source], {"customers": _frame(10)}, state)
    assert first.report == {"customers": RowChanges(rows=10).as_record()}
    # a run that fails after validate records nothing: the next one still sees no training
    again = since_last_training([source], {"customers": _frame(10)}, state)
    assert again.report["customers"]["previous_rows"] is None
    again.record()
    assert (tmp_path / "state" / "row_prints" / "customers.parquet").is_file()
    now = _frame(12)
    now.loc[0, "monthly_charges"] = 0.5
    found = since_last_training([source], {"customers": now}, state)
    assert found.report == {"customers": {"rows": 12, "previous_rows": 10, "added": 2,
                                          "removed": 0, "changed": 1,
                                          "share": 0.25}}


def test_an_unreadable_record_counts_as_no_earlier_training(tmp_path):
    store = RowPrintStore(tmp_path)
    store.path("customers").write_bytes(b"not parquet")
    assert store.read("customers") is None
    pd.DataFrame({"other": [1]}).to_parquet(store.path("customers"))
    assert store.read("customers") is None


def test_combine_joins_the_ray_flows_per_source_parts(tmp_path):
    store = RowPrintStore(tmp_path)
    a = SourceChanges(store, {"a": RowChanges(rows=1)}, {"a": row_prints(_source(), _frame(1))})
    b = SourceChanges(store, {"b": RowChanges(rows=2)}, {"b": row_prints(_source(), _frame(2))})
    combined = SourceChanges.combine([b, a])
    assert list(combined.report) == ["a", "b"]
    combined.record()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.parquet", "b.parquet"]


def test_the_keys_tell_rows_of_one_time_apart():
    """Two customers stamped the same instant: a new value of one is a change of that row
    (with the time alone as identity it would read as a row removed and one added)."""
    before = _frame(4).assign(event_timestamp=pd.Timestamp("2026-01-01", tz="UTC"))
    now = before.copy()
    now.loc[2, "monthly_charges"] = 77.0
    assert _changes(before, now) == RowChanges(rows=4, previous_rows=4, changed=1)


def test_the_generated_sources_carry_the_keys_of_their_views_and_label():
    """Spec -> IR -> the pipeline's SourceSpec keys: the join keys of the views reading each
    source and the label's keys on the label source."""
    from mlstack.codegen.backends.prefect import flow_context
    from mlstack.frontend.analysis import analyze_spec
    from tests.conftest import BLUEPRINTS

    def keys(blueprint: str) -> dict[str, tuple[str, ...]]:
        system = analyze_spec(BLUEPRINTS / blueprint / "mlstack.yaml").system
        assert system is not None
        return {s["name"]: s["keys"] for s in flow_context(system)["sources"]}

    assert keys("churn") == {"churn_labels": ("customer_id",), "customers": ("customer_id",)}
    ranking = keys("search-ranking")
    assert ranking["documents"] == ("doc_id",)
    assert all(k == ("doc_id", "query_id") for n, k in ranking.items() if n != "documents")
