"""The prediction log: record() never blocks and never fails a request (a full queue or a
failed write is counted, not raised), batches land atomically in version/hour partitions
with an index of request ids, several processes share a folder, retention deletes only what
is old, and request ids are UUIDv7s that round-trip their time."""

from __future__ import annotations

import json
import multiprocessing
import os
import sqlite3
import threading
import time
import uuid
from pathlib import Path

import pandas as pd
import pytest

from mlstack.runtime import prediction_log
from mlstack.runtime.prediction_log import (
    PredictionLog,
    new_request_id,
    read_log,
    request_time,
)


def _index_ids(folder: Path) -> set[str]:
    with sqlite3.connect(folder / "requests.db") as connection:
        return {r[0] for r in connection.execute("SELECT request_id FROM requests")}


def _files(folder: Path) -> list[Path]:
    """Every file under the partitions (temporary ones included)."""
    return sorted(p for p in folder.glob("version=*/**/*") if p.is_file())


def _stall_writer(log: PredictionLog, monkeypatch) -> tuple[threading.Event, threading.Event]:
    """Make the log's writer wait inside its next write until `release` is set; `entered`
    says it got there."""
    entered, release = threading.Event(), threading.Event()
    write = log._write_table

    def stalled(hour, table):
        entered.set()
        release.wait(30)
        return write(hour, table)

    monkeypatch.setattr(log, "_write_table", stalled)
    return entered, release


def test_record_never_blocks_and_counts_exactly_the_overflow(tmp_path, monkeypatch):
    log = PredictionLog(tmp_path, "v1", "m:1", max_queue=50, flush_rows=1, flush_seconds=0.05)
    entered, release = _stall_writer(log, monkeypatch)
    assert log.record(new_request_id(), "predict", [{"k": -1}], [0.0])
    assert entered.wait(10)  # the writer holds that request and waits: the queue is empty

    started = time.perf_counter()
    accepted = [log.record(new_request_id(), "predict", [{"k": i}, {"k": i}], [1.0, None])
                for i in range(10 * log.max_queue)]
    elapsed = time.perf_counter() - started
    assert elapsed < 2.0  # 500 calls; a blocking put would wait for the stalled writer
    assert accepted.count(True) == log.max_queue
    assert accepted[:log.max_queue] == [True] * log.max_queue
    stats = log.stats()
    assert stats["queued"] == log.max_queue
    assert stats["dropped"] == 9 * log.max_queue * 2  # rows, not requests
    assert stats["logged"] == 0

    release.set()
    assert log.flush(30)
    stats = log.stats()
    assert stats["logged"] == 1 + log.max_queue * 2
    assert stats["dropped"] == 9 * log.max_queue * 2
    assert stats["queued"] == 0 and stats["write_errors"] == 0
    frame = read_log(tmp_path)
    assert len(frame) == 1 + log.max_queue * 2
    assert frame["request_id"].nunique() == 1 + log.max_queue
    log.close()


def test_a_failed_write_counts_its_rows_as_dropped_leaves_no_file_and_the_writer_goes_on(
        tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    log = PredictionLog(tmp_path, "v1", "m:1", flush_seconds=0.05)
    write_table = pq.write_table
    failures = []

    def disk_full_once(table, where, **kwargs):
        if not failures:
            failures.append(where)
            Path(where).write_bytes(b"PAR1 half a file")
            raise OSError(28, "No space left on device")
        return write_table(table, where, **kwargs)

    monkeypatch.setattr(pq, "write_table", disk_full_once)
    lost = new_request_id()
    assert log.record(lost, "predict", [{"k": 1}, {"k": 2}, {"k": 3}], [1.0, 2.0, 3.0])
    assert log.flush(10)
    stats = log.stats()
    assert stats["dropped"] == 3 and stats["logged"] == 0 and stats["write_errors"] == 1
    assert "No space left on device" in stats["last_error"]
    assert failures and _files(tmp_path) == []  # the half-written temp file is gone
    assert lost not in _index_ids(tmp_path)  # nothing written, nothing indexed

    kept = new_request_id()
    assert log.record(kept, "predict", [{"k": 4}], [4.0])
    assert log.flush(10)
    stats = log.stats()
    assert stats["logged"] == 1 and stats["dropped"] == 3 and stats["files"] == 1
    assert read_log(tmp_path)["request_id"].tolist() == [kept]
    assert _index_ids(tmp_path) == {kept}
    log.close()


def test_bad_values_are_the_writers_problem_not_the_requests(tmp_path):
    log = PredictionLog(tmp_path, "v1", "m:1", flush_seconds=0.05)
    good = new_request_id()
    assert log.record(new_request_id(), "predict", [{"k": 1}, {"k": 2}], [1.0])  # misaligned
    assert log.record(new_request_id(), "predict", [{"k": 1}], ["not a number"])
    assert log.record(new_request_id(), "predict", None, None) in (True, False)  # no raise
    assert log.record(good, "predict", [{"k": 3}], [3])
    assert log.flush(10)
    stats = log.stats()
    assert stats["dropped"] == 2 + 1 + 1 and stats["write_errors"] == 3
    assert stats["logged"] == 1
    assert read_log(tmp_path)["request_id"].tolist() == [good]
    log.close()


def test_partitions_by_version_and_hour_and_read_log_round_trips_values_and_types(tmp_path):
    hour_one = 1_780_000_000.0  # 2026-05-28T20:26:40Z
    times = iter([hour_one, hour_one + 1, hour_one + 3600, hour_one + 3600])
    v1 = PredictionLog(tmp_path, "v1", "churn:a", flush_seconds=0.05, clock=lambda: next(times),
                       retention_hours=None)
    v2 = PredictionLog(tmp_path, "v 2/b", "churn:b", flush_seconds=0.05,
                       clock=lambda: hour_one + 7200, retention_hours=None)
    ids = [new_request_id() for _ in range(5)]
    v1.record(ids[0], "predict",
              [{"customer_id": 7, "amount": 2.5, "plan": "gold", "vip": True, "row": "r0"},
               {"customer_id": 8, "amount": None, "plan": "basic", "vip": False, "row": "r1"}],
              [0.25, None], features=[{"spend": 1.5}, {"spend": None}])
    v1.record(ids[1], "rank", [{"customer_id": 9, "code": 1}, {"customer_id": 9, "code": "x"}],
              [0.5, 0.75], extra={"position": [2, 1], "query_id": ["q", "q"]})
    v1.record(ids[2], "predict", [{"customer_id": 10, "code": [1, 2]}], [1])
    v1.record(ids[3], "predict", [{"customer_id": 11}], [None])
    v2.record(ids[4], "predict", [{"customer_id": 12}], [2.0])
    assert v1.flush(10) and v2.flush(10)

    names = {str(p.relative_to(tmp_path).parent) for p in _files(tmp_path)}
    assert names == {"version=v1/hour=2026-05-28T20", "version=v1/hour=2026-05-28T21",
                     "version=v%202%2Fb/hour=2026-05-28T22"}
    assert all(p.name.startswith(f"part-{os.getpid()}-") and p.suffix == ".parquet"
               for p in _files(tmp_path))
    assert _index_ids(tmp_path) == set(ids)

    frame = read_log(tmp_path)
    assert list(frame.columns[:7]) == ["request_id", "ts", "version", "model_tag", "endpoint",
                                       "row", "output"]
    assert len(frame) == 7
    first = frame[frame["request_id"] == ids[0]]
    assert first["ts"].tolist() == [pd.Timestamp(hour_one, unit="s", tz="UTC")] * 2
    assert str(frame["ts"].dtype) == "datetime64[us, UTC]"
    assert first["row"].tolist() == [0, 1] and str(frame["row"].dtype) == "int32"
    assert first["output"].iloc[0] == 0.25 and pd.isna(first["output"].iloc[1])
    assert first["plan"].tolist() == ["gold", "basic"]
    assert first["vip"].tolist() == [True, False]
    assert first["request.row"].tolist() == ["r0", "r1"]  # a field named like a log column
    assert first["amount"].iloc[0] == 2.5 and pd.isna(first["amount"].iloc[1])
    assert first["feature.spend"].iloc[0] == 1.5
    assert first[["version", "model_tag", "endpoint"]].iloc[0].tolist() == ["v1", "churn:a",
                                                                             "predict"]
    ranked = frame[frame["request_id"] == ids[1]]
    assert ranked["code"].tolist() == ["1", "x"]  # mixed types in one batch: strings
    assert ranked["extra.position"].tolist() == [2, 1]
    assert ranked["extra.query_id"].tolist() == ["q", "q"]
    assert frame[frame["request_id"] == ids[2]]["code"].tolist() == ["[1, 2]"]  # JSON text
    assert pd.isna(frame[frame["request_id"] == ids[3]]["output"].iloc[0])
    assert frame["customer_id"].dtype == "int64"
    assert frame[frame["request_id"] == ids[4]]["version"].tolist() == ["v 2/b"]

    assert set(read_log(tmp_path, versions=["v 2/b"])["request_id"]) == {ids[4]}
    assert set(read_log(tmp_path, versions="v1")["request_id"]) == set(ids[:4])
    window = read_log(tmp_path, since=hour_one + 1, until=hour_one + 7200)
    assert set(window["request_id"]) == {ids[1], ids[2], ids[3]}  # since <= ts < until
    assert read_log(tmp_path, since=hour_one + 9000).empty
    v1.close()
    v2.close()


def test_read_log_of_no_log_is_an_empty_frame_with_the_base_columns(tmp_path):
    frame = read_log(tmp_path / "nothing")
    assert list(frame.columns) == ["request_id", "ts", "version", "model_tag", "endpoint",
                                   "row", "output"]
    assert frame.empty


def test_files_whose_column_types_differ_are_read_together(tmp_path):
    log = PredictionLog(tmp_path, "v1", "m:1", flush_seconds=0.05)
    first, second = new_request_id(), new_request_id()
    log.record(first, "predict", [{"code": 1}], [1.0])
    assert log.flush(10)
    log.record(second, "predict", [{"code": "a", "late": 2.5}], [2.0])
    assert log.flush(10)
    frame = read_log(tmp_path)
    assert frame["code"].tolist() == ["1", "a"]
    assert pd.isna(frame["late"].iloc[0]) and frame["late"].iloc[1] == 2.5
    log.close()


def _log_in_process(folder: str, version: str, requests: int, out: str) -> None:
    log = PredictionLog(folder, version, "m:1", flush_rows=40, flush_seconds=0.02)
    ids = []
    for i in range(requests):
        request_id = new_request_id()
        ids.append(request_id)
        log.record(request_id, "predict", [{"k": i, "j": j} for j in range(3)], [0.1, 0.2, None])
    assert log.flush(60)
    assert log.stats()["dropped"] == 0, log.stats()
    Path(out).write_text(json.dumps(ids))


def test_two_processes_log_to_one_folder_at_once(tmp_path):
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_log_in_process,
                               args=(str(tmp_path), "v1", 300, str(tmp_path / f"ids{n}.json")))
               for n in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert [w.exitcode for w in workers] == [0, 0]
    ids = [i for n in range(2) for i in json.loads((tmp_path / f"ids{n}.json").read_text())]
    assert len(set(ids)) == 600
    frame = read_log(tmp_path)
    assert len(frame) == 600 * 3
    assert frame.groupby("request_id").size().to_dict() == dict.fromkeys(ids, 3)
    assert _index_ids(tmp_path) == set(ids)
    pids = {p.name.split("-")[1] for p in _files(tmp_path)}
    assert len(pids) == 2


def _record_after_fork(folder: str, out: str) -> None:
    log = _FORKED[0]
    request_id = new_request_id()
    ok = log.record(request_id, "predict", [{"k": "child"}], [1.0]) and log.flush(30)
    Path(out).write_text(json.dumps({"ok": ok, "id": request_id, "stats": log.stats()}))


_FORKED: list[PredictionLog] = []


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_worker_starts_its_own_writer(tmp_path):
    log = PredictionLog(tmp_path, "v1", "m:1", flush_seconds=0.05)
    _FORKED[:] = [log]
    parent = new_request_id()
    assert log.record(parent, "predict", [{"k": "parent"}], [1.0]) and log.flush(10)
    child = multiprocessing.get_context("fork").Process(
        target=_record_after_fork, args=(str(tmp_path), str(tmp_path / "child.json")))
    child.start()
    child.join(60)
    assert child.exitcode == 0
    result = json.loads((tmp_path / "child.json").read_text())
    assert result["ok"] and result["stats"]["logged"] == 1  # its own writer and counters
    assert set(read_log(tmp_path)["request_id"]) == {parent, result["id"]}
    log.close()


def test_retention_deletes_old_hour_partitions_and_their_index_rows_only(tmp_path):
    now = time.time()

    def log_at(version, at):
        log = PredictionLog(tmp_path, version, "m:1", flush_seconds=0.05, clock=lambda: at,
                            retention_hours=None)
        request_id = new_request_id()
        log.record(request_id, "predict", [{"k": 1}], [1.0])
        assert log.flush(10)
        log.close()
        return request_id

    old = log_at("v1", now - 30 * 3600)
    only_old = log_at("v0", now - 40 * 3600)
    recent = log_at("v1", now - 20 * 3600)
    log = PredictionLog(tmp_path, "v1", "m:1", flush_seconds=0.05, retention_hours=24)
    current = new_request_id()
    log.record(current, "predict", [{"k": 2}], [2.0])
    assert log.flush(10)  # the first flush runs retention

    assert set(read_log(tmp_path)["request_id"]) == {recent, current}
    assert _index_ids(tmp_path) == {recent, current}
    assert not (tmp_path / "version=v0").exists()  # left empty: removed
    hours = sorted(p.name for p in (tmp_path / "version=v1").iterdir())
    assert hours == sorted({f"hour={prediction_log._hour(now - 20 * 3600)}",
                            f"hour={prediction_log._hour(now)}"})
    assert log.stats()["last_error"] is None
    assert old and only_old

    again = log_at("v1", now - 50 * 3600)  # written after that pass
    log.record(new_request_id(), "predict", [{"k": 3}], [3.0])
    assert log.flush(10)
    assert again in _index_ids(tmp_path)  # at most one pass a minute
    log.close()


def test_request_ids_are_unique_time_ordered_uuid7s():
    before = time.time()
    ids = [new_request_id() for _ in range(100_000)]
    after = time.time()
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)  # strictly increasing within a process
    assert all(len(i) == 32 and i == i.lower() for i in ids[:1000])
    parsed = uuid.UUID(hex=ids[0])
    assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
    times = [request_time(i) for i in (ids[0], ids[-1])]
    assert before - 0.002 <= times[0] <= times[1] <= after + 0.5  # + counter overflow slack


@pytest.mark.parametrize("garbage", [
    None, 7, b"0" * 32, "", "not an id", str(uuid.uuid4()).replace("-", ""),
    str(uuid.UUID(hex=new_request_id())),  # dashed: not our form
    new_request_id().upper(), new_request_id()[:31], new_request_id() + "0",
    "0" * 12 + "7" + "0" * 3 + "8" + "0" * 15,  # 1970
    f"{(int(time.time()) + 10 * 86400) * 1000:012x}7000800000000000000",  # 10 days ahead
    new_request_id()[:16] + "c" + new_request_id()[17:],  # wrong variant
], ids=["none", "int", "bytes", "empty", "words", "uuid4", "dashed", "upper", "short", "long",
        "1970", "ahead", "variant"])  # the values are drawn at collection: the ids are fixed,
# so every xdist worker collects the same tests
def test_request_time_rejects_what_is_not_one_of_ours(garbage):
    assert request_time(garbage) is None


def test_request_time_round_trips_a_crafted_id():
    ms = 1_780_000_000_123
    crafted = f"{ms:012x}7abc9{'1' * 15}"
    assert request_time(crafted) == ms / 1000


def test_a_closed_log_drops_and_counts(tmp_path):
    log = PredictionLog(tmp_path, "v1", "m:1", flush_seconds=0.05)
    assert log.flush(1)  # nothing recorded, no writer: nothing to wait for
    log.record(new_request_id(), "predict", [{"k": 1}], [1.0])
    assert log.close(10)
    assert not log.record(new_request_id(), "predict", [{"k": 2}, {"k": 3}], [1.0, 2.0])
    assert log.stats()["logged"] == 1 and log.stats()["dropped"] == 2


def test_record_cost_per_call(tmp_path, capsys):
    log = PredictionLog(tmp_path, "v1", "m:1", max_queue=100_000, flush_rows=5_000,
                        flush_seconds=0.5)
    rows, outputs = [{"customer_id": 1, "amount": 2.0}], [0.5]
    features = [{"spend": 1.0, "visits": 3.0}]
    log.record(new_request_id(), "predict", rows, outputs, features)  # starts the writer
    calls = 20_000
    request_ids = [new_request_id() for _ in range(calls)]
    started = time.perf_counter()
    for request_id in request_ids:
        log.record(request_id, "predict", rows, outputs, features)
    cost = (time.perf_counter() - started) / calls * 1e6
    started = time.perf_counter()
    for _ in range(calls):
        new_request_id()
    id_cost = (time.perf_counter() - started) / calls * 1e6
    assert log.flush(60)
    assert log.stats()["logged"] == calls + 1
    with capsys.disabled():
        print(f"\nrecord(): {cost:.2f} us per call; new_request_id(): {id_cost:.2f} us "
              f"({calls} calls, writer running)")
    log.close()


def test_features_given_as_model_input_rows_are_named_by_feature_names(tmp_path):
    """The service logs each row's model input as a row of its float64 matrix (no dict per
    row on the request path): the writer names the values by `feature_names`; a row without
    one (not found online) has nulls, and a row whose length does not fit is the writer's
    problem (its request's rows dropped), not the request's."""
    import numpy as np

    log = PredictionLog(tmp_path, "v1", "churn:a", flush_seconds=0.05,
                        feature_names=("tenure", "charges"))
    matrix = np.array([[3.0, 70.5], [12.0, 20.25]])
    good, bad = new_request_id(), new_request_id()
    assert log.record(good, "predict", [{"customer_id": 1}, {"customer_id": 2},
                                        {"customer_id": 3}], [0.5, None, 0.25],
                      features=[matrix[0], None, matrix[1]])
    assert log.record(bad, "predict", [{"customer_id": 4}], [0.1], features=[np.zeros(3)])
    assert log.flush(10)
    frame = read_log(tmp_path).sort_values("row")
    assert set(frame["request_id"]) == {good}
    assert frame["feature.tenure"].tolist()[::2] == [3.0, 12.0]
    assert frame["feature.charges"].tolist()[::2] == [70.5, 20.25]
    assert pd.isna(frame["feature.tenure"].iloc[1])
    assert log.stats()["dropped"] == 1
    log.close()


def test_each_drop_is_told_to_on_drop_and_status_sums_the_writers(tmp_path, monkeypatch):
    """The service counts drops in a Prometheus counter through `on_drop` (a full queue on
    the request path, a failed write in the writer), and `status` sums every writer's stats
    file per version (a worker that ended still counts)."""
    told: list[int] = []
    log = PredictionLog(tmp_path, "v1", "m:1", max_queue=1, flush_seconds=0.05,
                        on_drop=told.append)
    entered, release = _stall_writer(log, monkeypatch)
    assert log.record(new_request_id(), "predict", [{"k": 0}], [0.0])
    assert entered.wait(10)
    assert log.record(new_request_id(), "predict", [{"k": 1}], [0.0])  # queued
    assert not log.record(new_request_id(), "predict", [{"k": 2}, {"k": 3}], [0.0, 1.0])
    assert told == [2]  # the overflow's rows
    release.set()
    assert log.flush(30)
    monkeypatch.setattr(log, "_write_table", lambda hour, table: 1 / 0)
    assert log.record(new_request_id(), "predict", [{"k": 4}] * 3, [0.5] * 3)
    assert log.flush(30)
    assert told == [2, 3]  # and the failed write's rows
    other = PredictionLog(tmp_path, "v2", "m:2", flush_seconds=0.05, on_drop=lambda n: 1 / 0)
    assert other.record(new_request_id(), "predict", [{"k": 5}], [1.0])
    assert other.flush(30)
    monkeypatch.setattr(os, "getpid", lambda: 424242)  # another worker of v1
    late = PredictionLog(tmp_path, "v1", "m:1", flush_seconds=0.05)
    late._write_stats()  # its counters: nothing yet, but a file of its own
    assert len(list((tmp_path / prediction_log.STATS_DIR).glob("*.json"))) == 3
    from mlstack.ops.local.living import prediction_log_counts

    assert prediction_log_counts(tmp_path) == {
        "v1": {"logged": 2, "dropped": 5, "files": 2, "write_errors": 1},
        "v2": {"logged": 1, "dropped": 0, "files": 1, "write_errors": 0}}
    for each in (log, other, late):
        each.close()


def test_index_rows_a_lock_kept_out_are_added_once_the_lock_is_gone(tmp_path, monkeypatch):
    """Another process holding the index past the busy timeout fails one transaction: the
    requests are written, counted as one write error, and indexed at the writer's next try
    (its idle flush interval), so feedback finds them; nothing is dropped."""
    import mlstack.runtime.prediction_log as prediction_log

    monkeypatch.setattr(prediction_log, "INDEX_BUSY_TIMEOUT_MS", 50)
    log = PredictionLog(tmp_path, "v1", "m:1", flush_seconds=0.05)
    first = new_request_id()
    log.record(first, "predict", [{"k": 1}], [0.5])
    assert log.flush(10)  # the index exists
    holder = sqlite3.connect(tmp_path / "requests.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        late = new_request_id()
        log.record(late, "predict", [{"k": 2}], [0.6])
        assert log.flush(10)
        stats = log.stats()
        assert stats["write_errors"] == 1 and stats["logged"] == 2, stats
        assert set(read_log(tmp_path)["request_id"]) == {first, late}  # written
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    deadline = time.monotonic() + 10
    while _index_ids(tmp_path) != {first, late}:
        assert time.monotonic() < deadline, _index_ids(tmp_path)
        time.sleep(0.05)
    log.close()
    assert log.stats()["dropped"] == 0


def test_the_writer_is_not_woken_by_each_record(tmp_path, monkeypatch):
    """record() only appends: the writer looks at the queue every POLL_SECONDS (a getter
    woken by each put cost a thread switch and the GIL handed over per request), so a burst
    of requests costs the writer a few looks, not one per request; nothing is lost."""
    log = PredictionLog(tmp_path, "v1", "m:1", flush_rows=100_000, flush_seconds=0.4)
    looks = []
    sleep = log._sleep
    monkeypatch.setattr(log, "_sleep", lambda at_most: (looks.append(at_most), sleep(at_most)))
    ids = [new_request_id() for _ in range(3000)]
    began = time.monotonic()
    for request_id in ids:  # spread over about half a second, as a service's are
        assert log.record(request_id, "predict", [{"k": 1}], [0.5])
        time.sleep(0.0001)
    spent = time.monotonic() - began
    assert log.flush(10)
    assert log.stats()["logged"] == len(ids)
    # a look every POLL_SECONDS while records came, and until the flush: far fewer than 3000
    assert len(looks) <= (spent + 1.0) / prediction_log.POLL_SECONDS + 5, (len(looks), spent)
    log.close()


def test_close_and_flush_are_prompt_with_a_long_flush_interval(tmp_path):
    log = PredictionLog(tmp_path, "v1", "m:1", flush_seconds=60)
    assert log.record(new_request_id(), "predict", [{"k": 1}], [0.5])
    began = time.monotonic()
    assert log.flush(10) and log.stats()["logged"] == 1
    assert log.record(new_request_id(), "predict", [{"k": 2}], [0.5])
    assert log.close(10)
    assert time.monotonic() - began < 5  # not the 60 s flush interval
    assert log.stats()["logged"] == 2


def test_a_batch_mixing_matrix_rows_and_mappings_names_every_feature(tmp_path):
    """The writer builds the feature columns of a batch of matrix rows at once; a batch with
    anything else goes row by row, with the same columns and values."""
    import numpy as np

    names = ("tenure", "charges")
    log = PredictionLog(tmp_path, "v1", "churn:a", flush_seconds=60, feature_names=names)
    first, second, third = new_request_id(), new_request_id(), new_request_id()
    assert log.record(first, "predict", [{"customer_id": 1}], [0.5],
                      features=[np.array([3.0, np.nan])])
    assert log.record(second, "predict", [{"customer_id": 2}], [0.25],
                      features=[{"tenure": 12.0, "charges": 20.25}])
    assert log.record(third, "predict", [{"customer_id": 3}], [None], features=[None])
    assert log.flush(10)
    frame = read_log(tmp_path).set_index("request_id")
    assert frame.loc[first, "feature.tenure"] == 3.0
    assert np.isnan(frame.loc[first, "feature.charges"])
    assert frame.loc[second, "feature.charges"] == 20.25
    assert pd.isna(frame.loc[third, "feature.tenure"])
    log.close()


def test_all_matrix_rows_are_written_as_float_columns_with_nulls_only_where_missing(tmp_path):
    import numpy as np

    names = ("tenure", "charges")
    log = PredictionLog(tmp_path, "v1", "churn:a", flush_seconds=60, feature_names=names)
    matrix = np.array([[1.0, 2.0], [3.0, np.nan], [5.0, 6.0]])
    ids = [new_request_id() for _ in range(3)]
    for request_id, row in zip(ids, matrix, strict=True):
        assert log.record(request_id, "predict", [{"customer_id": 1}], [0.5], features=[row])
    assert log.record(new_request_id(), "predict", [{"customer_id": 9}], [None],
                      features=[None])
    assert log.flush(10)
    frame = read_log(tmp_path).sort_values("ts")
    assert frame["feature.tenure"].tolist()[:3] == [1.0, 3.0, 5.0]
    assert frame["feature.charges"].isna().tolist() == [False, True, False, True]
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    (written,) = [f for f in _files(tmp_path) if f.suffix == ".parquet"]
    charges = pq.read_table(written).column("feature.charges")
    assert str(charges.type) == "double"
    # a NaN the model input held stays a NaN; the row not found online is null
    assert charges.null_count == 1 and pc.sum(pc.is_nan(charges)).as_py() == 1
    log.close()


def _id_after_fork(connection) -> None:
    connection.send(new_request_id())
    connection.close()


def test_a_forked_child_draws_its_own_random_bits_for_request_ids():
    """The ids' random bits come from a pool read from the OS; a forked worker must not
    take the same bytes as its parent (two workers would otherwise give ids that differ
    only in their time)."""
    new_request_id()  # the pool is filled
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_id_after_fork, args=(send,))
    child.start()
    child_id = receive.recv()
    child.join(30)
    parent_id = new_request_id()
    low_bits = (1 << 62) - 1
    assert int(child_id, 16) & low_bits != int(parent_id, 16) & low_bits
