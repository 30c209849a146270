"""The deploy worker's key samples (profile, skew check, freshness, load test bodies) draw keys
whose features serve now: inside each view's TTL. A month of data under a 1 h TTL holds a
handful of such keys; a sample that ignores the TTL finds none of them and the deploy fails
at its profile stage (search-ranking's 1 h view, 20 of 12,000 rows, did)."""

from __future__ import annotations

import sys
import textwrap

import pytest

pd = pytest.importorskip("pandas")

from mlstack.ops.local import worker  # noqa: E402

HOUR = pd.Timedelta(hours=1)


@pytest.fixture
def package(tmp_path, monkeypatch):
    """A generated package's three modules the sampler reads (features, pipeline, settings),
    over parquet files: 500 customers with a row a month old, 6 of them with a row now too
    (inside the 1 h TTL of `activity`); `profile` (TTL 30 d) has every customer; ranking
    groups of 5 rows, group 7 the one whose rows are live."""
    now = pd.Timestamp.now(tz="UTC")
    ids = list(range(1, 501))
    live = [17, 101, 233, 250, 401, 499]
    month_ago = now - pd.Timedelta(days=29)
    pd.DataFrame({"customer_id": ids, "event_timestamp": month_ago, "x": 1.0}).pipe(
        lambda f: pd.concat([f, pd.DataFrame({"customer_id": live, "event_timestamp": now
                                              - 10 * pd.Timedelta(minutes=1), "x": 2.0})])
    ).to_parquet(tmp_path / "activity.parquet")
    pd.DataFrame({"customer_id": ids, "event_timestamp": month_ago, "y": 1.0}).to_parquet(
        tmp_path / "profile.parquet")
    groups = [(i - 1) // 5 for i in ids]
    group_of_live = {7: [36, 37, 38, 39, 40]}
    pd.DataFrame({"customer_id": ids, "session": groups, "event_timestamp": now,
                  "label": 0}).to_parquet(tmp_path / "labels.parquet")
    name = f"sampling_pkg_{abs(hash(tmp_path)) % 10**8}"
    folder = tmp_path / name
    folder.mkdir()
    (folder / "__init__.py").write_text("")
    (folder / "features.py").write_text(textwrap.dedent("""
        LABEL_SOURCE = "labels"
        REQUEST_KEYS = ("customer_id",)
        GROUP_BY = "session"
        VIEW_SOURCES = {"activity": "activity", "profile": "profile"}
        VIEW_KEYS = {"activity": ("customer_id",), "profile": ("customer_id",)}
        VIEW_TTL_SECONDS = {"activity": 3600, "profile": 30 * 86400}
    """))
    (folder / "settings.py").write_text(f"PROJECT_DIR = {str(tmp_path)!r}\n")
    (folder / "pipeline.py").write_text(textwrap.dedent("""
        from mlstack.runtime.sources import SourceSpec
        SOURCES = [SourceSpec(name=n, path=n + ".parquet", format="parquet",
                              timestamp_field="event_timestamp",
                              columns={"event_timestamp": "timestamp"})
                   for n in ("activity", "profile", "labels")]
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    # the group whose rows serve: its customers get a live activity row
    frame = pd.read_parquet(tmp_path / "activity.parquet")
    extra = pd.DataFrame({"customer_id": group_of_live[7], "event_timestamp": now
                          - pd.Timedelta(minutes=5), "x": 3.0})
    pd.concat([frame, extra]).to_parquet(tmp_path / "activity.parquet")
    yield {"name": name, "live": sorted(live + group_of_live[7]), "group": 7}
    for module in [m for m in sys.modules if m.startswith(name)]:
        del sys.modules[module]


def test_keys_inside_a_short_ttl_come_first(package):
    keys = worker._sample_keys(package["name"], size=len(package["live"]), seed=0)
    assert sorted(k["customer_id"] for k in keys) == package["live"]


def test_the_sample_keeps_its_size_filled_from_the_other_keys(package):
    keys = [k["customer_id"] for k in worker._sample_keys(package["name"], size=50, seed=3)]
    assert len(keys) == 50 == len(set(keys))
    assert set(package["live"]) <= set(keys)


def test_a_row_past_the_ttl_or_in_the_future_is_not_live(package, tmp_path):
    now = pd.Timestamp.now(tz="UTC")
    frame = pd.read_parquet(tmp_path / "activity.parquet")
    frame.loc[frame["customer_id"] == 17, "event_timestamp"] = now - 2 * HOUR
    frame.loc[frame["customer_id"] == 101, "event_timestamp"] = now + HOUR
    frame.to_parquet(tmp_path / "activity.parquet")
    keys = worker._sample_keys(package["name"], size=len(package["live"]) - 2, seed=0)
    assert sorted(k["customer_id"] for k in keys) == [
        k for k in package["live"] if k not in (17, 101)]


def test_ranking_groups_whose_rows_serve_come_first(package):
    rows = worker._sample_groups(package["name"], size=5, seed=0)
    assert {r["session"] for r in rows} == {package["group"]}
    assert [r["customer_id"] for r in rows] == [36, 37, 38, 39, 40]


def test_a_ranking_profile_counts_the_candidates_of_each_group(package, monkeypatch):
    """The profile derives /rank's batching for the candidates a request carries: the label
    source's groups (100 of 5 rows here); a model that is not ranked by a request key has
    none (one row per /predict request)."""
    import importlib

    features = importlib.import_module(f"{package['name']}.features")
    assert worker._candidates_per_request(package["name"]) is None  # no TASK: not ranking
    monkeypatch.setattr(features, "TASK", "ranking", raising=False)
    assert worker._candidates_per_request(package["name"]) is None  # group not a request key
    monkeypatch.setattr(features, "REQUEST_KEYS", ("customer_id", "session"))
    assert worker._candidates_per_request(package["name"]) == {
        "median": 5.0, "p90": 5, "max": 5, "groups": 100}
