"""Feedback: each status (stored, duplicate, conflict, unknown, invalid) and its HTTP code,
the grace wait for a request another worker has not flushed yet, nothing lost when threads
send feedback at once, the body checks, and the join with the log."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import pytest

from mlstack.runtime.feedback import (
    FeedbackStore,
    joined,
    parse_body,
    read_feedback,
)
from mlstack.runtime.prediction_log import PredictionLog, new_request_id


def _id_at(seconds: float) -> str:
    """A request id of ours issued at `seconds` (unix time)."""
    return f"{int(seconds * 1000):012x}7abc9{'2' * 15}"


@pytest.fixture
def logged(tmp_path):
    """A log folder with three flushed requests; their ids."""
    log = PredictionLog(tmp_path, "v1", "m:1", flush_seconds=0.05)
    ids = [new_request_id() for _ in range(3)]
    log.record(ids[0], "predict", [{"k": 1}], [0.5])
    log.record(ids[1], "rank", [{"k": 2}, {"k": 3}, {"k": 4}], [0.9, 0.1, None])
    log.record(ids[2], "predict", [{"k": 5}], [0.7])
    assert log.flush(10)
    log.close()
    return ids


def test_stored_duplicate_and_conflict(tmp_path, logged):
    store = FeedbackStore(tmp_path, grace_seconds=0.2)
    first = store.record(logged[0], 1)
    assert (first.status, first.http_status, first.outcome) == ("stored", 201, 1.0)
    again = store.record(logged[0], 1.0)  # the same number: a client's retry
    assert (again.status, again.http_status, again.outcome) == ("duplicate", 200, 1.0)
    other = store.record(logged[0], True)  # True is not 1
    assert (other.status, other.http_status, other.outcome) == ("conflict", 409, 1.0)
    label = store.record(logged[1], "clicked")
    assert (label.status, label.outcome) == ("stored", "clicked")
    assert store.record(logged[1], "bought").status == "conflict"
    assert store.record(logged[2], False).status == "stored"
    frame = read_feedback(tmp_path)
    assert frame.set_index("request_id")["outcome"].to_dict() == {
        logged[0]: 1.0, logged[1]: "clicked", logged[2]: False}
    assert str(frame["received_at"].dtype) == "datetime64[ns, UTC]"


def test_received_at_is_kept_a_naive_datetime_as_utc(tmp_path, logged, monkeypatch):
    from datetime import datetime

    store = FeedbackStore(tmp_path)
    monkeypatch.setenv("TZ", "America/New_York")  # naive as local time would be 4 h off
    time.tzset()
    try:
        store.record(logged[0], 1, at=datetime(2026, 5, 1, 12, 30))
    finally:
        monkeypatch.undo()
        time.tzset()
    store.record(logged[1], 1, at=1_780_000_000.5)
    frame = read_feedback(tmp_path).set_index("request_id")["received_at"]
    assert frame[logged[0]] == pd.Timestamp("2026-05-01T12:30", tz="UTC")
    assert frame[logged[1]] == pd.Timestamp(1_780_000_000.5, unit="s", tz="UTC")


def test_unknown_ids_get_404_at_once_when_old(tmp_path, logged):
    store = FeedbackStore(tmp_path, grace_seconds=3.0)
    started = time.monotonic()
    result = store.record(_id_at(time.time() - 3600), 1)
    assert (result.status, result.http_status) == ("unknown", 404)
    assert time.monotonic() - started < 1.0  # issued long ago: no grace wait
    assert read_feedback(tmp_path).empty


def test_a_young_id_is_stored_at_once_and_joined_once_its_answer_is_logged(tmp_path, logged):
    """An outcome sent right after the answer, before its worker's log reached the index, is
    stored without a wait (the service's 1 s deadline is shorter than a flush), and joins the
    answer once it is logged; one whose answer is never logged is kept, never joined."""
    store = FeedbackStore(tmp_path, grace_seconds=5.0)
    late, never = new_request_id(), new_request_id()
    started = time.monotonic()
    result = store.record(late, "clicked")
    assert (result.status, result.http_status) == ("stored", 201)
    assert store.record(never, 1).status == "stored"
    assert time.monotonic() - started < 0.5  # not waited for
    assert set(joined(tmp_path)["request_id"]) == set(logged)  # neither is in the log yet
    other_worker = PredictionLog(tmp_path, "v1", "m:1", flush_seconds=0.05)
    other_worker.record(late, "predict", [{"k": 9}], [0.3])
    assert other_worker.flush(10)
    other_worker.close()
    frame = joined(tmp_path).set_index("request_id")
    assert frame.loc[late, "outcome"] == "clicked" and never not in frame.index
    assert set(read_feedback(tmp_path)["request_id"]) == {late, never}  # nothing lost


def test_an_id_past_its_grace_or_from_the_future_must_be_logged(tmp_path, logged):
    store = FeedbackStore(tmp_path, grace_seconds=0.3)
    assert store.record(_id_at(time.time() + 60), 1).status == "unknown"  # a forged time
    young = new_request_id()
    time.sleep(0.35)
    assert store.record(young, 1).status == "unknown"
    assert store.record(logged[0], 1).status == "stored"  # logged: its age does not matter


@pytest.mark.parametrize("request_id", [None, 12, "", "x" * 32, new_request_id().upper(),
                                        new_request_id()[:-1], {"id": 1}],
                         ids=["none", "int", "empty", "xs", "upper", "short", "object"])
def test_an_id_that_is_not_ours_is_invalid(tmp_path, logged, request_id):
    result = FeedbackStore(tmp_path).record(request_id, 1)
    assert (result.status, result.http_status) == ("invalid", 422)


@pytest.mark.parametrize("outcome", [None, float("nan"), float("inf"), -float("inf"), "",
                                     "x" * 257, {"a": 1}, [1], 10 ** 400, b"yes"])
def test_an_outcome_that_is_not_a_finite_number_bool_or_short_label_is_invalid(
        tmp_path, logged, outcome):
    result = FeedbackStore(tmp_path).record(logged[0], outcome)
    assert (result.status, result.http_status) == ("invalid", 422)
    assert read_feedback(tmp_path).empty


@pytest.mark.parametrize("outcome", [True, 0, -2.5, "x" * 256, 10 ** 20])
def test_valid_outcomes_are_stored(tmp_path, logged, outcome):
    assert FeedbackStore(tmp_path).record(logged[0], outcome).status == "stored"


def test_nothing_is_lost_when_threads_send_feedback_at_once(tmp_path):
    log = PredictionLog(tmp_path, "v1", "m:1", flush_rows=1_000, flush_seconds=0.05)
    ids = [new_request_id() for _ in range(150)]
    for request_id in ids:
        log.record(request_id, "predict", [{"k": 1}], [1.0])
    assert log.flush(10)
    store = FeedbackStore(tmp_path, grace_seconds=0.0)

    together = threading.Barrier(6)

    def send(worker):  # workers 0-3 agree on each id's outcome, 4-5 send another one
        outcome = 1.0 if worker < 4 else 0.0
        results = []
        try:
            for request_id in ids:
                together.wait(30)  # all six race for each id
                results.append((outcome, store.record(request_id, outcome)))
        except BaseException:
            together.abort()  # the others stop waiting: the error is the answer
            raise
        return results

    with ThreadPoolExecutor(6) as pool:
        results = [r for batch in pool.map(send, range(6)) for r in batch]
    assert len(results) == 6 * len(ids)
    stored = {r.request_id: r.outcome for _, r in results if r.status == "stored"}
    assert len(stored) == len(ids)  # exactly one stored per id
    assert sum(r.status == "stored" for _, r in results) == len(ids)
    for sent, r in results:  # every other answer agrees with what was stored
        assert r.outcome == stored[r.request_id]
        if r.status != "stored":
            assert r.status == ("duplicate" if sent == stored[r.request_id] else "conflict")
    frame = read_feedback(tmp_path)
    assert frame.set_index("request_id")["outcome"].to_dict() == stored
    log.close()


def test_parse_body():
    request_id = new_request_id()
    body = json.dumps({"request_id": request_id, "outcome": 1}).encode()
    assert parse_body(body) == (request_id, 1)
    big = json.dumps({"request_id": request_id, "outcome": "x" * 5000}).encode()
    assert (parse_body(big).status, parse_body(big).http_status) == ("too_large", 413)
    for malformed in (b"{", b"[1, 2]", b'{"request_id": "a"}', b"\xff\xfe",
                      b'{"request_id": "a", "outcome": 1, "more": 2}'):
        result = parse_body(malformed)
        assert (result.status, result.http_status) == ("malformed", 400), malformed


def test_joined_puts_a_requests_outcome_on_its_row_zero(tmp_path, logged):
    FeedbackStore(tmp_path).record(logged[1], "clicked")
    frame = joined(tmp_path)
    assert len(frame) == 5
    ranked = frame[frame["request_id"] == logged[1]].sort_values("row")
    assert ranked["outcome"].tolist() == ["clicked", None, None]
    assert ranked["feedback_at"].notna().tolist() == [True, False, False]
    others = frame[frame["request_id"] != logged[1]]
    assert others["outcome"].isna().all() and others["outcome"].tolist() == [None, None]
    assert isinstance(frame["feedback_at"].dtype, pd.DatetimeTZDtype)


def test_joined_with_no_feedback_and_no_log(tmp_path):
    frame = joined(tmp_path)
    assert frame.empty and {"outcome", "feedback_at", "request_id"} <= set(frame.columns)


def test_outcomes_by_version_joins_the_feedback_with_the_index(tmp_path):
    """What an A/B readout counts: each stored outcome with the version that answered its
    request, for requests answered since a time; an outcome whose request is not logged (yet)
    is not counted."""
    from mlstack.runtime.feedback import outcomes_by_version

    assert outcomes_by_version(tmp_path) == []  # nothing yet
    ids = {}
    for version in ("v1", "v2"):
        log = PredictionLog(tmp_path, version, f"m:{version}", flush_seconds=0.05)
        ids[version] = [new_request_id() for _ in range(3)]
        for request_id in ids[version]:
            log.record(request_id, "predict", [{"k": 1}, {"k": 2}], [0.5, 0.4])
        assert log.flush(10)
        log.close()
    store = FeedbackStore(tmp_path)
    for n, request_id in enumerate(ids["v1"] + ids["v2"]):
        assert store.record(request_id, n % 2 == 0).status == "stored"
    assert store.record(new_request_id(), 1).status == "stored"  # young, not logged
    found = outcomes_by_version(tmp_path)
    assert sorted(found) == sorted([("v1", True), ("v1", False), ("v1", True),
                                    ("v2", False), ("v2", True), ("v2", False)])
    later = outcomes_by_version(tmp_path, since=time.time() + 60)
    assert later == []
