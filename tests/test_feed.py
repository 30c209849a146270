"""`mlstack run feed`: fresh rows appended to a blueprint's sources, still good data.

Each test inits a blueprint into a temporary folder (as a user does) and feeds it through
the CLI; no deploy. The fed files are judged by what reads them: `mlstack lint --data`, the
compiled pipeline's own sources read and checked by the runtime (ingest), and the
point-in-time relation between a label row and its features.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mlstack.frontend.analysis import analyze_spec
from tests.conftest import REPO, ctrl_c_reaches_it

pd = pytest.importorskip("pandas")
pytest.importorskip("pyarrow")

BLUEPRINTS = ("churn", "search-ranking")


def mlstack(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "mlstack", *args], cwd=cwd, text=True,
                          capture_output=True, timeout=300, stdin=subprocess.DEVNULL,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    if check:
        assert done.returncode == 0, done.stdout + done.stderr
    return done


def init(tmp_path: Path, blueprint: str) -> Path:
    project = tmp_path / blueprint
    mlstack("init", str(project), "--blueprint", blueprint, cwd=tmp_path)
    return project


def file_sources(project: Path) -> dict:
    system = analyze_spec(project / "mlstack.yaml").system
    return {s.name: s for s in system.sources if s.family == "file"}


def frames(project: Path) -> dict[str, pd.DataFrame]:
    return {name: pd.read_parquet(project / s.path) for name, s in file_sources(project).items()}


def ingest(project: Path) -> dict[str, int]:
    """The compiled pipeline's sources read (read_sources) and checked (validate_sources) by
    the runtime, in a process of its own: {source: rows}."""
    mlstack("compile", cwd=project)
    system = analyze_spec(project / "mlstack.yaml").system
    package = system.name.replace("-", "_") + "_system"
    script = textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, "build")
        from {package}.pipeline import SOURCES
        from mlstack.runtime.checks import validate_sources
        from mlstack.runtime.sources import read_sources
        frames, _ = read_sources(SOURCES, ".")
        print(json.dumps(validate_sources(SOURCES, frames)))
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=project, text=True,
                          capture_output=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize("blueprint", BLUEPRINTS)
def test_once_appends_rows_stamped_now_that_lint_and_ingest_accept(tmp_path, blueprint):
    project = init(tmp_path, blueprint)
    before = frames(project)
    started = pd.Timestamp.now(tz="UTC").floor("s")
    done = mlstack("run", "feed", "--once", "--rows", "15", cwd=project)
    finished = pd.Timestamp.now(tz="UTC")
    lines = done.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("tick 1 at "), done.stdout
    after = frames(project)
    newest_old = max(old[file_sources(project)[name].timestamp_field].max()
                     for name, old in before.items())
    at = set()
    for name, old in before.items():
        stamp = file_sources(project)[name].timestamp_field
        new = after[name].iloc[len(old):]
        assert 0 < len(new) <= 15, name
        assert f"{name} +{len(new)} " in lines[0]
        pd.testing.assert_frame_equal(after[name].iloc[:len(old)], old)  # old rows kept
        assert after[name].dtypes.to_dict() == old.dtypes.to_dict()  # the file's own types
        stamped = new[stamp].unique()
        assert len(stamped) == 1, "one event time per tick"
        at.add(stamped[0])
        # now, or just after a source's newest row where a check orders event times
        assert started <= stamped[0] <= max(finished, newest_old + pd.Timedelta(seconds=1))
    assert len(at) == 1, f"every source of a tick has its event time: {at}"
    assert not list((project / "data").glob("*.tmp")), "a temporary file was left behind"
    mlstack("lint", "--data", cwd=project)
    counts = ingest(project)
    assert counts == {name: len(frame) for name, frame in after.items()}


@pytest.mark.parametrize("blueprint", BLUEPRINTS)
def test_fed_labels_find_their_fed_features(tmp_path, blueprint):
    """Each new label row has, in every feature view the model reads, a feature row of the
    same keys appended by the same tick (at or before the label's time), so the
    point-in-time join of the next retrain pairs them."""
    project = init(tmp_path, blueprint)
    system = analyze_spec(project / "mlstack.yaml").system
    before = frames(project)
    mlstack("run", "feed", "--once", cwd=project)
    after = frames(project)
    label_src = system.source(system.label.source)
    labels = after[label_src.name].iloc[len(before[label_src.name]):]
    assert len(labels) > 0
    assert set(labels[system.label.field]) <= set(before[label_src.name][system.label.field])
    for name in system.model.feature_views:
        view = system.view(name)
        src = system.source(view.source)
        keys = [k.name for k in view.join_keys]
        fed = after[src.name].iloc[len(before[src.name]):]
        joined = labels[keys + [label_src.timestamp_field]].merge(
            fed[keys + [src.timestamp_field]], on=keys, how="left", suffixes=("", "_f"))
        feature_at = joined[src.timestamp_field + ("_f" if src.timestamp_field ==
                                                   label_src.timestamp_field else "")]
        assert feature_at.notna().all(), f"label rows without a fed '{name}' row"
        assert (feature_at <= joined[label_src.timestamp_field]).all()


def test_drift_moves_the_mean_by_the_requested_amount(tmp_path):
    base = init(tmp_path, "churn")
    drifted = tmp_path / "drifted"
    shutil.copytree(base, drifted)
    mlstack("run", "feed", "--once", "--rows", "50", "--seed", "3", "--drift", "0", cwd=base)
    mlstack("run", "feed", "--once", "--rows", "50", "--seed", "3", "--drift", "0.5",
            cwd=drifted)
    old = pd.read_parquet(REPO / "blueprints/churn/data/customers.parquet")
    plain = pd.read_parquet(base / "data/customers.parquet").iloc[len(old):]
    moved = pd.read_parquet(drifted / "data/customers.parquet").iloc[len(old):]
    assert list(plain["customer_id"]) == list(moved["customer_id"])  # the same sample
    shift = moved["monthly_charges"].mean() - plain["monthly_charges"].mean()
    assert shift == pytest.approx(0.5 * old["monthly_charges"].std(), rel=0.05)
    # a flag (two values) and the keys stay as sampled; so do the labels
    assert list(plain["is_monthly_contract"]) == list(moved["is_monthly_contract"])
    labels = pd.read_parquet(base / "data/churn_labels.parquet")
    assert labels["churned"].tolist() == pd.read_parquet(
        drifted / "data/churn_labels.parquet")["churned"].tolist()


def test_a_large_drift_stays_within_the_declared_ranges(tmp_path):
    project = init(tmp_path, "search-ranking")
    mlstack("run", "feed", "--once", "--drift", "50", cwd=project)
    fed = pd.read_parquet(project / "data/query_documents.parquet").tail(20)
    assert fed["title_match"].between(0, 1).all() and fed["pair_click_rate"].max() == 1.0
    mlstack("lint", "--data", cwd=project)
    ingest(project)


def test_two_ticks_give_distinct_rows(tmp_path):
    project = init(tmp_path, "search-ranking")
    old = frames(project)
    done = mlstack("run", "feed", "--ticks", "2", "--every", "2", "--format", "json",
                   cwd=project)
    ticks = [json.loads(line) for line in done.stdout.splitlines()]
    assert [t["tick"] for t in ticks] == [1, 2]
    assert ticks[0]["at"] < ticks[1]["at"]
    labels = pd.read_parquet(project / "data/relevance_labels.parquet")
    n = len(old["relevance_labels"])
    first, second = labels.iloc[n:n + 20], labels.iloc[n + 20:]
    assert len(first) == 20 and len(second) == 20
    pairs = [set(map(tuple, f[["query_id", "doc_id"]].to_numpy())) for f in (old[
        "relevance_labels"], first, second)]
    assert not (pairs[0] & pairs[1]) and not (pairs[0] & pairs[2]) and not (pairs[1] & pairs[2])
    customers = init(tmp_path, "churn")
    before = len(pd.read_parquet(customers / "data/customers.parquet"))
    mlstack("run", "feed", "--ticks", "2", "--every", "2", cwd=customers)
    fed = pd.read_parquet(customers / "data/customers.parquet").iloc[before:]
    assert len(fed) == 40 and not fed.duplicated().any()
    assert fed["event_timestamp"].nunique() == 2


def test_ctrl_c_stops_the_feed_cleanly(tmp_path):
    project = init(tmp_path, "churn")
    proc = subprocess.Popen([sys.executable, "-m", "mlstack", "run", "feed", "--every", "60"],
                            cwd=project, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(REPO)},
                            preexec_fn=ctrl_c_reaches_it)
    try:
        first = proc.stdout.readline()  # the first tick has written
        assert first.startswith("tick 1 at "), first
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "Feed stopped (Ctrl-C)" in err and "Traceback" not in err
    mlstack("lint", "--data", cwd=project)


def _no_traceback(done: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in done.stderr and "internal error" not in done.stderr


def test_a_spec_it_cannot_feed_is_refused_cleanly(tmp_path):
    project = init(tmp_path, "churn")
    customers = (project / "data/customers.parquet").read_bytes()
    (project / "data/churn_labels.parquet").unlink()
    done = mlstack("run", "feed", "--once", cwd=project, check=False)
    assert done.returncode == 2 and "churn_labels" in done.stderr, done.stderr
    assert "does not exist" in done.stderr
    _no_traceback(done)
    assert (project / "data/customers.parquet").read_bytes() == customers  # nothing written

    empty = init(tmp_path, "search-ranking")
    docs = pd.read_parquet(empty / "data/documents.parquet")
    docs.iloc[:0].to_parquet(empty / "data/documents.parquet", index=False)
    done = mlstack("run", "feed", "--once", cwd=empty, check=False)
    assert done.returncode == 2 and "no rows" in done.stderr, done.stderr
    _no_traceback(done)

    done = mlstack("run", "feed", "--once", "--ticks", "3", cwd=project, check=False)
    assert done.returncode == 2 and "--once and --ticks" in done.stderr
    done = mlstack("run", "materialize", "--rows", "5", cwd=project, check=False)
    assert done.returncode == 2 and "only mlstack run feed" in done.stderr
    (project / "mlstack.yaml").write_text("apiVersion: mlstack/v1\nkind: System\n")
    done = mlstack("run", "feed", "--once", cwd=project, check=False)
    assert done.returncode == 1, done.stderr
    _no_traceback(done)


def test_a_spec_with_no_file_source_has_nothing_to_feed():
    from mlstack.diagnostics.errors import UsageError
    from mlstack.ops.feed import feed_plan

    system = analyze_spec(REPO / "blueprints/churn/mlstack.yaml").system
    elsewhere = system.model_copy(update={"sources": tuple(
        s.model_copy(update={"family": "warehouse", "kind": "postgres", "path": None,
                             "table": s.name}) for s in system.sources)})
    with pytest.raises(UsageError, match="nothing to feed: churn has no file source"):
        feed_plan(elsewhere, REPO)
    assert [s["name"] for s in feed_plan(system, REPO)["sources"]] == [
        "churn_labels", "customers"]


def test_a_csv_source_is_fed_as_text_ingest_reads(tmp_path):
    project = init(tmp_path, "churn")
    customers = pd.read_parquet(project / "data/customers.parquet")
    customers.to_csv(project / "data/customers.csv", index=False)
    (project / "data/customers.parquet").unlink()
    spec = project / "mlstack.yaml"
    spec.write_text(spec.read_text().replace(
        "kind: parquet\n    path: data/customers.parquet",
        "kind: csv\n    path: data/customers.csv"))
    mlstack("run", "feed", "--once", "--drift", "0.3", cwd=project)
    text = (project / "data/customers.csv").read_text().splitlines()
    assert len(text) == len(customers) + 1 + 20
    assert text[-1].split(",")[0].isdigit()  # an int key written as an int
    mlstack("lint", "--data", cwd=project)
    assert ingest(project)["customers"] == len(customers) + 20


def test_each_file_is_replaced_in_one_rename(tmp_path):
    """A reader holding the file before the tick keeps reading the whole old file (the new
    one takes its name by a rename, never by writing into it), and nothing is left over."""
    project = init(tmp_path, "churn")
    path = project / "data/customers.parquet"
    held = tmp_path / "held.parquet"
    os.link(path, held)  # the old file, as an open reader sees it
    old = held.read_bytes()
    mlstack("run", "feed", "--once", cwd=project)
    assert held.read_bytes() == old
    assert len(pd.read_parquet(path)) == len(pd.read_parquet(held)) + 20
    assert sorted(p.name for p in (project / "data").iterdir()) == [
        "churn_labels.parquet", "customers.parquet"]


def test_a_tick_stamps_labels_no_earlier_than_the_features_a_bumped_source_got(tmp_path):
    """search-ranking's document source orders its event times (a check), so a tick in the
    same second as its newest row stamps it a second later; the tick's labels get that time
    too, never the earlier now (the point-in-time join would miss the pair)."""
    from mlstack.ops.feed import feed_plan
    from mlstack.runtime.feed import feed_tick, load_plan

    project = init(tmp_path, "search-ranking")
    system = analyze_spec(project / "mlstack.yaml").system
    sources, label_source = load_plan(feed_plan(system, project))
    ordered = [s for s in sources if s.source.checks.monotonic
               or s.source.timestamp_field in s.source.checks.unique]
    assert ordered and label_source, "the blueprint has a source whose checks order time"
    newest = max(frames(project)[s.source.name][s.source.timestamp_field].max()
                 for s in ordered)
    tick = feed_tick(sources, project, rows=10, drift=0.0, label_source=label_source,
                     now=newest, seed=3)
    stamps = {a.name: a.at for a in tick.sources}
    assert set(stamps.values()) == {(newest.floor("s") + pd.Timedelta(seconds=1)).isoformat()}
